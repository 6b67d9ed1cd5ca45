"""The built network: a torch module that runs an IR model's nodes in order.

`Net` holds one submodule per IR node, named after it (`module_names` is the
one place that decides the submodule names, so state_dict keys are
"<node name>.<param>", e.g. "basic_1/conv2d_1.weight"). A sequential model
(every node reads the one before) runs as a plain loop over the submodules,
exactly what nn.Sequential does; a graph runs its nodes in topological order
over a name -> tensor map, dropping each tensor after its last reader, so an
inference pass keeps only the values still needed. Without gradients (eval,
`specc.run`), activation layers and Add write into a value that nothing else
can see any more, as a hand-written ResNet's in-place `+=` and ReLU do.

Submodules are looked up in `_modules` on every call (as nn.Sequential does),
so swapping one (the trainer's seeded Dropout, an identity instead of the
final activation) changes what the forward runs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from specc.ir import INPUT, Model


class _Shared:
    """Holds the frozen IR model so copy.deepcopy(net) shares it instead of
    copying it (the IR's read-only mappings cannot be deep-copied)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __deepcopy__(self, memo):
        return self


class Step(NamedTuple):
    """One node of a graph forward."""

    node: str  # IR node name: the key of its output in the value map
    module: str  # its submodule's name
    inputs: tuple[str, ...]  # node names it reads, in order (INPUT: the model input)
    release: tuple[str, ...]  # values no later node reads, dropped after this one


def _schedule(model: Model, modules: list[str]) -> tuple[Step, ...]:
    last_reader = {name: i for i, layer in enumerate(model.layers) for name in layer.inputs}
    return tuple(
        Step(layer.name, module, layer.inputs,
             tuple(name for name in dict.fromkeys(layer.inputs) if last_reader[name] == i))
        for i, (layer, module) in enumerate(zip(model.layers, modules)))


class Net(nn.Module):
    """The built network; `net.specc_model` is the IR model, `net.layer(name)`
    the submodule lowered from IR node `name`.

    A node name that would shadow an nn.Module attribute (`train`, `forward`,
    ...) gets a trailing underscore; `net.module_names` maps IR names to
    submodule names.
    """

    def __init__(self, model: Model, modules: dict[str, nn.Module]):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self._specc_model = _Shared(model)
        self.module_names = dict(zip((layer.name for layer in model.layers), modules))
        # None: a plain stack, run as nn.Sequential runs
        self._steps = None if model.is_sequential else _schedule(model, list(modules))
        self._infer_steps = self._steps or _chain(list(modules))

    @property
    def specc_model(self) -> Model:
        return self._specc_model.value

    def layer(self, name: str) -> nn.Module:
        """The submodule lowered from the IR node called `name`."""
        return self._modules[self.module_names.get(name, name)]

    def forward(self, x):
        if not torch.is_grad_enabled() and not torch.compiler.is_compiling():  # no autograd: values may be overwritten
            return self._infer(x)
        if self._steps is None:
            for module in self._modules.values():
                x = module(x)
            return x
        values, modules = {INPUT: x}, self._modules
        for step in self._steps:
            y = modules[step.module](*[values[name] for name in step.inputs])
            for name in step.release:
                del values[name]
            values[step.node] = y
        return y

    def _infer(self, x):
        """forward without gradients: a module with a `forward_inplace` (an
        activation layer, Add) writes into its first input when no other
        value still needed (nor the caller's input) shares its memory, as a
        hand-written ResNet's `out += identity; relu_(out)` does."""
        storage = {INPUT: _storage(x)}
        values, modules = {INPUT: x}, self._modules
        for step in self._infer_steps:
            module, args = modules[step.module], [values[name] for name in step.inputs]
            for name in step.release:
                del values[name]
            kept = {storage[name] for name in values} | {storage[INPUT]} | {_storage(a) for a in args[1:]}
            if hasattr(module, "forward_inplace") and _storage(args[0]) not in kept \
                    and args[0].is_contiguous(memory_format=_format(args[0])):
                y = module.forward_inplace(*args)
            else:
                y = module(*args)
            values[step.node], storage[step.node] = y, _storage(y)
        return y


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and not t.is_contiguous() else torch.contiguous_format


def _chain(names: list[str]) -> tuple[Step, ...]:
    """A plain stack as graph steps: each reads the one before, which it releases."""
    return tuple(Step(name, name, (before,), (before,)) for before, name in zip([INPUT, *names], names))


_RESERVED = set(dir(Net)) | set(vars(nn.Module())) | {"_specc_model", "module_names", "_steps", "_infer_steps"}


def module_names(model: Model) -> list[str]:
    """Submodule name of each IR node, in order: the node name, unless it
    would clash with an nn.Module attribute or holds a "." (which torch
    reserves for paths): then "." becomes "_" and underscores are appended
    until the name is free."""
    names: list[str] = []
    taken = {layer.name for layer in model.layers}
    for layer in model.layers:
        name = layer.name
        if name in _RESERVED or "." in name:
            name = name.replace(".", "_") + "_"
            while name in taken or name in _RESERVED:
                name += "_"
            taken.add(name)
        names.append(name)
    return names


def build_net(model: Model) -> Net:
    """The network with framework-default parameter values (callers load weights)."""
    from .layers import lower  # layers re-exports this module's names

    return Net(model, {name: lower(layer) for name, layer in zip(module_names(model), model.layers)})
