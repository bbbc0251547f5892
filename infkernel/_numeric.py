"""Gaussian expectations of activations without a closed form (kind K_NUMERIC).

For (u, v) centred Gaussian with variances q1 = s1², q2 = s2² and correlation
ρ, we need  k = E[φ(u)φ(v)]  and  kdot = E[φ'(u)φ'(v)].

Representation of φ (``aux`` table, built once per activation at construction)
-------------------------------------------------------------------------------
φ and φ' are fitted on uniform panels of width ``H`` over [-U, U] by 20-point
Chebyshev interpolants whose dropped coefficients certify the fit (< 1e-13 of
the function's scale); the first ``NC`` Chebyshev coefficients are stored as
the equivalent polynomial in the panel coordinate y ∈ [-1, 1] (exact integer
change of basis, a few ulps), evaluated by Estrin's scheme: 2.3x faster than
Clenshaw's recurrence, whose chain of dependent steps bounds its speed.
Non-smooth points (kinks, jumps) must lie on panel edges (multiples of H);
they are detected at build time and become quadrature breakpoints.

A function too sharp for these panels (its fits not certified: tanh(8x),
sin(20x), a kink at 1/16) is tabulated as ψ(y) = φ(y/a) instead, with
a = 2, 4, …, 2^SCALES_LOG2 the first that certifies: panels of width H/a in
φ's variable, exactly (powers of 2).  Since φ(x) = ψ(ax), E[φ(u)φ(v)] is ψ's
at the covariances times a², E[φ'(u)φ'(v)] a² times ψ's: the activation
multiplies its input covariance by a² (an OP_SCALE before its OP_ACT, which
also carries the a² of the NTK), and the kernels only ever see ψ.  The rest
of this docstring speaks of the tabulated function, φ for a = 1.  Layout at
offset ``lo`` of ``aux``::

    lo + 0..7           header: U, 1/H, P (panels), NC, nk, ns, λ, q_max
                        (U, H, P, NC: this module's constants, which the
                        lookups use; stored to make a table self-describing)
    lo + 8..11          the tails: φ(-U), slope left of -U, φ(U), slope right of U
    lo + 12             parity: -1 (φ odd), +1 (even), 0 (neither), to 1e-14
    lo + 13             a, the input scale (above; 1 but for sharp functions)
    lo + 14, 15, 16     W, L, R: the quadratures' panel cap (below; W = 0: none)
    lo + 17 ..          nk kink positions, then ns "soft centres" (u-space),
                        in MAX_BREAKS entries (the rest zero)
    base = lo+17+16     per panel p: φ's coefficients of y⁰ … y^(NC-1) at
                        base + 2 p NC, then φ''s at base + 2 p NC + NC
                        (a fixed base: no header read on the way to them)
    base + 2 P NC       the graded panels toward 0, as the others (2 J of
                        them, ``_graded_panels``), then 6 values at 0:
                        φ(0), φ'(0), φ(0⁺), φ'(0⁺), φ(0⁻), φ'(0⁻)

Near 0 the panels are graded: |x| ∈ [2^-(5+j), 2^-(4+j)), j < J, on each
side, so that φ(x) is relatively accurate for tiny x (the uniform panels'
coordinate y = 16x - 1 would round x to ~1e-17 absolutely: a relative error
1e-17/s in a kernel at input scale s, 1e-7 for tanh at variance 1e-16).  The
coordinate of |x| = m 2^e (``frexp``) is y = 4m - 3, exact.  Below
|x| = 2^-(4+J) ≈ 3e-160 (beyond the reach of any nonzero float64 variance)
φ is its limit line at 0⁺ or 0⁻, and at x = 0 exactly φ(0) and the given
φ'(0) (as the finite networks evaluate them; a kink's right derivative when
φ' is the differentiated fit).  Where φ cannot be evaluated there (not
finite, raising, or too rough to fit: a formula cancelling near 0) a graded
panel keeps the uniform panel's polynomial (``_graded_panels``).

λ is the distance from the real axis to φ's nearest complex singularity (or a
feature scale); the quadrature grades its panels from width λ at each centre.
Beyond ±U, φ continues as the lines of the tails, φ(±U) + a±(x ∓ U) with
the slopes a± = (φ(±2U) - φ(±U))/U.  Where that is φ itself (checked at
build time at sample points out to |x| = U_TAIL, ``_tails``: tanh, the
logistic function, softplus, SiLU, ELU, ... are constant or linear there to
rounding) the table serves input variances up to q_max = Q_TAIL_MAX = 1e20;
otherwise up to Q_MAX = 128, within which the quadrature never leaves
[-U, U] (and the lines are not used).

Fast path: Mehler series with per-point coefficients
----------------------------------------------------
With normalised Hermite polynomials h_n = He_n/√n! (Mehler 1866),

    k = Σ_n a_n(s1) a_n(s2) ρⁿ,   a_n(s) = E[φ(s z) h_n(z)],
    kdot = Σ_n d_n(s1) d_n(s2) ρⁿ, d_n(s) = E[φ'(s z) h_n(z)].

a_n, d_n (n < NM) are computed once per point in the diagonal pass by
composite Gauss–Legendre on z ∈ [-ZC, ZC] (Cramér's bound
|h_n(z)| e^{-z²/4} ≤ 1.09 makes the truncation < 1e-17 for every n), graded at
φ's breakpoints.  Per entry the series is a Horner loop over n, vectorised
across the columns of a tile.  By Cauchy–Schwarz the truncation error is at
most |ρ|^{N+1} √(T1(N) T2(N)) with tails T(N) = Σ_{n>N} a_n² = E[φ²] - Σ_{n≤N} a_n²
(Parseval), so each tile uses the fewest terms that certify
|error| ≤ TOL √(E[φ(u)²] E[φ(v)²]) (``TOL`` = 1e-12).  At ρ = 1 with equal
variances (the diagonal, duplicate points) the entry is E[φ²], E[φ'²] itself,
summed over the same nodes in the diagonal pass.

Fallback: nested graded Gauss–Legendre
--------------------------------------
Entries the series cannot certify (kinks, large variances, |ρ| → 1) use
    k = ∫ φ(s1 x) H(x) γ(x) dx,   H(x) = ∫ φ(s2 ρ x + s2 c w) γ(w) dw,  c = √(1-ρ²),
with both integrals split exactly at the kinks and graded geometrically from
the feature width (c/|ρ| for a smoothed kink, λ/s for a soft centre) at every
breakpoint, 12-point Gauss–Legendre per panel, truncated at |x|, |w| ≤ 9
(tail mass 2e-19); for odd or even φ the outer integrand is even in x
(H is odd or even as φ is, φ' even or odd), so x runs over [0, 9] and the sum is
doubled: half the nodes (tanh).  The inner integral at σ = s2 c ≤ λ/2.5 with no kink
near m (correlations near ±1, common with low-dimensional inputs) takes a
Gauss–Hermite rule of 8 to 64 nodes instead (``_inner``).

Panel cap
---------
In φ's own variable u the graded panels are scale-free: [b + λ2^j, b + λ2^(j+1)]
about each breakpoint b, as wide as they are far from it (cut by the uniform
grids, DMAX s in u).  That suits functions whose features sit at the
breakpoints (tanh, softplus, GELU: 12 Gauss–Legendre nodes resolve them on
such panels to far below 1e-13), not φ with features elsewhere: sin x
oscillates everywhere (at q = 120 the fallback was 1e-4 off), tanh(4(x - 3))
has its transition away from the soft centre 0 (2e-2 off).  When the table is
built (``_panel_cap``) every graded panel within ±U, split at the kinks, is
tested: the Chebyshev coefficients of φ² (NQ nodes) from degree 24 on, those
that 12-point Gauss–Legendre does not integrate, must stay below 1e-12 of
the local coefficients plus φ's scale squared (``_resolved``).  If some fail,
[L, R] is the interval they span and W the widest H 2^i at which all the
aligned cells [kW, (k+1)W] meeting it pass (≥ H: the table's own panels are
resolved); the quadratures (outer, inner and the Mehler coefficients') then
add the edges u = kW, L ≤ kW ≤ R (``_add_cap``), and λ becomes min(λ, W).
Built-ins have no cap; sin x has W = 4 on [-U, U]; tanh(4(x - 3)) W = 1/2 on
[2, 8] (one side: its transition's panels).

Per-point feature arrays (filled by the diagonal pass, read by ``numeric_tile``)
------------------------------------------------------------------------------
    F[slot, 0, n, i]  a_n(s_i)              F[slot, 1, n, i]  d_n(s_i)
    F[slot, 2, n, i]  √(T_a(n) / E[φ²])     F[slot, 3, n, i]  √(T_d(n) / E[φ'²])
    G[slot, 0, i]     E[φ(s_i z)²]          G[slot, 1, i]     E[φ'(s_i z)²]

``slot`` numbers the numeric activation ops of a program in order.
Guaranteed range: input variances 0 ≤ q ≤ q_max of the table (128, or 1e20
for linear tails; checked, an error names the activation otherwise).  Large
variances need no new nodes: the panels are graded from λ/s at the centres,
so φ(s z)'s transition of width λ/s is resolved at every s (measured against
an adaptive quadrature in φ's own variable, q = 1e3 … 1e20: ≤ 2e-13 of the
Cauchy–Schwarz scale for smooth φ, up to the conditioning of ρ near ±1).
"""
import math
import warnings

