"""Neural tangent kernels of physics-informed networks (PINNs).

A PINN trained by gradient descent on  Σ_i λ_i/2 Σ_{x ∈ X_i} (L_i u(x) − g_i(x))²
follows, in the infinite-width limit (Wang, Yu & Perdikaris 2020, "When and
why PINNs fail to train: a neural tangent kernel perspective"),

    d/dt [L_i u(X_i)]_i = −K Λ [L_i u(X_i) − g_i]_i,   K_ij = (L_i)_x (L_j)_{x'} Θ(x, x'),

with Θ the NTK.  This module computes K_ij exactly at infinite width for linear
differential operators L with constant coefficients, up to second order in
each argument, and the same blocks for a finite network.

Method (analytic).  An operator is written, by polarisation, as a sum of
directional derivatives c (v·∇)ⁿ, n ≤ 2 (∂_a∂_b = ¼[(∂_{e_a+e_b})² −
(∂_{e_a−e_b})²]).  For every pair of directions (v, w) the recursion
(DESIGN.md) is run on bivariate truncated Taylor series ("jets") in (s, t) of

    q11(x + s v),  q12(x + s v, x' + t w),  q22(x' + t w),  Θ(x + s v, x' + t w),

keeping sⁱtʲ for i ≤ I, j ≤ J (the operators' orders).  Dense layers act
linearly on the jets.  An activation's dual k(q11, q12, q22) is composed
with the jets:

* closed forms (Erf, Gelu, Sin, Cos, Rbf, Exp, Gaussian, Gabor, Monomial,
  Polynomial) are evaluated in jet arithmetic, i.e. by the exact Taylor
  coefficients of their elementary functions (exp, √, asin, powers), so the
  result is exact up to rounding (``_jets.py``, numba; when every activation
  is a closed form, the whole recursion runs there, one entry at a time);
* quadrature activations (Tanh, Sigmoid, Softplus, Silu, Mish, analytic
  ``Elementwise``) use the multivariate Taylor series of k, whose partial
  derivatives are Gaussian expectations of derivatives of φ by Price's
  theorem (Price 1958):

      ∂^p_{q11} ∂^m_{q12} ∂^r_{q22} E[φ(u)φ(v)] = 2^{−p−r} E[φ^{(m+2p)}(u) φ^{(m+2r)}(v)],

  (orders up to 7 for the NTK of second-order operators).  For Tanh,
  Sigmoid, Softplus and Silu φ⁽ⁿ⁾ is exact (tanh⁽ⁿ⁾ = P_n(tanh), σ(x) =
  (1 + tanh(x/2))/2); for Mish and analytic ``Elementwise`` functions it comes
  from φ on a circle in the complex plane (Cauchy's integral formula,
  trapezoidal rule with 64 nodes, radius 1/2: rounding ≈ n! 2ⁿ ε max|φ|),
  tabulated as piecewise Chebyshev series (16 terms on panels of width 1/4).
  The expectations use nested composite Gauss–Legendre quadrature (u = σ₁x,
  v = σ₂(ρx + √(1−ρ²) w), exact at ρ = ±1), 20 nodes per panel, panels no
  wider than the distance from the real axis to φ's nearest singularity in
  the integration variable (Gauss–Hermite would lose digits: φ⁽⁷⁾ of tanh has
  8th-order poles at ±iπ/2).  Measured: ≤ 5e-14 relative against an
  independent 600² Gauss–Legendre rule (tests); Cauchy-derived derivatives
  ~1e-11.  The Taylor series cancels where the pre-activation variance is
  large (its terms grow like the jets, e.g. (W²|x|)⁴, the sum does not):
  :func:`kernel` then assembles it a second time from expectations
  perturbed by their accuracy and warns (``PinnAccuracyWarning``) when the
  change exceeds 1e-9 of the block's largest entry.

Kinked activations (ReLU family, Sign, RectifiedMonomial, Elu, ...) have
NTKs that are not differentiable where x = x'; asking for a derivative raises.

Finite width: :func:`empirical_kernel` propagates the input Taylor jets of the
hidden signals through a finite network (forward mode, exact), and the
parameter gradient of L u(x) by reverse mode through the jets; the NTK is
assembled per Dense layer from Gram matrices, as in ``empirical.py``.

Loss weights and spectra: :func:`trace_weights` (Wang et al. 2020),
:func:`spectra`, :func:`weighted_spectrum` (Λ^{1/2} K Λ^{1/2}; McClenny &
Braga-Neto 2023, self-adaptive PINNs).
"""
import math
import zlib
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit

from . import _jets, _program as P
from ._checks import KernelRangeError, count, no_overflow, one_kernel, real, real_array, warn
from ._cpu import _single_threaded_blas, in_parallel
from ._numeric import _cheb_fit
from .activations import Activation
from .activations_numeric import NumericActivation
from .kernel import _kernel_type, check_inputs, parse_get
from .layers import Dense, Dropout, Identity, Layer, Network, serial

__all__ = ["Operator", "identity", "partial", "laplacian", "kernel", "ntk_blocks",
           "PinnBlocks", "trace_weights", "spectra", "condition_numbers",
           "weighted_spectrum", "empirical_kernel", "operator_apply", "PinnAccuracyWarning"]

MAX_ORDER = 2          # per argument
#: Largest ``laplacian`` dimension: Δ has one term per axis, and the kernels
#: pair every direction of one operator with every one of the other's.
MAX_DIM = 10_000
_ROW_ENTRIES = 1 << 18  # jet entries per row chunk (bounds the temporaries: ~2 MB each)
_MIN_CHUNK = 1 << 12    # jet entries below which a chunk is not split


