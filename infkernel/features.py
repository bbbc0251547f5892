"""Input maps and multi-scale networks.

Fourier features (Tancik et al. 2020, "Fourier features let networks learn
high frequency functions in low dimensional domains"):

    γ(v) = c · [a_1 cos(2π b_1ᵀv), …, a_m cos(2π b_mᵀv), a_1 sin(2π b_1ᵀv), …, a_m sin(2π b_mᵀv)]

so that γ(v)ᵀγ(v') = c² Σ_j a_j² cos(2π b_jᵀ(v − v')) depends on v − v' only:
every kernel composed on top is stationary (shift-invariant), and periodic
with period 1 when the b_j are integers.  The map is deterministic, so the
composed NNGP/NTK are exact: the kernel entry point maps the inputs and runs
the rest of the network on γ(x) (a network's first Dense sees γᵀγ'/(2m)).
Normalisations ``c``: None (c = 1), ``"norm"`` (c = 1/‖a‖, so ‖γ(v)‖ = 1) and
``"norm_sqrt_m"`` (c = √m/‖a‖, so ‖γ(v)‖² = m and γᵀγ/(2m) = ½ whatever a).

Multi-scale networks (Liu, Cai & Xu 2020, "Multi-scale deep neural network
(MscaleDNN) for solving Poisson-Boltzmann equation in complex domains"):
``MscaleDNN2`` sums independent sub-networks fed a_i·x; ``MscaleDNN1`` splits
the first hidden layer into groups fed a_i·x.  Both are compositions of
``Scale``, ``FanOut``, ``parallel`` and ``FanInSum``/``FanInConcat``, so their
kernels are exact.
"""
import math

import numpy as np

from . import _program as P
from ._checks import count, entropy, real, real_array
from .activations import Activation
from .combinators import FanInConcat, FanInSum, FanOut, Scale, parallel
from .layers import Dense, InputMap, Layer, _Branches, serial

_NORMALIZE = (None, "norm", "norm_sqrt_m")


def _real_array(name, value, ndim):
    """A finite, non-empty float64 array of ``ndim`` dimensions."""
    a = real_array(name, value, finite=True)
    if a.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(f'{n}' for n in ndim)} dimension(s), "
                         f"got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return a


class FourierFeatures(InputMap):
    """γ(v) = c [a cos(2π B v), a sin(2π B v)] (Tancik et al. 2020, eq. 5).

    Args:
      frequencies: B, (m, d) (row j is b_j) or (m,) for 1-D inputs (d = 1).
      amplitudes: a, (m,) or a scalar; default all ones.
      normalize: None, "norm" (divide by ‖a‖) or "norm_sqrt_m" (times √m/‖a‖).

    Maps (N, d) inputs to (N, 2m).  Must be the first layer of a network.
    """

    def __init__(self, frequencies, amplitudes=None, normalize=None):
        B = _real_array("FourierFeatures: frequencies", frequencies, (1, 2))
        if B.ndim == 1:
            B = B[:, None]
        m = B.shape[0]
        if amplitudes is None:
            a = np.ones(m)
        else:
            a = _real_array("FourierFeatures: amplitudes", amplitudes, (0, 1))
            if a.ndim == 0:
                a = np.full(m, float(a))
            elif a.shape != (m,):
                raise ValueError(f"FourierFeatures: amplitudes must have shape ({m},) (one per "
                                 f"frequency, frequencies have shape {B.shape}), got {a.shape}")
        if normalize not in _NORMALIZE:
            raise ValueError(f"FourierFeatures: normalize must be one of {_NORMALIZE}, "
                             f"got {normalize!r}")
        top = float(np.abs(a).max())
        norm = top * float(np.linalg.norm(a / top)) if top > 0 else 0.0   # no overflow
        if normalize is not None and norm == 0.0:
            raise ValueError("FourierFeatures: amplitudes are all zero, cannot normalize by ‖a‖")
        c = {None: 1.0, "norm": 1.0 / (norm or 1.0),
             "norm_sqrt_m": math.sqrt(m) / (norm or 1.0)}[normalize]
        a = a * c
        with np.errstate(over="ignore"):
            square = np.dot(a, a)           # the features' squared norm, Σ a²
        if not np.isfinite(square):
            raise ValueError(f"FourierFeatures: amplitudes up to {np.abs(a).max():.3g}: the "
                             "features' squared norm Σa² overflows float64; scale them down "
                             "or normalize")
        B.setflags(write=False)
        a.setflags(write=False)
        self.frequencies, self.amplitudes, self.normalize = B, a, normalize
        self.in_dim = B.shape[1]
        self.n_features = m

    @classmethod
    def power_law(cls, n_freqs, p, normalize="norm_sqrt_m"):
        """1-D features b_j = j, a_j = 1/j^p, j = 1..n_freqs (Tancik et al.
        2020, Fig. 2); p = inf keeps only j = 1 (the basic map [cos 2πv, sin 2πv])."""
        n_freqs = count("power_law: n_freqs", n_freqs)
        p = real("power_law: p", p, inf=True)
        j = np.arange(1, n_freqs + 1, dtype=np.float64)
        with np.errstate(over="ignore"):
            a = (j == 1).astype(np.float64) if math.isinf(p) and p > 0 else j ** (-p)
        if not np.isfinite(a).all():
            raise ValueError(f"power_law: p = {p:g} makes the amplitudes j^(-p) overflow "
                             f"float64 for j up to {n_freqs}")
        return cls(j, a, normalize=normalize)

    def __repr__(self):
        return (f"FourierFeatures(m={self.n_features}, d={self.in_dim}"
                + (f", normalize={self.normalize!r}" if self.normalize else "") + ")")

    def __eq__(self, other):
        return (isinstance(other, FourierFeatures)
                and np.array_equal(self.frequencies, other.frequencies)
                and np.array_equal(self.amplitudes, other.amplitudes))

    def __hash__(self):
        return hash((self.frequencies.tobytes(), self.amplitudes.tobytes()))

    def out_dim(self, d):
        return 2 * self.n_features

    def map(self, x):
        z = (2.0 * math.pi) * (x @ self.frequencies.T)
        return np.concatenate([self.amplitudes * np.cos(z), self.amplitudes * np.sin(z)],
                              axis=-1)


