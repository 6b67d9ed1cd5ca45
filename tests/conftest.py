"""Shared test machinery: golden files.

Golden files live under tests/golden/ and hold the exact output of one stage
(`specc summary`, `specc ir`, the diagnostics of a bad spec, ...). They are
rewritten only on request:

    pytest --update-golden        # rewrite every golden file a test touches, and pass

Without the flag a missing golden file fails (it is never created silently) and
a different one fails with a unified diff and the file's path. Review the
rewritten files in `git diff` before committing them.

Fixtures:
- `golden(path, actual)`: compare text (str) or raw bytes with a golden file.
- `golden_arrays(path, arrays, rtol=..., atol=...)`: compare a dict of numpy
  arrays with a golden .npz (no pickle; keys, shapes and dtypes exact, values
  within tolerance).
- `update_golden`: True when --update-golden was given, for tests that manage
  their own golden formats (they must follow the same rules).

A relative `path` is taken relative to tests/golden/.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

# Keras (a test-only oracle) runs on JAX; without this it looks for TensorFlow
# and `import keras` fails (pytest.importorskip("keras") would skip silently).
os.environ.setdefault("KERAS_BACKEND", "jax")

TESTS_DIR = Path(__file__).resolve().parent
GOLDEN_DIR = TESTS_DIR / "golden"
REPO_ROOT = TESTS_DIR.parent

MAX_DIFF_LINES = 200


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden files under tests/golden/ from the current output, and pass",
    )


def golden_path(path) -> Path:
    """Where a golden file lives: relative paths are under tests/golden/."""
    p = Path(path)
    return p if p.is_absolute() else GOLDEN_DIR / p


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _missing(path: Path) -> None:
    pytest.fail(f"golden file {_shown(path)} does not exist; run pytest with --update-golden to create it, "
                "then review it", pytrace=False)


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return  # leave the file (and its mtime) alone
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def check_golden(path, actual: str | bytes, update: bool) -> None:
    """Compare `actual` with the golden file at `path` (see the module docs)."""
    path = golden_path(path)
    data = actual.encode("utf-8") if isinstance(actual, str) else bytes(actual)
    if update:
        _write_if_changed(path, data)
        return
    if not path.exists():
        _missing(path)
    expected = path.read_bytes()
    if expected == data:
        return
    if isinstance(actual, str):
        try:
            expected_text = expected.decode("utf-8")
        except UnicodeDecodeError:
            pytest.fail(f"golden file {_shown(path)} is not UTF-8 text", pytrace=False)
        diff = list(difflib.unified_diff(
            expected_text.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"{_shown(path)} (golden)", tofile="actual output",
        ))
        if len(diff) > MAX_DIFF_LINES:
            diff = diff[:MAX_DIFF_LINES] + [f"... ({len(diff) - MAX_DIFF_LINES} more diff lines)\n"]
        body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff)
        pytest.fail(f"output differs from golden file {_shown(path)} "
                    f"(rerun with --update-golden if the change is intended):\n{body}", pytrace=False)
    first = next((i for i, (a, b) in enumerate(zip(expected, data)) if a != b), min(len(expected), len(data)))
    pytest.fail(f"bytes differ from golden file {_shown(path)}: golden has {len(expected)} bytes, actual "
                f"{len(data)}; first difference at offset {first} (rerun with --update-golden if intended)",
                pytrace=False)


def check_golden_arrays(path, arrays, update: bool, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Compare a dict of numpy arrays with a golden .npz file (see the module docs)."""
    import io

    import numpy as np

    path = golden_path(path)
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    if update:
        buf = io.BytesIO()
        np.savez(buf, **dict(sorted(arrays.items())))
        if path.exists():
            with np.load(path, allow_pickle=False) as old:
                same = sorted(old.files) == sorted(arrays) and all(
                    old[k].dtype == arrays[k].dtype and old[k].shape == arrays[k].shape
                    and np.array_equal(old[k], arrays[k]) for k in arrays)
            if same:
                return
        _write_if_changed(path, buf.getvalue())
        return
    if not path.exists():
        _missing(path)
    problems = []
    with np.load(path, allow_pickle=False) as expected:
        missing, extra = sorted(set(expected.files) - set(arrays)), sorted(set(arrays) - set(expected.files))
        if missing:
            problems.append(f"missing arrays: {', '.join(missing)}")
        if extra:
            problems.append(f"arrays not in the golden file: {', '.join(extra)}")
        for key in sorted(set(expected.files) & set(arrays)):
            want, got = expected[key], arrays[key]
            if want.shape != got.shape or want.dtype != got.dtype:
                problems.append(f"{key}: golden {want.dtype}{list(want.shape)}, actual {got.dtype}{list(got.shape)}")
            elif not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
                err = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))
                problems.append(f"{key}: values differ (max abs difference {err:.3g}, rtol={rtol}, atol={atol})")
    if problems:
        pytest.fail(f"arrays differ from golden file {_shown(path)} (rerun with --update-golden if intended):\n  "
                    + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def update_golden(request) -> bool:
    """True when pytest was run with --update-golden."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def golden(update_golden):
    """`golden(path, actual)`: compare str or bytes output with tests/golden/<path>."""

    def check(path, actual: str | bytes) -> None:
        check_golden(path, actual, update_golden)

    return check


@pytest.fixture
def golden_arrays(update_golden):
    """`golden_arrays(path, {name: array}, rtol=1e-6, atol=1e-6)`: compare with a golden .npz."""

    def check(path, arrays, rtol: float = 1e-6, atol: float = 1e-6) -> None:
        check_golden_arrays(path, arrays, update_golden, rtol=rtol, atol=atol)

    return check
