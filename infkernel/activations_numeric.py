"""Activations without a closed-form dual: Tanh, Sigmoid, Softplus, Silu/Swish,
Elu, Selu, Mish, SReLU, S2ReLU and a user's own ``Elementwise(fn, df)``.

Their Gaussian expectations E[φ(u)φ(v)] and E[φ'(u)φ'(v)] are computed by a
Mehler series with per-point coefficients, certified per tile, and nested
graded Gauss–Legendre quadrature split at the kinks where the series cannot
certify the result (``_numeric.py``).  Accuracy (tests/test_numeric_activations.py):
error ≤ 1e-10 √(E[φ(u)²] E[φ(v)²]) for smooth φ and ≤ 1e-7 with kinks, for
all correlations and input variances in [0, 1e20] (the built-ins, and user
functions that are constant or linear beyond ±144) or [0, 128] (other user
functions), tiny variances included (graded panels keep φ relatively
accurate near 0); an error is raised beyond.
"""
import functools
import inspect
import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from . import _program as P
from ._checks import count, real
from ._numeric import HDR_SCALE, build_table
from .activations import ACTIVATIONS, Activation, factory

__all__ = ["Tanh", "Sigmoid", "Softplus", "Silu", "Swish", "Elu", "Selu", "Mish",
           "SReLU", "S2ReLU", "Elementwise", "ElementwiseNumerical", "NUMERIC_ACTIVATIONS"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True, eq=False)
class NumericActivation(Activation):
    """An activation whose dual is computed numerically (kind K_NUMERIC).
    ``tables[0]`` is φ's table (``_numeric.build_table``)."""

    def __repr__(self):
        if "(" in self.name:
            return self.name
        args = ", ".join(f"{v:g}" for v in self.params)
        return f"{self.name}({args})"

    def _emit(self, builder, state):
        self._check_input(state)
        a = self.tables[0][HDR_SCALE]
        if a != 1.0:   # a sharp φ tabulated as ψ(y) = φ(y/a): φ(x) = ψ(ax) (_numeric)
            builder.emit(P.OP_SCALE, state.reg, params=(a * a,))
        lo = builder.add_aux(self.tables[0])
        slot = builder.n_numeric
        builder.n_numeric = slot + 1
        builder.emit(P.OP_ACT, state.reg, kind=P.K_NUMERIC, aux_lo=lo, aux_hi=slot,
                     params=self.params, name=repr(self))
        state.gaussian, state.born = False, -1   # not Gaussian, not mean-zero


@functools.lru_cache(maxsize=64)
def _builtin_table(key):
    name, params = key
    fn, dfn, lam, soft, kinks = _BUILTINS[name](*params)
    return build_table(f"{name}()", fn, dfn, lam=lam, soft=soft, kinks=kinks)


def _make(name, params, fn, dfn):
    table = _builtin_table((name, params))
    return NumericActivation(name, P.K_NUMERIC, params, fn=fn, dfn=dfn, tables=(table,))


def _expit(x):
    return special.expit(x)


def _sech2(x):
    """tanh'(x) = sech²x = 4e/(1 + e)², e = exp(−2|x|) (1/cosh²x overflows
    past |x| ≈ 710, with a warning)."""
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / (1.0 + e) ** 2


def _tanh_parts():
    return (np.tanh, _sech2, math.pi / 2, (0.0,), ())


def _sigmoid_parts():
    return (_expit, lambda x: _expit(x) * _expit(-x), math.pi, (0.0,), ())


def _softplus_parts():
    return (lambda x: np.logaddexp(0.0, x), _expit, math.pi, (0.0,), ())


def _silu_parts():
    return (lambda x: x * _expit(x),
            lambda x: _expit(x) * (1.0 + x * _expit(-x)), math.pi, (0.0,), ())


def _elu_parts(alpha, scale=1.0):
    return (lambda x: scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
            lambda x: scale * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0))),
            1.0, (), (0.0,))


def _mish_parts():
    def fn(x):
        return x * np.tanh(np.logaddexp(0.0, x))

    def dfn(x):
        t = np.tanh(np.logaddexp(0.0, x))
        return t + x * (1.0 - t * t) * _expit(x)
    return fn, dfn, 1.0, (0.0,), ()


def _srelu_parts():
    return (lambda x: np.maximum(x, 0.0) * np.maximum(1.0 - x, 0.0),
            lambda x: np.where((x > 0) & (x < 1), 1.0 - 2.0 * x, 0.0),
            1.0, (), (0.0, 1.0))


def _s2relu_parts():
    def fn(x):
        return np.sin(2 * np.pi * x) * np.maximum(x, 0.0) * np.maximum(1.0 - x, 0.0)

    def dfn(x):
        inside = (x > 0) & (x < 1)
        v = (2 * np.pi * np.cos(2 * np.pi * x) * x * (1.0 - x)
             + np.sin(2 * np.pi * x) * (1.0 - 2.0 * x))
        return np.where(inside, v, 0.0)
    return fn, dfn, 0.25, (), (0.0, 1.0)


