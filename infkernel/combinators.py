"""Branching combinators with neural-tangents semantics: ``FanOut``,
``parallel``, ``FanInSum``, ``FanInProd``, ``FanInConcat``, and residual blocks.

Between ``FanOut(n)`` and a fan-in the signal is a list of branches; each
branch lives in its own kernel register (``OP_COPY``), ``parallel`` runs one
layer per branch, and the fan-ins combine registers with ``OP_AXPY``:

* ``FanInSum``:  Σ = Σ_i Σ_i,  Θ = Σ_i Θ_i.  Exact in the infinite-width
  limit when the cross terms h_iᵀh_j'/n vanish, i.e. when every branch but
  at most one ends in a Dense layer of its own (zero-mean weights independent
  of the other branches); anything else (two identical ``Identity`` branches,
  a sum of two activations) is refused, as neural-tangents refuses sums of
  non-Gaussian branches.
* ``FanInProd``:  Σ = Π_i Σ_i,  Θ = Σ_i Θ_i Π_{j≠i} Σ_j (``OP_MUL``), exact
  for independent branches, which need not have zero mean: at most one
  branch without a Dense layer of its own after ``FanOut`` (activations may
  follow it).  A product of Gaussians is not Gaussian, so an activation may
  not follow it directly.
* ``FanInConcat`` (channel axis): Σ = Σ_i n_i Σ_i / Σ_i n_i and the same for Θ
  (channel-averaged inner products; n_i the branch widths); exact for any
  branches.  The result is not Gaussian channel-wise (branches differ), so an
  activation may not follow it directly; a Dense layer may, with fan-in Σ n_i.

A residual block is ``serial(FanOut(2), parallel(Identity(), block),
FanInSum())`` (``Residual(block)``).
"""
from dataclasses import dataclass

import numpy as np

from . import _program as P
from ._checks import count, real
from .layers import (Layer, Network, _apply_layers, _Branches, _compile, serial,
                     unpacked_network)


def _as_layers(layer, where):
    layer = unpacked_network(layer)
    if isinstance(layer, Network):
        if layer.input_maps:
            raise ValueError(f"{where}: input maps (Fourier features) must come first in the "
                             "whole network, not inside a branch")
        return layer.layers
    if isinstance(layer, Layer):
        return (layer,)
    raise TypeError(f"{where}: expected a layer or a network, got {type(layer).__name__}")


def _alloc(builder):
    """A free kernel register (released by fan-ins), else a new one."""
    free = builder.__dict__.setdefault("_free_regs", [])
    return free.pop() if free else builder.new_register()


def _release(builder, reg):
    if reg != 0:
        builder.__dict__.setdefault("_free_regs", []).append(reg)


def _need_branches(layer, state):
    if not isinstance(state, _Branches):
        raise ValueError(f"{layer!r} expects parallel branches, got a single signal: "
                         "put FanOut(n) (and parallel(...)) before it")


@dataclass(frozen=True)
class FanOut(Layer):
    """n copies of the signal, to be fed to ``parallel`` branches."""
    num: int
    _takes_branches = False

    def __post_init__(self):
        object.__setattr__(self, "num", count("FanOut: num", self.num))

    def _emit(self, builder, state):
        split = len(builder.ops)
        states = [state]
        for _ in range(self.num - 1):
            s = state.copy()
            s.reg = _alloc(builder)
            builder.emit(P.OP_COPY, state.reg, s.reg)
            states.append(s)
        return _Branches(states, split)

    def _init(self, rng, in_dim):
        return [in_dim] * self.num, ()

    def _apply(self, params, h):
        return [h] * self.num


