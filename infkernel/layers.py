"""Layers and networks.

A layer is a small immutable value; ``serial`` composes layers into a
:class:`Network`.  A network unpacks like a neural-tangents stax triple
``init_fn, apply_fn, kernel_fn = net`` and compiles, per input dimension, to a
flat layer program (``_program.py``) that every backend runs.
"""
import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _program as P
from ._checks import count, entropy, flag, real
from .kernel import compute


class _State:
    """What the compiler knows about the signal between two layers.

    ``born`` is the index of the op of the ``Dense`` layer that produced the
    signal (possibly followed by ``Identity``/``Scale``), or -1 when the signal
    is not a fresh zero-mean Dense output (the input, an activation's output).
    ``FanInSum`` uses it to check that the branches it adds are independent.
    ``last_dense`` is the op index of the latest ``Dense`` layer on the signal's
    path, whatever follows it (-1: none); ``FanInProd`` uses it, since a
    product needs independent branches but not zero means.
    ``width`` is None after an infinite-feature map (no finite fan-in).
    """

    def __init__(self, d_in):
        self.reg = 0            # register holding this branch
        self.gaussian = False   # is the signal a Gaussian process (after Dense)?
        self.at_input = True    # no layer with parameters applied yet
        self.width = d_in       # channels (fan-in of the next Dense)
        self.born = -1          # op index of the Dense that made the signal
        self.last_dense = -1    # op index of the latest Dense on the signal's path
        #: why a non-Gaussian signal is not Gaussian, when neither "the network
        #: input" nor "another activation's output" says it (e.g. after FanInConcat)
        self.not_gaussian_because = None

    def copy(self):
        new = _State.__new__(_State)
        new.__dict__.update(self.__dict__)
        return new


class _Branches(list):
    """Parallel branches between ``FanOut`` and ``FanInSum``/``FanInConcat``:
    a list of :class:`_State`, one per branch, plus ``split``, the op index at
    which they were fanned out."""

    def __init__(self, states, split):
        super().__init__(states)
        self.split = split


def _compile(layers, builder, state):
    """Emit the ops of ``layers`` in sequence; returns the final state.

    A layer's ``_emit`` updates ``state`` in place or returns a new one (a
    ``_Branches`` after ``FanOut``).  Only layers with ``_takes_branches`` may
    receive several branches.
    """
    for layer in layers:
        if isinstance(state, _Branches) and not getattr(layer, "_takes_branches", False):
            raise ValueError(
                f"{layer!r} receives {len(state)} parallel branches (after FanOut): "
                "apply layers to the branches with parallel(...), or merge them first "
                "with FanInSum() or FanInConcat()")
        if (not isinstance(state, _Branches) and not state.gaussian
                and state.not_gaussian_because):
            from .activations import Activation
            if isinstance(layer, Activation):
                raise ValueError(
                    f"{layer!r} is applied to {state.not_gaussian_because}, which is not "
                    "Gaussian channel by channel: an activation must follow a Dense layer "
                    "(insert ik.Dense(...) before it)")
        out = layer._emit(builder, state)
        if out is not None:
            state = out
    return state


class Layer:
    """Base class: a layer emits ops into a program and has a finite-width
    forward pass (``_init``/``_apply``; layers with ``_takes_rng`` draw random
    numbers and take ``_apply(params, h, rng)``)."""
    _takes_rng = False

    def _emit(self, builder, state):
        raise NotImplementedError

    def _init(self, rng, in_dim):
        """(out_dim, params) of a finite-width layer; no parameters by default."""
        return in_dim, ()

    def _apply(self, params, h):
        raise NotImplementedError

    def __iter__(self):
        return iter(serial(self))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        """``layer[0], layer[1], layer[2]``: the stax triple of ``serial(layer)``."""
        return serial(self)[i]


def _std(name, value, allow_none=False):
    return None if (value is None and allow_none) else real(name, value, lower=0, squared=True)


