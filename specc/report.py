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
from .ir import Model

FLOAT32_BYTES = 4


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

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"


@dataclass(frozen=True)
class Report:
    model: str
    input_shape: tuple[int, ...]
    rows: tuple[Row, ...]

    @classmethod
    def of(cls, model: Model) -> "Report":
        rows = tuple(
            Row(layer.name, layer.kind, layer.output_shape, layer.params, layer.trainable_params, macs(layer),
                layer.attrs.get("activation") if layer.kind in ("Dense", "Conv2D", "ConvTranspose2D") else None)
            for layer in model.layers
        )
        return cls(model.name, model.input_shape, rows)

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
    def _cells(self) -> list[tuple[str, str, str, str]]:
        return [(r.label, batch_shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in self.rows]

    def _footer(self) -> list[str]:
        return [
            f"Total params: {self.total:,} ({readable_bytes(self.total * FLOAT32_BYTES)})",
            f"Trainable params: {self.trainable:,} ({readable_bytes(self.trainable * FLOAT32_BYTES)})",
            f"Non-trainable params: {self.non_trainable:,} ({readable_bytes(self.non_trainable * FLOAT32_BYTES)})",
            f"Mult-Adds per sample: {self.total_macs:,} ({readable_count(self.total_macs)})",
            f"Parameter memory: {readable_bytes(self.param_bytes)} (float32)",
            f"Activation memory per sample: {readable_bytes(self.activation_bytes)} (forward, float32)",
        ]

    def table(self) -> str:
        header = ("Layer (type)", "Output Shape", "Param #", "Mult-Adds")
        cells = self._cells()
        widths = [max([len(header[i])] + [len(c[i]) for c in cells]) + 2 for i in range(4)]
        width = sum(widths)

        def line(c) -> str:
            return (c[0].ljust(widths[0]) + c[1].ljust(widths[1]) + c[2].rjust(widths[2] - 2) + "  "
                    + c[3].rjust(widths[3] - 2)).rstrip()

        shape = "[" + ", ".join(str(d) for d in self.input_shape) + "]"
        out = [f'Model: "{self.model}"  (input {shape})', "_" * width, line(header), "=" * width]
        for i, c in enumerate(cells):
            out.append(line(c))
            out.append("_" * width if i < len(cells) - 1 else "=" * width)
        if not cells:
            out.append("=" * width)
        return "\n".join(out + self._footer())

    def markdown(self) -> str:
        out = [f"**Model: {self.model}**", "", "| Layer (type) | Output Shape | Param # | Mult-Adds |",
               "|---|---|---:|---:|"]
        out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self._cells()]
        return "\n".join(out + [""] + [f"- {line}" for line in self._footer()])

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "layers": [
                {"name": r.name, "type": r.kind, "output_shape": [None, *r.output_shape], "params": r.params,
                 "trainable_params": r.trainable, "mult_adds": r.macs, "activation": r.activation}
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
