"""The PyTorch GAN trainer (`recipe = gan(D, latent=N)`): two modules, two
optimisers, PyTorch's DCGAN example step.

Step semantics, the same on the JAX backend (backends/jax_flax/gan.py):

1. z = specc.noise.gaussian(seed, STREAM_LATENT, step, [size, latent]), where
   `step` counts the GAN steps applied (the generator's optimiser count), and
   fake = G(z): one generator forward per step, in training mode (BatchNorm on
   batch statistics, moving statistics updated once).
2. Discriminator update: d_loss = BCE(D(real), 1) + BCE(D(fake.detach()), 0),
   the sum of the two batch means (the DCGAN example's two backward passes),
   so no gradient reaches G. D's final sigmoid is left out of its network
   (canonical weights are unaffected) and the BCE is the fused logits form.
   d_real and d_fake are the means of sigmoid(D(.)) in this update.
3. Generator update through the updated D (non-saturating): g_loss =
   BCE(D'(fake), 1), backpropagated into G's parameters only (the graph of
   step 1 is reused, so G runs forward once).

D runs three training-mode forwards per step (real, fake, fake again), each
updating its BatchNorm moving statistics in that order. Each model has its
own optimiser from the plan's one `optimizer` (backends/pytorch/optim.py, the
Keras updates), with the plan's learning rate per update. Batch i of an epoch
is order[i*b:(i+1)*b], gathered on the device. The latent noise of a block of
coming steps is drawn on the device in one call and sliced per step (the last
partial batch takes the first rows). Each step's losses are written into a
device buffer; `pull` reads it in one transfer (the only host sync) and finds
the first step whose losses were not finite. Dropout masks come from
specc.noise at (seed, layer, forward, step, sample), as in the supervised
trainer; D's three forwards of a step draw three masks.

On several devices (parallel.py) each rank takes its rows of the global
batch and of its z; G and D each run under DDP with the losses weighted by
the rank's share. G's loss goes through D's module itself, not D's DDP: that
backward computes no D gradient, which D's DDP would wait for. `generate`
needs no other rank (the chief alone draws pictures).

Speed and precision as in the supervised trainer (train.py): channels_last
for both networks' convolutions and the stored real images (`plan.speed`);
torch.compile is not applied, the GAN step runs eagerly. "mixed" precision
runs every forward of the step (and `generate`) under autocast to bfloat16,
with float32 parameters, optimiser state, BatchNorm statistics and losses
(the logits cast to float32). The D update ends one autocast region and G's
loss starts another, so G's loss sees the updated D's weights, not the
bf16 copies autocast cached before the update.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from specc.distributed import SINGLE, World
from specc.ir import Model
from specc.noise import STREAM_LATENT
from specc.plan import Plan, learning_rate, step_key

from .. import gan_pair
from . import convert, parallel
from .layers import build_net
from .noise import gaussian
from .optim import canonical_state, make_update, restore_state
from .steplog import StepLog
from .train import _strip_final_activation, device_of, f32_batch_norm, make_speed, match_layout, precision_context

GENERATE_BATCH = 512  # generate() runs G in chunks of this many latent vectors
NOISE_BLOCK = 32  # steps of latent noise drawn in one call
METRICS = ("d_loss", "g_loss", "d_real", "d_fake")


class _Side:
    """One model of the pair: its network, trainable parameters and optimiser."""

    def __init__(self, model: Model, weights, plan: Plan, device: torch.device, clock: parallel.DropoutClock,
                 first_slot: int, logits: bool, world: World):
        self.model = model
        net = build_net(model)
        net.load_state_dict(convert.to_native(model, weights), strict=True)
        self.next_slot = parallel.seeded_dropout(net, clock, first_slot)
        parallel.global_batch_norm(net, world)
        if logits and model.final_activation == "sigmoid":
            _strip_final_activation(net, model)
        self.net = net.to(device).train()  # the module itself: weights, generate, G's loss through D
        # channels_last before DDP and the optimiser; no torch.compile for the GAN (it runs eagerly)
        self.speed = make_speed(self.net, plan, world, eager="the GAN trainer runs eagerly")
        if plan.precision != "f32":
            f32_batch_norm(self.net)
        self.forward = parallel.data_parallel(self.net, world)
        self.named_params = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.update = make_update(plan.optimizer.name, dict(plan.optimizer.args), self.params)
        self.optimizer = self.update.optimizer

    def apply(self, loss: torch.Tensor, lr: float, t: int) -> None:
        """Backpropagate `loss` into this model's parameters only, then update them."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.params)
        self.update.prepare(lr, t)
        self.optimizer.step()


def bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean binary cross-entropy of logits against a constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