@dataclass(frozen=True, repr=False)
class Dense(Layer):
    """Fully-connected layer, neural-tangents semantics.

    ``parameterization="ntk"`` (Jacot et al. 2018): y = W_std/√n · W h + b_std b,
    with W, b ~ N(0, 1); Σ' = W_std² Σ + b_std², Θ' = Σ' + W_std² Θ.
    ``"standard"`` (Sohl-Dickstein et al. 2020): W ~ N(0, W_std²/n), b ~ N(0, b_std²);
    same Σ', and Θ' = n Σ + W_std² Θ + [b_std is not None], where n is the
    layer's fan-in (the input dimension, or the previous ``Dense``'s out_dim).
    ``b_std=None`` means no bias.  ``s = (s0, s1)`` (standard
    parameterization only, as in neural-tangents) scales the finite widths:
    W is (s0·n, s1·out_dim) and y = W h/√s0 + b, with n = (input width)/s0 in
    the NTK, so that consistent scalings (s0 = the previous layer's s1) leave
    the kernels unchanged.  ``batch_axis`` and ``channel_axis`` are accepted
    for porting at their defaults (vector inputs: (N, d)); the fields are in
    neural-tangents' order, and ``Dense(n, W_std, b_std, "standard")`` also
    reads the fourth argument as the parameterization.
    """
    out_dim: int
    W_std: float = 1.0
    b_std: Optional[float] = None
    batch_axis: int = 0          # neural-tangents' field order, for positional calls
    channel_axis: int = -1
    parameterization: Optional[str] = None    # None: "ntk" (or the fourth argument)
    s: tuple = (1, 1)

    def __repr__(self):
        par = "" if self.parameterization == "ntk" else ", parameterization='standard'"
        scaled = "" if self.s == (1, 1) else f", s={self.s}"
        return f"Dense({self.out_dim}, W_std={self.W_std:g}, b_std={self.b_std}{par}{scaled})"

    def __post_init__(self):
        object.__setattr__(self, "out_dim", count("Dense: out_dim", self.out_dim))
        object.__setattr__(self, "W_std", _std("Dense: W_std", self.W_std))
        object.__setattr__(self, "b_std", _std("Dense: b_std", self.b_std, allow_none=True))
        if isinstance(self.batch_axis, str):
            # Dense(n, W_std, b_std, "standard"): the parameterization in the
            # place of batch_axis (no axis is a string), as earlier versions took it
            if self.parameterization is not None:
                raise TypeError(f"Dense: parameterization given twice, as the fourth "
                                f"argument ({self.batch_axis!r}) and as a keyword "
                                f"({self.parameterization!r})")
            object.__setattr__(self, "parameterization", self.batch_axis)
            object.__setattr__(self, "batch_axis", 0)
        if self.parameterization is None:
            object.__setattr__(self, "parameterization", "ntk")
        if (self.batch_axis, self.channel_axis) not in ((0, -1), (0, 1)):
            raise ValueError("Dense: only batch_axis=0 and channel_axis=-1 apply to vector "
                             f"inputs (N, d), got batch_axis={self.batch_axis!r}, "
                             f"channel_axis={self.channel_axis!r}")
        par = str(self.parameterization).lower()
        if par not in ("ntk", "standard"):
            raise ValueError("Dense: parameterization must be 'ntk' or 'standard', "
                             f"got {self.parameterization!r}")
        object.__setattr__(self, "parameterization", par)
        try:
            scales = tuple(self.s)
        except TypeError:
            scales = ()
        if len(scales) != 2 or not all(isinstance(v, (int, np.integer)) and
                                       not isinstance(v, bool) and v >= 1 for v in scales):
            raise ValueError(f"Dense: s must be a pair of positive integers (width scalings), "
                             f"got {self.s!r}")
        object.__setattr__(self, "s", tuple(int(v) for v in scales))
        if par == "ntk" and self.s != (1, 1):
            raise ValueError(f"Dense: s={self.s} scales the widths of the standard "
                             "parameterization only; pass parameterization='standard' "
                             "(the ntk parameterization's kernels do not depend on widths)")

    @property
    def width(self):
        """The finite layer's number of outputs: s1·out_dim (standard), out_dim (ntk)."""
        return self.out_dim * (self.s[1] if self.parameterization == "standard" else 1)

    def coefs(self, in_width):
        """(c, s) of the finite layer y = c·hW + s·b for inputs of ``in_width``."""
        if self.parameterization == "ntk":
            return self.W_std / math.sqrt(in_width), (0.0 if self.b_std is None else self.b_std)
        return 1.0 / math.sqrt(self.s[0]), 1.0

    def _emit(self, builder, state):
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        if self.parameterization == "ntk":
            coef = (0.0, 1.0, 0.0)
        elif state.width is None:
            raise ValueError(
                f"{self!r} follows an infinite-feature input map, whose fan-in is infinite: "
                "the standard parameterization's NTK diverges there; use "
                "parameterization='ntk' for this layer or a finite number of features")
        else:   # the fan-in n: the input width over the input scaling s0
            coef = (state.width / self.s[0], 0.0, 0.0 if self.b_std is None else 1.0)
        state.born = state.last_dense = len(builder.ops)
        state.not_gaussian_because = None
        builder.emit(P.OP_DENSE, state.reg, params=(w2, b2) + coef)
        state.gaussian, state.at_input, state.width = True, False, self.width

    def _init(self, rng, in_dim):
        W = rng.standard_normal((in_dim, self.width))
        b = None if self.b_std is None else rng.standard_normal(self.width)
        if self.parameterization == "standard":
            W *= self.W_std / math.sqrt(in_dim / self.s[0])
            b = None if b is None else b * self.b_std
        return self.width, (W, b)

    def _apply(self, params, h):
        W, b = params                 # shapes checked by empirical.check_params
        c, s = self.coefs(h.shape[-1])
        out = h @ W if c == 1.0 else c * (h @ W)
        return out if b is None else out + s * b


