"""Graph models (residual blocks, nested and repeated blocks, concats) on both
backends, beyond the outputs that the golden, reference and Keras tests
compare: how each backend holds a graph (torch submodule and state_dict
names, Flax variable names and layouts), training-mode forwards, and the
trainers (BatchNorm statistics inside residual blocks, the fused softmax of a
Dense after a merge, the seeded Dropout of the torch trainer).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import torch
import jax

import specc  # noqa: E402
from backend_cases import GRAPHS, perturbed_weights, sample_input  # noqa: E402
from specc.backend import get  # noqa: E402
from specc.catalogue import make_layer  # noqa: E402
from specc.ir import INPUT, Call, Model, Train  # noqa: E402
from specc.options import OPTIMIZERS  # noqa: E402
from specc.plan import make_plan  # noqa: E402

RESNET = GRAPHS["graph_resnet"]


def _close(actual, expected, tol=1e-4, what=""):
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


# ---------------------------------------------------------------- torch: the graph module


def test_torch_net_names_submodules_and_state_after_nodes():
    net = specc.build(RESNET, backend="torch")
    assert [name for name, _ in net.named_children()] == [layer.name for layer in RESNET.layers]
    assert "stage_2/basic_1/conv2d_3.weight" in net.state_dict()  # the projection shortcut
    assert "stage_2/basic_1/batch_norm_3.running_mean" in net.state_dict()
    assert type(net.layer("stage_1/basic_2/conv2d_1")).__name__ == "Conv2D"
    assert net.specc_model is RESNET


def test_torch_graph_drops_each_value_after_its_last_reader():
    net = specc.build(RESNET, backend="torch")
    released = [name for step in net._steps for name in step.release]
    # every value but the output is dropped exactly once; the input too
    assert sorted(released) == sorted([INPUT] + [layer.name for layer in RESNET.layers[:-1]])
    sequential = Model("s", (4,), (make_layer("Dense", "dense_1", (4,), units=2),))
    assert specc.build(sequential, backend="torch")._steps is None  # a stack runs as a plain loop


# Inference overwrites a value in place only when nothing else can see it:
# not the caller's input (nor a view of it), not a value another node still
# reads, not an input of the same Add.
INPLACE_CASES = {
    "activation on the caller's input": """
model m {
    input [2, 3, 3]
    ReLU()
    Flatten()
    Dense(4)
}""",
    "activation on a view of the input": """
model m {
    input [2, 3, 3]
    Flatten()
    Tanh()
    Dense(4)
}""",
    "a value read by two branches": """
model m {
    input [2, 4, 4]
    Conv2D(3, kernel=3, padding=same)
    concat(axis=0) {
        branch { ReLU() }
        branch { Sigmoid() }
        branch { Dropout(0.5) }
    }
    residual { ReLU() }
    residual { Flatten(); Reshape([9, 4, 4]) }
    ReLU()
    Flatten()
    Dense(5)
}""",
}


@pytest.mark.parametrize("case", INPLACE_CASES)
def test_torch_inference_in_place_changes_nothing_it_should_not(case):
    model = specc.loads(INPLACE_CASES[case])["m"]
    weights = perturbed_weights(model, 3)
    net = get("torch").build(model, weights).eval()
    x = torch.from_numpy(sample_input(model, 2, 5))
    before = x.clone()
    want = net(x).detach()  # gradients on: no value is ever overwritten
    assert torch.equal(x, before)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            got = net(x)
        assert torch.equal(x, before), "the caller's input was overwritten"
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_inference_sums_a_residual_in_place():
    """A residual's Add and the ReLU after it write into the body's output,
    as a hand-written ResNet's `out += identity; relu_(out)` does."""
    net = get("torch").build(RESNET, perturbed_weights(RESNET, 1)).eval()
    x = torch.from_numpy(sample_input(RESNET, 0, 2))
    calls = {"inplace": 0}
    for module in net.modules():
        if hasattr(module, "forward_inplace"):
            original = module.forward_inplace

            def counted(*args, _original=original):
                calls["inplace"] += 1
                return _original(*args)
            module.forward_inplace = counted
    with torch.inference_mode():
        net(x)
    assert calls["inplace"] >= 2 * sum(layer.kind == "Add" for layer in RESNET.layers)