_BUILTINS = {"Tanh": _tanh_parts, "Sigmoid": _sigmoid_parts, "Softplus": _softplus_parts,
             "Silu": _silu_parts, "Elu": _elu_parts, "Selu": lambda: _elu_parts(
                 _SELU_ALPHA, _SELU_SCALE), "Mish": _mish_parts, "SReLU": _srelu_parts,
             "S2ReLU": _s2relu_parts}


def _builtin(name, *params):
    fn, dfn = _BUILTINS[name](*params)[:2]
    return _make(name, tuple(params), fn, dfn)


@factory
def Tanh():
    """φ(x) = tanh(x)."""
    return _builtin("Tanh")


@factory
def Sigmoid():
    """φ(x) = 1 / (1 + e⁻ˣ) (logistic)."""
    return _builtin("Sigmoid")


@factory
def Softplus():
    """φ(x) = log(1 + eˣ)."""
    return _builtin("Softplus")


@factory
def Silu():
    """φ(x) = x / (1 + e⁻ˣ) (SiLU, Swish with β = 1)."""
    return _builtin("Silu")


Swish = Silu


@factory
def Elu(alpha=1.0):
    """φ(x) = x for x > 0, alpha (eˣ - 1) otherwise (kink at 0)."""
    return _builtin("Elu", real("Elu: alpha", alpha, squared=True))


@factory
def Selu():
    """φ(x) = λ Elu_α(x), α ≈ 1.6733, λ ≈ 1.0507 (Klambauer et al. 2017)."""
    return _builtin("Selu")


@factory
def Mish():
    """φ(x) = x tanh(log(1 + eˣ)) (Misra 2019)."""
    return _builtin("Mish")


@factory
def SReLU():
    """φ(x) = ReLU(x) ReLU(1 - x) (compact support, kinks at 0 and 1)."""
    return _builtin("SReLU")


@factory
def S2ReLU():
    """φ(x) = sin(2πx) ReLU(x) ReLU(1 - x) (multi-scale networks)."""
    return _builtin("S2ReLU")


@factory
def Elementwise(fn=None, df=None, d_nngp_fn=None, *, name=None, nngp_fn=None):
    """A user's own scalar activation φ = ``fn`` (a NumPy-vectorised callable
    such as ``scipy.special.erf``, or a scalar function such as ``math.tanh``
    or a numba-compiled one), with derivative ``df`` (same kinds), or None to
    differentiate φ's 20-point Chebyshev interpolants (error ~1e-13).
    neural-tangents' positional order ``Elementwise(fn, nngp_fn, d_nngp_fn)``
    works too: a second argument that needs two or more arguments (φ' needs
    one) is its ``nngp_fn``.

    φ is tabulated once on [-144, 144] in panels of width 1/8: it must be
    finite there and smooth between non-smooth points lying on multiples of
    1/8 (these are detected); otherwise a ``ValueError`` names the place.  A
    function too sharp for those panels (tanh(8x), sin(20x), a kink at 1/16)
    is tabulated as ψ(y) = φ(y/a) for the first a = 2, 4, …, 64 that resolves
    it: panels 1/(8a) wide on [-144/a, 144/a], input variances up to 128/a²
    unless φ is constant or linear beyond.
    neural-tangents' ``nngp_fn(cov12, var1, var2)`` / ``d_nngp_fn`` give
    E[φ(u)φ(v)] / E[φ'(u)φ'(v)] in closed form; here the dual of ``fn`` is
    computed, certified, so they are only checked against it (a ``ValueError``
    when they disagree by more than 1e-4 of the Cauchy–Schwarz scale) and
    ``fn`` is required.
    """
    if fn is None:
        raise TypeError("Elementwise: fn (the activation φ itself) is required: infkernel "
                        "computes the kernel from φ, so a kernel-only activation given by "
                        "nngp_fn / d_nngp_fn alone is not supported")
    if not callable(fn):
        raise TypeError(f"Elementwise: fn must be callable, got {type(fn).__name__}")
    if df is not None and not callable(df):
        raise TypeError(f"Elementwise: df must be callable or None, got {type(df).__name__}")
    if df is not None and _required_args(df) >= 2:    # neural-tangents' Elementwise(fn, nngp_fn)
        if nngp_fn is not None:
            raise TypeError("Elementwise: the second argument is a function of two or more "
                            "arguments (neural-tangents' nngp_fn) and nngp_fn= is given too")
        df, nngp_fn = None, df
    label = name or f"Elementwise({getattr(fn, '__name__', type(fn).__name__)})"
    table = build_table(label, fn, df, lam=0.5, soft=(0.0,))
    if df is None:
        df = _tabulated_derivative(label, fn, table)
    act = NumericActivation(label, P.K_NUMERIC, (), fn=_on_arrays(fn), dfn=_on_arrays(df),
                            tables=(table,))
    object.__setattr__(act, "name", label)
    if nngp_fn is not None or d_nngp_fn is not None:
        _check_user_dual(act, nngp_fn, d_nngp_fn)
    return act