class InputMap(Layer):
    """A deterministic map γ of the inputs applied before the kernel is
    computed (Fourier features): the network's kernel at (x, x') is the kernel
    of the layers after the map at (γ(x), γ(x')), which is exact.  Input maps
    must come first in a network; the kernel entry point maps ``x1``/``x2``
    and compiles the remaining layers for the mapped dimension.
    """

    #: input dimension the map expects, or None for any
    in_dim = None

    def out_dim(self, d):
        """Dimension of γ(x) for inputs of dimension ``d``."""
        raise NotImplementedError

    def map(self, x):
        """γ(x) for a (N, d) float64 array (d already checked)."""
        raise NotImplementedError

    def check_dim(self, d, name):
        if self.in_dim is not None and d != self.in_dim:
            raise ValueError(f"{name} has {d} features, but {self!r} maps inputs of "
                             f"dimension {self.in_dim} (its frequencies have "
                             f"{self.in_dim} column(s))")

    def _emit(self, builder, state):
        raise ValueError(f"{self!r} is an input map: it must come first in the network "
                         "(before any other layer and outside parallel branches)")

    def _init(self, rng, in_dim):
        self.check_dim(in_dim, "the input")
        return self.out_dim(in_dim), ()

    def _apply(self, params, h):
        h = np.asarray(h, dtype=np.float64)
        self.check_dim(h.shape[-1], "the input")
        return self.map(h)


@dataclass(frozen=True)
class Identity(Layer):
    """φ(x) = x: leaves the kernel unchanged (no Gaussian input required)."""

    def _emit(self, builder, state):
        pass

    def _apply(self, params, h):
        return h