import numpy as np
from numba import njit

from ._config import INLINE, JIT
from ._duals import correlation

# --- table geometry ---------------------------------------------------------
H = 0.125                      # panel width (kinks must lie on multiples of H)
NC = 12                        # coefficients kept per panel (_estrin's 12 terms)
NFIT = 20                      # interpolation points used to fit a panel
Q_MAX = 128.0                  # input-variance range [0, Q_MAX] of a table ...
Q_TAIL_MAX = 1e20              # ... and of one whose φ is linear beyond ±U
U_TAIL = 3e11                  # tails checked to |x| = U_TAIL >= the quadratures' reach ~1.3e11
ZC = 12.5                      # Mehler coefficient integrals over |z| <= ZC
U = 144.0                      # table covers |u| <= U >= ZC sqrt(Q_MAX)
P = int(round(2 * U / H))      # number of panels
HDR = 17                       # header entries (layout above); named ones:
HDR_QMAX = 7                   # q_max, the table's input-variance limit
HDR_TAILS = 8                  # φ(-U), slope, φ(U), slope
HDR_PARITY = 12                # -1 odd, +1 even, 0 neither
HDR_SCALE = 13                 # a: the table is of ψ(y) = φ(y / a)
HDR_WCAP = 14                  # W: widest quadrature panel for u in [L, R] ...
HDR_LCAP = 15                  # ... L
HDR_RCAP = 16                  # ... R (W = 0: no cap)
NQ = 40                        # nodes of the panel-resolution test (_panel_cap)
SCALES_LOG2 = 6                # sharp functions: a = 2^k, k <= SCALES_LOG2
NM = 96                        # Mehler terms available per point
TOL = 1e-12                    # certified normalised truncation error
ZF = 9.0                       # fallback truncation |x|, |w| <= ZF
DMAX = 1.5                     # fallback: widest panel
NG = 12                        # fallback: Gauss-Legendre nodes per panel
MAX_BREAKS = 16                # kinks + soft centres per activation
J = 526                        # graded panels per side toward 0 (layout above)
X_GRADED = H / 2               # |x| below: the graded panels ...
X_ZERO = 2.0 ** -(4 + J)       # ... and below those the lines at 0±

# fallback: Gauss-Hermite rules for the inner integral, rule t of 8·2^t nodes
# at σ <= GH_SIGS[t] λ (t = 0 … 3: 8 … 64 nodes; each errs by ≤ 6e-16 of
# tanh's scale there, against adaptive quadrature), used when every kink of φ
# lies more than GH_CLEARS[t] σ from m: 2σ beyond the rule's outermost node,
# and at least 12σ (Gaussian mass beyond: 2e-33)
GH_SIGS = (1 / 20, 1 / 8, 1 / 4, 1 / 2.5)
GH_SIG = GH_SIGS[-1]
#: row k: the coefficients of y⁰ … y^(NC-1) in T_k(y) (integers, exact)
_CHEB_TO_POWERS = np.array([np.pad(np.polynomial.chebyshev.cheb2poly(np.eye(NC)[k]),
                                   (0, NC - 1 - k)) for k in range(NC)])
_GLX12, _GLW12 = np.polynomial.legendre.leggauss(NG)
_GLX16, _GLW16 = np.polynomial.legendre.leggauss(16)
_GH_RULES = [np.polynomial.hermite_e.hermegauss(8 << t) for t in range(len(GH_SIGS))]
_GHX = np.concatenate([x for x, _ in _GH_RULES])            # rule t from 8 (2^t - 1)
_GHW = np.concatenate([w / w.sum() for _, w in _GH_RULES])
_GH_SIGS = np.array(GH_SIGS)
_GH_CLEARS = np.array([max(12.0, x.max() + 2.0) for x, _ in _GH_RULES])
NGH = _GHX.size


# ---------------------------------------------------------------------------
# Table construction (Python, once per activation)
# ---------------------------------------------------------------------------
def _cheb_fit(values):
    """Chebyshev coefficients of the interpolant at first-kind nodes
    cos(π(k+½)/n) of each row of ``values`` (DCT-II by a small matrix)."""
    n = values.shape[-1]
    k = np.arange(n)
    T = np.cos(np.pi * np.outer(k, k + 0.5) / n)
    c = values @ T.T * (2.0 / n)
    c[..., 0] *= 0.5
    return c


