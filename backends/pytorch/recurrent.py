"""Keras's LSTM and GRU as torch modules, batch first.

- LSTM: nn.LSTM whose second bias `bias_hh_l0` is a zero, non-persistent
  buffer, so the module holds exactly Keras's parameters.
- GRU: nn.GRU as is (reset_after with two biases is torch's own formula);
  gates are reordered in convert.py.
- LSTM/GRU with a cell activation other than tanh run a plain time loop over
  the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import activation_fn


class LSTM(nn.LSTM):
    """nn.LSTM, batch first, holding only Keras's parameters.

    torch's second bias `bias_hh_l0` is a zero, non-persistent buffer, so it is
    neither trained, nor counted, nor saved; `bias_ih_l0` is Keras's one bias.
    """

    def __init__(self, features: int, units: int, return_sequences: bool, activation: str):
        super().__init__(features, units, batch_first=True)
        bias_hh = self.bias_hh_l0.detach().clone().zero_()
        del self.bias_hh_l0
        self.register_buffer("bias_hh_l0", bias_hh, persistent=False)
        self._init_flat_weights()
        self.return_sequences = return_sequences
        self.cell_act = None if activation == "tanh" else activation_fn(activation) or (lambda v: v)

    def forward(self, x):
        if self.cell_act is None:
            out, (h, _) = super().forward(x)
        else:
            out, h = self._loop(x)
        return out if self.return_sequences else h[-1]

    def _loop(self, x):
        n, u = x.shape[0], self.hidden_size
        h = x.new_zeros(n, u)
        c = x.new_zeros(n, u)
        xs = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)
        outs = []
        for t in range(x.shape[1]):
            i, f, g, o = (xs[:, t] + F.linear(h, self.weight_hh_l0)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * self.cell_act(g)
            h = torch.sigmoid(o) * self.cell_act(c)
            outs.append(h)
        return torch.stack(outs, dim=1), h[None]


class GRU(nn.GRU):
    """nn.GRU, batch first: torch's formula is Keras's reset_after GRU, gates r, z, n."""

    def __init__(self, features: int, units: int, return_sequences: bool, activation: str):
        super().__init__(features, units, batch_first=True)
        self.return_sequences = return_sequences
        self.cell_act = None if activation == "tanh" else activation_fn(activation) or (lambda v: v)

    def forward(self, x):
        if self.cell_act is None:
            out, h = super().forward(x)
        else:
            out, h = self._loop(x)
        return out if self.return_sequences else h[-1]

    def _loop(self, x):
        n, u = x.shape[0], self.hidden_size
        h = x.new_zeros(n, u)
        xs = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)
        outs = []
        for t in range(x.shape[1]):
            xr, xz, xn = xs[:, t].chunk(3, dim=-1)
            hr, hz, hn = F.linear(h, self.weight_hh_l0, self.bias_hh_l0).chunk(3, dim=-1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            cand = self.cell_act(xn + r * hn)
            h = z * h + (1 - z) * cand
            outs.append(h)
        return torch.stack(outs, dim=1), h[None]