@dataclass(frozen=True)
class Flatten(Layer):
    """Flattens all non-batch axes, neural-tangents' ``Flatten``: a no-op on
    the (N, d) signals between layers.  As the first layer of a network it
    lets ``kernel``, ``diag``, ``init_fn`` and ``apply_fn`` take inputs of
    shape (N, ...) such as images (N, H, W, C), whose kernel is that of the
    flattened rows (as in neural-tangents)."""
    batch_axis: int = 0
    batch_axis_out: int = 0

    def __post_init__(self):
        for name, value, allowed in (("batch_axis", self.batch_axis, (0,)),
                                     ("batch_axis_out", self.batch_axis_out, (0, -2))):
            if isinstance(value, bool) or value not in allowed:
                raise ValueError(f"Flatten: {name} must be the leading axis "
                                 f"({' or '.join(map(str, allowed))}), got {value!r}")

    def _emit(self, builder, state):
        pass

    def _apply(self, params, h):
        h = np.asarray(h)
        return h.reshape(h.shape[0], -1) if h.ndim > 2 else h


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Layer normalisation over the channels, h -> (h - mean h) / sqrt(var h + eps),
    neural-tangents semantics: the input must be Gaussian (after a Dense
    layer); over infinitely many channels the mean vanishes and the variance
    is Σ(x, x), so Σ' = Σ / √((Σ(x,x) + eps)(Σ(x',x') + eps)) and Θ likewise.
    The output stays Gaussian (an activation may follow; with eps = 0 its
    variances are 1, which ``Hermite`` assumes).  ``axis`` must include the
    channel axis (-1) for vector inputs; ``batch_axis``/``channel_axis`` are
    accepted at their defaults."""
    axis: object = -1
    eps: float = 1e-12
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        if isinstance(self.axis, list):
            object.__setattr__(self, "axis", tuple(self.axis))
        axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        if not axes or any(isinstance(a, bool) or not isinstance(a, (int, np.integer))
                           or a not in (-1, 1) for a in axes):
            raise ValueError(f"LayerNorm: axis must be the channel axis (-1) of vector "
                             f"inputs (N, d), got {self.axis!r}")
        object.__setattr__(self, "eps", real("LayerNorm: eps", self.eps, lower=0))
        for name, value, default in (("batch_axis", self.batch_axis, (0,)),
                                     ("channel_axis", self.channel_axis, (-1, 1))):
            if isinstance(value, bool) or value not in default:
                raise ValueError(f"LayerNorm: {name} must be {default[0]} for vector inputs "
                                 f"(N, d), got {value!r}")

    def __repr__(self):
        axis = "" if self.axis == -1 else f"axis={self.axis!r}, "
        return f"LayerNorm({axis}eps={self.eps:g})"

    @property
    def kind(self):
        return P.K_LAYERNORM

    @property
    def params(self):
        return (self.eps,)

    def _emit(self, builder, state):
        if not state.gaussian:
            where = (state.not_gaussian_because or
                     ("the network input" if state.at_input else "an activation's output"))
            raise ValueError(
                f"{self!r} is applied to {where}, which is not Gaussian: in the "
                "infinite-width limit layer normalisation is defined after a Dense layer "
                "(insert ik.Dense(...) before it; normalise raw inputs yourself)")
        builder.emit(P.OP_ACT, state.reg, kind=P.K_LAYERNORM, params=self.params,
                     name=repr(self))

    def _apply(self, params, h):
        h = np.asarray(h, dtype=np.float64)
        centred = h - h.mean(axis=-1, keepdims=True)
        return centred / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + self.eps)


@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout with keep probability ``rate`` (neural-tangents' ``Dropout``):
    h -> h·m/rate, m ~ Bernoulli(rate) per unit and input.

    ``mode="test"`` is the identity.  In ``"train"`` mode the masks of
    different inputs are independent, so in the infinite-width limit only a
    point's covariance with itself changes: Σ(x, x) and Θ(x, x) are multiplied
    by 1/rate, while K(x, x') keeps its value for every other entry, identical
    points included.  As in neural-tangents, that diagonal is the diagonal of
    K(x) and of K(x, x2) when x2 equals x (same values), and the output is not
    Gaussian (a Dense layer must follow before an activation)."""
    rate: float
    mode: str = "train"
    _takes_rng = True

    def __post_init__(self):
        object.__setattr__(self, "rate", real("Dropout: rate", self.rate, lower=0, strict=True))
        if self.rate > 1:
            raise ValueError(f"Dropout: rate (the keep probability) must be in (0, 1], "
                             f"got {self.rate}")
        if self.mode not in ("train", "test"):
            raise ValueError(f"Dropout: mode must be 'train' or 'test', got {self.mode!r}")

    @property
    def training(self):
        return self.mode == "train" and self.rate < 1

    def _emit(self, builder, state):
        if not self.training:
            return
        if state.at_input:
            raise ValueError(f"{self!r} is applied to the network input: dropout must "
                             "follow a layer with parameters (as in neural-tangents)")
        builder.emit(P.OP_DIAG_SCALE, state.reg, params=(1.0 / self.rate,))
        state.gaussian = False
        state.not_gaussian_because = "the output of Dropout in train mode"

    def _apply(self, params, h, rng=None):
        if not self.training:
            return h
        if rng is None:
            raise ValueError(f"{self!r} in train mode needs random masks: call "
                             "apply_fn(params, x, rng=seed_or_generator)")
        h = np.asarray(h, dtype=np.float64)
        keep = np.random.default_rng(rng).random(h.shape) < self.rate
        return np.where(keep, h / self.rate, 0.0)