def _on_arrays(f):
    """``f`` if it maps arrays elementwise, else ``f`` applied entry by entry
    (a scalar function such as ``math.tanh``), for the finite networks'
    arrays of pre-activations."""
    probe = np.array([[-0.5], [0.25], [1.0]])
    try:
        if np.shape(f(probe)) == probe.shape:
            return f
    except Exception:    # noqa: BLE001  (a scalar-only function raises on arrays)
        pass
    return np.vectorize(f, otypes=[float])


def _tabulated_derivative(label, fn, table):
    """φ' for finite-width networks when no df is given: the table's
    derivative (``_numeric.tab_values``), which beyond the table (±U/a) is
    the tails' slope; where φ is not its tail lines (``_numeric._tails``) central
    differences of ``fn`` there instead (step 1e-6 |x|: relative error
    ~1e-10)."""
    from ._numeric import HDR_QMAX, Q_MAX, U, _call, tab_values
    linear = table[HDR_QMAX] > Q_MAX
    reach = U / table[HDR_SCALE]

    def df(x):
        x = np.asarray(x, dtype=float)
        d = tab_values(table, x)[1]
        out = np.abs(x) > reach
        if out.any() and not linear:
            xo = x[out]
            h = 1e-6 * np.abs(xo)
            d[out] = (_call(label, fn, xo + h) - _call(label, fn, xo - h)) / (2 * h)
        return d
    return df


def _check_user_dual(act, nngp_fn, d_nngp_fn):
    """Compares neural-tangents' closed forms ``nngp_fn(cov12, var1, var2)`` =
    E[φ(u)φ(v)] and ``d_nngp_fn`` = E[φ'(u)φ'(v)] with this activation's own
    kernel (σ_w = 1, σ_b = 0: Σ² = E[φφ], Θ² = E[φφ] + E[φ'φ'] cov12) at four
    covariances; a ValueError beyond 1e-4 of the Cauchy–Schwarz scale."""
    from .layers import Dense, serial
    v1, v2, rho = np.array([[1.0, 0.5, 2.0, 1.2], [1.0, 2.0, 1.5, 1.2], [0.5, -0.3, 0.9, 1.0]])
    x1 = np.stack([np.sqrt(2 * v1), 0 * v1], axis=1)
    x2 = np.sqrt(2 * v2)[:, None] * np.stack([rho, np.sqrt(1 - rho * rho)], axis=1)
    net = serial(Dense(1, W_std=1.0, b_std=0.0), act, Dense(1, W_std=1.0, b_std=0.0))
    k, d1, d2 = net.kernel(x1, x2), net.diag(x1), net.diag(x2)
    cov = rho * np.sqrt(v1 * v2)
    expect = {"nngp_fn": (nngp_fn, np.diagonal(k.nngp), np.sqrt(d1.nngp * d2.nngp)),
              "d_nngp_fn": (d_nngp_fn, (np.diagonal(k.ntk) - np.diagonal(k.nngp)) / cov,
                            np.sqrt((d1.ntk - d1.nngp) / v1 * (d2.ntk - d2.nngp) / v2))}
    for what, (dual, ref, scale) in expect.items():
        for i in range(len(cov) if dual is not None else 0):
            try:
                got = float(np.asarray(dual(cov[i], v1[i], v2[i])))
            except Exception as exc:
                raise ValueError(f"Elementwise: {what}({cov[i]:g}, {v1[i]:g}, {v2[i]:g}) "
                                 f"raised {type(exc).__name__}: {exc}") from None
            if not abs(got - ref[i]) <= 1e-4 * scale[i]:
                raise ValueError(
                    f"Elementwise: {what}(cov12={cov[i]:g}, var1={v1[i]:g}, var2={v2[i]:g}) "
                    f"= {got:.8g}, but the expectation computed from fn is {ref[i]:.8g}; "
                    f"infkernel computes the kernel from fn itself, so fix {what} or drop it")


def _required_args(f):
    """Positional parameters without defaults (0 when not introspectable);
    of the function an ``np.vectorize`` wraps."""
    try:
        params = inspect.signature(getattr(f, "pyfunc", f)).parameters.values()
    except (TypeError, ValueError):
        return 0
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in params)


@factory
def ElementwiseNumerical(fn, deg=25, df=None):
    """neural-tangents' name, for porting: same as ``Elementwise(fn, df)``.
    ``deg`` (neural-tangents' Gauss–Hermite degree) is accepted and ignored:
    the accuracy is set by the certified quadrature, not by a grid."""
    count("ElementwiseNumerical: deg", deg)
    return Elementwise(fn, df=df,
                       name=f"ElementwiseNumerical({getattr(fn, '__name__', 'fn')})")


#: Numeric activations by lower-case name, merged into ``ACTIVATIONS`` here:
#: activations.py cannot import this module (it imports activations.py), and
#: the package imports both, so every ``ACTIVATIONS`` user sees them.
NUMERIC_ACTIVATIONS = {f.__name__.lower(): f for f in (
    Tanh, Sigmoid, Softplus, Silu, Elu, Selu, Mish, SReLU, S2ReLU)}
NUMERIC_ACTIVATIONS["swish"] = Swish
ACTIVATIONS.update(NUMERIC_ACTIVATIONS)
