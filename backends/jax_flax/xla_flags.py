"""XLA:CPU settings specc chooses for the user, where measured faster.

jaxlib 0.10 hands f32 convolutions to YNNPACK by default
(`--xla_cpu_experimental_ynn_fusion_type`, default: individual_dot,
individual_convolution, reduce). On the 2-core development machine XLA's own
(Eigen) convolutions train LeNet faster. Measured with
benchmarks/profile_jax_step.py --compare-flags (LeNet, batch 128, jaxlib
0.10.2, child processes alternating with and without, 4 rounds, on a busy
machine, so provisional): the reference Flax step 1.45x and specc's step
1.24x faster with `-individual_convolution` (the issue's first measurement,
on the reference loop: 1.23x). The setting only changes how convolutions are
lowered, so models without a Conv2D/ConvTranspose2D compile to the same code
with or without it (checked: the MLP's and the LSTM's optimised HLO are
identical but for source-line metadata), and `compiler_options` leaves them
alone. Pinned to one core the two convolution libraries cost the same; the
gain is in how they use the second core.

Two ways to apply a setting, both skipped when

- `SPECC_XLA_DEFAULTS=0` (or false/off/no) is in the environment, or
- the user's own `XLA_FLAGS` already names the flag (theirs wins), or
- the installed jaxlib is outside the versions it was measured on (an
  unknown flag in XLA_FLAGS aborts the process, so none is guessed):

1. `compiler_options(model)`: per compiled function, for
   `jax.jit(fn, compiler_options=...)`; only for models holding a layer the
   setting acts on, and only on CPU. Independent of import order: the
   preferred way.
2. `apply_env()`: appends the flags to `XLA_FLAGS`, which XLA reads once,
   when jax starts its CPU backend (the first `jax.devices()` or computation,
   not `import jax`). The backend package calls it when it is imported
   (`specc.backend.get("jax")`), so a `specc` command that has not run any
   jax computation yet gets them; in a process where jax has already started
   (a test session, a notebook), it changes nothing and says so
   (`status()`).

Results: the same model computed with XLA's convolutions instead of
YNNPACK's differs only in float summation order (tests/test_speed_settings.py
checks training with and without against the existing tolerances).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import metadata

OFF_VALUES = ("0", "false", "off", "no")
ENV_SWITCH = "SPECC_XLA_DEFAULTS"


@dataclass(frozen=True)
class Setting:
    flag: str  # the XLA DebugOptions field (the XLA_FLAGS flag without "--")
    env_value: str  # its value as written in XLA_FLAGS
    option_value: str  # the same, as a compiler option (the whole resulting list)
    layers: frozenset[str]  # IR layer kinds whose lowering it changes
    jaxlib: tuple[tuple[int, int], tuple[int, int]]  # measured on jaxlib [from, to) (major, minor)
    measured: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        flag="xla_cpu_experimental_ynn_fusion_type",
        env_value="-individual_convolution",
        # jaxlib 0.10.2's default is INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION,
        # REDUCE; this is it less the convolutions (the same optimised HLO as
        # the XLA_FLAGS spelling, checked).
        option_value="LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
        layers=frozenset({"Conv2D", "ConvTranspose2D"}),
        jaxlib=((0, 10), (0, 11)),
        measured="LeNet train step, batch 128, 2 cores, jaxlib 0.10.2: reference 1.45x, specc 1.24x; "
                 "MLP, LSTM: no convolution, same code",
    ),
)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in OFF_VALUES


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        parts = metadata.version("jaxlib").split(".")
        return int(parts[0]), int(parts[1])
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return None


def user_flags() -> set[str]:
    """Flag names the user's own XLA_FLAGS sets."""
    names = set()
    for word in os.environ.get("XLA_FLAGS", "").split():
        if word.startswith("--"):
            names.add(word[2:].split("=", 1)[0])
    return names


def _layer_kinds(model) -> set[str] | None:
    if model is None:
        return None
    if isinstance(model, (set, frozenset, list, tuple)):
        return set(model)
    return {layer.kind for layer in model.layers}


def applicable(model=None, *, ignore_user: frozenset[str] = frozenset()) -> tuple[Setting, ...]:
    """The settings that apply: switched on, this jaxlib measured, not set by
    the user, and (given a model or a set of layer kinds) acting on one of
    its layers."""
    if not enabled():
        return ()
    version = _jaxlib_version()
    kinds = _layer_kinds(model)
    taken = user_flags() - ignore_user
    return tuple(s for s in SETTINGS
                 if version is not None and s.jaxlib[0] <= version < s.jaxlib[1]
                 and s.flag not in taken
                 and (kinds is None or kinds & s.layers))


def compiler_options(model, platform: str = "cpu") -> dict[str, str]:
    """Per-function options for `jax.jit(fn, compiler_options=...)` for a
    function that runs `model` (an ir.Model, or a set of layer kinds)."""
    if platform != "cpu":
        return {}
    # flags XLA_FLAGS holds because apply_env put them there (not the user's own values)
    words = os.environ.get("XLA_FLAGS", "").split()
    ours = frozenset(name for name in (flag[2:].split("=", 1)[0] for flag in _applied)
                     if [w for w in words if w.startswith(f"--{name}=")] == [f for f in _applied
                                                                               if f.startswith(f"--{name}=")])
    return {s.flag: s.option_value for s in applicable(model, ignore_user=ours)}


_applied: list[str] = []
_state = {"status": "not applied yet"}


def backend_started() -> bool:
    """Whether jax has already started a backend in this process (then
    XLA_FLAGS is read already, and changing it does nothing)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def apply_env() -> list[str]:
    """Append the applicable flags to XLA_FLAGS if jax has not started its
    backend yet; returns the flags this call added. Idempotent."""
    if not enabled():
        _state["status"] = f"off ({ENV_SWITCH}={os.environ.get(ENV_SWITCH)})"
        return []
    ours = {flag[2:].split("=", 1)[0] for flag in _applied}
    settings = [s for s in applicable(ignore_user=frozenset(ours)) if s.flag not in ours]
    if not settings:
        if not _applied:
            _state["status"] = "nothing to apply (set by the user's XLA_FLAGS, or jaxlib not measured)"
        return []
    if backend_started():
        _state["status"] = "jax had started before specc's XLA defaults could be set: not applied"
        return []
    added = [f"--{s.flag}={s.env_value}" for s in settings]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "").strip(), *added]).strip()
    _applied.extend(added)
    _state["status"] = "applied: " + " ".join(_applied)
    return added


def status() -> str:
    """What `apply_env` did in this process, for logs and bug reports."""
    return _state["status"]


__all__ = ["ENV_SWITCH", "SETTINGS", "Setting", "applicable", "apply_env", "backend_started", "compiler_options",
           "enabled", "status", "user_flags"]