@dataclass(frozen=True)
class ExpNormalized(Layer):
    """neural-tangents' ``ExpNormalized``, the "Gaussian normalised kernel" of
    Shankar et al. (2020), a kernel map without a finite-width network:
    Σ' = √(Σ11 Σ22) exp(γ (ρ + shift)), ρ = Σ12/√(Σ11 Σ22), and
    Θ' = γ exp(γ (ρ + shift)) Θ.  ρ is always kept in [-1, 1] (and is exactly
    ±1 within 4 ulps of it), so ``do_clip`` is accepted for porting and
    changes nothing."""
    gamma: float = 1.0
    shift: float = -1.0
    do_clip: bool = False

    def __post_init__(self):
        # γ < 0 is not a kernel: off-diagonal entries exp(|γ|(1 − ρ)) times the
        # diagonal's would exceed it
        object.__setattr__(self, "gamma", real("ExpNormalized: gamma", self.gamma, lower=0))
        object.__setattr__(self, "shift", real("ExpNormalized: shift", self.shift))
        flag("ExpNormalized: do_clip", self.do_clip)

    name = "ExpNormalized"

    @property
    def kind(self):
        return P.K_EXP_NORMALIZED

    @property
    def params(self):
        return (self.gamma, self.shift)

    def _emit(self, builder, state):
        builder.emit(P.OP_ACT, state.reg, kind=P.K_EXP_NORMALIZED, params=self.params,
                     name=repr(self))
        state.gaussian, state.born = False, -1   # not Gaussian, not mean-zero
        state.not_gaussian_because = "the output of ExpNormalized"

    def _apply(self, params, h):
        raise NotImplementedError("ExpNormalized is a kernel map without a finite-width "
                                  "network (as in neural-tangents): apply_fn is undefined")