class parallel(Layer):
    """Apply ``layers[i]`` (a layer or ``serial(...)`` network) to branch i."""
    _takes_branches = True

    def __init__(self, *layers):
        if not layers:
            raise ValueError("parallel: expected at least one layer")
        self.branches = tuple(_as_layers(l, f"parallel: argument {i}")
                              for i, l in enumerate(layers))
        #: per branch: None for a single layer, else its network's nesting
        self.branch_nesting = tuple(getattr(unpacked_network(l), "nesting", None)
                                    for l in layers)
        self._reprs = tuple(repr(unpacked_network(l)) for l in layers)

    def __repr__(self):
        return "parallel(" + ", ".join(self._reprs) + ")"

    def __eq__(self, other):
        return isinstance(other, parallel) and self.branches == other.branches

    def __hash__(self):
        return hash(self.branches)

    def _emit(self, builder, state):
        _need_branches(self, state)
        if len(state) != len(self.branches):
            raise ValueError(f"{self!r} has {len(self.branches)} branches but receives "
                             f"{len(state)} (FanOut({len(state)}))")
        out = []
        for i, (layers, s) in enumerate(zip(self.branches, state)):
            s = _compile(layers, builder, s)
            if isinstance(s, _Branches):
                raise ValueError(f"parallel: branch {i} ends with {len(s)} parallel "
                                 "branches of its own: merge them inside the branch")
            out.append(s)
        return _Branches(out, state.split)

    def _init(self, rng, in_dim):
        if not isinstance(in_dim, list) or len(in_dim) != len(self.branches):
            raise ValueError(f"{self!r} needs {len(self.branches)} inputs (use FanOut)")
        dims, params = [], []
        for layers, d in zip(self.branches, in_dim):
            ps = []
            for layer in layers:
                d, p = layer._init(rng, d)
                ps.append(p)
            dims.append(d)
            params.append(tuple(ps))
        return dims, tuple(params)

    _takes_rng = True   # a branch may hold Dropout

    def _apply(self, params, h, rng=None):     # params checked by empirical.check_params
        return [_apply_layers(layers, ps, x, rng)
                for layers, ps, x in zip(self.branches, params, h)]


def _check_widths(layer, state):
    widths = [s.width for s in state]
    if any(w is None for w in widths):
        raise ValueError(f"{layer!r}: a branch has infinitely many features (an "
                         "infinite-feature map); merge finite branches only")
    return widths


def _independent_branches(layer, state, combined, since_split):
    """Checks for a fan-in that combines branches entry by entry: equal widths,
    and at most one branch whose ``since_split`` state attribute (an op index,
    ``born`` or ``last_dense``) is older than the split."""
    name = type(layer).__name__
    widths = _check_widths(layer, state)
    if len(set(widths)) > 1:
        raise ValueError(f"{name}: the branches have different widths {widths}; {combined} "
                         "signals must have equal widths (end each branch with a Dense "
                         "layer of the same out_dim)")
    stale = [i for i, s in enumerate(state) if getattr(s, since_split) < state.split]
    if len(state) > 1 and len(stale) > 1:
        need = ("end in a Dense layer of their own, so they are correlated (or not "
                "mean-zero)" if since_split == "born" else
                "have a Dense layer of their own after FanOut, so they are correlated")
        raise ValueError(
            f"{name}: branches {stale} do not {need} and the kernel of the {combined} "
            "signal is not formed from theirs; at most one branch (e.g. the Identity "
            "shortcut of a residual block) may do so")


def _merge_states(state, gaussian, because):
    """The first branch's state, updated to describe the merged signal."""
    out = state[0]
    out.gaussian = gaussian
    out.at_input = all(s.at_input for s in state)
    if len(state) > 1 and not gaussian:
        out.not_gaussian_because = because
    out.born = -1 if any(s.born < 0 for s in state) else min(s.born for s in state)
    out.last_dense = min(s.last_dense for s in state)
    return out


def _init_equal(layer, in_dim):
    name = type(layer).__name__
    if not isinstance(in_dim, list):
        raise ValueError(f"{name} needs several inputs (use FanOut)")
    if len(set(in_dim)) > 1:
        raise ValueError(f"{name}: the branches have different widths {in_dim}")
    return in_dim[0], ()