def _cheb_der(c, half_width):
    """Coefficients of d/dx of a Chebyshev series on a panel of half-width h."""
    n = c.shape[-1]
    d = np.zeros_like(c)
    for k in range(n - 1, 0, -1):
        d[..., k - 1] = (d[..., k + 1] if k + 1 < n else 0.0) + 2 * k * c[..., k]
    d[..., 0] *= 0.5
    return d / half_width


def _call(name, f, x, strict=True):
    """f on an array, vectorised if f accepts arrays, with clear errors
    (``strict=False``: NaN where f raises or is not finite, no error)."""
    try:
        with warnings.catch_warnings():
            # NumPy < 2 lets a scalar function (math.tanh) take a 1-element
            # array, with a DeprecationWarning; NumPy 2 raises: the scalar
            # loop below either way
            warnings.simplefilter("error", DeprecationWarning)
            y = f(x)
        y = np.asarray(y, dtype=float) if not np.iscomplexobj(y) else None
        if y is None:
            raise TypeError("returns complex values for real input")
        if y.shape != x.shape:
            y = None
    except Exception:
        y = None
    if y is None:  # scalar-only function (e.g. math.tanh or a numba scalar)
        out = np.empty(x.size)
        for idx, xv in enumerate(x.ravel()):
            try:
                r = f(float(xv))
            except Exception as exc:
                if not strict:
                    out[idx] = math.nan
                    continue
                raise ValueError(f"{name}: the function raised {type(exc).__name__}: "
                                 f"{exc} at x = {xv!r}") from None
            r = np.asarray(r)
            if r.shape != () or np.iscomplexobj(r) or not np.issubdtype(r.dtype, np.number):
                raise TypeError(f"{name}: the function must return a real scalar for a "
                                f"scalar input, got {r!r} at x = {xv!r}")
            out[idx] = float(r)
        y = out.reshape(x.shape)
    bad = ~np.isfinite(y)
    if strict and bad.any():
        raise ValueError(f"{name}: the function returned {y[bad].flat[0]} at x = "
                         f"{x[bad].flat[0]!r}; it must be finite on [-{U:g}, {U:g}]")
    return y


class _NotSmooth(ValueError):
    """φ's fits on the panels are not certified (``_certify``)."""


def build_table(name, fn, dfn=None, lam=0.5, soft=(0.0,), kinks=None):
    """The ``aux`` table of φ = ``fn`` (see module docstring).

    ``dfn``: φ' (NumPy); None differentiates the 20-point Chebyshev
    interpolant of φ on each panel (error ~ 1e-13 of φ's scale).
    ``kinks``: None detects non-smooth points at panel edges, and tabulates a
    function too sharp for the panels as ψ(y) = φ(y/a) (module docstring); a
    kink inside the finest panels is an error.  Given ``kinks`` (the
    built-ins') are used as they are, at a = 1.
    """
    first = None
    for k in range(SCALES_LOG2 + 1 if kinks is None else 1):
        a = 2.0 ** k
        psi = fn if k == 0 else (lambda y: fn(y / a))
        dpsi = dfn if k == 0 or dfn is None else (lambda y: dfn(y / a) / a)
        try:
            return _build_table(name, psi, dpsi, lam, soft, kinks, a)
        except _NotSmooth as exc:
            first = first or exc
    raise ValueError(f"{first}, or of 1/{round(2 ** SCALES_LOG2 / H)} for a sharper function "
                     f"(tabulated on panels down to 1/{round(2 ** SCALES_LOG2 / H)} wide, as "
                     "sharp as about tanh(250x): tried too)") from None