# ---------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------
class Operator:
    """A linear differential operator with constant coefficients,
    Σ_α c_α ∂^α with |α| ≤ 2.  ``terms`` maps sorted axis tuples to
    coefficients: () is the identity, (a,) is ∂_a, (a, b) is ∂_a∂_b.
    Combine with +, −, scalar *, and * between operators (composition,
    total order ≤ 2)."""

    __array_ufunc__ = None     # NumPy defers to the operators: no arrays of Operators

    def __init__(self, terms, dim=None):
        if not isinstance(terms, dict):
            raise TypeError("Operator: terms must be a dict {axes tuple: coefficient}, e.g. "
                            f"{{(0,): 1.0, (1, 1): -1.0}}, got {type(terms).__name__}")
        clean = {}
        for axes, c in terms.items():
            if not isinstance(axes, tuple) or not all(
                    isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
                raise TypeError("Operator: each key of terms must be a tuple of integer axes "
                                f"such as () (identity), (0,) or (0, 1), got {axes!r}")
            axes = tuple(sorted(int(a) for a in axes))
            if len(axes) > MAX_ORDER:
                raise ValueError(f"operator of order {len(axes)}: at most {MAX_ORDER} "
                                 "derivatives per argument are supported")
            if any(a < 0 for a in axes):
                raise ValueError(f"operator axes must be >= 0, got {axes}")
            c = real(f"Operator: the coefficient of {axes}", c)
            clean[axes] = clean.get(axes, 0.0) + c
        self.terms = {a: c for a, c in clean.items() if c != 0.0}
        if dim is not None:
            dim = count("Operator: dim", dim)
            if self.min_dim > dim:
                raise ValueError(f"Operator: axis {self.min_dim - 1} does not exist on "
                                 f"dim={dim}-dimensional inputs")
        self.dim = dim

    @property
    def order(self):
        return max((len(a) for a in self.terms), default=0)

    @property
    def min_dim(self):
        return max((max(a) + 1 for a in self.terms if a), default=0)

    def _merge_dim(self, other):
        if self.dim is not None and other.dim is not None and self.dim != other.dim:
            raise ValueError(f"cannot combine operators on {self.dim}- and "
                             f"{other.dim}-dimensional inputs")
        return self.dim if self.dim is not None else other.dim

    def __add__(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        t = dict(self.terms)
        for a, c in other.terms.items():
            t[a] = t.get(a, 0.0) + c
        return Operator(t, self._merge_dim(other))

    def __neg__(self):
        return Operator({a: -c for a, c in self.terms.items()}, self.dim)

    def __sub__(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        return self + (-other)

    def __mul__(self, other):
        if isinstance(other, Operator):
            t = {}
            for a, c in self.terms.items():
                for b, e in other.terms.items():
                    key = tuple(sorted(a + b))
                    t[key] = t.get(key, 0.0) + c * e
            return Operator(t, self._merge_dim(other))
        if isinstance(other, bool) or not isinstance(other, (int, float, np.integer,
                                                               np.floating)):
            raise TypeError("an Operator multiplies another Operator or a real number, got "
                            f"{type(other).__name__}")
        return Operator({a: c * float(other) for a, c in self.terms.items()}, self.dim)

    __rmul__ = __mul__

    def __eq__(self, other):
        return isinstance(other, Operator) and self.terms == other.terms

    def __hash__(self):
        return hash(tuple(sorted(self.terms.items())))

    def __repr__(self):
        if not self.terms:
            return "0"
        out = ""
        for a, c in sorted(self.terms.items(), key=lambda kv: (len(kv[0]), kv[0])):
            d = "I" if not a else "".join(f"∂{i}" for i in a)
            mag = "" if abs(c) == 1 else f"{abs(c):g}·"
            sign = ("-" if c < 0 else "") if not out else (" - " if c < 0 else " + ")
            out += sign + mag + d
        return out

    def check_dim(self, d, name="operator"):
        if self.dim is not None and self.dim != d:
            raise ValueError(f"{name} {self!r} acts on {self.dim}-dimensional inputs, "
                             f"the points have dimension {d}")
        if self.min_dim > d:
            raise ValueError(f"{name} {self!r} differentiates along axis {self.min_dim - 1}, "
                             f"the points have dimension {d}")

    def scaled_axes(self, factor):
        """The operator in the coordinates z = (x − μ)/σ: ∂_{x_a} = ∂_{z_a}/σ_a,
        so ∂^α_x = (Π_{a∈α} 1/σ_a) ∂^α_z.  ``factor`` = 1/σ per axis."""
        return Operator({a: c * float(np.prod([factor[i] for i in a]))
                         for a, c in self.terms.items()}, self.dim)

    def directional(self, d):
        """Polarised form: a list of (v, [c0, c1, c2]) with
        self = Σ_groups Σ_n c_n (v·∇)ⁿ; the identity part is put in the first group."""
        groups = {}

        def add(v, n, c):
            key = tuple(v)
            g = groups.setdefault(key, [0.0, 0.0, 0.0])
            g[n] += c
        c0 = 0.0
        for a, c in self.terms.items():
            if not a:
                c0 += c
            elif len(a) == 1:
                add(np.eye(d)[a[0]], 1, c)
            elif a[0] == a[1]:
                add(np.eye(d)[a[0]], 2, c)
            else:
                e = np.eye(d)
                add(e[a[0]] + e[a[1]], 2, 0.25 * c)
                add(e[a[0]] - e[a[1]], 2, -0.25 * c)
        out = [(np.array(k, dtype=float), v) for k, v in groups.items()]
        if not out:
            out = [(np.zeros(d), [0.0, 0.0, 0.0])]
        out[0][1][0] += c0
        return out


def identity():
    """The identity operator: K itself."""
    return Operator({(): 1.0})


def partial(axis, order=1):
    """∂ⁿ/∂x_axisⁿ, n = ``order`` ∈ {0, 1, 2}."""
    axis, order = count("partial: axis", axis, 0), count("partial: order", order, 0)
    if order > MAX_ORDER:
        raise ValueError(f"partial: order {order} is not supported: at most {MAX_ORDER} "
                         "derivatives per argument")
    return Operator({(axis,) * order: 1.0})


def laplacian(dim):
    """Δ = Σ_{a<dim} ∂²_a on ``dim``-dimensional inputs."""
    dim = count("laplacian: dim", dim)
    if dim > MAX_DIM:
        raise ValueError(f"laplacian: dim must be at most {MAX_DIM} (one term per axis), "
                         f"got {dim}")
    return Operator({(a, a): 1.0 for a in range(dim)}, dim=dim)


def _as_operator(op, name):
    if op is None:
        return identity()
    if not isinstance(op, Operator):
        raise TypeError(f"{name} must be an infkernel.pinn operator (identity(), partial(...), "
                        f"laplacian(...) and their combinations), got {type(op).__name__}")
    return op


# ---------------------------------------------------------------------------
# bivariate jets: arrays a[i, j, ...] = coefficient of sⁱ tʲ
# ---------------------------------------------------------------------------
def jmul(a, b):
    """Product of truncated series (same truncation (I, J))."""
    I, J = a.shape[0], a.shape[1]
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape))
    for i in range(I):
        for j in range(J):
            acc = out[i, j]
            for i1 in range(i + 1):
                for j1 in range(j + 1):
                    acc += a[i1, j1] * b[i - i1, j - j1]
    return out


def _const(shape_like, value):
    out = np.zeros_like(shape_like)
    out[0, 0] = value
    return out


# ---------------------------------------------------------------------------
# activation duals on jets
# ---------------------------------------------------------------------------
_SMOOTH_CLOSED = (P.K_ERF, P.K_GELU, P.K_SIN, P.K_RBF, P.K_EXP, P.K_GAUSSIAN, P.K_MONOMIAL,
                  P.K_POLYNOMIAL, P.K_GABOR)


#: Closed forms whose jets take differences of products of variances that are
#: equal at x = x' (det Σ in Erf, Gelu, Gaussian; q1 + q2 - 2q12 in Sin, Rbf):
#: their rounding error grows with the scaled variance v (2b²q for Erf, b²q for
#: Sin, 2γq for Rbf, 2|b|q for Gaussian, q for Gelu), and from v ~ 1e16 on
#: Erf's 1 + 2b²q rounds to 2b²q and its jets are NaN.  Against 40-digit
#: references (two layers, Δ⊗∂ and Δ⊗Δ, x = x' included) the error relative to
#: the largest entry is 2e-12 at v ~ 5e3 and, at v = ARG_VARIANCE_MAX, 2e-10
#: (Erf), 4e-10 (Gaussian), 3e-8 (Gelu); larger variances are rejected.
_ARG_SCALE = {P.K_ERF: lambda p: 2 * p[1] * p[1], P.K_GELU: lambda p: 1.0,
              P.K_SIN: lambda p: p[1] * p[1], P.K_RBF: lambda p: 2 * p[0],
              P.K_GAUSSIAN: lambda p: 2 * abs(p[1])}
ARG_VARIANCE_MAX = 1e6


def _check_closed_range(act, q):
    """A KernelRangeError when ``q``, the largest pre-activation variance of a
    closed-form activation, is beyond the range where its jets are accurate
    (above)."""
    scale = _ARG_SCALE.get(act.kind)
    if scale is not None and q * scale(act.params) > ARG_VARIANCE_MAX:
        limit = ARG_VARIANCE_MAX / scale(act.params)
        raise KernelRangeError(
            f"{act!r}: pre-activation variance {q:.3g} exceeds {limit:.3g}, the range of "
            f"derivative (PINN) kernels for this activation (the rounding error grows with "
            f"the variance, to ~1e-8 of the result at the limit, NaN from ~1e16): rescale "
            f"the inputs (pinn.kernel(..., shift=, scale=)) or reduce W_std / b_std")


def _closed_arrays(acts):
    """(kinds, params, tables) of closed-form activations for ``_jets``: each
    activation's parameters and its two coefficient tables (Monomial,
    Polynomial), zero-padded to common lengths."""
    acts = list(acts)
    width = max([len(t) for a in acts for t in a.tables] + [1])
    kinds = np.array([a.kind for a in acts], dtype=np.int64)
    params = np.zeros((len(acts), P.N_PARAMS))
    tabs = np.zeros((len(acts), 2, width))
    for n, act in enumerate(acts):
        params[n, :len(act.params)] = act.params
        for m, t in enumerate(act.tables[:2]):
            tabs[n, m, :len(t)] = t
    return kinds, params, tabs


def _gaussian_diverges(act):
    return ValueError(f"{act!r}: the dual diverges at these inputs (I − 2bΣ is not positive "
                      "definite)")


def _dual_closed(act, q1, q12, q2):
    """(k, k̇) of a closed-form activation with jet arguments (arrays
    a[i, j, ...], broadcast): ``_jets.dual`` on each entry."""
    shape = np.broadcast_shapes(q1.shape, q12.shape, q2.shape)
    I, J = shape[0] - 1, shape[1] - 1

    def rows(q):       # (I+1, J+1, ...) -> (entries, 9), coefficient 3i + j
        out = np.zeros((int(np.prod(shape[2:])), 3, 3))
        out[:, :I + 1, :J + 1] = np.moveaxis(np.broadcast_to(q, shape).reshape(
            I + 1, J + 1, -1), -1, 0)
        return out.reshape(-1, _jets.NJ)
    kinds, params, tabs = _closed_arrays([act])
    r12 = rows(q12)
    k, kd = np.zeros((2,) + r12.shape)
    if _jets.dual_entries(kinds[0], params[0], tabs[0], rows(q1), r12, rows(q2), k, kd):
        raise _gaussian_diverges(act)
    return tuple(np.moveaxis(v.reshape(-1, 3, 3)[:, :I + 1, :J + 1], 0, -1).reshape(shape)
                 for v in (k, kd))


# --- numeric activations: derivatives of φ and their Gaussian expectations ---
_TAB_U, _TAB_H, _TAB_NC = 144.0, 0.25, 16
_TAB_P = int(round(2 * _TAB_U / _TAB_H))
_CAUCHY_M, _CAUCHY_R = 64, 0.5
N_DERIV = 8            # φ, φ', ..., φ⁽⁷⁾


def _sigmoid_c(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softplus_c(z):
    return np.where(z.real > 0, z + np.log1p(np.exp(-np.where(z.real > 0, z, 0))),
                    np.log1p(np.exp(np.where(z.real > 0, 0, z))))


#: complex-analytic versions of the built-in quadrature activations
_COMPLEX = {"Tanh": np.tanh, "Sigmoid": _sigmoid_c, "Softplus": _softplus_c,
            "Silu": lambda z: z * _sigmoid_c(z),
            "Mish": lambda z: z * np.tanh(_softplus_c(z))}


def _builtin(act):
    """The name of a built-in activation made by its own factory (``Tanh()``,
    ``Silu()``, …), or None (a user's function, whatever its ``name``)."""
    made = act.__dict__.get("_made_by")
    return act.name if made is not None and made[0].__name__ == act.name else None


def _complex_fn(act):
    """φ extended to complex arguments (needed for Cauchy derivatives)."""
    if isinstance(act, NumericActivation):
        f = _COMPLEX.get(_builtin(act))
        if f is not None:
            return f, True
        return act.fn, False
    return act.fn, True


def _cauchy(f, x, nmax, r=_CAUCHY_R, m=_CAUCHY_M):
    """φ⁽ⁿ⁾(x), n ≤ nmax, by the trapezoidal rule for Cauchy's integral on
    |z − x| = r (spectrally accurate for φ analytic in a wider disc)."""
    x = np.asarray(x, dtype=float)
    w = r * np.exp(2j * np.pi * np.arange(m) / m)
    vals = f(x[..., None] + w)
    vals = np.asarray(vals, dtype=complex)
    c = np.fft.fft(vals, axis=-1)[..., :nmax + 1].real / m
    return np.stack([math.factorial(n) * c[..., n] / r ** n for n in range(nmax + 1)])


_TABLES = {}


def _kinked(act):
    if isinstance(act, NumericActivation):
        return int(act.tables[0][4]) > 0
    return act.kind not in _SMOOTH_CLOSED


def _deriv_table(act):
    """Chebyshev tables (N_DERIV, P, NC) of φ⁽ⁿ⁾ on [−U, U] (memoised)."""
    key = id(act)
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is act:
        return hit[1]
    f, trusted = _complex_fn(act)
    edges = -_TAB_U + _TAB_H * np.arange(_TAB_P + 1)
    nf = 24
    t = np.cos(np.pi * (np.arange(nf) + 0.5) / nf)[::-1]
    x = edges[:-1, None] + 0.5 * _TAB_H * (1.0 + t[None, :])
    try:
        d = _cauchy(f, x, N_DERIV - 1)
        if not trusted:  # a user function: check analyticity by a second radius
            d2 = _cauchy(f, x, N_DERIV - 1, r=0.35, m=96)
            scale = np.abs(d).max(axis=(1, 2), keepdims=True) + 1e-300
            # the rounding of φ's values, amplified by n!/rⁿ in the Cauchy
            # integral (orders whose derivatives vanish, as for x², have only it)
            order = np.arange(N_DERIV)[:, None, None]
            rounding = (64 * np.finfo(float).eps * np.abs(d[0]).max()
                        * np.array([math.factorial(k) for k in range(N_DERIV)])[:, None, None]
                        / 0.35 ** order)
            if not np.all(np.abs(d - d2) <= 1e-7 * scale + rounding):
                raise ValueError("derivatives from two contour radii disagree")
    except Exception as exc:
        raise ValueError(
            f"{act!r}: PINN kernels need derivatives of φ up to order {N_DERIV - 1}, "
            "computed from φ on circles of radius 1/2 in the complex plane; the function "
            f"must accept complex arrays and be analytic within ~1 of the real axis ({exc})"
        ) from None
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{act!r}: non-finite derivatives on [-{_TAB_U:g}, {_TAB_U:g}]")
    tab = np.ascontiguousarray(_cheb_fit(d[:, :, ::-1])[:, :, :_TAB_NC])
    _TABLES[key] = (act, tab)
    return tab


def _tanh_polys(n):
    """Coefficients (low to high) of P_k with tanh⁽ᵏ⁾ = P_k(tanh), k ≤ n, from
    P_{k+1}(t) = P_k'(t) (1 − t²)."""
    out = np.zeros((n + 1, n + 2))
    p = np.polynomial.Polynomial([0.0, 1.0])
    for k in range(n + 1):
        out[k, :len(p.coef)] = p.coef
        p = p.deriv() * np.polynomial.Polynomial([1.0, 0.0, -1.0])
    return out


_TP = _tanh_polys(N_DERIV)
#: derivative evaluators: 0 = Chebyshev table, 1 = tanh, 2 = logistic,
#: 3 = softplus, 4 = silu (exact formulas through P_k)
_FAST = {"Tanh": 1, "Sigmoid": 2, "Softplus": 3, "Silu": 4}


@njit(cache=True, nogil=True)
def _tanh_all(x, scale, tp, out, n):
    """out[k] = scale^k tanh⁽ᵏ⁾(x) for k < n (Horner on P_k)."""
    t = math.tanh(x)
    f = 1.0
    for k in range(n):
        deg = k + 1
        r = tp[k, deg]
        for c in range(deg - 1, -1, -1):
            r = r * t + tp[k, c]
        out[k] = f * r
        f *= scale


@njit(cache=True, nogil=True)
def _phi_all(kind, tab, tp, u, out, tmp):
    """φ⁽ᵏ⁾(u), k < len(out), by the evaluator ``kind``."""
    n = out.shape[0]
    if kind == 0:
        _tab_all(tab, u, out)
    elif kind == 1:
        _tanh_all(u, 1.0, tp, out, n)
    else:
        # logistic σ(u) = (1 + tanh(u/2))/2: σ⁽ᵏ⁾ = 2^-(k+1) tanh⁽ᵏ⁾(u/2), k ≥ 1
        _tanh_all(0.5 * u, 0.5, tp, tmp, n)
        sig0 = 0.5 * (1.0 + tmp[0])
        tmp[0] = sig0
        for k in range(1, n):
            tmp[k] *= 0.5
        if kind == 2:
            for k in range(n):
                out[k] = tmp[k]
        elif kind == 3:
            out[0] = max(u, 0.0) + math.log1p(math.exp(-abs(u)))
            for k in range(1, n):
                out[k] = tmp[k - 1]
        else:
            out[0] = u * sig0
            for k in range(1, n):
                out[k] = u * tmp[k] + k * tmp[k - 1]


@njit(cache=True, nogil=True)
def _derivs_at(kind, tab, tp, z, out):
    """out[k, i] = φ⁽ᵏ⁾(z[i]), k < len(out), by the evaluator ``kind``
    (``_phi_all``; a table gives all its orders, so room for them)."""
    n = out.shape[0]
    m = max(n, tab.shape[0])
    val, tmp = np.empty(m), np.empty(m)
    for i in range(z.shape[0]):
        _phi_all(kind, tab, tp, z[i], val, tmp)
        for k in range(n):
            out[k, i] = val[k]


@njit(cache=True, nogil=True)
def _tab_all(tab, u, out):
    nd, npan, nc = tab.shape
    t = (u + _TAB_U) / _TAB_H
    p = int(math.floor(t))
    if p < 0:
        p = 0
    if p > npan - 1:
        p = npan - 1
    y = 2.0 * (t - p) - 1.0
    y = min(max(y, -1.0), 1.0)
    for n in range(nd):
        b1 = 0.0
        b2 = 0.0
        for c in range(nc - 1, 0, -1):
            b1, b2 = 2.0 * y * b1 - b2 + tab[n, p, c], b1
        out[n] = y * b1 - b2 + tab[n, p, 0]


_GLX, _GLW = np.polynomial.legendre.leggauss(20)
ZF = 9.0      # Gaussian truncation |x|, |w| ≤ 9: tail mass 2e-19
HMAX = 4.5    # widest panel (standard-normal units): resolves the Gaussian weight


@njit(cache=True, nogil=True)
def _panels(scale, lam):
    """Panels covering [−ZF, ZF] no wider than the distance λ/scale from the
    real axis to φ's nearest singularity (in the integration variable)."""
    h = HMAX if scale * HMAX <= lam else lam / scale
    return int(math.ceil(2.0 * ZF / h))


def _tanh_coefficients(kind, na):
    """C (2, na, na + 1) with φ⁽ᵇ⁾(v) = Σ_c (C[0, b, c] + v C[1, b, c]) tᶜ,
    t = tanh(v) for tanh (kind 1), t = tanh(v/2) for the logistic function
    (kind 2: σ = (1 + t)/2, σ⁽ᵇ⁾ = 2^-(b+1) P_b(t) for b ≥ 1) and SiLU
    (kind 4: (vσ)⁽ᵇ⁾ = v σ⁽ᵇ⁾ + b σ⁽ᵇ⁻¹⁾); empty for other kinds."""
    if kind not in (1, 2, 4):
        return np.zeros((0, 0, 0))
    C = np.zeros((2, na, na + 1))
    C[0] = _TP[:na, :na + 1]
    if kind == 1:
        return C
    C[0] *= 0.5 ** np.arange(1, na + 1)[:, None]
    C[0, 0] = 0.0
    C[0, 0, :2] = 0.5
    if kind == 4:
        C[1] = C[0]
        C[0, 1:] = np.arange(1, na)[:, None] * C[1, :-1]
        C[0, 0] = 0.0
    return C


@njit(cache=True, nogil=True)
def _tanh_nodes(y, Ek, Dk, T):
    """T[k] = tanh((y + z_k)/2) given Ek = e^{z_k} and Dk = e^{z_k} − 1: one
    division per node instead of a libm tanh, vectorised.  For |y| ≤ 1,
    D = e^{y+z_k} − 1 = db·Dk + db + Dk (db = e^y − 1) and t = D/(D + 2),
    accurate near t = 0; otherwise E = e^y Ek and t = 1 − 2/(E + 1), where
    the sum y + z_k is itself only good to ε|y| (|y|, |z_k| ≤ 204 here: no
    overflow; E = 0 or ∞ give t = ∓1)."""
    if abs(y) <= 1.0:
        db = math.expm1(y)
        for k in range(T.shape[0]):
            d = db * Dk[k] + db + Dk[k]
            T[k] = d / (d + 2.0)
    else:
        eb = math.exp(y)
        for k in range(T.shape[0]):
            T[k] = 1.0 - 2.0 / (eb * Ek[k] + 1.0)


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _moments(T, w, P, mu):
    """mu[c] = Σ_k w[k] T[k]ᶜ (P: scratch), vectorised over k."""
    for k in range(T.shape[0]):
        P[k] = w[k]
    for c in range(mu.shape[0]):
        acc = 0.0
        for k in range(T.shape[0]):
            acc += P[k]
            P[k] *= T[k]
        mu[c] = acc


def _expect(kind, tab, tp, C, lam, s1, s2, rho, amax, glx, glw):
    """M[e, a, b] = E[φ⁽ᵃ⁾(u) φ⁽ᵇ⁾(v)] (``_expect_share``) on every thread,
    the entries e dealt out in a fixed random order (their costs grow with
    the variances, by which they are sorted)."""
    M = np.zeros((s1.shape[0], amax + 1, amax + 1))
    order = np.random.default_rng(0).permutation(s1.shape[0])
    in_parallel(_expect_share, len(order), kind, tab, tp, C, lam, s1, s2, rho, amax,
                glx, glw, order, M)
    return M


@njit(cache=True, nogil=True)
def _expect_share(lo, hi, kind, tab, tp, C, lam, s1, s2, rho, amax, glx, glw, order, M):
    """M[e, a, b] = E[φ⁽ᵃ⁾(u) φ⁽ᵇ⁾(v)] for e = order[lo .. hi-1], u = s1 x,
    v = s2(ρ x + √(1−ρ²) w), x, w independent N(0, 1): nested composite
    Gauss–Legendre (20 nodes per panel, panels no wider than the distance to
    φ's singularities: error ≲ 4.2⁻⁴⁰ per panel for a simple pole, 1e-12
    relative measured for φ⁽⁷⁾).
    For tanh, the logistic function and SiLU (``C`` non-empty, see
    ``_tanh_coefficients``) the inner integral is Σ_c C[0, b, c] E_w[tᶜ] +
    C[1, b, c] E_w[v tᶜ] (``_tanh_nodes``, ``_moments``).  tanh is odd, so
    the integrand has parity (−1)^(a+b) under (x, w) → (−x, −w): entries with
    a + b odd vanish, the others are twice the integral over x ≥ 0."""
    na = amax + 1
    ng = glx.shape[0]
    fast = C.shape[0] > 0
    with_v = fast and np.any(C[1] != 0.0)
    odd = fast and kind == 1         # φ = tanh on the moment path: use the parity
    h2 = 2.0 if kind == 1 else 1.0   # t = tanh(h2 y / 2)
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)
    for t in range(lo, hi):
        e = order[t]
        fu = np.empty(na)
        fv = np.empty(na)
        tmp = np.empty(na)
        G = np.empty(na)
        mu = np.empty(na + 1)
        mu_v = np.zeros(na + 1)
        r = rho[e]
        c = math.sqrt(max((1.0 - r) * (1.0 + r), 0.0))
        npx = _panels(max(s1[e], s2[e] * abs(r)), lam)
        if odd:
            npx += npx % 2           # panels symmetric about x = 0: none straddles it
        npw = _panels(s2[e] * c, lam) if c > 0.0 else 0
        hx = 2.0 * ZF / npx
        hw = 2.0 * ZF / max(npw, 1)
        wn = np.empty(npw * ng)
        ww = np.empty(npw * ng)
        Ek = np.empty(npw * ng)
        Dk = np.empty(npw * ng)
        T = np.empty(npw * ng)
        P = np.empty(npw * ng)
        wv = np.empty(npw * ng)
        for pw in range(npw):
            for iw in range(ng):
                w = -ZF + hw * (pw + 0.5 * (glx[iw] + 1.0))
                wn[pw * ng + iw] = s2[e] * c * w
                ww[pw * ng + iw] = 0.5 * hw * glw[iw] * math.exp(-0.5 * w * w) * inv_sqrt_2pi
                if fast:
                    Ek[pw * ng + iw] = math.exp(h2 * s2[e] * c * w)
                    Dk[pw * ng + iw] = math.expm1(h2 * s2[e] * c * w)
        for px in range(npx // 2 if odd else 0, npx):
            for ix in range(ng):
                x = -ZF + hx * (px + 0.5 * (glx[ix] + 1.0))
                wx = (2.0 if odd else 1.0) * 0.5 * hx * glw[ix] * math.exp(-0.5 * x * x) \
                    * inv_sqrt_2pi
                _phi_all(kind, tab, tp, s1[e] * x, fu, tmp)
                G[:] = 0.0
                base = s2[e] * r * x
                if npw == 0:
                    _phi_all(kind, tab, tp, base, fv, tmp)
                    for b in range(na):
                        G[b] = fv[b]
                elif fast:
                    _tanh_nodes(h2 * base, Ek, Dk, T)
                    _moments(T, ww, P, mu)
                    if with_v:
                        for k in range(npw * ng):
                            wv[k] = ww[k] * (base + wn[k])
                        _moments(T, wv, P, mu_v)
                    for b in range(na):
                        g = 0.0
                        for k in range(na + 1):
                            g += C[0, b, k] * mu[k] + C[1, b, k] * mu_v[k]
                        G[b] = g
                else:
                    for k in range(npw * ng):
                        _phi_all(kind, tab, tp, base + wn[k], fv, tmp)
                        for b in range(na):
                            G[b] += ww[k] * fv[b]
                for a in range(na):
                    for b in range(na):
                        if not (odd and (a + b) % 2):
                            M[e, a, b] += wx * fu[a] * G[b]


#: distance from the real axis to the nearest singularity of φ (poles of tanh
#: at ±iπ/2, of the logistic function at ±iπ, branch points of softplus at ±iπ;
#: Mish: tanh(softplus(z)) has poles at log√2 ± 3πi/4, |Im| = 2.36)
_LAMBDA = {"Tanh": math.pi / 2, "Sigmoid": math.pi, "Softplus": math.pi, "Silu": math.pi,
           "Mish": 2.3}


def _singularity_distance(act):
    """λ for the panel widths: known for built-ins; 0.5 for a user's function,
    whose derivatives were checked to be analytic on discs of radius 1/2."""
    return _LAMBDA.get(_builtin(act), 0.5)


def _expectations(act, q1, q12, q2, amax):
    """E[φ⁽ᵃ⁾(u)φ⁽ᵇ⁾(v)] for a, b ≤ amax at base covariances (arrays, broadcast)."""
    q1, q12, q2 = np.broadcast_arrays(q1, q12, q2)
    shape = q1.shape
    qmax = max(float(q1.max()), float(q2.max()))
    if qmax > 128.0:
        raise KernelRangeError(
            f"{act!r}: pre-activation variance {qmax:g} exceeds 128, the range of the PINN "
            "quadrature for numerically integrated activations: rescale the inputs "
            "(pinn.kernel(..., shift=, scale=), e.g. to [-1, 1]) or reduce W_std / b_std")
    s1, s2 = np.sqrt(q1).ravel(), np.sqrt(q2).ravel()
    ss = s1 * s2
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(ss > 0, q12.ravel() / np.where(ss > 0, ss, 1.0), 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    # E[φ⁽ᵃ⁾(u)φ⁽ᵇ⁾(v)] is symmetric under (s1, a) ↔ (s2, b): integrate each
    # distinct (min s, max s, ρ) once (halves the work for symmetric blocks)
    swap = s1 > s2
    lo_s, hi_s = np.where(swap, s2, s1), np.where(swap, s1, s2)
    uniq, inv = np.unique(np.stack([lo_s, hi_s, rho], axis=1), axis=0, return_inverse=True)
    kind = _FAST.get(_builtin(act), 0)
    tab = _deriv_table(act) if kind == 0 else np.zeros((1, 1, 1))
    Mu = _expect(kind, tab, _TP, _tanh_coefficients(kind, amax + 1),
                 _singularity_distance(act), uniq[:, 0].copy(),
                 uniq[:, 1].copy(), uniq[:, 2].copy(), amax, _GLX, _GLW)
    M = Mu[inv.ravel()]
    M[swap] = np.swapaxes(M[swap], 1, 2)
    return M.reshape(shape + (amax + 1, amax + 1))


def _dual_numeric(act, q1, q12, q2, cache, key, eta=0.0):
    """(k, k̇) jets by the Price-theorem Taylor series (module docstring);
    ``eta`` > 0 perturbs every expectation by a relative ±eta (random signs,
    fixed seed), for the sensitivity estimate of :func:`kernel`."""
    I, J = q12.shape[0] - 1, q12.shape[1] - 1
    total = I + J
    amax = min(total + max(I, J) + 1, N_DERIV - 1)
    M = cache.get(key)
    if M is None:  # base values are the same for every direction pair: use pair 0
        M = cache[key] = _expectations(act, q1[0, 0, :1, :1], q12[0, 0, :1, :1],
                                       q2[0, 0, :1, :1], amax)
        cache["qmax"] = max(cache.get("qmax", 0.0), float(q1[0, 0].max()),
                            float(q2[0, 0].max()))
    if eta:
        signs = np.random.default_rng(zlib.crc32(repr(key).encode())).choice([-1.0, 1.0],
                                                                           M.shape)
        M = M * (1.0 + eta * signs)
    d1, d12, d2 = q1.copy(), q12.copy(), q2.copy()
    for d in (d1, d12, d2):
        d[0, 0] = 0.0
    shape = np.broadcast_shapes(q1.shape, q12.shape, q2.shape)

    def powers(d, n):
        out = [_const(np.zeros(shape), 1.0)]
        for _ in range(n):
            out.append(jmul(out[-1], d))
        return out
    # nilpotency: δ^(a+1) = 0 for a jet of s-degree ≤ I and t-degree ≤ J with
    # a = (I if it has s-terms) + (J if it has t-terms)
    def nil(d):
        return (I if np.any(d[1:]) else 0) + (J if np.any(d[:, 1:]) else 0)
    n1, n12, n2 = nil(d1), nil(d12), nil(d2)
    top = max(n1, n12, n2)
    p1, p12, p2 = powers(d1, n1), powers(d12, n12), powers(d2, n2)
    k, kd = np.zeros(shape), np.zeros(shape)
    for p in range(n1 + 1):
        for r in range(n2 + 1):
            for m in range(min(n12, top - p - r) + 1):
                mono = jmul(jmul(p1[p], p12[m]), p2[r])
                f = 2.0 ** (-p - r) / (math.factorial(p) * math.factorial(m)
                                       * math.factorial(r))
                # m + 2p + 1 ≤ total + I + 1 ≤ amax: the index is in range
                k = k + f * M[..., m + 2 * p, m + 2 * r] * mono
                kd = kd + f * M[..., m + 2 * p + 1, m + 2 * r + 1] * mono
    return k, kd


# ---------------------------------------------------------------------------
# the analytic operator kernel
# ---------------------------------------------------------------------------
def _check_net(net):
    if isinstance(net, Layer):
        net = serial(net)
    if not isinstance(net, Network):
        raise TypeError(f"net must be an infkernel network (ik.serial(...)), got "
                        f"{type(net).__name__}")
    from .combinators import Scale
    from .features import FourierFeatures
    for i, layer in enumerate(net.layers):
        if i == 0 and isinstance(layer, FourierFeatures):
            continue
        if isinstance(layer, Dropout) and not layer.training:
            continue              # the identity, as in neural-tangents
        if not isinstance(layer, (Dense, Identity, Activation, Scale)):
            raise TypeError(f"pinn kernels support a leading FourierFeatures map, Dense, "
                            f"Scale, Identity, Dropout(mode='test') and elementwise "
                            f"activations; layer {i} is {layer!r}")
    return net


def _input_jets(net, x, dirs, order):
    """Taylor coefficients Γ[n] (G, N, D), n ≤ order, of the network's input
    features along x + s v for each direction v (rows of ``dirs``): the
    identity (Γ0 = x, Γ1 = v) or Fourier features γ(x) = [a cos 2πBx,
    a sin 2πBx] (Tancik et al. 2020), whose s-derivatives are exact."""
    G, N = dirs.shape[0], x.shape[0]
    if net.input_maps:
        fmap = net.input_maps[0]
        fmap.check_dim(x.shape[1], "the points")
        z = 2 * math.pi * (x @ fmap.frequencies.T)              # (N, m)
        dz = 2 * math.pi * (dirs @ fmap.frequencies.T)          # (G, m)
        a = fmap.amplitudes
        out = []
        for n in range(order + 1):
            # d^n/ds^n cos(z + s dz) = dzⁿ cos(z + nπ/2), likewise sin
            c = a * np.cos(z + n * math.pi / 2)
            sn = a * np.sin(z + n * math.pi / 2)
            f = dz[:, None, :] ** n / math.factorial(n)
            out.append(np.concatenate([c[None] * f, sn[None] * f], axis=-1))
        return out
    out = [np.broadcast_to(x, (G,) + x.shape)]
    if order >= 1:
        out.append(np.broadcast_to(dirs[:, None, :], (G, N, x.shape[1])))
    for _ in range(2, order + 1):
        out.append(np.zeros((G, N, x.shape[1])))
    return out


def _norm(shift, scale, d):
    """(μ, 1/σ) arrays of length d, or (None, ones)."""
    if shift is None and scale is None:
        return None, np.ones(d)
    def per_axis(name, value, default):
        if value is None:
            return np.full(d, default)
        what = f"a real scalar or one value per input axis ({d})"
        a = real_array(name, value, what=what)     # no strings, bools, complex
        try:
            return np.broadcast_to(a, (d,)).copy()
        except ValueError:
            raise ValueError(f"{name} must be {what}, got shape {a.shape}") from None
    mu, sig = per_axis("shift", shift, 0.0), per_axis("scale", scale, 1.0)
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sig)) and np.all(sig > 0)):
        raise ValueError(f"shift must be finite and scale finite and > 0, got {shift}, {scale}")
    if sig.min() < 1.0 / np.finfo(float).max:
        raise ValueError(f"scale must be at least {1.0 / np.finfo(float).max:.3g} (1/scale "
                         f"must be finite), got {scale}")
    return mu, 1.0 / sig


