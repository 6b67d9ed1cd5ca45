"""specc: a declarative model-spec compiler.

Write a network once as a short text spec; specc checks it into a typed IR with
shape inference, reports parameters exactly as Keras does, lowers it to
JAX/Flax or PyTorch, and trains it with one shared runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ir
from .backend import BackendError
from .diagnostics import Diagnostic, SpecError
from .weights import init_weights, load_weights, save_weights

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BackendError",
    "Diagnostic",
    "SpecError",
    "build",
    "init_weights",
    "ir",
    "load",
    "load_weights",
    "loads",
    "run",
    "save_weights",
    "summary",
]
__version__ = "0.1.0"


def load(path) -> "ir.Program":
    """Parse and check a spec file; raises SpecError listing every mistake."""
    from .check import check_file

    return check_file(path)


def loads(text: str, filename: str = "<string>") -> "ir.Program":
    """Parse and check spec text; raises SpecError listing every mistake."""
    from .check import check_text

    return check_text(text, filename)


def summary(model: "ir.Model"):
    """The parameter report: str() is Keras's table, .to_dict() the JSON form."""
    from .report import Report

    return Report.of(model)


def build(model: "ir.Model", backend: str = "torch"):
    """The backend's native module for this model (torch.nn.Module, Flax module)."""
    from .backend import get

    return get(backend).build(model)


def run(model: "ir.Model", weights, x: "np.ndarray", backend: str = "torch") -> "np.ndarray":
    """Inference-mode forward pass: numpy in, numpy out."""
    from .backend import get

    return get(backend).run(model, weights, x)