def _build_table(name, fn, dfn, lam, soft, kinks, a):
    """``build_table`` of ψ = ``fn`` tabulating φ(x) = ψ(ax) (``dfn`` = ψ')."""
    edges = -U + H * np.arange(P + 1)
    t = np.cos(np.pi * (np.arange(NFIT) + 0.5) / NFIT)[::-1]
    x = edges[:-1, None] + 0.5 * H * (1.0 + t[None, :])
    y = _call(name, fn, x)
    cf = _cheb_fit(y[:, ::-1])           # nodes ordered as cos(...) for the DCT
    if dfn is None:
        cd = _cheb_der(cf, 0.5 * H)
    else:
        cd = _cheb_fit(_call(name + " derivative", dfn, x)[:, ::-1])
    core = np.abs(edges[:-1]) <= 8.0
    scale = max(np.abs(y[core]).max(), 1e-300)
    dscale = max(np.abs(cd[core, :]).sum(axis=1).max(), scale)
    _certify(name, cf, cd if dfn else None, scale, dscale, edges[:-1] / a, H / a)
    if dfn is not None:
        _check_derivative(name, x, t, cf, cd, scale, a)
    cf, cd = cf[:, :NC].copy(), cd[:, :NC].copy()
    if kinks is None:
        # jumps of φ, of φ', and of φ'' (kinks of φ': ELU(1), x|x|, relu²,
        # softsign, whose E[φ'φ'] converges slowly without a break there:
        # 3e-4 off); rounding leaves relative jumps ≤ 5e-7 in smooth
        # functions' φ'' (tanh, softplus, SiLU, GELU, Mish, atan, sin; with or
        # without df), those examples' are 0.03 … 1
        cdd = _cheb_der(cd, 0.5 * H)
        ddscale = max(np.abs(cdd[core, :]).sum(axis=1).max(), dscale)
        kinks = edges[1:-1][_edge_jumps(cf, scale, 1e-9) | _edge_jumps(cd, dscale, 1e-7)
                            | _edge_jumps(cdd, ddscale, 1e-4)]
    kinks = np.asarray(sorted(set(float(k) for k in kinks)), dtype=float)
    soft = np.asarray([s for s in soft if s not in kinks], dtype=float)
    if kinks.size + soft.size > MAX_BREAKS:
        raise ValueError(f"{name}: {kinks.size} non-smooth points (at most "
                         f"{MAX_BREAKS - soft.size} are supported)")
    tails, linear = _tails(fn, dfn, scale)
    parity = _parity(_call(name, fn, -x), y, tails, scale)
    if parity:
        # made exact: panel P-1-p is panel p mirrored (t -> -t, T_k(-t) =
        # (-1)^k T_k(t)), φ with the parity's sign, φ' with the opposite one
        mirror = (-1.0) ** np.arange(NC)
        cf = 0.5 * (cf + parity * mirror * cf[::-1])
        cd = 0.5 * (cd - parity * mirror * cd[::-1])
        tails = [parity * tails[2], -parity * tails[3], tails[2], tails[3]]
    hdr = np.array([U, 1.0 / H, P, NC, kinks.size, soft.size, lam,
                    Q_TAIL_MAX if linear else Q_MAX, *tails, parity, a, 0.0, 0.0, 0.0])
    mono = np.stack([cf @ _CHEB_TO_POWERS, cd @ _CHEB_TO_POWERS], axis=1)   # (P, 2, NC)
    pad = np.zeros(MAX_BREAKS - kinks.size - soft.size)
    graded, at_zero = _graded_panels(name, fn, dfn, t, parity, scale, dscale,
                                     cf[P // 2 - 1: P // 2 + 1], cd[P // 2 - 1: P // 2 + 1])
    table = np.concatenate([hdr, kinks, soft, pad, mono.ravel(), graded.ravel(), at_zero])
    w, left, right = _panel_cap(table, lam, kinks, soft, scale)
    if w:
        table[[HDR_WCAP, HDR_LCAP, HDR_RCAP, 6]] = w, left, right, min(lam, w)
    return table


def _resolved(table, a, b, scale):
    """Per interval [a, b] (arrays): the table's φ² there has Chebyshev
    coefficients (NQ nodes) from degree 24 on below 1e-12 of the local
    coefficients plus ``scale``²: 12-point Gauss–Legendre integrates a
    product of φ (or φ', which has φ's singularities) at two scales, each
    within such a panel, times a smooth weight, to about that (the square:
    the exponential types of entire functions such as sin add up in
    products; module docstring, "Panel cap")."""
    t = np.cos(np.pi * (np.arange(NQ) + 0.5) / NQ)
    x = np.ascontiguousarray((0.5 * (a + b))[:, None] + (0.5 * (b - a))[:, None] * t)
    y = np.empty((2, x.size))
    _tab_values(table, x.ravel(), y)
    c = _cheb_fit((y[0] * y[0]).reshape(x.shape))
    return np.abs(c[:, 24:]).sum(axis=1) <= 1e-12 * (np.abs(c).sum(axis=1) + scale * scale)


def _cut(a, b, kinks):
    """The intervals [a, b] (arrays) cut at the kinks inside them, empty ones
    dropped."""
    for k in kinks:
        inside = (a < k) & (k < b)
        a, b = (np.concatenate([a, np.full(inside.sum(), k)]),
                np.concatenate([np.where(inside, k, b), b[inside]]))
    keep = b > a
    return a[keep], b[keep]


def _panel_cap(table, lam, kinks, soft, scale):
    """(W, L, R) of the panel cap (module docstring), (0, 0, 0) where every
    graded panel within ±U is resolved."""
    j = np.arange(-1, int(np.ceil(np.log2(2 * U / lam))) + 1)
    near = np.where(j < 0, 0.0, lam * 2.0 ** np.maximum(j, 0))   # panel [b + near, b + far]
    far = lam * 2.0 ** (j + 1)
    a, b = [], []
    for c in list(kinks) + list(soft):
        a += [c + near, c - far]
        b += [c + far, c - near]
    a, b = np.clip(np.concatenate(a), -U, U), np.clip(np.concatenate(b), -U, U)
    a, b = _cut(a, b, kinks)
    bad = ~_resolved(table, a, b, scale)
    if not bad.any():
        return 0.0, 0.0, 0.0
    left, right = float(a[bad].min()), float(b[bad].max())
    for i in range(int(np.log2(128 / H)), -1, -1):
        w = H * 2.0 ** i
        k = np.arange(np.floor(left / w), np.ceil(right / w))
        ca, cb = _cut(np.clip(k * w, -U, U), np.clip((k + 1) * w, -U, U), kinks)
        if _resolved(table, ca, cb, scale).all():
            break
    return w, left, right


def _edge_jumps(c, scale, tol):
    """Per interior panel edge: the fits ``c`` of the panels on its two sides
    differ there by more than ``tol`` (scale + |value|) (T_k(±1) = (±1)^k)."""
    right = c.sum(axis=1)
    left = (c * (-1.0) ** np.arange(c.shape[1])).sum(axis=1)
    return np.abs(right[:-1] - left[1:]) > tol * (scale + np.abs(right[:-1]))


def _rough(c, scale):
    """Per panel: the dropped Chebyshev coefficients of the fits ``c`` exceed
    1e-13 of the local coefficients plus the function's ``scale``."""
    return np.abs(c[:, NC:]).sum(axis=1) > 1e-13 * (np.abs(c).sum(axis=1) + scale)


def _certify(name, cf, cd, scale, dscale, lefts, width):
    """A _NotSmooth error unless φ's fits ``cf`` (and the given φ''s ``cd``,
    unless None) pass ``_rough`` on every panel [left, left + width] (in φ's
    variable).  A derivative obtained by differentiating φ's interpolants is
    smooth where φ is, up to rounding amplified by ~NFIT²/H: not re-checked."""
    checks = [(cf, scale, "function")] + ([(cd, dscale, "derivative")] if cd is not None else [])
    for c, sc, what in checks:
        badp = np.flatnonzero(_rough(c, sc))
        if badp.size:
            a = lefts[badp[0]]
            raise _NotSmooth(
                f"{name}: the {what} is not smooth on [{a:g}, {a + width:g}]: activations "
                f"computed by quadrature must be smooth between non-smooth points that lie "
                f"on multiples of {width:g} (e.g. 0, 1, -0.5), and analytic up to them from "
                "each side (|x|, relu(x - 1) are; |x|^1.5, sqrt|x| are not)")


def _graded_panels(name, fn, dfn, t, parity, scale, dscale, cf_mid, cd_mid):
    """The graded panels toward 0 (module docstring): powers of y for φ and φ'
    on |x| ∈ [a, 2a], a = 2^-(5+j), per side (+, then -) and j < J, shape
    (2, J, 2, NC), fitted as the uniform panels are (y increasing with |x| on
    both sides); and the 6 values at 0: φ(0), φ'(0) (``fn``, ``dfn`` at 0,
    where they are finite; else the limits from the right), then φ and φ' at
    0⁺ and 0⁻ (the innermost panels at y = -1).

    A panel where fn (dfn) is not finite, raises or does not fit as smoothly
    as ``_rough`` asks (a formula that cancels near 0, e.g. (eˣ − 1)/x) keeps
    the uniform panels' polynomial there (Chebyshev coefficients ``cf_mid``,
    ``cd_mid`` on [-H, 0] and [0, H]): never less accurate than those, and no
    function the uniform panels accept is refused.  Without ``dfn``, φ' is
    the derivative of the graded fit where that is the more accurate one (φ's
    rounding amplified by 1/a, against the uniform panel's by 1/H: where φ's
    size on the panel shrinks like a, as for φ(0) = 0), else the uniform one."""
    a = 2.0 ** -(5 + np.arange(J))
    cheb = np.polynomial.chebyshev.chebval

    fits = []
    for side, m in ((1.0, 1), (-1.0, 0)):
        x = side * (a[:, None] + 0.5 * a[:, None] * (1.0 + t[None, :]))
        y_mid = x[:, ::-1] * (2.0 / H) - side     # the nodes in the uniform panel's y

        def fit(f, mid, sc):
            with np.errstate(all="ignore"):
                c = _cheb_fit(_call(name, f, x, strict=False)[:, ::-1])
            bad = ~np.isfinite(c).all(axis=1) | _rough(c, sc)
            c[bad] = _cheb_fit(cheb(y_mid[bad], mid))
            return c, bad
        cf, bad = fit(fn, cf_mid[m], scale)
        if dfn is None:
            cd = side * _cheb_der(cf, 0.5 * a[:, None])
            use = bad | (np.abs(cf).sum(axis=1) / a > np.abs(cf_mid[m]).sum() / H)
            cd[use] = _cheb_fit(cheb(y_mid[use], cd_mid[m]))
        else:
            cd = fit(dfn, cd_mid[m], dscale)[0]
        fits.append([cf[:, :NC], cd[:, :NC]])
    (pf, pd), (mf, md) = fits
    if parity:   # exact, as the uniform panels: φ(-x) = parity φ(x), φ'(-x) = -parity φ'(x)
        pf, pd = 0.5 * (pf + parity * mf), 0.5 * (pd - parity * md)
        mf, md = parity * pf, -parity * pd
    graded = np.stack([np.stack([f, d], axis=1) for f, d in ((pf, pd), (mf, md))]) @ _CHEB_TO_POWERS
    ends = graded[:, -1] @ (-1.0) ** np.arange(NC)            # (side, φ/φ') at y = -1
    at_zero = ends[0].copy()
    for k, f in enumerate((fn, dfn)):
        if f is not None:
            with np.errstate(all="ignore"):
                v = _call(name, f, np.zeros(1), strict=False)[0]
            at_zero[k] = v if np.isfinite(v) else at_zero[k]
    return graded, np.concatenate([at_zero, ends[0], ends[1]])


def _parity(y_minus, y, tails, scale):
    """-1 when φ is odd, +1 when even, else 0: φ(-x) = -φ(x) or φ(x) at the
    table's nodes and the tails' lines mirror each other, to 1e-14 of
    |φ| + the table's scale (rounding of a symmetric φ is ~1e-16)."""
    (end_minus, slope_minus, end_plus, slope_plus) = tails
    for sign in (-1.0, 1.0):
        if (np.all(np.abs(y_minus - sign * y) <= 1e-14 * (np.abs(y) + scale))
                and abs(end_minus - sign * end_plus) <= 1e-14 * (abs(end_plus) + scale)
                and abs(slope_minus + sign * slope_plus) <= 1e-14 * (abs(slope_plus) + scale)):
            return sign
    return 0.0


def _tails(fn, dfn, scale):
    """((φ(-U), a₋, φ(U), a₊), linear): the lines φ(±U) + a±(x ∓ U) that
    continue the table (a± = (φ(±2U) - φ(±U))/U), and whether they are φ
    (and the given φ') to 1e-12 of |φ| + the table's scale at the sample
    points |x| = U + H·k (k ≤ 8U/H: every panel width out to 9U), U + U·2ᵏ
    out to U_TAIL (k = 3 … 31 in steps of 1/4) and 64 random points between.
    A sample, not a proof: saturating and asymptotically linear activations
    are their lines to rounding from |x| ~ 40 on; anything else (growing,
    oscillating, not finite or raising there) keeps the table to variances
    ≤ Q_MAX, where the lines are never used."""
    r = np.concatenate([H * np.arange(1, 8 * P // 2 + 1), U * 2.0 ** (np.arange(12, 125) / 4),
                        U * np.random.default_rng(0).uniform(0.0, U_TAIL / U, 64)])
    lines, linear = [], True
    for sign in (-1.0, 1.0):
        end = float(_call("", fn, np.array([sign * U]))[0])  # finite: checked by the table
        slope = 0.0
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slope = sign * (float(_call("", fn, np.array([2 * sign * U]))[0]) - end) / U
                x = sign * (U + r)
                line = end + slope * (x - sign * U)
                linear = (linear and bool(np.all(np.abs(_call("", fn, x) - line)
                                                 <= 1e-12 * (np.abs(line) + scale)))
                          and (dfn is None or bool(np.all(np.abs(_call("", dfn, x) - slope)
                                                          <= 1e-12 * (abs(slope) + scale)))))
        except (ValueError, TypeError, ArithmeticError):
            linear = False
        lines += [end, slope]
    return lines, linear


def _check_derivative(name, x, t, cf, cd, scale, a):
    """A ValueError unless the given φ' (Chebyshev coefficients ``cd`` per
    panel, at nodes ``x`` = panel coordinates ``t``) is the derivative of φ
    (``cf``), compared panel by panel with the derivative of φ's interpolant.

    Both are series of functions smooth on the panel (non-smooth points lie
    on panel edges and the nodes inside), so a kink never counts.  The
    difference is measured against the local scale, |φ'| plus |φ|/(H/2)
    (φ's own scale on the panel, with the global ``scale`` as a floor where φ
    underflows): differentiating the certified fit (dropped coefficients
    ≤ 1e-13 of |φ| + scale) multiplies its error by at most NFIT² = 400
    (|T_k'| ≤ k²), i.e. ≤ 4e-11 of that scale (measured ≤ 5e-12 for the
    built-in activations, sin 7x, x³, erf, ...); a wrong φ' is off by O(1)
    of it.  1e-8 leaves a margin of 250 over the worst case.  ``a``: the
    table's input scale (the error names φ's variable, x / a, and φ' = a ψ')."""
    dphi = _cheb_der(cf, 0.5 * H)
    diff = np.abs(cd - dphi).sum(axis=1)        # >= max |difference| on the panel
    local = (np.abs(cd).sum(axis=1) + np.abs(dphi).sum(axis=1)
             + (np.abs(cf).sum(axis=1) + scale) / (0.5 * H))
    bad = np.flatnonzero(diff > 1e-8 * local)
    if bad.size:
        p = bad[np.argmax(diff[bad] / local[bad])]
        cheb = np.polynomial.chebyshev.chebval
        given, slope = cheb(t, cd[p]), cheb(t, dphi[p])
        j = np.argmax(np.abs(given - slope))
        left = (x[p, 0] - 0.5 * H * (1.0 + t[0])) / a
        raise ValueError(
            f"{name}: the derivative df disagrees with fn on [{left:g}, {left + H / a:g}]: "
            f"at x = {x[p, j] / a:.6g}, df(x) = {a * given[j]:.8g} but fn's slope is "
            f"{a * slope[j]:.8g} "
            f"(compared to 1e-8 of the local scale); pass the derivative of fn as df, or "
            f"df=None to differentiate fn")


# ---------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------
@njit(**INLINE)
def _estrin(c, i, y, y2, y4, y8):
    """Σ_k c[i + k] y^k, k < 12, by Estrin's scheme (depth 4 instead of 11;
    the CUDA header's ik_estrin groups the terms alike)."""
    a0 = c[i] + c[i + 1] * y
    a1 = c[i + 2] + c[i + 3] * y
    a2 = c[i + 4] + c[i + 5] * y
    a3 = c[i + 6] + c[i + 7] * y
    a4 = c[i + 8] + c[i + 9] * y
    a5 = c[i + 10] + c[i + 11] * y
    return (a0 + a1 * y2) + (a2 + a3 * y2) * y4 + (a4 + a5 * y2) * y8


@njit(**INLINE)
def tab_eval(aux, lo, x):
    """(φ(x), φ'(x)) from the table at ``aux[lo]``; beyond ±U the lines of
    the tails; within ±H/2 the graded panels, |x| = m 2^e, y = 4m - 3, and
    below X_ZERO the values at 0 (module docstring)."""
    if x < -U or x > U:
        e = lo + HDR_TAILS + (0 if x < -U else 2)
        return aux[e] + aux[e + 1] * (x + U if x < -U else x - U), aux[e + 1]
    c = aux[lo + HDR + MAX_BREAKS:]  # indices below provably >= 0: no wrap-around
    if abs(x) < X_GRADED:
        if abs(x) < X_ZERO:
            z = 2 * NC * (P + 2 * J) + (0 if x == 0.0 else 2 if x > 0.0 else 4)
            return c[z] + c[z + 1] * x, c[z + 1]
        m, e = math.frexp(abs(x))
        p = P + (-4 - e) + (0 if x > 0.0 else J)
        y = 4.0 * m - 3.0
    else:
        t = (x + U) * (1.0 / H)
        p = int(math.floor(t))
        p = min(max(p, 0), P - 1)
        y = 2.0 * (t - p) - 1.0
        y = min(max(y, -1.0), 1.0)
    y2 = y * y
    y4 = y2 * y2
    y8 = y4 * y4
    i = 2 * NC * p
    return _estrin(c, i, y, y2, y4, y8), _estrin(c, i + NC, y, y2, y4, y8)


@njit(**JIT)
def _tab_values(aux, x, out):
    for i in range(x.size):
        out[0, i], out[1, i] = tab_eval(aux, 0, x[i])


def tab_values(table, x):
    """(φ(x), φ'(x)) from ``table`` for an array x: ``tab_eval`` over a x
    (φ' = a ψ', a the table's input scale), shape (2,) + x.shape."""
    a = table[HDR_SCALE]
    x = np.asarray(x, dtype=float)
    flat = np.ascontiguousarray(x.ravel()) * a
    out = np.empty((2, flat.size))
    _tab_values(np.ascontiguousarray(table, dtype=float), flat, out)
    out[1] *= a
    return out.reshape((2,) + x.shape)


@njit(**JIT)
def _add_centre(buf, m, b, lam, lo, hi, dmax):
    """Append b and the graded edges b ± lam 2^j (j >= 0, while < dmax)."""
    if b > lo and b < hi:
        buf[m] = b
        m += 1
    w = max(lam, 1e-13)
    while w < dmax:
        if b - w > lo and b - w < hi:
            buf[m] = b - w
            m += 1
        if b + w > lo and b + w < hi:
            buf[m] = b + w
            m += 1
        w *= 2.0
    return m


@njit(**JIT)
def _add_cap(aux, lo, buf, m, mid, sc, a, b):
    """Append the panel cap's edges (module docstring) for φ(mid + sc t),
    t ∈ (a, b): t = (kW - mid)/sc for L <= kW <= R, strictly inside.  For
    sc < 0 these are the edges of the mirrored cap [-R, -L] for φ(-mid + |sc| t)
    (the same doubles: negations are exact)."""
    w = aux[lo + HDR_WCAP]
    if w == 0.0 or sc == 0.0 or not abs(sc) < math.inf:
        return m
    left, right = aux[lo + HDR_LCAP], aux[lo + HDR_RCAP]
    if sc < 0.0:
        left, right, mid, sc = -right, -left, -mid, -sc
    ua = min(max(mid + a * sc, left - w), right + w)
    ub = min(max(mid + b * sc, left - w), right + w)
    for k in range(int(math.floor(ua / w)) - 1, int(math.ceil(ub / w)) + 2):
        if left <= k * w <= right:
            t = (k * w - mid) / sc
            if t > a and t < b:
                buf[m] = t
                m += 1
    return m


@njit(**JIT)
def _finish_edges(buf, m, lo, hi, dmax):
    """Add the ends and a uniform grid of spacing <= dmax; sort in place."""
    nu = int(math.ceil((hi - lo) / dmax))
    for k in range(nu + 1):
        buf[m] = lo + (hi - lo) * k / nu
        m += 1
    buf[:m].sort()
    return m


@njit(**JIT)
def _inner(aux, lo, m, sig, buf):
    """H(m, σ) = E_w[φ(m + σ w)] and E_w[φ'(m + σ w)], w ~ N(0, 1).

    Graded Gauss–Legendre over |w| <= ZF; where σ <= GH_SIG λ and φ's kinks
    lie beyond GH_CLEARS σ of m (φ(m + σw) analytic in |Im w| < λ/σ, at
    least 2.5, around the nodes: correlations near ±1, where the fallback is
    most used) the Gauss–Hermite rule of 8, 16, 32 or 64 nodes for
    σ <= λ/20, λ/8, λ/4, λ/2.5 (``GH_SIGS``): 2.5–20x fewer nodes."""
    if sig <= 0.0:
        return tab_eval(aux, lo, m)
    nk = int(aux[lo + 4])
    ns = int(aux[lo + 5])
    lam = aux[lo + 6]
    if sig <= GH_SIG * lam:
        r = 0  # the rule: the fewest nodes that serve this σ
        while sig > _GH_SIGS[r] * lam:
            r += 1
        clear = True
        for k in range(nk):
            clear = clear and abs(aux[lo + HDR + k] - m) > _GH_CLEARS[r] * sig
        if clear:
            acc = 0.0
            accd = 0.0
            for g in range(8 * ((1 << r) - 1), 8 * ((2 << r) - 1)):
                f, df = tab_eval(aux, lo, m + sig * _GHX[g])
                acc += _GHW[g] * f
                accd += _GHW[g] * df
            return acc, accd
    nb = 0
    for k in range(nk + ns):
        t = aux[lo + HDR + k]
        nb = _add_centre(buf, nb, (t - m) / sig, lam / sig, -ZF, ZF, DMAX)
    nb = _add_cap(aux, lo, buf, nb, m, sig, -ZF, ZF)
    nb = _finish_edges(buf, nb, -ZF, ZF, DMAX)
    acc = 0.0
    accd = 0.0
    for e in range(nb - 1):
        a = buf[e]
        b = buf[e + 1]
        if b - a <= 1e-15:
            continue
        hw = 0.5 * (b - a)
        mid = 0.5 * (a + b)
        for g in range(NG):
            w = mid + hw * _GLX12[g]
            wt = hw * _GLW12[g] * math.exp(-0.5 * w * w)
            f, df = tab_eval(aux, lo, m + sig * w)
            acc += wt * f
            accd += wt * df
    c = 1.0 / math.sqrt(2.0 * math.pi)
    return acc * c, accd * c


@njit(**JIT)
def pair_quadrature(aux, lo, s1, s2, rho):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) by nested graded Gauss-Legendre
    (u = s1 x, v = s2 (ρ x + c w), c = √(1-ρ²)); see the module docstring."""
    rho = min(max(rho, -1.0), 1.0)
    c = math.sqrt((1.0 - rho) * (1.0 + rho))
    nk = int(aux[lo + 4])
    ns = int(aux[lo + 5])
    lam = aux[lo + 6]
    half = aux[lo + HDR_PARITY] != 0.0   # odd/even φ: x over [0, ZF], doubled
    x_lo = 0.0 if half else -ZF
    buf = np.empty(8 * MAX_BREAKS * 64)     # breaks' grades, 2 caps <= 2 (2 U/H + 3)
    ibuf = np.empty(4 * MAX_BREAKS * 64)    # and the uniform grid (_add_cap, ...)
    nb = 0
    arho = abs(rho)
    sig = s2 * c
    for k in range(nk + ns):
        t = aux[lo + HDR + k]
        if s1 > 0.0:
            b = t / s1
            nb = _add_centre(buf, nb, abs(b) if half else b, lam / s1, x_lo, ZF, DMAX)
        if s2 * arho > 0.0:
            if k < nk:  # smoothed kink of width σ, smooth sides of width λ
                w = min(sig, lam) if sig > 1e-9 * lam else lam
            else:
                w = max(sig, lam)
            b = t / (s2 * rho)
            nb = _add_centre(buf, nb, abs(b) if half else b, w / (s2 * arho), x_lo, ZF, DMAX)
    nb = _add_cap(aux, lo, buf, nb, 0.0, s1, x_lo, ZF)
    nb = _add_cap(aux, lo, buf, nb, 0.0, s2 * rho, x_lo, ZF)
    nb = _finish_edges(buf, nb, x_lo, ZF, DMAX)
    acc = 0.0
    accd = 0.0
    for e in range(nb - 1):
        a = buf[e]
        b = buf[e + 1]
        if b - a <= 1e-15:
            continue
        hw = 0.5 * (b - a)
        mid = 0.5 * (a + b)
        for g in range(NG):
            x = mid + hw * _GLX12[g]
            wt = hw * _GLW12[g] * math.exp(-0.5 * x * x)
            f, df = tab_eval(aux, lo, s1 * x)
            h, hd = _inner(aux, lo, s2 * rho * x, sig, ibuf)
            acc += wt * f * h
            accd += wt * df * hd
    c0 = (2.0 if half else 1.0) / math.sqrt(2.0 * math.pi)
    return acc * c0, accd * c0


@njit(**INLINE)
def _lane_sum(a0, a1, a2, a3, a4, a5, a6, a7):
    """The fixed pairwise order in which the 8 lane sums of mehler_point (and
    of ik_mehler_point in the CUDA header) are combined."""
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(**JIT)
def mehler_point(aux, lo, s, F, G, slot, i):
    """Fill F[slot, :, :, i] and G[slot, :, i] for the point of scale s.

    The sums over the nodes run in 8 lanes (node k in lane k mod 8; the node
    count is a multiple of 16), combined by ``_lane_sum``: independent chains
    that LLVM vectorises, in an order the CUDA header reproduces exactly."""
    nm = F.shape[2]
    if s == 0.0:
        # u = 0 surely: a_0 = φ(0), a_n = 0 beyond, exactly (the rule's
        # weights sum to 1 only to rounding)
        f0, d0 = tab_eval(aux, lo, 0.0)
        G[slot, 0, i] = f0 * f0
        G[slot, 1, i] = d0 * d0
        for n in range(nm):
            F[slot, 0, n, i] = f0 if n == 0 else 0.0
            F[slot, 1, n, i] = d0 if n == 0 else 0.0
            F[slot, 2, n, i] = math.sqrt(1e-15) if f0 != 0.0 else 0.0
            F[slot, 3, n, i] = math.sqrt(1e-15) if d0 != 0.0 else 0.0
        return
    nk = int(aux[lo + 4])
    ns = int(aux[lo + 5])
    lam = aux[lo + 6]
    buf = np.empty(4 * MAX_BREAKS * 64 + 64)
    nb = 0
    for k in range(nk + ns):
        nb = _add_centre(buf, nb, aux[lo + HDR + k] / s, lam / s, -ZC, ZC, 0.5)
    nb = _add_cap(aux, lo, buf, nb, 0.0, s, -ZC, ZC)
    nb = _finish_edges(buf, nb, -ZC, ZC, 0.5)
    nn = 16 * (nb - 1)
    z = np.empty(nn)
    wf = np.empty(nn)
    wd = np.empty(nn)
    m = 0
    ef = 0.0
    ed = 0.0
    c0 = 1.0 / math.sqrt(2.0 * math.pi)
    for e in range(nb - 1):
        a = buf[e]
        b = buf[e + 1]
        if b - a <= 1e-15:
            continue
        hw = 0.5 * (b - a)
        mid = 0.5 * (a + b)
        for g in range(16):
            x = mid + hw * _GLX16[g]
            wt = hw * _GLW16[g] * math.exp(-0.5 * x * x) * c0
            f, df = tab_eval(aux, lo, s * x)
            z[m] = x
            wf[m] = wt * f
            wd[m] = wt * df
            ef += wt * f * f
            ed += wt * df * df
            m += 1
    h0 = np.ones(m)
    h1 = z[:m].copy()
    G[slot, 0, i] = ef
    G[slot, 1, i] = ed
    pa = 0.0
    pd = 0.0
    for n in range(nm):
        if n == 0:
            hn = h0
        elif n == 1:
            hn = h1
        else:
            a1 = 1.0 / math.sqrt(n)
            a0 = math.sqrt((n - 1.0) / n)
            for k in range(m):
                t = z[k] * h1[k] * a1 - a0 * h0[k]
                h0[k] = h1[k]
                h1[k] = t
            hn = h1
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = 0.0
        for k in range(0, m, 8):
            h = hn[k:k + 8]  # constant indices below: contiguous loads
            f = wf[k:k + 8]
            g = wd[k:k + 8]
            a0 += f[0] * h[0]
            a1 += f[1] * h[1]
            a2 += f[2] * h[2]
            a3 += f[3] * h[3]
            a4 += f[4] * h[4]
            a5 += f[5] * h[5]
            a6 += f[6] * h[6]
            a7 += f[7] * h[7]
            d0 += g[0] * h[0]
            d1 += g[1] * h[1]
            d2 += g[2] * h[2]
            d3 += g[3] * h[3]
            d4 += g[4] * h[4]
            d5 += g[5] * h[5]
            d6 += g[6] * h[6]
            d7 += g[7] * h[7]
        sa = _lane_sum(a0, a1, a2, a3, a4, a5, a6, a7)
        sd = _lane_sum(d0, d1, d2, d3, d4, d5, d6, d7)
        F[slot, 0, n, i] = sa
        F[slot, 1, n, i] = sd
        pa += sa * sa
        pd += sd * sd
        # normalised tails; 1e-15 floor covers the rounding of E - partial
        F[slot, 2, n, i] = math.sqrt(max(ef - pa, 0.0) / ef + 1e-15) if ef > 0.0 else 0.0
        F[slot, 3, n, i] = math.sqrt(max(ed - pd, 0.0) / ed + 1e-15) if ed > 0.0 else 0.0


@njit(**JIT)
def numeric_tile(aux, lo, q11, s1, r1, Q, TH, V2, S2, R2, c0, n, i, slot,
                 F1, G1, F2, G2, TM, W):
    """Kind K_NUMERIC on the tile (i, c0 .. c0+n): Q[j] = q12 -> k,
    TH[j] *= kdot.  ``V2, S2, R2`` are the column tables sliced to the tile,
    the features ``F2`` are indexed from ``c0``.  ``TM[slot, 0/1, n]`` is the
    largest normalised tail of the column points (certifies a whole tile),
    ``W`` a (3, TILE) scratch.  ρ is snapped to ±1 within 4 ulps, as for the
    closed forms (``_duals.correlation``)."""
    nm = F1.shape[2]
    rho = W[0]
    acc = W[1]
    accd = W[2]
    rmax = 0.0
    for j in range(n):
        r = correlation(Q[j], r1, R2[j])
        rho[j] = r
        rmax = max(rmax, abs(r))
    # fewest terms that certify the whole tile
    nt = nm
    p = rmax
    for m in range(nm):
        if (p * F1[slot, 2, m, i] * TM[slot, 0, m] <= TOL
                and p * F1[slot, 3, m, i] * TM[slot, 1, m] <= TOL):
            nt = m + 1
            break
        p *= rmax
    a_row = F1[slot, 0]
    d_row = F1[slot, 1]
    for j in range(n):
        acc[j] = 0.0
        accd[j] = 0.0
    for m in range(nt - 1, -1, -1):
        ar = a_row[m, i]
        dr = d_row[m, i]
        a_col = F2[slot, 0, m, c0:c0 + n]
        d_col = F2[slot, 1, m, c0:c0 + n]
        for j in range(n):
            acc[j] = acc[j] * rho[j] + ar * a_col[j]
            accd[j] = accd[j] * rho[j] + dr * d_col[j]
    if nt == nm:  # check entry by entry; the rest by quadrature
        ta = F1[slot, 2, nm - 1, i]
        td = F1[slot, 3, nm - 1, i]
        for j in range(n):
            r = abs(rho[j])
            pn = r ** nm
            if ((pn * ta * F2[slot, 2, nm - 1, c0 + j] > TOL
                    or pn * td * F2[slot, 3, nm - 1, c0 + j] > TOL)
                    and not (rho[j] == 1.0 and V2[j] == q11)):
                acc[j], accd[j] = pair_quadrature(aux, lo, s1, S2[j], rho[j])
    # ρ = 1 at equal variances (the diagonal, duplicate points): E[φ²], E[φ'²]
    # of the diagonal pass itself, so K(x, x') = K(x, x) exactly when x' = x
    g = G1[slot, 0, i]
    gd = G1[slot, 1, i]
    for j in range(n):
        same = rho[j] == 1.0 and V2[j] == q11
        Q[j] = g if same else acc[j]
        TH[j] *= gd if same else accd[j]


@njit(**JIT)
def _duals_at(aux, q11, q12, q22, TM1):
    m = q11.shape[0]
    out = np.empty((2, m))
    F = np.zeros((1, 4, NM, 2))
    G = np.zeros((1, 2, 2))
    W = np.empty((3, 1))
    Q = np.empty(1)
    TH = np.empty(1)
    V2 = np.empty(2)
    S2 = np.empty(2)
    R2 = np.empty(2)
    for e in range(m):
        for k, q in enumerate((q11[e], q22[e])):
            s = math.sqrt(q)
            V2[k] = q
            S2[k] = s
            R2[k] = 1.0 / s if s > 0.0 else 0.0
            mehler_point(aux, 0, s, F, G, 0, k)
        TM = np.empty((1, 2, NM))
        for m_ in range(NM):
            TM[0, 0, m_] = F[0, 2, m_, 1] if TM1 else 1.0
            TM[0, 1, m_] = F[0, 3, m_, 1] if TM1 else 1.0
        Q[0] = q12[e]
        TH[0] = 1.0
        numeric_tile(aux, 0, V2[0], S2[0], R2[0], Q, TH, V2[1:], S2[1:], R2[1:], 1, 1, 0, 0,
                     F, G, F, G, TM, W)
        out[0, e] = Q[0]
        out[1, e] = TH[0]
    return out


def duals(table, q11, q12, q22):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for arrays of covariances, φ given by its
    ``aux`` table: the per-entry path of the Gram kernels (ψ's duals at a²
    times the covariances, E[φ'φ'] times a²), for tests/tools."""
    a2 = table[HDR_SCALE] ** 2
    shape = np.broadcast(q11, q12, q22).shape
    q11, q12, q22 = (a2 * np.ascontiguousarray(np.broadcast_to(q, shape), dtype=float).ravel()
                     for q in (q11, q12, q22))
    k = _duals_at(np.ascontiguousarray(table, dtype=float), q11, q12, q22, True)
    k[1] *= a2
    return k


def duals_quadrature(table, s1, s2, rho):
    """The fallback quadrature alone (for tests and benchmarks)."""
    a = table[HDR_SCALE]
    k, kd = pair_quadrature(np.ascontiguousarray(table, dtype=float), 0, a * s1, a * s2, rho)
    return k, a * a * kd
