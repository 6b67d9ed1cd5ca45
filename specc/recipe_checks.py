"""What a train block's `recipe` needs of the file's models, reported as
diagnostics at the recipe's arguments.

    gan(D, latent=N)       the block's model is the generator G: G takes [N];
                           D is another model of the file; D takes what G
                           outputs and ends in one sigmoid unit. The loss is
                           binary cross-entropy (implied). A GAN reports
                           d_loss, g_loss, d_real and d_fake: `metrics` is
                           ignored, and `patience` is refused (early stopping
                           needs one loss to watch).
    autoencoder(noise=s)   the model outputs its input's shape; the loss
                           compares the reconstruction with the clean input
                           (binary_cross_entropy, mse or mae). `metrics =
                           [accuracy]` gives Keras's binary (per-pixel)
                           accuracy with binary_cross_entropy and is ignored
                           otherwise, as for a supervised regression.
"""

from __future__ import annotations

from typing import Mapping

from . import ast
from .binding import argument_span, option_signature
from .diagnostics import Collector, Span, suggestion
from .ir import Call, Model
from .options import AUTOENCODER_LOSSES, RECIPE_LOSS, RECIPES


def shape_text(shape) -> str:
    return f"[{', '.join(map(str, shape))}]"


class RecipeChecker:
    def __init__(self, out: Collector, models: Mapping[str, Model | None]):
        self.out, self.models = out, models

    def check(self, recipe: Call, setting: ast.Setting, model: Model, seen: Mapping[str, ast.Setting],
              loss: str | None) -> None:
        """`loss`: the block's checked loss, None when it gives none."""
        call = setting.value if isinstance(setting.value, ast.CallExpr) else None

        def at(arg: str | None) -> Span:
            return argument_span(call, option_signature(recipe.name, RECIPES), arg) if call else setting.value.span

        if recipe.name == "gan":
            self.gan(recipe, model, at, seen, loss)
        else:
            self.autoencoder(model, at(None), seen, loss)

    # ------------------------------------------------------------ gan

    def gan(self, recipe: Call, g: Model, at, seen: Mapping[str, ast.Setting], loss: str | None) -> None:
        latent = recipe.args["latent"]
        if tuple(g.input_shape) != (latent,):
            fix = f"use latent={g.input_shape[0]}" if len(g.input_shape) == 1 else f"give it `input [{latent}]`"
            self.out.error(f"gan: latent={latent}, but generator '{g.name}' takes input {shape_text(g.input_shape)}",
                           at("latent"), f"the generator's input is the latent vector: {fix}")
        if loss is not None and loss != RECIPE_LOSS["gan"]:
            self.out.error(f"a gan trains with binary_cross_entropy (real 1, fake 0), not {loss}",
                           seen["loss"].value.span, "remove the loss line: binary_cross_entropy is implied")
        self.not_for(seen, "patience", "patience does not apply to a gan: early stopping needs one loss to watch, "
                                       "and a gan has two")
        d = self.discriminator(recipe.args["discriminator"], g, at("discriminator"))
        if d is None:
            return
        if tuple(d.input_shape) != tuple(g.output_shape):
            self.out.error(f"gan: discriminator '{d.name}' takes input {shape_text(d.input_shape)}, but generator "
                           f"'{g.name}' outputs {shape_text(g.output_shape)}", at("discriminator"),
                           "the discriminator judges the generator's samples: make its input the generator's output")
        if tuple(d.output_shape) != (1,) or d.final_activation != "sigmoid":
            self.out.error(f"gan: discriminator '{d.name}' must end in one sigmoid unit, but it ends in "
                           f"{d.final_activation} with output {shape_text(d.output_shape)}", at("discriminator"),
                           "end it with Dense(1, activation=sigmoid): the probability that its input is real")

    def discriminator(self, name: str, g: Model, span: Span) -> Model | None:
        """The model named as D; None (after reporting, unless its own
        definition failed and was reported) when there is none to check."""
        if name not in self.models:
            others = [m for m in self.models if m != g.name]
            self.out.error(f"gan: no model '{name}' in this file", span,
                           suggestion(name, others, "models") or f"define `model {name} {{ ... }}`, the discriminator")
            return None
        if name == g.name:
            self.out.error(f"gan: the discriminator must be another model than the generator '{g.name}'", span,
                           "name the discriminator model: gan(discriminator, latent=100)")
            return None
        return self.models[name]

    # ------------------------------------------------------------ autoencoder

    def autoencoder(self, model: Model, span: Span, seen: Mapping[str, ast.Setting], loss: str | None) -> None:
        if tuple(model.output_shape) != tuple(model.input_shape):
            self.out.error(f"autoencoder: '{model.name}' outputs {shape_text(model.output_shape)}, but takes "
                           f"{shape_text(model.input_shape)}: a reconstruction must have the input's shape", span,
                           "end the decoder with the input's shape (e.g. Conv2D(1, kernel=3, padding=same, "
                           "activation=sigmoid) for [1, 28, 28])")
        if model.input_dtype != "float32":
            self.out.error(f"autoencoder: '{model.name}' takes {model.input_dtype} tokens; it needs float inputs "
                           "to reconstruct and to add noise to", span)
        if loss is not None and loss not in AUTOENCODER_LOSSES:
            self.out.error(f"an autoencoder compares its reconstruction with the input: {loss} does not apply",
                           seen["loss"].value.span, "use loss = binary_cross_entropy, mse or mae")

    def not_for(self, seen: Mapping[str, ast.Setting], key: str, message: str) -> None:
        s = seen.get(key)
        if s is not None:
            self.out.error(message, s.key_span, f"remove the {key} line")

