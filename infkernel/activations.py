"""Elementwise activations: one registry entry per activation.

Each factory below (neural-tangents' names and parameter meanings) returns an
:class:`Activation` layer that knows its closed-form dual (the ``kind`` run by
every backend, formulas in ``_duals.py`` and ``cuda/infkernel_math.cuh``) and
its NumPy forward function and derivative (used by finite-width networks and
by the reference tests).
"""
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Tuple

import numpy as np
from scipy import special

from . import _program as P
from ._checks import flag, real
from ._duals import monomial_coefficients, polynomial_tables
from .layers import Layer

__all__ = ["Activation", "ABRelu", "Relu", "LeakyRelu", "Abs", "Erf",
           "Sigmoid_like", "Gelu", "Sin", "Cos", "Rbf", "Gaussian", "Exp",
           "Sign", "Gabor", "Monomial", "RectifiedMonomial", "Polynomial", "Hermite",
           "ACTIVATIONS"]


@dataclass(frozen=True, eq=False)
class Activation(Layer):
    """An elementwise nonlinearity φ.  Its input must be Gaussian, so it must
    follow a ``Dense`` layer (possibly through ``Identity``/``Scale``)."""
    name: str
    kind: int
    params: Tuple[float, ...]
    fn: Callable = field(repr=False)
    dfn: Callable = field(repr=False)
    #: coefficient tables for the dual, appended to the program's ``aux``
    tables: Tuple[Tuple[float, ...], ...] = field(default=(), repr=False)
    #: the arguments as shown by repr (default: ``params``)
    shown: str = field(default=None, repr=False)
    #: x ↦ (φ, φ′, φ″, φ‴)(x) stacked, where written out (finite-width PINN
    #: kernels; None: Cauchy integrals of φ's complex extension)
    derivs: Callable = field(default=None, repr=False)

    def __repr__(self):
        alias = self.__dict__.get("_alias")
        if alias is not None:       # made by a shorthand such as Relu(): shown as called
            return alias
        args = self.shown if self.shown is not None else ", ".join(f"{v:g}" for v in self.params)
        return f"{self.name}({args})"

    def __reduce__(self):
        """Pickled as the factory call that made it (φ, φ' are closures)."""
        made_by = self.__dict__.get("_made_by")
        if made_by is None:
            raise TypeError(f"{self!r} was not made by an activation factory (e.g. "
                            "ik.Relu()), so it cannot be pickled")
        return _call, made_by

    def _check_input(self, state):
        """The dual needs a Gaussian input: a Dense layer must come first."""
        if not state.gaussian:
            where = ("the network input" if state.at_input
                     else "the output of another activation")
            raise ValueError(
                f"{self!r} is applied to {where}, which is not Gaussian: an "
                "activation must follow a Dense layer (insert ik.Dense(...) "
                "before it)")

    def _emit(self, builder, state):
        self._check_input(state)
        lo = [builder.add_aux(t) for t in self.tables] + [0, 0]
        builder.emit(P.OP_ACT, state.reg, kind=self.kind, aux_lo=lo[0],
                     aux_hi=lo[1], params=self.params, name=repr(self))
        state.gaussian, state.born = False, -1   # not Gaussian, not mean-zero

    def _apply(self, params, h):
        return self.fn(h)


def _call(factory, args, kwargs):
    return factory(*args, **kwargs)


