"""The one registry where backends plug in, and what a backend must provide.

Backends live in `backends/` (installed as `specc.backends.<module>`) and are
imported only when asked for, so the front end never loads a framework
(sqlglot's name-to-module map plus importlib).

A backend module provides these functions (canonical weights are the
`dict[str, np.ndarray]` of specc.weights; `x` is a numpy batch, channels-first):

    build(model) -> native module             torch.nn.Module / Flax module
    to_native(model, weights) -> native       backend parameters (exact)
    from_native(model, native) -> weights     canonical weights (exact)
    run(model, weights, x) -> np.ndarray      inference-mode forward
    forward_train(model, weights, x, seed=0) -> (y, weights)
                                              training-mode forward; returns the
                                              output and the weights with updated
                                              BatchNorm moving statistics
    gradients(model, weights, x, target, loss="mse") -> (loss, grads)
                                              loss value and canonical-layout
                                              gradients of the trainable weights
    trainer(model, plan, weights, device, world) -> Trainer
                                              compiled train/eval steps for the
                                              runner (see specc.runner)
    gan_trainer(g, d, plan, g_weights, d_weights, latent, device, world)
                                              the GAN recipe's D-then-G step
    start_world(devices, device, coordinator, num_processes, process_id) -> World
                                              this process's place in a
                                              data-parallel run (specc.distributed)
    PRECISIONS                                the --precision values it runs
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError

BACKENDS = {"jax": "specc.backends.jax_flax", "torch": "specc.backends.pytorch"}
EXTRAS = {"jax": "jax", "torch": "torch"}
FRAMEWORK_MODULES = {"jax": ("jax", "flax", "optax"), "torch": ("torch",)}


class BackendError(UserError):
    """A backend that does not exist or whose framework is not installed."""


def prepare_jax() -> str:
    """Apply specc's XLA:CPU defaults (backends/jax_flax/xla_flags.py) now.

    XLA reads XLA_FLAGS once, when jax starts its backend, so this must run
    before any jax computation in the process; importing the jax backend
    (`get("jax")`) does it too. Call it first thing where other code might
    touch jax earlier. Returns what was done (`xla_flags.status()`).
    """
    from .backends.jax_flax import xla_flags  # imports jax, which does not start a backend

    xla_flags.apply_env()
    return xla_flags.status()


def get(name: str) -> ModuleType:
    if name not in BACKENDS:
        from .diagnostics import suggestion

        hint = suggestion(name, BACKENDS, "backends")
        raise BackendError(f"unknown backend '{name}'" + (f"; {hint}" if hint else ""))
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as err:
        missing = getattr(err, "name", None) or ""
        if missing.split(".")[0] in FRAMEWORK_MODULES[name]:
            raise BackendError(
                f"the {name} backend needs {missing.split('.')[0]}: pip install 'specc[{EXTRAS[name]}]'"
            ) from None
        raise