def test_torch_graph_net_deepcopies_and_changes_dtype():
    model = GRAPHS["graph_inception"]
    weights, x = perturbed_weights(model), torch.from_numpy(sample_input(model))
    net = specc.build(model, backend="torch").eval()
    get("torch").load(net, model, weights)
    twin = copy.deepcopy(net)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(twin.double()(x.double()).float(), net(x), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- flax: names and layouts


def test_flax_variables_are_keyed_by_node_name():
    native = get("jax").to_native(RESNET, perturbed_weights(RESNET))
    weighted = {layer.name for layer in RESNET.layers if layer.weights}
    assert set(native["params"]) == weighted
    assert set(native["batch_stats"]) == {layer.name for layer in RESNET.layers if layer.kind == "BatchNorm"}
    assert "stage_2/basic_1/conv2d_3" in native["params"]


def test_flax_residual_network_stays_nhwc():
    """Layouts are tracked per value: the input goes to NHWC once, and neither
    identity nor projection shortcuts bring anything back to channels-first."""
    module = get("jax").build(RESNET)
    variables = get("jax").to_native(RESNET, perturbed_weights(RESNET))
    jaxpr = str(jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, sample_input(RESNET)))
    assert jaxpr.count("transpose[") == 1


def test_flax_concat_of_mixed_layouts():
    """The model input (channels-first) concatenated with conv outputs (NHWC)
    along channels, H and W gives what torch gives."""
    model = GRAPHS["graph_image_axes"]
    weights, x = perturbed_weights(model), sample_input(model)
    _close(specc.run(model, weights, x, backend="jax"), specc.run(model, weights, x, backend="torch"), 1e-5)


# ---------------------------------------------------------------- training mode


def test_forward_train_updates_every_residual_batch_norm_alike():
    weights, x = perturbed_weights(RESNET), sample_input(RESNET, batch=4)
    y_t, new_t = get("torch").forward_train(RESNET, weights, x)
    y_j, new_j = get("jax").forward_train(RESNET, weights, x)
    _close(y_j, y_t, what="training-mode output")
    assert set(new_t) == set(new_j) == set(weights)
    for key in weights:
        _close(new_j[key], new_t[key], what=key)
        assert np.array_equal(new_t[key], weights[key]) != ("/moving_" in key), key


def _train_steps(backend, model, loss, weights, x, y, steps=3):
    # SGD: Adam's m/sqrt(v) would blow float noise in near-zero gradients up to lr
    optimizer = Call("sgd", {**OPTIMIZERS["sgd"], "lr": 0.1, "momentum": 0.9})
    train = Train(model=model.name, data=Call("synthetic"), loss=loss, optimizer=optimizer, batch=8, epochs=1)
    plan = make_plan(model, train, len(x), accuracy="categorical")
    trainer = get(backend).trainer(model, plan, weights)
    data = trainer.put(x, y)
    trainer.begin_epoch(data, np.arange(len(x)), 0)
    for i in range(steps):
        trainer.step(i)
    return plan, trainer, data


def test_trainers_agree_on_a_residual_network_with_fused_softmax():
    """The output is a Dense(softmax) after a residual merge: both trainers
    train on its logits, move every BatchNorm's statistics, and agree."""
    weights = perturbed_weights(RESNET)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, *RESNET.input_shape)).astype(np.float32)
    y = rng.integers(0, RESNET.output_shape[0], size=24).astype(np.int32)
    results = {}
    for backend in ("torch", "jax"):
        plan, trainer, data = _train_steps(backend, RESNET, "cross_entropy", weights, x, y)
        assert plan.fused
        trained = trainer.get_weights()
        # evaluation (on logits) is the cross-entropy of the softmax outputs of the trained weights
        p = specc.run(RESNET, trained, x, backend=backend)
        expected = -np.mean(np.log(p[np.arange(len(y)), y]))
        assert trainer.evaluate(data, 8)["loss"] == pytest.approx(expected, rel=1e-4)
        results[backend] = trained
    for key, value in results["torch"].items():
        assert not np.array_equal(value, weights[key]), f"{key} did not change"
        _close(results["jax"][key], value, 1e-4, key)


def test_torch_trainer_swaps_dropout_and_strips_softmax_in_a_graph():
    from specc.backends.pytorch.train import SeededDropout

    model = GRAPHS["graph_vectors"]  # ... Add -> Dropout -> Dense(softmax)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, 3, size=16).astype(np.int32)
    _, trainer, _ = _train_steps("torch", model, "cross_entropy", perturbed_weights(model), x, y, steps=2)
    assert isinstance(trainer.net.layer("dropout_1"), SeededDropout)
    assert trainer.net.layer("dense_4").act is None
    assert all(np.isfinite(v).all() for v in trainer.get_weights().values())