class GanTrainer:
    """specc.runner's GAN trainer protocol on one device (see the module docstring)."""

    def __init__(self, generator: Model, discriminator: Model, plan: Plan, g_weights, d_weights, latent: int,
                 device: str = "cpu", world: World = SINGLE):
        gan_pair.check_gan_pair(generator, discriminator, latent)
        self.plan, self.latent, self.world = plan, int(latent), world
        self.device = device_of(device)
        self.clock = parallel.DropoutClock(plan.seed, plan.batch, self.device)
        self.g = _Side(generator, g_weights, plan, self.device, self.clock, 0, logits=False, world=world)
        self.d = _Side(discriminator, d_weights, plan, self.device, self.clock, self.g.next_slot, logits=True,
                       world=world)
        self.sides = {"generator": self.g, "discriminator": self.d}
        self.autocast = precision_context(self.device, plan.precision)
        self.steps = 0  # GAN steps applied: each optimiser's update count, the noise counter
        self.log = StepLog(len(METRICS), 2, plan.steps_per_epoch, self.device)
        self._noise: torch.Tensor | None = None  # latent noise of steps [_noise_from, _noise_from + NOISE_BLOCK)
        self._noise_from = -1
        self._data: torch.Tensor | None = None
        self._order: torch.Tensor | None = None
        self._epoch_size = 0

    # ------------------------------------------------------------ data

    def put(self, x: np.ndarray) -> torch.Tensor:
        x = np.ascontiguousarray(x, dtype=np.float32)
        shape = tuple(self.d.model.input_shape)
        if x.shape[1:] != shape:
            raise ValueError(f"the discriminator takes images of shape {list(shape)}, got {list(x.shape[1:])}")
        return self.d.speed.data(torch.from_numpy(x).to(self.device))

    def begin_epoch(self, data: torch.Tensor, order: np.ndarray, epoch: int) -> None:
        self._data = data
        self._order = torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)).to(self.device)
        self._epoch_size = len(order)

    def _latent(self, size: int) -> torch.Tensor:
        """This step's z (the first `size` rows of a full batch's noise)."""
        s = self.steps
        if self._noise is None or not self._noise_from <= s < self._noise_from + NOISE_BLOCK:
            steps = torch.arange(s, s + NOISE_BLOCK, dtype=torch.int64, device=self.device)
            self._noise = gaussian(self.plan.seed, STREAM_LATENT, steps, (self.plan.batch, self.latent), self.device)
            self._noise_from = s
        return self._noise[s - self._noise_from, :size]

    # ------------------------------------------------------------ training

    def step(self, i: int) -> None:
        b = self.plan.batch
        size = min(b, self._epoch_size - i * b)  # the global batch
        (lo, hi), = parallel.rows([size], self.world)  # this rank's rows of it
        real = self.d.speed.gather(self._data, self._order[i * b + lo:i * b + hi])
        clock, s = self.clock, self.steps
        lr, t, share = learning_rate(self.plan, s), s + 1, parallel.share(hi - lo, size, self.world)
        with self.autocast():  # ends before D's update (autocast caches its casts of the weights)
            clock.at(s, lo, hi, 0)
            fake = self.g.forward(self._latent(size)[lo:hi])
            l_real = self.d.forward(real)
            clock.at(s, lo, hi, 1)
            l_fake = self.d.forward(fake.detach())
        l_real, l_fake = l_real.float(), l_fake.float()  # the losses in float32 (no-ops in f32)
        d_loss = bce(l_real, 1.0) + bce(l_fake, 0.0)
        self.d.apply(d_loss * share, lr, t)
        clock.at(s, lo, hi, 2)
        with self.autocast():
            l_again = self.d.net(fake)
        g_loss = bce(l_again.float(), 1.0)
        self.g.apply(g_loss * share, lr, t)
        with torch.no_grad():
            values = torch.stack([d_loss, g_loss, torch.sigmoid(l_real).mean(), torch.sigmoid(l_fake).mean()])
        self.log.record(values if hi > lo else torch.zeros_like(values), hi - lo, s)
        self.steps += 1

    def pull(self) -> dict:
        sums, samples, bad_step, bad_row = parallel.reduce_log(self.world, self.log.pull(), self.device)  # the one sync
        out = {name: float(sums[k]) / max(samples, 1) for k, name in enumerate(METRICS)}
        bad_value = None
        if bad_row is not None:
            value = bad_row[0] if not np.isfinite(bad_row[0]) else bad_row[1]
            bad_value = "nan" if np.isnan(value) else "inf" if value > 0 else "-inf"
        return {**out, "samples": samples, "bad_step": bad_step, "bad_value": bad_value}

    # ------------------------------------------------------------ inference

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Inference-mode G(z) (BatchNorm on moving statistics), channels-first numpy."""
        z = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32).reshape(-1, self.latent))
        net = self.g.net
        net.eval()
        try:
            with torch.inference_mode(), self.autocast():
                parts = [net(z[s:s + GENERATE_BATCH].to(self.device)).float().cpu().numpy()
                         for s in range(0, len(z), GENERATE_BATCH)]
        finally:
            net.train()
        shape = (0, *self.g.model.output_shape)
        return np.ascontiguousarray(np.concatenate(parts), np.float32) if parts else np.zeros(shape, np.float32)

    def describe_speed(self) -> str:
        """The speed and precision settings in effect, in words."""
        return (f"generator: {self.g.speed.describe()}; discriminator: {self.d.speed.describe()}; "
                f"precision {self.plan.precision}")

    # ------------------------------------------------------------ weights and optimiser state

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        return {role: convert.from_native(side.model, side.net) for role, side in self.sides.items()}

    def set_weights(self, groups: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        with torch.no_grad():
            for role, side in self.sides.items():
                side.net.load_state_dict(convert.to_native(side.model, groups[role]), strict=True)

    def get_optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        call = self.plan.optimizer
        return {role: canonical_state(side.model, call, side.optimizer, side.named_params, self.steps)
                for role, side in self.sides.items()}

    def set_optimizer_state(self, groups: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Restore both states; the generator's update count is the step
        counter (noise, learning rate, Adam's t), so a resumed run goes on exactly."""
        call = self.plan.optimizer
        for role, side in self.sides.items():
            restore_state(side.model, call, side.optimizer, side.named_params, groups[role])
            match_layout(side.optimizer, side.params)
        self.steps = int(np.asarray(groups["generator"][step_key(call)]))
        self._noise = None  # drawn again from the restored step
