"""The `recipe` train-block key: gan(D, latent=N) and autoencoder(noise=s)
checked against the file's models, every mistake a diagnostic at its line and
column with a hint; `mnist(range=[lo, hi])`; the IR round trip."""

from __future__ import annotations

import pytest

import specc
from specc.diagnostics import SpecError
from specc.ir import Train

MODELS = """\
model generator {
    input [100]
    Dense(784, activation=tanh)
    Reshape([1, 28, 28])
}
model discriminator {
    input [1, 28, 28]
    Flatten()
    Dense(1, activation=sigmoid)
}
model classifier {
    input [1, 28, 28]
    Flatten()
    Dense(10, activation=softmax)
}
model small {
    input [100]
    Dense(196, activation=tanh)
    Reshape([1, 14, 14])
}
model autoencoder {
    input [1, 28, 28]
    Conv2D(8, kernel=3, padding=same, activation=relu)
    Conv2D(1, kernel=3, padding=same, activation=sigmoid)
}
model shrinking {
    input [1, 28, 28]
    Conv2D(4, kernel=3, activation=sigmoid)
}
"""
FIRST = MODELS.count("\n") + 1  # the line of the first train block line below


def diagnostics(train: str) -> list:
    with pytest.raises(SpecError) as info:
        specc.loads(MODELS + train, "recipes.spec")
    return info.value.diagnostics


def only(train: str):
    found = diagnostics(train)
    assert len(found) == 1, [d.message for d in found]
    return found[0]


def at(d, line: int, column: int) -> None:
    assert (d.file, d.line, d.column) == ("recipes.spec", FIRST + line, column), d.render()


def test_a_gan_block_checks_and_round_trips():
    program = specc.loads(MODELS + """\
train generator {
    recipe    = gan(discriminator, latent=100)
    data      = mnist(range=[-1, 1])
    optimizer = adam(lr=2e-4, beta1=0.5)
}
""")
    train = program.trains["generator"]
    assert train.recipe.name == "gan" and dict(train.recipe.args) == {"discriminator": "discriminator", "latent": 100}
    assert train.loss == "binary_cross_entropy"  # implied
    assert list(train.data.args["range"]) == [-1.0, 1.0]
    assert Train.from_dict(train.to_dict()) == train
    assert Train.from_json(train.to_json()).recipe == train.recipe


def test_an_autoencoder_block_and_a_supervised_block_read_as_before():
    program = specc.loads(MODELS + """\
train autoencoder {
    recipe = autoencoder
    data   = mnist()
    loss   = mse
}
train classifier {
    data = mnist()
    loss = cross_entropy
}
""")
    ae, supervised = program.trains["autoencoder"], program.trains["classifier"]
    assert ae.recipe.name == "autoencoder" and ae.recipe.args["noise"] == 0.0
    assert supervised.recipe is None and "recipe" not in supervised.to_dict()
    assert "range" not in supervised.data.args  # the default [0, 1] leaves version 1's IR as it was
    assert Train.from_dict(ae.to_dict()) == ae


def test_unknown_recipe_suggests_the_closest():
    d = only("train autoencoder {\n    recipe = autoencodr(noise=0.3)\n    data = mnist()\n    loss = mse\n}\n")
    at(d, 1, 14)
    assert "unknown recipe 'autoencodr'" in d.message and "autoencoder" in d.hint


def test_the_discriminator_must_be_a_model_of_the_file():
    d = only("train generator {\n    recipe = gan(discrimnator, latent=100)\n    data = mnist(range=[-1, 1])\n}\n")
    at(d, 1, 18)
    assert "no model 'discrimnator'" in d.message and "did you mean discriminator?" in d.hint


def test_the_discriminator_is_required():
    d = only("train generator {\n    recipe = gan(latent=100)\n    data = mnist()\n}\n")
    at(d, 1, 14)
    assert "gan needs discriminator" in d.message


def test_the_discriminators_input_must_be_the_generators_output():
    d = only("train small {\n    recipe = gan(discriminator, latent=100)\n    data = mnist()\n}\n")
    at(d, 1, 18)
    assert "'discriminator' takes input [1, 28, 28]" in d.message
    assert "'small' outputs [1, 14, 14]" in d.message and "generator's output" in d.hint


def test_the_discriminator_must_end_in_one_sigmoid_unit():
    d = only("train generator {\n    recipe = gan(classifier, latent=100)\n    data = mnist()\n}\n")
    at(d, 1, 18)
    assert "must end in one sigmoid unit" in d.message and "softmax with output [10]" in d.message
    assert "Dense(1, activation=sigmoid)" in d.hint


def test_the_generators_input_must_be_the_latent_vector():
    d = only("train generator {\n    recipe = gan(discriminator, latent=64)\n    data = mnist()\n}\n")
    at(d, 1, 33)
    assert "latent=64" in d.message and "takes input [100]" in d.message and "latent=100" in d.hint


def test_a_gan_refuses_another_loss_and_patience_and_ignores_metrics():
    found = diagnostics("train generator {\n    recipe = gan(discriminator, latent=100)\n    data = mnist()\n"
                        "    loss = mse\n    metrics = [accuracy]\n    patience = 2\n}\n")
    assert [(d.line - FIRST, d.column) for d in found] == [(3, 12), (5, 5)]
    assert "binary_cross_entropy" in found[0].message and "not mse" in found[0].message
    assert "patience does not apply to a gan" in found[1].message
    assert all(d.hint for d in found)
    program = specc.loads(MODELS + "train generator {\n    recipe = gan(discriminator, latent=100)\n"
                          "    data = mnist()\n    loss = binary_cross_entropy\n    metrics = [accuracy]\n}\n")
    assert program.trains["generator"].loss == "binary_cross_entropy"


def test_an_autoencoder_must_output_its_input_shape():
    d = only("train shrinking {\n    recipe = autoencoder(noise=0.3)\n    data = mnist()\n    loss = mse\n}\n")
    at(d, 1, 14)
    assert "outputs [4, 26, 26], but takes [1, 28, 28]" in d.message and "input's shape" in d.hint


def test_an_autoencoder_refuses_class_losses():
    d = only("train autoencoder {\n    recipe = autoencoder()\n    data = mnist()\n"
             "    loss = cross_entropy\n    metrics = [accuracy]\n}\n")
    at(d, 3, 12)
    assert "cross_entropy does not apply" in d.message and "mse" in d.hint


def test_recipe_argument_types():
    d = only("train autoencoder {\n    recipe = autoencoder(noise=-0.1)\n    data = mnist()\n    loss = mse\n}\n")
    at(d, 1, 26)
    assert "noise must not be negative" in d.message
    d = only("train generator {\n    recipe = gan(\"discriminator\", latent=100)\n    data = mnist()\n}\n")
    assert "must name a model" in d.message and "bare word" in d.hint


def test_mnist_range_must_be_low_then_high():
    d = only("train autoencoder {\n    data = mnist(range=[1, -1])\n    loss = mse\n}\n")
    at(d, 1, 18)
    assert "low < high" in d.message and "range=[-1, 1]" in d.hint


def test_the_shipped_recipe_specs_check():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "specs"
    gan = specc.load(root / "gan.spec")
    assert gan.trains["generator"].recipe.args["discriminator"] == "discriminator"
    assert specc.load(root / "autoencoder.spec").trains["autoencoder"].recipe.name == "autoencoder"
