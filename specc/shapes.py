"""Pure shape arithmetic for convolutions, pools and transposed convolutions.

All functions work on one spatial axis. Padding is explicit `(low, high)`; 'same'
is resolved here with the TensorFlow/XLA split (the odd pixel goes high), which
is what Keras reports and what every backend must reproduce.
"""

from __future__ import annotations

Pads = tuple[int, int]


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) + 1


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> Pads:
    """TF/XLA 'SAME': output ceil(size/stride), total padding split low-first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_kernel(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def conv_output(size: int, kernel: int, stride: int, dilation: int, pads: Pads) -> int:
    """floor((size + lo + hi - dilation*(k-1) - 1) / stride) + 1 (Keras and PyTorch)."""
    span = size + pads[0] + pads[1] - effective_kernel(kernel, dilation)
    return span // stride + 1 if span >= 0 else 0


def transpose_crop(size: int, kernel: int, stride: int, padding: str) -> Pads:
    """How much of the full transposed-conv output, of length (size-1)*stride +
    kernel, is cropped at each end (a negative amount appends zeros).

    'same' is the exact transpose of a strided 'same' convolution, so output is
    size*stride. 'valid' keeps the full output; when kernel < stride Keras pads
    it to size*stride (keras.ops deconv_output_length), and so do we.
    """
    if padding == "same":
        total = max(kernel - stride, 0)
        low = total // 2
        return low, kernel - stride - low
    return 0, min(kernel - stride, 0)


def transpose_output(size: int, kernel: int, stride: int, crop: Pads) -> int:
    return (size - 1) * stride + kernel - crop[0] - crop[1]
