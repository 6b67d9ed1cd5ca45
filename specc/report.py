"""The parameter report: Keras's summary table, plus what Keras lacks.

Computing is kept apart from formatting (as torchinfo does): `Report.of`
builds plain rows from the IR, and `table()`, `markdown()` and `to_dict()`
only format them. Counts come from the IR, so they equal Keras's
`count_params()` whatever a backend's native parameterisation is.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .catalogue import macs
from .ir import INPUT, Model

FLOAT32_BYTES = 4
HEADER = ("Layer (type)", "Output Shape", "Param #", "Mult-Adds")


def readable_bytes(n: int) -> str:
    """Keras's readable_memory_size: binary units named B, KB, MB, GB."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def readable_count(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def batch_shape(shape) -> str:
    return "(None, " + ", ".join(str(d) for d in shape) + ")" if shape else "(None,)"


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int
    macs: int
    activation: str | None  # `activation=` reported on the same row, as Keras does
    inputs: tuple[str, ...] = ()  # the nodes it reads (INPUT: the model input)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def connected(self) -> list[str]:
        """Keras's "Connected to": `conv2d_1[0][0]`, one per input."""
        return [f"{name}[0][0]" for name in self.inputs]


@dataclass(frozen=True)
class Report:
    model: str
    input_shape: tuple[int, ...]
    rows: tuple[Row, ...]
    graph: bool = False  # not a plain stack: shown like Keras's functional summary

    @classmethod
    def of(cls, model: Model) -> "Report":
        rows = tuple(
            Row(layer.name, layer.kind, layer.output_shape, layer.params, layer.trainable_params, macs(layer),
                layer.attrs.get("activation") if layer.kind in ("Dense", "Conv2D", "ConvTranspose2D") else None,
                layer.inputs)
            for layer in model.layers
        )
        return cls(model.name, model.input_shape, rows, not model.is_sequential)

    # ------------------------------------------------------------ totals
    @property
    def total(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def param_bytes(self) -> int:
        return self.total * FLOAT32_BYTES

    @property
    def activation_bytes(self) -> int:
        """Forward activations of one sample (every layer's output, float32)."""
        return sum(prod(r.output_shape) for r in self.rows) * FLOAT32_BYTES

    # ------------------------------------------------------------ formats
    def _cells(self) -> list[tuple[str, ...]]:
        """One tuple of cells per line of the table; a graph's nodes get a
        "Connected to" cell and continuation lines for their further inputs."""
        if not self.graph:
            return [(r.label, batch_shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in self.rows]
        cells = [(f"{INPUT} (InputLayer)", batch_shape(self.input_shape), "0", "0", "-")]
        for r in self.rows:
            connected = r.connected
            cells.append((r.label, batch_shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}",
                          connected[0] + ("," if len(connected) > 1 else "")))
            cells += [("", "", "", "", c + ("," if i < len(connected) - 1 else ""))
                      for i, c in enumerate(connected[1:], start=1)]
        return cells

    def _footer(self) -> list[str]:
        return [
            f"Total params: {self.total:,} ({readable_bytes(self.total * FLOAT32_BYTES)})",
            f"Trainable params: {self.trainable:,} ({readable_bytes(self.trainable * FLOAT32_BYTES)})",
            f"Non-trainable params: {self.non_trainable:,} ({readable_bytes(self.non_trainable * FLOAT32_BYTES)})",
            f"Mult-Adds per sample: {self.total_macs:,} ({readable_count(self.total_macs)})",
            f"Parameter memory: {readable_bytes(self.param_bytes)} (float32)",
            f"Activation memory per sample: {readable_bytes(self.activation_bytes)} (forward, float32)",
        ]

    def _header(self) -> tuple[str, ...]:
        return HEADER + (("Connected to",) if self.graph else ())

    def table(self) -> str:
        header = self._header()
        cells = self._cells()
        n = len(header)
        widths = [max([len(header[i])] + [len(c[i]) for c in cells]) + 2 for i in range(n)]
        width = sum(widths)

        def line(c) -> str:
            text = (c[0].ljust(widths[0]) + c[1].ljust(widths[1]) + c[2].rjust(widths[2] - 2) + "  "
                    + c[3].rjust(widths[3] - 2))
            return (text + ("  " + c[4] if n > 4 else "")).rstrip()

        shape = "[" + ", ".join(str(d) for d in self.input_shape) + "]"
        out = [f'Model: "{self.model}"  (input {shape})', "_" * width, line(header), "=" * width]
        for i, c in enumerate(cells):
            out.append(line(c))
            last = i == len(cells) - 1
            if last or cells[i + 1][0]:  # a rule after each node, not between its inputs
                out.append("=" * width if last else "_" * width)
        if not cells:
            out.append("=" * width)
        return "\n".join(out + self._footer())

    def markdown(self) -> str:
        header = self._header()
        out = [f"**Model: {self.model}**", "", "| " + " | ".join(header) + " |",
               "|---|---|---:|---:|" + ("---|" if self.graph else "")]
        if self.graph:  # one row per node, its inputs in one cell
            rows = [(f"{INPUT} (InputLayer)", batch_shape(self.input_shape), "0", "0", "-")]
            rows += [(r.label, batch_shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}", ", ".join(r.connected))
                     for r in self.rows]
        else:
            rows = self._cells()
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out + [""] + [f"- {line}" for line in self._footer()])

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "layers": [
                {"name": r.name, "type": r.kind, "output_shape": [None, *r.output_shape], "params": r.params,
                 "trainable_params": r.trainable, "mult_adds": r.macs, "activation": r.activation,
                 "inputs": list(r.inputs)}
                for r in self.rows
            ],
            "total_params": self.total,
            "trainable_params": self.trainable,
            "non_trainable_params": self.non_trainable,
            "mult_adds": self.total_macs,
            "param_bytes": self.param_bytes,
            "activation_bytes_per_sample": self.activation_bytes,
        }

    def __str__(self) -> str:
        return self.table()