@dataclass(frozen=True)
class FanInSum(Layer):
    """Sum of the branches: Σ = Σ_i Σ_i, Θ = Σ_i Θ_i (independent branches)."""
    _takes_branches = True

    def _emit(self, builder, state):
        _need_branches(self, state)
        _independent_branches(self, state, "summed", "born")
        for s in state[1:]:
            builder.emit(P.OP_AXPY, state[0].reg, s.reg, params=(1.0, 1.0))
            _release(builder, s.reg)
        return _merge_states(state, all(s.gaussian for s in state),
                             "the output of FanInSum with a non-Gaussian branch")

    def _init(self, rng, in_dim):
        return _init_equal(self, in_dim)

    def _apply(self, params, h):
        return sum(h[1:], h[0])


@dataclass(frozen=True)
class FanInProd(Layer):
    """Elementwise product of the branches: Σ = Π_i Σ_i and
    Θ = Σ_i Θ_i Π_{j≠i} Σ_j (independent branches), as neural-tangents'
    ``FanInProd``."""
    _takes_branches = True

    def _emit(self, builder, state):
        _need_branches(self, state)
        _independent_branches(self, state, "multiplied", "last_dense")
        for s in state[1:]:
            builder.emit(P.OP_MUL, state[0].reg, s.reg)
            _release(builder, s.reg)
        return _merge_states(state, len(state) == 1 and state[0].gaussian,
                             "the output of FanInProd (a product of Gaussians)")

    def _init(self, rng, in_dim):
        return _init_equal(self, in_dim)

    def _apply(self, params, h):
        out = h[0]
        for x in h[1:]:
            out = out * x
        return out


@dataclass(frozen=True)
class FanInConcat(Layer):
    """Concatenation along the channel axis: Σ = Σ_i n_i Σ_i / Σ_i n_i (and Θ
    likewise), with n_i the branch widths, as neural-tangents' ``FanInConcat``.
    Signals are (N, channels): ``axis`` is the channel axis, -1 or 1."""
    axis: int = -1
    _takes_branches = True

    def __post_init__(self):
        if isinstance(self.axis, bool) or self.axis not in (-1, 1):
            raise ValueError(f"FanInConcat: axis must be the channel axis -1 (or 1) of "
                             f"(N, channels) signals, got axis={self.axis!r}")

    def _emit(self, builder, state):
        _need_branches(self, state)
        widths = _check_widths(self, state)
        total = float(sum(widths))
        for i, s in enumerate(state[1:], 1):
            first = widths[0] / total if i == 1 else 1.0
            builder.emit(P.OP_AXPY, state[0].reg, s.reg, params=(first, widths[i] / total))
            _release(builder, s.reg)
        out = _merge_states(state, len(state) == 1 and state[0].gaussian,
                            "the output of FanInConcat (channels of branches with different "
                            "kernels)")
        out.width = int(total)
        return out

    def _init(self, rng, in_dim):
        if not isinstance(in_dim, list):
            raise ValueError("FanInConcat needs several inputs (use FanOut)")
        return int(sum(in_dim)), ()

    def _apply(self, params, h):
        return np.concatenate(h, axis=-1)


def Residual(*block):
    """``serial(FanOut(2), parallel(Identity(), serial(*block)), FanInSum())``:
    x + block(x).  The block must end in a Dense layer (so that it is
    independent of the shortcut) with out_dim equal to the input width."""
    from .layers import Identity
    return serial(FanOut(2), parallel(Identity(), serial(*block)), FanInSum())


@dataclass(frozen=True)
class Scale(Layer):
    """Multiply the signal by a constant a: Σ' = a² Σ, Θ' = a² Θ.

    Used for the input scalings of multi-scale networks (Liu, Cai & Xu 2020):
    ``serial(Scale(a), Dense(...), ...)`` sees the inputs a·x.  Keeps a
    Gaussian signal Gaussian."""
    a: float

    def __post_init__(self):
        object.__setattr__(self, "a", real("Scale: a", self.a, squared=True))

    def _emit(self, builder, state):
        builder.emit(P.OP_SCALE, state.reg, params=(self.a * self.a,))

    def _apply(self, params, h):
        return self.a * h


__all__ = ["FanOut", "parallel", "FanInSum", "FanInProd", "FanInConcat", "Residual", "Scale"]