def PositionalEncoding(sigma, n_freqs, input_dim=1, normalize=None):
    """Per-coordinate log-linear frequencies b = σ^{j/m} e_k, j = 0..m-1,
    k = 1..d, a = 1 (Tancik et al. 2020, §6 "positional encoding"): 2·m·d features."""
    sigma = real("PositionalEncoding: sigma", sigma, lower=0, strict=True)
    n_freqs = count("PositionalEncoding: n_freqs", n_freqs)
    input_dim = count("PositionalEncoding: input_dim", input_dim)
    levels = sigma ** (np.arange(n_freqs) / n_freqs)
    B = np.kron(levels[:, None], np.eye(input_dim))
    return FourierFeatures(B, None, normalize=normalize)


def GaussianFourierFeatures(sigma, n_features=None, input_dim=None, seed=0, normalize=None):
    """Random Fourier features b_j ~ N(0, σ² I), a_j = 1 (Tancik et al. 2020).

    ``n_features=m`` samples B (m × input_dim, input_dim 1 if None) from
    ``seed`` and returns a :class:`FourierFeatures`.  ``n_features=None``
    returns the infinite-feature limit :class:`GaussianFeatureLimit`, which is
    deterministic (``seed`` plays no part) and takes inputs of ``input_dim``
    (None: any): by the law of large numbers
    γ(v)ᵀγ(v')/(2m) = (1/2m) Σ_j cos(2π b_jᵀ(v − v')) → ½ exp(−2π²σ²‖v − v'‖²),
    with Monte Carlo error O(1/√m).
    """
    # the limit squares sigma (GaussianFeatureLimit)
    sigma = real("GaussianFourierFeatures: sigma", sigma, lower=0, squared=n_features is None)
    seed = entropy("GaussianFourierFeatures: seed", seed)
    if input_dim is not None:
        input_dim = count("GaussianFourierFeatures: input_dim", input_dim)
    if n_features is None:
        if normalize == "norm":
            raise ValueError("GaussianFourierFeatures: normalize='norm' has no infinite-feature "
                             "limit (the input kernel tends to 0); use None or 'norm_sqrt_m'")
        if normalize not in _NORMALIZE:
            raise ValueError(f"GaussianFourierFeatures: normalize must be one of {_NORMALIZE}, "
                             f"got {normalize!r}")
        return GaussianFeatureLimit(sigma, input_dim)
    n_features = count("GaussianFourierFeatures: n_features", n_features)
    B = sigma * np.random.default_rng(seed).standard_normal((n_features, input_dim or 1))
    return FourierFeatures(B, None, normalize=normalize)


