"""What a GAN step needs of its two models, checked by both backends' GAN
trainers before they build anything (framework-free; the recipe's checker
reports the same faults to users as diagnostics first)."""

from __future__ import annotations

from specc.ir import Model


def check_gan_pair(generator: Model, discriminator: Model, latent: int) -> None:
    """ValueError unless G takes [latent], D takes G's output and D ends in one
    sigmoid unit (or one linear unit, already a logit)."""
    if tuple(generator.input_shape) != (int(latent),):
        raise ValueError(f"generator {generator.name} takes {list(generator.input_shape)}, not [latent={latent}]")
    if tuple(discriminator.input_shape) != tuple(generator.output_shape):
        raise ValueError(f"discriminator {discriminator.name} takes {list(discriminator.input_shape)}, "
                         f"but generator {generator.name} makes {list(generator.output_shape)}")
    if tuple(discriminator.output_shape) != (1,) or discriminator.final_activation not in ("sigmoid", "linear"):
        raise ValueError(f"discriminator {discriminator.name} must end in one sigmoid unit")