def kernel(net, x1, x2=None, op1=None, op2=None, get="ntk", *, shift=None, scale=None):
    """(op1)_x (op2)_{x'} K(x, x') of the infinitely wide network ``net``.

    Args:
      net: ``ik.serial(...)`` of Dense, Identity and smooth activations.
      x1: (N1, d) points; x2: (N2, d) points or None (x2 = x1).
      op1, op2: operators (``identity()``, ``partial(a, n)``, ``laplacian(d)``,
        combinations), acting on the first and second argument; None = identity.
      get: "nngp", "ntk", a tuple of them or None (both).
      shift, scale: the network sees z = (x − shift)/scale (per axis or scalar);
        derivatives are with respect to x (chain rule: ∂_x = ∂_z / scale).

    Returns:
      an (N1, N2) array for a string ``get``, else a ``Kernel`` namedtuple.
    """
    net = _check_net(net)
    names, single = parse_get(get)
    op1, op2 = _as_operator(op1, "op1"), _as_operator(op2, "op2")
    x1 = check_inputs(x1, "x1")
    d = x1.shape[1]
    same = x2 is None
    x2 = x1 if same else check_inputs(x2, "x2", d)
    op1.check_dim(d, "op1")
    op2.check_dim(d, "op2")
    if net.input_maps:
        net.input_maps[0].check_dim(d, "x1")
        net.body.program(net.input_maps[0].out_dim(d))
    else:
        net.program(d)  # raises for activations not preceded by Dense
    mu, inv = _norm(shift, scale, d)
    if mu is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            x1, x2 = (x1 - mu) * inv, (x2 - mu) * inv
        if not (np.isfinite(x1).all() and np.isfinite(x2).all()):
            raise ValueError("shift/scale: the normalised points (x - shift)/scale overflow "
                             "float64; use a larger scale")
        try:
            with np.errstate(over="ignore"):
                op1, op2 = op1.scaled_axes(inv), op2.scaled_axes(inv)
        except ValueError:
            raise ValueError("scale: the operators' coefficients in the normalised "
                             "coordinates (∂_x = ∂_z / scale per derivative) overflow "
                             "float64; use a larger scale") from None
    if op1.order + op2.order > 0:
        for layer in net.layers:
            if isinstance(layer, Activation) and _kinked(layer):
                raise ValueError(
                    f"{layer!r} is not smooth: the kernel of a network with this activation "
                    "is not differentiable where x = x', so derivatives of order "
                    f"({op1.order}, {op2.order}) are undefined; use a smooth activation "
                    "(Tanh, Erf, Gelu, Sin, Softplus, Silu, ...)")
    g1, g2 = op1.directional(d), op2.directional(d)
    out = {n: np.zeros((x1.shape[0], x2.shape[0])) for n in names}
    if not (op1.terms and op2.terms and x1.shape[0] and x2.shape[0]):
        return _pack(out, names, single)
    if op1.order + op2.order == 0:  # c1 c2 K: the ordinary kernel
        c = op1.terms[()] * op2.terms[()]
        k = net.kernel(x1, None if same else x2, names)
        with np.errstate(over="ignore"):
            out = {n: c * getattr(k, n) for n in names}
        _check_finite(out)
        return _pack(out, names, single)
    I = max(max((n for n in range(3) if c[n]), default=0) for _, c in g1)
    J = max(max((n for n in range(3) if c[n]), default=0) for _, c in g2)
    npair = len(g1) * len(g2)
    numeric = any(isinstance(layer, NumericActivation) for layer in net.layers)
    # K(x, x') = K(x', x) when both sides are the same points and operator:
    # rows lo .. hi need only the columns from lo on (the upper triangle)
    sym = same and op1 == op2
    # row chunks of at most _ROW_ENTRIES jet entries, at least one per thread:
    # (first row, rows, first column)
    per_entry = npair * (I + 1) * (J + 1)
    n1, n2 = x1.shape[0], x2.shape[0]
    total = (n1 * (n1 + 1) // 2 if sym else n1 * n2) * per_entry
    target = max(min(_ROW_ENTRIES, -(-total // numba.get_num_threads())), _MIN_CHUNK)
    chunks = []
    lo = 0
    while lo < n1:
        c0 = lo if sym else 0
        rows = min(max(1, target // max(1, (n2 - c0) * per_entry)), n1 - lo)
        chunks.append((lo, rows, c0))
        lo += rows
    errs = np.zeros((len(chunks), len(names)))
    if not numeric:
        closed = _ClosedJets(net, x1, x2, g1, g2, I, J, sym)
        # both in one pass; written in place, mirrored with ``sym``
        dest = [out.get(n, np.zeros((0, 0))) for n in ("nngp", "ntk")]

    def run(first, last):
        for c in range(first, last):
            lo, rows, c0 = chunks[c]
            if not numeric:
                closed.block(lo, rows, c0, sym, *dest)
                continue
            a, b = x1[lo:lo + rows], x2[c0:]
            cache = {}
            with np.errstate(over="ignore", invalid="ignore"):   # overflow: an error below
                part = _jet_kernel(net, a, b, g1, g2, I, J, names, cache)
            # the same series from expectations perturbed at their accuracy (where
            # the variances are small, the series cannot cancel much: skipped)
            check = cache.get("qmax", 0.0) > _QUIET_VARIANCE
            if check:
                with np.errstate(over="ignore", invalid="ignore"):
                    moved = _jet_kernel(net, a, b, g1, g2, I, J, names, cache,
                                        _EXPECTATION_ACCURACY)
            for m, n in enumerate(names):
                out[n][lo:lo + rows, c0:] = part[n]
                if check:
                    errs[c, m] = np.abs(moved[n] - part[n]).max(initial=0.0)
    with _single_threaded_blas():
        in_parallel(run, len(chunks))
    if not numeric and closed.diverged is not None:
        raise _gaussian_diverges(closed.diverged)
    _check_finite(out)
    err = dict(zip(names, errs.max(axis=0, initial=0.0)))
    for n in names:
        top = np.abs(out[n]).max(initial=0.0)
        if err[n] > _ACCURACY_WARN * top:
            warn(
                f"pinn.kernel: the {n} kernel of {op1!r} x {op2!r} carries an estimated error "
                f"of up to {err[n] / top:.1g} of its largest entry (the Taylor series of the "
                "quadrature activations cancels at large pre-activation variance); normalise "
                "the inputs (shift/scale) or reduce W_std to keep the variances small",
                PinnAccuracyWarning)
    if sym and numeric:      # (the closed-form path mirrors as it writes)
        for n in names:
            out[n] = np.triu(out[n]) + np.triu(out[n], 1).T
    return _pack(out, names, single)


def _check_finite(out):
    """A KernelRangeError unless every derivative kernel in ``out`` is finite."""
    for n, a in out.items():
        if not np.isfinite(a).all():
            raise KernelRangeError(
                f"pinn.kernel: the {n} derivative kernel overflows float64 (a variance or "
                "one of its derivatives grows beyond 1.8e308 through the layers, or the "
                "operators' coefficients are too large); reduce W_std, b_std, the input "
                "scale (shift/scale) or the coefficients")


#: Relative accuracy of the quadrature expectations E[φ⁽ᵃ⁾φ⁽ᵇ⁾] (measured
#: ≤ 1.5e-13 against mpmath): :func:`kernel` assembles the series again from
#: expectations perturbed by this much, and the change estimates its error.
_EXPECTATION_ACCURACY = 2e-13

#: :func:`kernel` warns when that estimate exceeds this fraction of the
#: block's largest entry.  Below the pre-activation variance _QUIET_VARIANCE
#: it is not formed (there, fourth-order Tanh kernels err by ≤ 3e-11 of the
#: largest entry, W_std = 3).
_ACCURACY_WARN = 1e-9
_QUIET_VARIANCE = 2.0


class _ClosedJets:
    """The operator kernel of a network whose activations are all closed
    forms, on ``_jets.operator_block``: the network as rows of affine maps
    and activations, the input jets of both point sets, and the variance jets
    at every activation (``_jets.variance_jets``), range-checked before any
    entry is computed."""

    def __init__(self, net, x1, x2, g1, g2, I, J, sym):
        self.I, self.J = I, J
        self.g1j = _input_jets(net, x1, np.array([v for v, _ in g1]), I)
        self.g2j = self.g1j if sym else _input_jets(net, x2, np.array([w for w, _ in g2]), J)
        self.D = D = self.g1j[0].shape[-1]
        self.c1, self.c2 = (np.array([[c[i] * math.factorial(i) for i in range(n + 1)]
                                      for _, c in g]) for g, n in ((g1, I), (g2, J)))
        self.nonzero1 = [bool(g.any()) for g in self.g1j]
        self.nonzero2 = [bool(g.any()) for g in self.g2j]
        ops, acts = [], []
        for kind, *step in _steps(net, D):
            if kind == "affine":
                ops.append((_jets.OP_AFFINE, *step))
            else:
                ops.append((_jets.OP_ACT, float(len(acts)), 0.0, 0.0, 0.0))
                acts += step
        self.ops = np.array(ops, dtype=float).reshape(-1, 5)
        self.kinds, self.params, self.tabs = _closed_arrays(acts)
        self.diverged = None
        with np.errstate(over="ignore", invalid="ignore"):   # overflow: an error later
            self.S1 = self._variance(self.g1j, I, acts)
            self.S2 = self.S1 if sym else self._variance(self.g2j, J, acts)
        for l, act in enumerate(acts):
            _check_closed_range(act, max(self.S1[l, ..., 0].max(initial=0.0),
                                         self.S2[l, ..., 0].max(initial=0.0)))
        if self.diverged is not None:
            raise _gaussian_diverges(self.diverged)
        self.acts = acts

    def _variance(self, gj, order, acts):
        """S[l, a, n, 3i]: the s-jet of q(x_n + s v_a) before the l-th activation."""
        G, N = gj[0].shape[:2]
        Q = np.zeros((G * N, _jets.NJ))
        for i in range(order + 1):
            Q[:, 3 * i] = sum(np.sum(gj[k] * gj[i - k], axis=-1)
                              for k in range(i + 1)).ravel() / self.D
        S = np.zeros((len(acts), G * N, _jets.NJ))
        if _jets.variance_jets(self.ops, self.kinds, self.params, self.tabs, Q, S):
            self.diverged = next(a for a in acts if a.kind == P.K_GAUSSIAN)
        return S.reshape(len(acts), G, N, _jets.NJ)

    def block(self, lo, rows, c0, upper, nngp, ntk):
        """Rows lo .. lo + rows − 1, columns c0 .. of ``nngp``, ``ntk``
        (from the diagonal on when ``upper``)."""
        I, J, D = self.I, self.J, self.D
        G1, G2, C = self.g1j[0].shape[0], self.g2j[0].shape[0], self.g2j[0].shape[1] - c0
        Q12 = np.zeros((I + 1, J + 1, G1, rows, G2, C))
        A = [self.g1j[i][:, lo:lo + rows].reshape(G1 * rows, D) / D for i in range(I + 1)]
        for j in range(J + 1):
            B = self.g2j[j][:, c0:].reshape(G2 * C, D).T
            for i in range(I + 1):
                if self.nonzero1[i] and self.nonzero2[j]:
                    np.matmul(A[i], B, out=Q12[i, j].reshape(G1 * rows, G2 * C))
        if _jets.operator_block(self.ops, self.kinds, self.params, self.tabs, Q12, self.S1,
                                self.S2, self.c1, self.c2, I, J, lo, c0, upper, nngp, ntk):
            self.diverged = next(a for a in self.acts if a.kind == P.K_GAUSSIAN)


class PinnAccuracyWarning(UserWarning):
    """A derivative kernel of quadrature activations carries an estimated
    error above 1e-9 of its largest entry (large pre-activation variances)."""


def _pack(out, names, single):
    if single:
        return out[names[0]]
    return _kernel_type(names)(*(out[n] for n in names))


def _steps(net, width):
    """The body of ``net`` as the steps of the jet recursions, for inputs of
    ``width`` features: ("affine", w2, b2, α, β), mapping q → w2 q + b2 and
    θ → α q + w2 θ + β (Dense: α = w2, β = b2 in the NTK parameterization,
    α = fan-in/s, β = [bias] in the standard one; Scale: w2 = a², b2 = α =
    β = 0), or ("act", activation)."""
    from .combinators import Scale
    for layer in net.body.layers:
        if isinstance(layer, Scale):
            yield "affine", layer.a * layer.a, 0.0, 0.0, 0.0
        elif isinstance(layer, Dense):
            w2 = layer.W_std ** 2
            b2 = 0.0 if layer.b_std is None else layer.b_std ** 2
            if layer.parameterization == "ntk":
                yield "affine", w2, b2, w2, b2
            else:
                yield "affine", w2, b2, width / layer.s[0], float(layer.b_std is not None)
            width = layer.width
        elif isinstance(layer, Activation):
            yield "act", layer


def _jet_kernel(net, x1, x2, g1, g2, I, J, names, cache, eta=0.0):
    V = np.array([v for v, _ in g1])          # (G1, d)
    W = np.array([w for w, _ in g2])          # (G2, d)
    G1, G2 = len(g1), len(g2)
    # pair axis: p = a*G2 + b; shapes (I+1, J+1, G1, G2, N1, N2)
    g1j, g2j = _input_jets(net, x1, V, I), _input_jets(net, x2, W, J)
    D = g1j[0].shape[-1]
    q12 = np.zeros((I + 1, J + 1, G1, G2, x1.shape[0], x2.shape[0]))
    q1 = np.zeros((I + 1, J + 1, G1, 1, x1.shape[0], 1))
    q2 = np.zeros((I + 1, J + 1, 1, G2, 1, x2.shape[0]))
    for i in range(I + 1):
        for j in range(J + 1):
            q12[i, j] = np.einsum("and,bmd->abnm", g1j[i], g2j[j]) / D
        q1[i, 0] = sum(np.sum(g1j[k] * g1j[i - k], axis=-1)
                       for k in range(i + 1))[:, None, :, None] / D
    for j in range(J + 1):
        q2[0, j] = sum(np.sum(g2j[k] * g2j[j - k], axis=-1)
                       for k in range(j + 1))[None, :, None, :] / D
    th = np.zeros_like(q12)
    for li, (kind, *step) in enumerate(_steps(net, D)):
        if kind == "affine":
            w2, b2, alpha, beta = step
            th = alpha * q12 + w2 * th
            th[0, 0] += beta
            q12, q1, q2 = w2 * q12, w2 * q1, w2 * q2
            for q in (q12, q1, q2):
                q[0, 0] += b2
        else:
            (layer,) = step
            if isinstance(layer, NumericActivation):
                k, kd = _dual_numeric(layer, q1, q12, q2, cache, (li, "x"), eta)
                k1, _ = _dual_numeric(layer, q1, q1, q1, cache, (li, "1"), eta)
                k2, _ = _dual_numeric(layer, q2, q2, q2, cache, (li, "2"), eta)
            else:
                _check_closed_range(layer, max(float(q1[0, 0].max()), float(q2[0, 0].max())))
                k, kd = _dual_closed(layer, q1, q12, q2)
                k1, _ = _dual_closed(layer, q1, q1, q1)
                k2, _ = _dual_closed(layer, q2, q2, q2)
            th = jmul(kd, th)
            q12, q1, q2 = k, k1, k2
    res = {"nngp": q12, "ntk": th}
    c1 = np.array([[c[i] * math.factorial(i) for i in range(I + 1)] for _, c in g1])
    c2 = np.array([[c[j] * math.factorial(j) for j in range(J + 1)] for _, c in g2])
    out = {}
    for n in names:
        out[n] = np.einsum("ijabxy,ai,bj->xy", res[n], c1, c2)
    return out


# ---------------------------------------------------------------------------
# blocks, weights, spectra
# ---------------------------------------------------------------------------
@dataclass
class PinnBlocks:
    """The PINN kernel: ``names`` in order, ``blocks[(a, b)]`` = K_ab
    (N_a, N_b), ``matrix`` the assembled symmetric K, ``slices[a]`` the rows of
    term a in ``matrix``."""
    names: tuple
    blocks: dict
    matrix: np.ndarray
    slices: dict

    def __getitem__(self, key):
        return self.blocks[key]


def ntk_blocks(net, terms, get="ntk", *, shift=None, scale=None):
    """Every block K_ab = (L_a)_x (L_b)_{x'} K(x, x') of ``terms`` (a dict
    name -> (points, operator)) and the assembled symmetric matrix
    (Wang, Yu & Perdikaris 2020, eq. 3.11).  ``get`` is "ntk" or "nngp"."""
    get = one_kernel(get)
    if not isinstance(terms, dict) or not terms:
        raise TypeError("terms must be a non-empty dict name -> (points, operator)")
    items = []
    for name, val in terms.items():
        if not (isinstance(val, tuple) and len(val) == 2):
            raise TypeError(f"terms[{name!r}] must be a (points, operator) pair")
        pts = check_inputs(val[0], f"terms[{name!r}] points")
        items.append((name, pts, _as_operator(val[1], f"terms[{name!r}] operator")))
    d = items[0][1].shape[1]
    for name, pts, _ in items:
        if pts.shape[1] != d:
            raise ValueError(f"terms[{name!r}] points have dimension {pts.shape[1]}, "
                             f"expected {d} (as the first term)")
    blocks, slices, lo = {}, {}, 0
    for ia, (a, xa, oa) in enumerate(items):
        slices[a] = slice(lo, lo + xa.shape[0])
        lo += xa.shape[0]
        for b, xb, ob in items[ia:]:
            if b == a:
                K = kernel(net, xa, None, oa, oa, get, shift=shift, scale=scale)
            else:
                K = kernel(net, xa, xb, oa, ob, get, shift=shift, scale=scale)
                blocks[(b, a)] = K.T
            blocks[(a, b)] = K
    full = np.zeros((lo, lo))
    for (a, b), K in blocks.items():
        full[slices[a], slices[b]] = K
    return PinnBlocks(tuple(n for n, _, _ in items), blocks, full, slices)


def _blocks(obj, needs_points=None):
    """``obj`` checked to be ntk_blocks' result; ``needs_points``: what is
    undefined for a term without points (a ValueError naming the term)."""
    if not isinstance(obj, PinnBlocks):
        raise TypeError(f"expected the result of ntk_blocks, got {type(obj).__name__}")
    if needs_points:
        for a, sl in obj.slices.items():
            if sl.stop == sl.start:
                raise ValueError(f"term {a!r} has no points: {needs_points} undefined")
    return obj


def trace_weights(blocks):
    """λ_a = Σ_b Tr K_bb / Tr K_aa (Wang, Yu & Perdikaris 2020, Algorithm 1)."""
    blocks = _blocks(blocks, "the trace weights are")
    tr = {a: float(np.trace(blocks.blocks[(a, a)])) for a in blocks.names}
    total = sum(tr.values())
    for a, t in tr.items():
        if not t > 0:
            raise ValueError(f"trace of block {a!r} is {t}: weights are undefined")
    return {a: total / t for a, t in tr.items()}


def _eigs(K):
    return np.sort(np.linalg.eigvalsh(0.5 * K + 0.5 * K.T))[::-1]   # halves: no overflow


def spectra(blocks):
    """Eigenvalues, in decreasing order, of every diagonal block K_aa and of
    the assembled matrix (key "K")."""
    blocks = _blocks(blocks)
    out = {a: _eigs(blocks.blocks[(a, a)]) for a in blocks.names}
    out["K"] = _eigs(blocks.matrix)
    return out


def condition_numbers(blocks):
    """λ_max / λ_min of every diagonal block and of K (inf when λ_min ≤ 0,
    i.e. singular to rounding)."""
    out = {}
    for a, e in spectra(_blocks(blocks, "condition numbers are")).items():
        out[a] = float(e[0] / e[-1]) if e[-1] > 0 else math.inf
    return out


def weighted_spectrum(blocks, weights):
    """Eigenvalues (decreasing) of Λ^{1/2} K Λ^{1/2}, the rate matrix of
    gradient descent on Σ_a λ_a/2 ‖L_a u − g_a‖² (McClenny & Braga-Neto 2023).
    ``weights[a]`` is a scalar or one weight per point of term a (self-adaptive)."""
    blocks = _blocks(blocks)
    if not isinstance(weights, dict):
        raise TypeError(f"weights must be a dict term name -> weight(s), got "
                        f"{type(weights).__name__}")
    unknown = set(weights) - set(blocks.names)
    if unknown:
        raise ValueError(f"weights has entries {sorted(unknown)} that are not terms of the "
                         f"blocks {blocks.names}")
    lam = np.empty(blocks.matrix.shape[0])
    for a in blocks.names:
        if a not in weights:
            raise ValueError(f"weights has no entry for term {a!r}")
        sl = blocks.slices[a]
        w = real_array(f"weights[{a!r}]", weights[a], what="a real number or array")
        if w.ndim and w.shape != (sl.stop - sl.start,):
            raise ValueError(f"weights[{a!r}] must be a scalar or have shape "
                             f"({sl.stop - sl.start},), got {w.shape}")
        if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
            raise ValueError(f"weights[{a!r}] must be finite and >= 0")
        lam[sl] = w
    r = np.sqrt(lam)
    with np.errstate(over="ignore", invalid="ignore"):
        M = r[:, None] * blocks.matrix * r[None, :]
        finite = np.isfinite(M).all()
        e = _eigs(M) if finite else None
    if not (finite and np.isfinite(e).all()):
        raise ValueError("Λ^{1/2} K Λ^{1/2} (or its eigenvalues) overflows float64: scale "
                         f"the weights down (largest {lam.max():.3g})")
    return e


# ---------------------------------------------------------------------------
# finite width
# ---------------------------------------------------------------------------
def _piecewise_linear(act):
    """φ'' = 0 away from finitely many kinks (ReLU family, |x|, sign, step)."""
    return isinstance(act, Activation) and (
        act.kind in (P.K_ABRELU, P.K_SIGN)
        or (act.kind == P.K_RECTIFIED_MONOMIAL and act.params[0] <= 1))


def _act_derivs(act, z, higher, nmax=3):
    """φ, φ', ..., φ⁽ⁿᵐᵃˣ⁾ at real z: exact formulas where the activation
    has them (tanh, logistic, softplus, SiLU through P_k(tanh); the closed
    forms' ``derivs``), the Chebyshev derivative tables of the other
    quadrature activations (``_deriv_table``, ~5e-14 relative), else
    Cauchy's formula for an analytic φ; for
    a kinked one φ and φ' from the activation itself and higher derivatives
    0, which holds almost everywhere for piecewise-linear φ, or is never used
    when the jets carry no derivatives (``higher`` False: the identity
    operator); other kinked φ have no φ'' at their kinks: an error."""
    if _kinked(act):
        if higher and not _piecewise_linear(act):
            raise ValueError(
                f"{act!r} is not smooth at its kinks and not piecewise linear, so the "
                "network's input derivatives of order >= 1 need φ'' where it is not "
                "defined; use a smooth activation (Tanh, Erf, Gelu, Softplus, ...) or a "
                "piecewise-linear one (Relu, LeakyRelu, Abs)")
        ds = np.zeros((nmax + 1,) + np.shape(z))
        ds[0], ds[1] = act.fn(z), act.dfn(z)
        return ds
    if isinstance(act, NumericActivation):
        # tanh, logistic, softplus, SiLU: exact through P_k(tanh); others: φ's
        # derivative table (as the analytic kernels), Cauchy beyond its range
        kind = _FAST.get(_builtin(act), 0)
        tab = _deriv_table(act) if kind == 0 else np.zeros((1, 1, 1))
        flat = np.ascontiguousarray(z, dtype=np.float64).ravel()
        ds = np.empty((nmax + 1, flat.size))
        _derivs_at(kind, tab, _TP, flat, ds)
        far = np.abs(flat) > _TAB_U if kind == 0 else np.zeros(0, bool)
        if far.any():
            ds[:, far] = _cauchy(_complex_fn(act)[0], flat[far], nmax)
        return ds.reshape((nmax + 1,) + np.shape(z))
    if act.derivs is not None and nmax == 3:
        return act.derivs(np.asarray(z, dtype=np.float64))
    try:
        return _cauchy(_complex_fn(act)[0], z, nmax)
    except Exception as exc:
        raise ValueError(f"{act!r}: derivatives need φ to accept complex arrays ({exc})"
                         ) from None


def _forward_jets(net, params, x, groups):
    """Per group: jets (3, N, width) of every Dense input and activation input."""
    from .combinators import Scale
    tape = []
    gam = _input_jets(net, x, np.array([v for v, _ in groups]), 2)
    h = np.ascontiguousarray(np.stack(gam, axis=1))            # (G, 3, N, D)
    n_maps = len(net.input_maps)
    for layer, p in zip(net.layers[n_maps:], params[n_maps:]):
        if isinstance(layer, Scale):
            tape.append(("scale", layer.a))
            h = layer.a * h
        elif isinstance(layer, Dense):
            Wm, b = p
            c, s = layer.coefs(h.shape[-1])
            s = s if b is not None else 0.0
            tape.append(("dense", layer, h, c, s, Wm))
            h = c * (h @ Wm)
            if b is not None:
                h[:, 0] += s * b
        elif isinstance(layer, Activation):
            ds = _act_derivs(layer, h[:, 0], higher=bool(np.any(h[:, 1:])))
            tape.append(("act", layer, h, ds))
            y = np.empty_like(h)
            y[:, 0] = ds[0]
            y[:, 1] = ds[1] * h[:, 1]
            y[:, 2] = ds[1] * h[:, 2] + 0.5 * ds[2] * h[:, 1] ** 2
            h = y
    return h, tape


def _check_params(net, params, d, name):
    """``params`` from ``net.init_fn`` (or in neural-tangents' layout) for
    inputs of d features (``name``), in init_fn's layout."""
    params = net._flat_params(params)
    from .empirical import check_params
    check_params(net, params, d, name)
    return params


def operator_apply(net, params, x, op=None):
    """(L f)(x) of a finite network (N, k), exact (forward-mode Taylor jets)."""
    net = _check_net(net)
    op = _as_operator(op, "op")
    x = check_inputs(x, "x")
    op.check_dim(x.shape[1], "op")
    params = _check_params(net, params, x.shape[1], "x")
    groups = op.directional(x.shape[1])
    cf = np.array([[c[n] * math.factorial(n) for n in range(3)] for _, c in groups])
    with np.errstate(over="ignore", invalid="ignore"):
        h, _ = _forward_jets(net, params, x, groups)
        out = np.einsum("gnxk,gn->xk", h, cf)
    return no_overflow("outputs", out)[0]


def _grads(net, tape, groups, j, n_points, n_out):
    """Per Dense layer: (c, s, H, Gbar) with H (G, 3, N, n_in) and cotangents
    Gbar (G, 3, N, n_out) of output unit j."""
    cf = np.array([[c[n] * math.factorial(n) for n in range(3)] for _, c in groups])
    gbar = np.zeros((len(groups), 3, n_points, n_out))
    gbar[:, :, :, j] = cf[:, :, None]
    out = []
    for entry in reversed(tape):
        if entry[0] == "scale":
            gbar = entry[1] * gbar
        elif entry[0] == "dense":
            _, layer, h, c, s, Wm = entry
            out.append((c, s, h, gbar))
            gbar = c * (gbar @ Wm.T)
        else:
            _, layer, z, ds = entry
            g = np.empty_like(gbar)
            g[:, 2] = ds[1] * gbar[:, 2]
            g[:, 1] = ds[1] * gbar[:, 1] + ds[2] * z[:, 1] * gbar[:, 2]
            g[:, 0] = (ds[1] * gbar[:, 0] + ds[2] * z[:, 1] * gbar[:, 1]
                       + (ds[2] * z[:, 2] + 0.5 * ds[3] * z[:, 1] ** 2) * gbar[:, 2])
            gbar = g
    return out


def empirical_kernel(net, params, x1, x2=None, op1=None, op2=None, get="ntk"):
    """(op1)_x (op2)_{x'} of the empirical NNGP/NTK of a finite network with
    ``params`` (from ``net.init_fn``), traced over outputs as in
    neural-tangents:  NTK = (1/k) Σ_j Σ_θ ∂_θ(L₁f_j)(x) ∂_θ(L₂f_j)(x').

    Input derivatives are exact (forward-mode jets); per Dense layer z_n =
    c Wᵀ h_n (+ s b for n = 0), so ∂(L f)/∂W = c Σ_{g,n} h_{g,n} ⊗ ḡ_{g,n} and
    the layer's NTK term is c² Σ (h·h')(ḡ·ḡ') — no Jacobian is formed."""
    net = _check_net(net)
    names, single = parse_get(get)
    op1, op2 = _as_operator(op1, "op1"), _as_operator(op2, "op2")
    x1 = check_inputs(x1, "x1")
    d = x1.shape[1]
    x2 = x1 if x2 is None else check_inputs(x2, "x2", d)
    op1.check_dim(d, "op1")
    op2.check_dim(d, "op2")
    params = _check_params(net, params, d, "x1")
    g1, g2 = op1.directional(d), op2.directional(d)
    with np.errstate(over="ignore", invalid="ignore"):
        out = _empirical_blocks(net, params, x1, x2, g1, g2, names)
    no_overflow("kernels", *out.values())
    return _pack(out, names, single)


def _empirical_blocks(net, params, x1, x2, g1, g2, names):
    """{name: array} of ``empirical_kernel`` (directional groups g1, g2)."""
    h1, t1 = _forward_jets(net, params, x1, g1)
    h2, t2 = _forward_jets(net, params, x2, g2)
    k_out = h1.shape[-1]
    out = {}
    if "nngp" in names:
        c1 = np.array([[c[n] * math.factorial(n) for n in range(3)] for _, c in g1])
        c2 = np.array([[c[n] * math.factorial(n) for n in range(3)] for _, c in g2])
        f1 = np.einsum("gnxk,gn->xk", h1, c1)
        f2 = np.einsum("gnxk,gn->xk", h2, c2)
        out["nngp"] = f1 @ f2.T / k_out
    if "ntk" in names:
        th = np.zeros((x1.shape[0], x2.shape[0]))
        for j in range(k_out):
            for (c, s, H1, B1), (_, _, H2, B2) in zip(
                    _grads(net, t1, g1, j, x1.shape[0], k_out),
                    _grads(net, t2, g2, j, x2.shape[0], k_out)):
                # (G, 3, N, w) → (3G, N, w), sizes explicit: N may be 0
                A1, A2, C1, C2 = (a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])
                                  for a in (H1, H2, B1, B2))
                for a in range(A1.shape[0]):
                    if not np.any(C1[a]):
                        continue
                    for b in range(A2.shape[0]):
                        if not np.any(C2[b]):
                            continue
                        th += c * c * (A1[a] @ A2[b].T) * (C1[a] @ C2[b].T)
                if s:
                    b1 = B1[:, 0].sum(axis=0)
                    b2 = B2[:, 0].sum(axis=0)
                    th += s * s * (b1 @ b2.T)
        out["ntk"] = th / k_out
    return out