class GaussianFeatureLimit(Layer):
    """Infinitely many Gaussian Fourier features (b ~ N(0, σ²I), a = 1):
    input kernel ½ k(v, v') with k(v, v') = exp(−2π²σ²‖v − v'‖²), the m → ∞
    limit of ``GaussianFourierFeatures(sigma, m)`` (Rahimi & Recht 2007;
    Tancik et al. 2020).  Computed per entry from the input kernel
    q = vᵀv'/d as exp(−2π²σ² d (q11 + q22 − 2 q12)) (the Rbf dual), so it must
    act on the network input (optionally after ``Scale``), before any Dense;
    inputs of dimension ``input_dim`` (None: any).
    """

    def __init__(self, sigma, input_dim=None):
        self.sigma = real("GaussianFeatureLimit: sigma", sigma, lower=0, squared=True)
        self.input_dim = (None if input_dim is None
                          else count("GaussianFeatureLimit: input_dim", input_dim))

    def __repr__(self):
        dim = "" if self.input_dim is None else f", input_dim={self.input_dim}"
        return f"GaussianFourierFeatures({self.sigma:g}, n_features=None{dim})"

    def __eq__(self, other):
        return (isinstance(other, GaussianFeatureLimit) and other.sigma == self.sigma
                and other.input_dim == self.input_dim)

    def __hash__(self):
        return hash(("GaussianFeatureLimit", self.sigma, self.input_dim))

    def _emit(self, builder, state):
        if isinstance(state, _Branches) or not state.at_input or state.width is None:
            raise ValueError(f"{self!r} acts on the network input: put it before any Dense "
                             "layer and not after another infinite-feature map")
        if self.input_dim is not None and state.width != self.input_dim:
            raise ValueError(f"the input has {state.width} features, but {self!r} takes "
                             f"inputs of dimension {self.input_dim}")
        gamma = 2.0 * math.pi ** 2 * self.sigma ** 2 * state.width
        builder.emit(P.OP_ACT, state.reg, kind=P.K_RBF, params=(gamma,))
        builder.emit(P.OP_SCALE, state.reg, params=(0.5,))
        state.width, state.gaussian, state.born = None, False, -1

    def _init(self, rng, in_dim):
        raise ValueError(f"{self!r} has infinitely many features and no finite-width "
                         "network: use GaussianFourierFeatures(sigma, n_features=m)")


def _scales(name, scales):
    a = _real_array(f"{name}: scales", scales, (1,))
    if (a <= 0).any():
        raise ValueError(f"{name}: scales must be > 0, got {a.tolist()}")
    return a.tolist()


def _widths(name, hidden):
    try:
        widths = tuple(hidden)
    except TypeError:
        widths = ()
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1
                         for w in widths):
        raise ValueError(f"{name}: hidden must be a non-empty sequence of positive integers, "
                         f"got {hidden!r}")
    return widths


def _default_act(name, activation):
    """``activation`` (an activation layer), by default S2ReLU()."""
    if activation is None:
        from .activations_numeric import S2ReLU
        return S2ReLU()
    if not isinstance(activation, Activation):
        raise TypeError(f"{name}: activation must be an activation layer such as "
                        f"ik.Relu() or ik.Tanh(), got {activation!r}")
    return activation


def MscaleDNN2(scales, hidden=(256, 256), activation=None, W_std=1.0, b_std=None,
               out_dim=1, parameterization="ntk"):
    """MscaleDNN-2 (Liu, Cai & Xu 2020): f(x) = Σ_i f_i(a_i x), independent
    sub-networks f_i = Dense → φ → … → Dense(out_dim) with hidden widths
    ``hidden``.  Kernel: Σ_i K_i(a_i x, a_i x') exactly.  Default φ: the
    compactly supported s2ReLU(x) = sin(2πx) ReLU(x) ReLU(1 − x)."""
    scales, hidden = _scales("MscaleDNN2", scales), _widths("MscaleDNN2", hidden)
    act = _default_act("MscaleDNN2", activation)

    def dense(n):
        return Dense(n, W_std=W_std, b_std=b_std, parameterization=parameterization)

    branches = [serial(Scale(a), *[l for w in hidden for l in (dense(w), act)], dense(out_dim))
                for a in scales]
    return serial(FanOut(len(scales)), parallel(*branches), FanInSum())


def MscaleDNN1(scales, hidden=(256, 256), activation=None, W_std=1.0, b_std=None,
               out_dim=1, parameterization="ntk"):
    """MscaleDNN-1 (Liu, Cai & Xu 2020): the first hidden layer (width
    hidden[0]) is split into len(scales) equal groups, group i computing
    φ(W_i a_i x + b_i); the remaining layers are fully connected.  Kernel:
    after the first layer Σ = mean_i Σ_i (the groups' kernels at a_i x, by
    channel concatenation), then the usual recursion."""
    scales, hidden = _scales("MscaleDNN1", scales), _widths("MscaleDNN1", hidden)
    n = len(scales)
    if hidden[0] % n:
        raise ValueError(f"MscaleDNN1: hidden[0]={hidden[0]} must be divisible by the number "
                         f"of scales ({n}) to split the first layer into equal groups")
    act = _default_act("MscaleDNN1", activation)

    def dense(w):
        return Dense(w, W_std=W_std, b_std=b_std, parameterization=parameterization)

    groups = [serial(Scale(a), dense(hidden[0] // n), act) for a in scales]
    rest = [l for w in hidden[1:] for l in (dense(w), act)]
    return serial(FanOut(n), parallel(*groups), FanInConcat(), *rest, dense(out_dim))


__all__ = ["FourierFeatures", "PositionalEncoding", "GaussianFourierFeatures",
           "GaussianFeatureLimit", "MscaleDNN1", "MscaleDNN2"]
