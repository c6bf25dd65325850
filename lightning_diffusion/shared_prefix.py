"""Shared trajectory prefixes: sampling runs that differ only in the guidance scale follow one trajectory
while their guidance is the same at every scale (``Guidance.scale_free``: outside a guidance interval,
where a schedule is zero). The network evaluations of that prefix are made once and replayed.

How: a batch's prefix runs once (``record``), its sampler stopped at the first evaluation that depends on
the scale, every network call of it kept with its inputs. Each scale then samples the batch from the
start with the same generator states (``replay``): the solver redoes its own arithmetic and draws its
noise again (so multistep history and generator states are exactly those of an unshared run), while a
network call whose model and inputs (z, t, condition) are bitwise those of the recorded call at the same
position returns the recorded output instead of evaluating. Samples are therefore bit-identical to
unshared runs by construction; the first call that differs (the branch) and every later one evaluate.

The hooks live where network evaluations are counted (``sampling.CountingModel``) and where a guided
denoiser is bound (``sampling.generate``); nothing else changes signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

_active: ContextVar[SharedPrefix | None] = ContextVar("shared_prefix", default=None)


class Branched(Exception):
    """Raised in a recording run at the first evaluation that depends on the scale: the prefix is over."""


@dataclass(frozen=True)
class Call:
    """One recorded network call: the model (by identity), its inputs and its output."""

    model: Any
    z: Tensor
    t: Tensor
    cond: Any
    output: Tensor


@dataclass
class SharedPrefix:
    """The recorded network calls of one batch's shared prefix. ``probe`` stops a recording run at its
    first evaluation, only noting (``shared``) whether the guidance is scale-free there: it costs none."""

    probe: bool = False
    calls: list[Call] = field(default_factory=list)
    shared: bool = False
    _replaying: bool = False
    _position: int = 0

    @property
    def rows(self) -> int:
        """The network rows (samples x evaluations) the prefix spent."""
        return sum(call.z.shape[0] for call in self.calls)

    def guard(self, denoise: Callable[[Tensor, Tensor], Any], model: Any, guidance: Any) -> Callable:
        """``denoise``, stopped with ``Branched`` where ``guidance`` stops being scale-free (recording)."""

        def guarded(z: Tensor, t: Tensor) -> Any:
            if not self._replaying:
                free = guidance.scale_free(model, t)
                self.shared = self.shared or free
                if self.probe or not free:
                    raise Branched
            return denoise(z, t)

        return guarded

    def replayed(self, model: Any, z: Tensor, t: Tensor, cond: Any) -> Tensor | None:
        """The recorded output for this call if it is, bitwise, the next recorded one; None (and no more
        replaying) otherwise."""
        if not self._replaying or self._position >= len(self.calls):
            return None
        call = self.calls[self._position]
        if call.model is not model or not (_same(call.z, z) and _same(call.t, t) and _same(call.cond, cond)):
            self._position = len(self.calls)
            return None
        self._position += 1
        return call.output.clone()

    def record(self, model: Any, z: Tensor, t: Tensor, cond: Any, output: Tensor) -> None:
        """Keep a call made while recording (copies: callers may reuse their tensors)."""
        if not self._replaying:
            self.calls.append(Call(model, z.clone(), t.clone(), _copied(cond), output.clone()))


def active() -> SharedPrefix | None:
    """The prefix being recorded or replayed in this context, if any."""
    return _active.get()


@contextmanager
def _activated(prefix: SharedPrefix | None, replaying: bool) -> Iterator[None]:
    if prefix is not None:
        prefix._replaying, prefix._position = replaying, 0
    token = _active.set(prefix)
    try:
        yield
    finally:
        _active.reset(token)


@contextmanager
def restored(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Run a block, then put ``generators`` back in the states they had before it."""
    states = [generator.get_state() for generator in generators]
    try:
        yield
    finally:
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)


def record(
    sample: Callable[[], Any], generators: Sequence[torch.Generator], probe: bool = False
) -> SharedPrefix:
    """Run ``sample`` until its first scale-dependent evaluation, keeping the network calls before it; the
    generators end in the states they started in."""
    prefix = SharedPrefix(probe=probe)
    with restored(generators), _activated(prefix, replaying=False), suppress(Branched):
        sample()
    return prefix


@contextmanager
def replaying(prefix: SharedPrefix | None) -> Iterator[None]:
    """Within the block, network calls that repeat ``prefix``'s (bitwise, in order) return its outputs."""
    with _activated(prefix, replaying=True):
        yield


def _same(first: Any, second: Any) -> bool:
    """Bitwise equality of call inputs: tensors (dtype, shape, values), mappings, sequences, plain values."""
    if isinstance(first, Tensor) or isinstance(second, Tensor):
        return (
            isinstance(first, Tensor)
            and isinstance(second, Tensor)
            and first.dtype == second.dtype
            and first.device == second.device
            and torch.equal(first, second)
        )
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        return first.keys() == second.keys() and all(_same(first[key], second[key]) for key in first)
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        return len(first) == len(second) and all(_same(a, b) for a, b in zip(first, second, strict=True))
    return type(first) is type(second) and first == second


def _copied(value: Any) -> Any:
    """A copy of a condition whose tensors are cloned (lists and mappings rebuilt)."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item) for item in value)
    return value