class Network:
    """A composition of layers: ``serial(...)``.

    Unpacks as ``init_fn, apply_fn, kernel_fn``.  ``kernel_fn`` is
    :meth:`kernel`; :meth:`diag` gives the kernels' diagonals in O(N·(d + L)).
    """

    #: the input dimension the network was built for (``from_torch``: the first
    #: Linear's in_features), checked by :meth:`program`; None: any
    input_dim = None

    def __init__(self, layers, nesting=None):
        self.layers = tuple(layers)
        #: how ``serial`` was called: per argument, None for a layer or the
        #: nesting of a network (neural-tangents' params follow it, see
        #: :meth:`_flat_params`)
        self.nesting = (None,) * len(self.layers) if nesting is None else nesting
        self._programs = {}
        self._signals = {}
        n_maps = 0
        while n_maps < len(self.layers) and isinstance(self.layers[n_maps], InputMap):
            n_maps += 1
        #: the leading input maps (applied to the data before the kernel)
        self.input_maps = self.layers[:n_maps]
        self._body = Network(self.layers[n_maps:]) if n_maps else self

    def with_layers(self, layers):
        """A network of the same structure (``serial`` nesting, input width)
        whose layers are ``layers``, replacing its own one for one."""
        layers = tuple(layers)
        if len(layers) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} layers, got {len(layers)}")
        net = Network(layers, self.nesting)
        net.input_dim = self.input_dim
        return net

    @property
    def body(self):
        """The network after its leading input maps (itself if it has none)."""
        return self._body

    @functools.cached_property
    def drops_out(self):
        """True when a Dropout layer in train mode (possibly inside parallel
        branches) makes K(x, x) of a point with itself differ from K(x, x')
        of an identical point."""
        def any_dropout(layers):
            return any((isinstance(l, Dropout) and l.training)
                       or any(any_dropout(b) for b in getattr(l, "branches", ()))
                       for l in layers)
        return any_dropout(self.layers)

    def _flat_params(self, params):
        """``params`` in ``init_fn``'s layout: one entry per layer, a tuple per
        parallel branch.  neural-tangents' layout (a tuple per ``serial``
        argument that is itself a network, a parallel branch's single layer
        not wrapped in a tuple) is converted; anything else comes back as
        given, for the parameter checks to report."""
        if all(n is None for n in self.nesting) and not any(
                hasattr(l, "branches") for l in self.layers):
            return params              # the two layouts coincide
        try:
            layers = iter(self.layers)
            flat = tuple(_unnest(params, self.nesting, layers))
        except _NotNested:
            return params
        return params if next(layers, None) is not None else flat

    def map_inputs(self, x, name="x"):
        """γ(x): the inputs after the network's leading input maps.  ``x`` is a
        checked (N, d) float64 array; a mismatched dimension is a ValueError
        naming ``name``."""
        what = name
        for m in self.input_maps:
            m.check_dim(x.shape[1], what)
            what = f"{name} mapped by {m!r}"      # the next map's input
            with np.errstate(over="ignore", invalid="ignore"):
                x = np.ascontiguousarray(m.map(x), dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            if bad.size:
                raise ValueError(f"{name}: the input map {m!r} gives NaN or Inf features "
                                 f"for row(s) {bad[:5].tolist()}" + (" ..." if bad.size > 5 else "")
                                 + " (inputs or frequencies too large for float64)")
        return x

    def __repr__(self):
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    def __iter__(self):
        return iter((self.init_fn, self.apply_fn, self.kernel_fn))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        """``net[0], net[1], net[2]``: init_fn, apply_fn, kernel_fn (a stax triple)."""
        return (self.init_fn, self.apply_fn, self.kernel_fn)[i]

    # -- analytic kernels ---------------------------------------------------
    def program(self, d_in):
        """The layer program for inputs of dimension ``d_in`` (memoised)."""
        if self.input_maps:
            raise ValueError("this network starts with input maps, which act on the data: "
                             "compile net.body for the mapped dimension and feed it "
                             "net.map_inputs(x) (net.kernel does this)")
        if self.input_dim is not None and d_in != self.input_dim:
            raise ValueError(f"the network takes inputs of dimension {self.input_dim}, "
                             f"got points of dimension {d_in}")
        prog = self._programs.get(d_in)
        if prog is None:
            builder, state = P.ProgramBuilder(d_in), _State(d_in)
            state = _compile(self.layers, builder, state)
            if isinstance(state, _Branches):
                raise ValueError(f"the network ends with {len(state)} parallel branches: "
                                 "merge them with FanInSum() or FanInConcat()")
            if state.reg != 0:
                builder.emit(P.OP_COPY, state.reg, 0)
            prog = self._programs[d_in] = builder.build()
            self._signals[d_in] = (state.width, state.gaussian)
        return prog

    def output_signal(self, d_in):
        """(channels, Gaussian?) of the network's output for inputs of
        dimension ``d_in``: neural-tangents' ``Kernel.shape1[1]`` and
        ``is_gaussian`` (a Dense layer's output is a Gaussian process)."""
        self.program(d_in)
        return self._signals[d_in]

    @property
    def _flattens_inputs(self):
        """The network starts with Flatten: inputs may be (N, ...)."""
        return bool(self.layers) and isinstance(self.layers[0], Flatten)

    def _flatten(self, x):
        """(N, ...) inputs as (N, d) rows when the network starts with Flatten."""
        if not self._flattens_inputs or x is None or hasattr(x, "_fields"):
            return x        # (a namedtuple: refused by check_inputs)
        if not hasattr(x, "ndim"):      # nested lists
            x = np.asarray(x)
        return x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.ndim > 2 else x

    def kernel(self, x1, x2=None, get=None, *, out=None, dtype=None,
               backend="auto", progress=False):
        """NNGP and/or NTK Gram matrices of the infinitely wide network.

        Args:
          x1: (N1, d) inputs.  x2: (N2, d) inputs, or None for K(x1, x1)
            (symmetric path: upper triangle computed, then mirrored).
          get: "nngp", "ntk", a tuple of them, or None (both); as in
            neural-tangents, "cov1" and "cov2" name the (N,) NNGP diagonals
            Σ(x1_i, x1_i) and Σ(x2_j, x2_j) (None when x2 is None).
          out: preallocated output(s) (e.g. ``np.memmap``) of shape (N1, N2)
            and dtype ``dtype``: one array for a string ``get``, else a tuple in
            ``get`` order.
          dtype: np.float64 or np.float32 (computed in float64, rounded once on
            store: relative error ≤ 2⁻²⁴ ≈ 6e-8).  None (default): ``out``'s
            dtype, else float64 whatever the inputs' precision.
          backend: "auto", "cpu" or "gpu".
          progress: True for a progress bar, or a callable(done, total).

        Returns:
          an array for a string ``get``, else a ``Kernel`` namedtuple.
        """
        if self._flattens_inputs and x2 is not None:
            s1, s2 = np.shape(x1)[1:], np.shape(x2)[1:]
            if len(s1) > 1 and len(s2) > 1 and s1 != s2:
                raise ValueError(f"x2 has samples of shape {s2}, x1 of shape {s1}: Flatten "
                                 "needs the same per-sample shape on both sides")
        return compute(self, self._flatten(x1), self._flatten(x2), get, out=out, dtype=dtype,
                       backend=backend, progress=progress, diagonal=False)

    def kernel_fn(self, x1, x2=None, get=None, *, pattern=None, mask_constant=None,
                  diagonal_batch=None, diagonal_spatial=None, **kwargs):
        """:meth:`kernel` with neural-tangents' ``kernel_fn`` options, accepted
        where they change nothing for fully-connected networks on (N, d)
        inputs: ``pattern`` and ``mask_constant`` None (no graph aggregation,
        no masked inputs), ``diagonal_batch`` None or True ((N,) ``cov1``),
        ``diagonal_spatial`` a bool or None (no spatial axes); the other
        keywords (``out``, ``dtype``, ...) are :meth:`kernel`'s."""
        for name, value, ok, allowed in (
                ("pattern", pattern, pattern is None, "None"),
                ("mask_constant", mask_constant, mask_constant is None, "None"),
                ("diagonal_batch", diagonal_batch, diagonal_batch in (None, True), "None or True"),
                ("diagonal_spatial", diagonal_spatial, diagonal_spatial in (None, True, False),
                 "None or a bool")):
            if not ok:
                raise ValueError(f"kernel_fn: {name} must be {allowed} for fully-connected "
                                 f"networks on (N, d) inputs, got {value!r}")
        return self.kernel(x1, x2, get, **kwargs)

    def diag(self, x, get=None, *, dtype=None, backend="auto"):
        """Diagonals K(x_i, x_i) of the NNGP/NTK in O(N·(d + L)); same ``get``
        conventions as :meth:`kernel`, with (N,) arrays."""
        if hasattr(get, "shape"):   # diag(x1, x2)
            raise TypeError(f"diag takes one input x (the diagonal of K(x, x)); its second "
                            f"argument is get, a string, got an array of shape {get.shape}")
        return compute(self, self._flatten(x), None, get, out=None, dtype=dtype,
                       backend=backend, progress=False, diagonal=True)

    # -- finite-width network ----------------------------------------------
    def init_fn(self, rng, input_shape):
        """Random parameters of a finite network: ``(output_shape, params)``.

        ``rng`` is a ``numpy.random.Generator``, an int seed or a PRNG key (a
        1-D array of non-negative ints); ``input_shape`` is ``(..., d)`` (a
        leading -1 batch size is fine)."""
        rng = _generator("init_fn: rng", rng)
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise TypeError(f"init_fn: input_shape must be a tuple (..., d), got {input_shape!r}")
        flat = self._flattens_inputs and len(input_shape) > 2
        for d in input_shape[1:] if flat else input_shape[-1:]:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
                raise TypeError(f"init_fn: input_shape must end in the feature dimension "
                                f"d, a positive integer, got {input_shape!r}")
            if d < 1:
                raise ValueError(f"init_fn: input_shape must end in the feature dimension "
                                 f"d, a positive integer, got {input_shape!r}")
        if flat:
            input_shape = (input_shape[0], int(np.prod(input_shape[1:])))
        width = int(input_shape[-1])
        params = []
        for layer in self.layers:
            width, p = layer._init(rng, width)
            params.append(p)
        return tuple(input_shape[:-1]) + (width,), tuple(params)

    def apply_fn(self, params, x, *, rng=None, **kwargs):
        """Forward pass of the finite network with ``params`` from ``init_fn``.
        ``rng`` (as in ``init_fn``) draws the masks of ``Dropout`` layers in
        train mode; other keywords of neural-tangents' ``apply_fn`` are
        accepted and unused."""
        params = self._flat_params(params)
        if not isinstance(params, (tuple, list)):
            raise TypeError(f"apply_fn: params must be the tuple returned by init_fn, got "
                            f"{type(params).__name__}")
        if len(params) != len(self.layers):
            raise ValueError(f"apply_fn: params has {len(params)} entries, the network "
                             f"has {len(self.layers)} layers")
        h = np.asarray(x)
        if h.dtype.kind not in "biuf":
            raise TypeError(f"apply_fn: x must be a real numeric array, got dtype {h.dtype}")
        h = np.asarray(h, dtype=np.float64)
        if h.ndim == 0:
            raise ValueError("apply_fn: x must have a batch axis, (N, d), got a scalar")
        if not np.isfinite(h).all():
            raise ValueError("apply_fn: x has NaN or Inf entries")
        from .empirical import _as_float, check_params
        check_params(self, params, self._flatten(h).shape[-1])
        return _apply_layers(self.layers, _as_float(self.layers, params), h,
                             None if rng is None else _generator("apply_fn: rng", rng))


def _generator(name, rng):
    """A ``numpy.random.Generator`` from a Generator, a non-negative int seed or
    a PRNG key (a 1-D array of non-negative ints), else an error naming ``name``."""
    if isinstance(rng, np.random.Generator):
        return rng
    try:
        return np.random.default_rng(entropy(name, rng))
    except TypeError:
        raise TypeError(f"{name} must be a numpy.random.Generator, a non-negative int seed "
                        f"or a PRNG key (a 1-D array of non-negative ints), got {rng!r}"
                        ) from None


def _apply_layers(layers, params, h, rng):
    """The finite-width forward pass of ``layers`` (``rng``: for random layers)."""
    for layer, p in zip(layers, params):
        h = layer._apply(p, h, rng) if layer._takes_rng else layer._apply(p, h)
    return h


def repeat(layer, n):
    """``serial(layer, ..., layer)`` with ``n`` copies (neural-tangents' ``repeat``)."""
    return serial(*([layer] * count("repeat: n", n)))


def unpacked_network(obj):
    """The Network behind a stax triple ``(init_fn, apply_fn, kernel_fn)`` (a
    tuple neural-tangents code passes where a layer goes), else ``obj``."""
    if isinstance(obj, (tuple, list)) and len(obj) == 3:
        owners = {id(getattr(f, "__self__", None)) for f in obj}
        owner = getattr(obj[0], "__self__", None)
        if isinstance(owner, Network) and len(owners) == 1:
            return owner
    return obj


def serial(*layers):
    """Compose layers (or networks, or their stax triples) in sequence; the
    first one's ``input_dim``, if it is a network that has one, is kept."""
    flat, nesting = [], []
    layers = [unpacked_network(layer) for layer in layers]
    for layer in layers:
        if isinstance(layer, Network):
            flat.extend(layer.layers)
            nesting.append(layer.nesting)
        elif isinstance(layer, Layer):
            flat.append(layer)
            nesting.append(None)
        else:
            raise TypeError(f"serial: expected layers, got {type(layer).__name__}")
    net = Network(flat, tuple(nesting))
    if layers and isinstance(layers[0], Network) and layers[0].input_dim is not None:
        net.input_dim = layers[0].input_dim
    return net


class _NotNested(Exception):
    """Parameters that are not in neural-tangents' nested layout."""


def _unnest(params, nesting, layers):
    """The per-layer params of the layers (an iterator) that ``nesting``
    describes, from neural-tangents' nested ``params``."""
    if not isinstance(params, (tuple, list)) or len(params) != len(nesting):
        raise _NotNested
    flat = []
    for p, sub in zip(params, nesting):
        if sub is None:
            flat.append(_unnest_layer(p, next(layers, None)))
        else:
            flat.extend(_unnest(p, sub, layers))
    return flat


def _unnest_layer(p, layer):
    branches = getattr(layer, "branches", None)
    if branches is not None:                      # parallel: a tuple per branch
        if not isinstance(p, (tuple, list)) or len(p) != len(branches):
            raise _NotNested
        out = []
        for q, branch, sub in zip(p, branches, layer.branch_nesting):
            if sub is None:               # a single layer's params, not wrapped
                q, sub = (q,), (None,)
            it = iter(branch)
            out.append(tuple(_unnest(q, sub, it)))
            if next(it, None) is not None:
                raise _NotNested
        return tuple(out)
    if isinstance(layer, Dense):
        ok = isinstance(p, (tuple, list)) and len(p) == 2 and hasattr(p[0], "shape")
    else:
        ok = layer is not None and (p is None or isinstance(p, (tuple, list)) and not p)
    if not ok:
        raise _NotNested
    return p