def factory(make):
    """Decorator for activation factories: the result remembers the call, so
    that it pickles (``Activation.__reduce__``); one made by a shorthand for
    another (``Relu()`` is ``ABRelu(0, 1)``) is shown as the shorthand's call."""
    @functools.wraps(make)
    def wrapper(*args, **kwargs):
        act = make(*args, **kwargs)
        object.__setattr__(act, "_made_by", (wrapper, args, kwargs))
        if act.name != make.__name__:
            shown = [f"{a:g}" if isinstance(a, (float, int)) and not isinstance(a, bool)
                     else repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
            object.__setattr__(act, "_alias", f"{make.__name__}({', '.join(shown)})")
        return act
    return wrapper


def _finite(name, **values):
    return tuple(real(f"{name}: {k}", v, squared=True) for k, v in values.items())


def _degree(name, degree):
    if not isinstance(degree, (int, np.integer)) or isinstance(degree, bool):
        raise TypeError(f"{name}: degree must be a non-negative integer, got "
                        f"{type(degree).__name__} {degree!r}")
    if degree < 0:
        raise ValueError(f"{name}: degree must be a non-negative integer, got {degree!r}")
    return int(degree)


@factory
def ABRelu(a, b, do_stabilize=False):
    """φ(x) = a min(x, 0) + b max(x, 0) (arc-cosine kernel, Cho & Saul 2009).
    ``do_stabilize`` is accepted for porting; scales are always factored out.
    Finite networks take φ'(0) = (a + b)/2, the value autodiff of
    neural-tangents' min/max form gives (JAX splits their ties evenly)."""
    a, b = _finite("ABRelu", a=a, b=b)
    flag("ABRelu: do_stabilize", do_stabilize)

    def fn(x):
        pos = np.maximum(x, 0)
        pos = pos if b == 1 else b * pos
        return pos if a == 0 else pos + a * np.minimum(x, 0)
    return Activation("ABRelu", P.K_ABRELU, (a, b), fn=fn,
                      dfn=lambda x: np.where(x > 0, b, np.where(x < 0, a, 0.5 * (a + b)))
                      * np.ones_like(x))


@factory
def Relu(do_stabilize=False):
    """φ(x) = max(x, 0)."""
    flag("Relu: do_stabilize", do_stabilize)
    return ABRelu(0.0, 1.0)


@factory
def LeakyRelu(alpha, do_stabilize=False):
    """φ(x) = alpha min(x, 0) + max(x, 0)."""
    (alpha,) = _finite("LeakyRelu", alpha=alpha)
    flag("LeakyRelu: do_stabilize", do_stabilize)
    return ABRelu(alpha, 1.0)


@factory
def Abs(do_stabilize=False):
    """φ(x) = |x|."""
    flag("Abs: do_stabilize", do_stabilize)
    return ABRelu(-1.0, 1.0)


@factory
def Erf(a=1.0, b=1.0, c=0.0):
    """φ(x) = a erf(bx) + c (Williams 1997)."""
    a, b, c = _finite("Erf", a=a, b=b, c=c)

    def fn(x):
        return a * special.erf(b * x) + c

    def dfn(x):
        return a * b * 2.0 / math.sqrt(math.pi) * np.exp(-(b * x) ** 2)

    def derivs(x):          # φ″ = −2b²x φ′, φ‴ = (4b⁴x² − 2b²) φ′
        g, b2 = dfn(x), 2 * b * b
        return np.stack([fn(x), g, -b2 * x * g, (b2 * b2 * x * x - b2) * g])
    return Activation("Erf", P.K_ERF, (a, b, c), fn=fn, dfn=dfn, derivs=derivs)


@factory
def Sigmoid_like():
    """φ(x) = erf(x / 2.4020563531719796) / 2 + 1/2 (neural-tangents' constant)."""
    return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


@factory
def Gelu(approximate=False):
    """φ(x) = x Φ(x) (Tsuchida et al. 2021).  ``approximate`` only changes the
    finite-width forward pass (tanh approximation), as in neural-tangents."""
    approximate = flag("Gelu: approximate", approximate)
    c = math.sqrt(2 / math.pi)
    derivs = None
    if approximate:
        def fn(x):
            return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))

        def dfn(x):
            t = np.tanh(c * (x + 0.044715 * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    else:
        def fn(x):
            return 0.5 * x * (1 + special.erf(x / math.sqrt(2)))

        def dfn(x):
            return (0.5 * (1 + special.erf(x / math.sqrt(2)))
                    + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))

        def derivs(x):      # φ′ = Φ + xϕ, φ″ = (2 − x²)ϕ, φ‴ = (x³ − 4x)ϕ
            cdf = 0.5 * (1 + special.erf(x / math.sqrt(2)))
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            return np.stack([x * cdf, cdf + x * pdf, (2 - x * x) * pdf, (x * x - 4) * x * pdf])
    return Activation("Gelu", P.K_GELU, (), fn=fn, dfn=dfn, derivs=derivs)


def _sine_derivs(a, b, c):
    """x ↦ (φ, φ′, φ″, φ‴) of φ = a sin(bx + c): a bᵏ sin(bx + c + kπ/2)."""
    def derivs(x):
        s, co = a * np.sin(b * x + c), a * b * np.cos(b * x + c)
        return np.stack([s, co, -b * b * s, -b * b * co])
    return derivs


@factory
def Sin(a=1.0, b=1.0, c=0.0):
    """φ(x) = a sin(bx + c)."""
    a, b, c = _finite("Sin", a=a, b=b, c=c)
    return Activation(
        "Sin", P.K_SIN, (a, b, c),
        fn=lambda x: a * np.sin(b * x + c),
        dfn=lambda x: a * b * np.cos(b * x + c), derivs=_sine_derivs(a, b, c))


@factory
def Cos(a=1.0, b=1.0, c=0.0):
    """φ(x) = a cos(bx + c) = a sin(bx + c + π/2)."""
    a, b, c = _finite("Cos", a=a, b=b, c=c)
    return Sin(a, b, c + math.pi / 2)


@factory
def Rbf(gamma=1.0):
    """φ(x) = √2 sin(√(2γ) x + π/4): the NNGP after it is exp(-γ E(u-v)²)."""
    (gamma,) = _finite("Rbf", gamma=gamma)
    if gamma < 0:
        raise ValueError(f"Rbf: gamma must be >= 0, got {gamma}")
    w = math.sqrt(2 * gamma)
    return Activation(
        "Rbf", P.K_RBF, (gamma,),
        fn=lambda x: math.sqrt(2) * np.sin(w * x + math.pi / 4),
        dfn=lambda x: math.sqrt(2) * w * np.cos(w * x + math.pi / 4),
        derivs=_sine_derivs(math.sqrt(2), w, math.pi / 4))


@factory
def Exp(a=1.0, b=1.0):
    """φ(x) = a exp(bx)."""
    a, b = _finite("Exp", a=a, b=b)
    return Activation(
        "Exp", P.K_EXP, (a, b),
        fn=lambda x: a * np.exp(b * x),
        dfn=lambda x: a * b * np.exp(b * x),
        derivs=lambda x: np.multiply.outer([1.0, b, b * b, b ** 3], a * np.exp(b * x)))


@factory
def Gaussian(a=1.0, b=-1.0):
    """φ(x) = a exp(b x²); for b > 0 the dual is +inf where it diverges."""
    a, b = _finite("Gaussian", a=a, b=b)
    return Activation(
        "Gaussian", P.K_GAUSSIAN, (a, b),
        fn=lambda x: a * np.exp(b * x * x),
        dfn=lambda x: 2 * a * b * x * np.exp(b * x * x),
        derivs=lambda x: _gaussian_derivs(b, x) * (a * np.exp(b * x * x)))


def _gaussian_derivs(b, x):
    """(φ, φ′, φ″, φ‴)/φ for φ = exp(b x²)."""
    return np.stack([np.ones_like(x), 2 * b * x, 2 * b + 4 * b * b * x * x,
                     (12 * b * b + 8 * b ** 3 * x * x) * x])


@factory
def Sign():
    """φ(x) = sign(x); its derivative dual is 0 (neural-tangents' convention)."""
    return Activation("Sign", P.K_SIGN, (), fn=np.sign, dfn=np.zeros_like)


@factory
def Gabor():
    """φ(x) = exp(-x²) sin x (neural-tangents' ``Gabor``; closed form by the
    Gaussian integral of exp(-u² - v²) e^{i(u ∓ v)})."""
    return Activation(
        "Gabor", P.K_GABOR, (),
        fn=lambda x: np.exp(-x * x) * np.sin(x),
        dfn=lambda x: np.exp(-x * x) * (np.cos(x) - 2 * x * np.sin(x)),
        derivs=_gabor_derivs)


def _gabor_derivs(x):
    """(φ, φ′, φ″, φ‴) of exp(−x²) sin x by Leibniz's rule."""
    e = _gaussian_derivs(-1.0, x) * np.exp(-x * x)
    s = _sine_derivs(1.0, 1.0, 0.0)(x)
    return np.stack([sum(math.comb(k, j) * e[j] * s[k - j] for j in range(k + 1))
                     for k in range(4)])


@factory
def Monomial(degree):
    """φ(x) = x^degree, any degree >= 0 (Mehler expansion)."""
    n = _degree("Monomial", degree)
    try:
        coef = monomial_coefficients(n)
    except OverflowError:
        raise ValueError(f"Monomial: degree {n} is too large: its Gaussian moments "
                         "exceed the largest double") from None
    kdot_table = n * n * monomial_coefficients(n - 1) if n else np.zeros(1)
    return Activation(
        "Monomial", P.K_MONOMIAL, (float(n),),
        fn=lambda x: x ** n,
        dfn=lambda x: n * x ** (n - 1) if n else np.zeros_like(x),
        tables=(tuple(coef), tuple(kdot_table)))


@factory
def RectifiedMonomial(degree):
    """φ(x) = max(x, 0)^degree (arc-cosine kernel of order n); degree 0 is the
    step function, whose derivative dual is 0 as in neural-tangents."""
    n = _degree("RectifiedMonomial", degree)
    try:   # E[max(u, 0)^2n] = (2n − 1)!!/2 at unit variance
        float(math.prod(range(1, 2 * n, 2)))
    except OverflowError:
        raise ValueError(f"RectifiedMonomial: degree {n} is too large: its Gaussian moments "
                         "exceed the largest double") from None
    return Activation(
        "RectifiedMonomial", P.K_RECTIFIED_MONOMIAL, (float(n),),
        fn=lambda x: np.where(x > 0, np.maximum(x, 0) ** n, 0.0),
        dfn=lambda x: n * np.where(x > 0, np.maximum(x, 0) ** max(n - 1, 0), 0.0)
        if n else np.zeros_like(x))


def _polynomial(name, b, hermite, shown):
    """The activation φ = Σ_m b_m e_m (e_m = He_m if ``hermite`` else x^m),
    kind K_POLYNOMIAL (``_duals.dual_polynomial``)."""
    n = len(b) - 1
    try:
        tables = polynomial_tables(b)
    except OverflowError:
        tables = None
    if tables is None or not all(np.isfinite(t).all() for t in tables):
        raise ValueError(f"{name}: degree {n} is too large: its Gaussian moments "
                         "exceed the largest double")
    if hermite:
        val, der = np.polynomial.hermite_e.hermeval, np.polynomial.hermite_e.hermeder
    else:
        val, der = np.polynomial.polynomial.polyval, np.polynomial.polynomial.polyder
    db = der(b)
    return Activation(
        name, P.K_POLYNOMIAL, (float(n), 1.0 if hermite else 0.0),
        fn=lambda x: val(x, b),
        dfn=lambda x: val(x, db),
        tables=tuple(tuple(t) for t in tables), shown=shown)


@factory
def Polynomial(coef):
    """φ(x) = coef[0] + coef[1] x + … + coef[n] xⁿ (numpy's coefficient order).

    Exact for every input variance: the dual is a polynomial in the
    covariances (``_duals.dual_polynomial``), as in neural-tangents."""
    try:
        c = np.array(coef)
    except (TypeError, ValueError):
        c = None
    if (c is None or (c.size and c.dtype.kind not in "iuf")     # strings, booleans, objects
            or (isinstance(coef, (list, tuple))
                and any(isinstance(v, (bool, np.bool_)) for v in coef))):
        raise TypeError(f"Polynomial: coef must be a sequence of real numbers, got "
                        f"{coef!r}")
    c = c.astype(np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"Polynomial: coef must be a non-empty 1-D sequence (coef[0] the "
                         f"constant term), got shape {c.shape}")
    c = np.array([real(f"Polynomial: coef[{i}]", v, squared=True) for i, v in enumerate(c)])
    return _polynomial("Polynomial", c, False, "[" + ", ".join(f"{v:g}" for v in c) + "]")


@factory
def Hermite(degree):
    """φ(x) = He_n(x)/√n!, the normalised probabilists' Hermite polynomial
    (E[φ(z)²] = 1 for z ~ N(0, 1)).

    neural-tangents assumes unit input variances (e.g. after ``LayerNorm``)
    and returns k = q12ⁿ there; infkernel gives the exact dual at every
    variance, which equals q12ⁿ, k̇ = n q12ⁿ⁻¹ at unit variances."""
    n = _degree("Hermite", degree)
    if n > 170:
        raise ValueError(f"Hermite: degree {n} is too large: n! exceeds the largest double")
    b = np.zeros(n + 1)
    b[n] = 1.0 / math.sqrt(math.factorial(n))
    return _polynomial("Hermite", b, True, str(n))


#: Activations by lower-case name, for the command line and error messages.
ACTIVATIONS = {f.__name__.lower(): f for f in (
    Relu, LeakyRelu, ABRelu, Abs, Erf, Sigmoid_like, Gelu, Sin, Cos, Rbf,
    Gaussian, Exp, Sign, Gabor, Monomial, RectifiedMonomial, Polynomial, Hermite)}
