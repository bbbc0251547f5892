"""Dual activations in closed form: numba scalar functions, one per kind.

For a centred Gaussian pair (u, v) with covariance [[q11, q12], [q12, q22]],
the dual of φ is ``k = E[φ(u)φ(v)]`` and the derivative dual is
``kdot = E[φ'(u)φ'(v)]`` (the factor the NTK is multiplied by).  Every function
here has the signature ``dual_<kind>(params..., q11, q12, q22, s1, s2, r1, r2)``
and returns ``(k, kdot)``; ``s = point_scale(kind, params, q)`` and r = 1/s are
precomputed per point (s = sqrt(q) for most kinds), so that per entry only what
depends on both points is computed.  The same functions give the diagonal
(q11 = q12 = q22).  The kinked duals (ABRelu, Sign, RectifiedMonomial) take
the angle instead, as (ρ, 1 - |ρ|) from the carried signed versine
c = sign(ρ)(1 - |ρ|) (``versine``) or from q12 (``correlation_angle``), and
return the result's: (k, kdot, c').

Numerical conventions (see DESIGN.md):

* the correlation ρ = q12 / (s1 s2) is clamped to [-1, 1]; when a variance is
  zero, ρ = 0 (the angle π/2, neural-tangents' ``fill_zero``), which is the
  symmetric sub-gradient convention for the derivative duals;
* angles and the arc-cosine kernels' F(t) = sin t - t cos t come from
  branch-free polynomials of full double precision (``arc_cosine_c``, one
  square root per entry) that LLVM can vectorise;
* products of scales are formed as s1*s2, never sqrt(q11*q22), so deep
  homogeneous networks do not overflow before their true value does.

The CUDA header ``cuda/infkernel_math.cuh`` implements the same formulas; the
tests compare both on the same points.
"""
import math

import numpy as np
from numba import njit

from ._config import INLINE
from ._program import K_ERF, K_GELU, K_LAYERNORM

PI = math.pi
HALF_PI = 0.5 * math.pi
INV_2PI = 0.5 / math.pi
INV_PI = 1.0 / math.pi

# asin(y) = y + y^3 R(y^2) on |y| <= 1/2; R is a degree-12 polynomial fitted at
# Chebyshev nodes in 50-digit arithmetic: max error < 1 ulp on [0, 1/2].
_ASIN_R = (0.16666666666666669, 0.07499999999998433, 0.04464285714635543,
           0.030381944138531247, 0.02237217294214989, 0.017352392720869973,
           0.013971212973552933, 0.011479177415184906, 0.01032281435018578,
           0.005457506718640358, 0.01740087944269402, -0.014851887071247204,
           0.028757851367421566)


@njit(**INLINE)
def _horner(coef, z):
    """Σ_k coef[k] z^k for a module-level tuple ``coef`` of two or more
    coefficients (a compile-time constant: LLVM unrolls the loops, so loops
    over entries still vectorise), as E(z²) + z O(z²), the even and the odd
    coefficients by Horner's rule in z²: two independent chains of half the
    length.  The loops over entries wait on that chain of multiply-adds (ReLU,
    Sign, Gelu networks 6–10 % faster than with one chain); the error stays
    within 1 ulp for the polynomials here (``_ASIN_R``, ``_SQRT_P`` against
    40 digits)."""
    z2 = z * z
    top_even = (len(coef) - 1) // 2 * 2
    top_odd = (len(coef) - 2) // 2 * 2 + 1
    even = coef[top_even]
    for k in range(top_even - 2, -1, -2):
        even = even * z2 + coef[k]
    odd = coef[top_odd]
    for k in range(top_odd - 2, 0, -2):
        odd = odd * z2 + coef[k]
    return even + z * odd


@njit(**INLINE)
def _asin_r(z):
    """R(z) with asin(y) = y + y³ R(y²), |y| <= 1/2."""
    return _horner(_ASIN_R, z)


@njit(**INLINE)
def _asin_core(y):
    """asin(y) for |y| <= 1/2 (polynomial, vectorisable)."""
    z = y * y
    return y + y * z * _asin_r(z)


@njit(**INLINE)
def asin_c(x, omx):
    """arcsin(x) given omx = 1 - |x|, which callers may know more accurately
    than 1 - |x| rounds to (asin is ill-conditioned near ±1)."""
    ax = abs(x)
    small = ax <= 0.5
    y = x if small else math.sqrt(0.5 * omx)
    a = _asin_core(y)
    big = HALF_PI - 2.0 * a
    big = big if x >= 0.0 else -big
    return a if small else big


_EPS = np.finfo(np.float64).eps
_RHO_ONE = 1.0 - 4 * _EPS


@njit(**INLINE)
def correlation(q12, r1, r2):
    """ρ = q12 r1 r2 with r = 1/sqrt(q) precomputed per point (r = 0 for a
    zero variance, which gives ρ = 0).

    Values within 4 ulps of ±1 (the rounding of q r r itself) are set to ±1,
    so that identical and antipodal points get exactly ±1: the kinked duals'
    derivatives have a √(1-ρ) singularity there, which would otherwise turn
    one ulp in ρ into ~1e-8 in the kernel.  The smaller r first: (x, y) and
    (y, x) round alike (K(X) is computed on one triangle, K(X, X') on both),
    and q12 r_min cannot overflow.
    """
    rho = q12 * min(r1, r2) * max(r1, r2)
    return rho if abs(rho) < _RHO_ONE else math.copysign(1.0, rho)


@njit(**INLINE)
def same_point(q11, q12, q22):
    """True for an identical or antipodal pair after ``snap_q12`` (equal
    variances, |q12| = q11): the duals below then use exact forms of the
    quantities that q11 q22 - q12² would leave with the rounding of q² (a
    fused multiply-add makes that nonzero), 1e-4 of the result at q ~ 1e12."""
    return q11 == q22 and abs(q12) == q11


@njit(**INLINE)
def snap_q12(q11, q12, q22):
    """q12 → ±q11 when q11 == q22 and |q12| ≥ q11 (1 - 4ε): identical and
    antipodal points (up to the rounding of their inner product) stay exactly
    so.  The smooth duals need it: in a chaotic deep network one ulp between
    q12 and q11 grows layer by layer, and a q12 beyond √(q11 q22) grows into
    values no covariance can take (Cauchy–Schwarz)."""
    return math.copysign(q11, q12) if q11 == q22 and abs(q12) >= _RHO_ONE * q11 else q12


# sqrt(1 - w) = 1 + w P(w) on 0 <= w <= 1/4; P is a degree-13 polynomial fitted at
# Chebyshev nodes in 60-digit arithmetic: 1 + w P(w) is within 0.75 ulp.
_SQRT_P = (-0.5, -0.12500000000000125, -0.06249999999967604, -0.03906250003299409,
           -0.027343748251537233, -0.020507867816550614, -0.01611215215450132,
           -0.013107601450727433, -0.010761656527228766, -0.010260124848657546,
           -0.0034770511245371793, -0.02093027360248084, 0.020347018016311433,
           -0.03154768650454239)


@njit(**INLINE)
def arc_cosine_c(rho, omt):
    """The angles and the function F(t) = sin t - t cos t of the arc-cosine
    kernels at correlation ρ in [-1, 1]: returns ``(ψ, θ, F(ψ), F(θ))`` with
    θ = acos ρ and ψ = π - θ, with one square root and no libm call, given
    omt = 1 - |ρ|, which a caller may know more accurately than it rounds to
    (``versine``: the small angle depends on it alone).

    With t = |ρ|, u = ρ if t <= 1/2 else y = sqrt((1 - t)/2), w = u², both
    polynomials share w: asin u = u (1 + w R(w)) and sqrt(1 - w) = 1 + w P(w).

    * t <= 1/2: ψ = π/2 + asin ρ, θ = π/2 - asin ρ and F(ψ), F(θ) = E ± πρ/2
      with E = sqrt(1 - ρ²) + ρ asin ρ = 1 + w (1 + P + w R).
    * t > 1/2: the small angle is 2 asin y, where F = 2yw (2 + P - R (1 - 2w))
      (the cancellation of sin t - t cos t ≈ t³/3 worked out algebraically);
      the large angle is π minus it, where F is that plus π t.
    """
    t = abs(rho)
    small = t <= 0.5
    y = math.sqrt(0.5 * omt)
    u = rho if small else y
    w = u * u
    r = _asin_r(w)
    p = _horner(_SQRT_P, w)
    asin_u = u + u * w * r
    e = 1.0 + w * (1.0 + p + w * r)
    f_small = 2.0 * y * w * (2.0 + p - r * (1.0 - 2.0 * w))
    f_large = f_small + PI * t
    pos = rho > 0.0
    psi = HALF_PI + asin_u if small else (PI - 2.0 * asin_u if pos else 2.0 * asin_u)
    theta = HALF_PI - asin_u if small else (2.0 * asin_u if pos else PI - 2.0 * asin_u)
    f_psi = e + HALF_PI * rho if small else (f_large if pos else f_small)
    f_theta = e - HALF_PI * rho if small else (f_small if pos else f_large)
    return psi, theta, f_psi, f_theta


# ----------------------------------------------------------------------------
# Closed-form duals.  Sources:
#   ABRelu, RectifiedMonomial: Cho & Saul (2009), arc-cosine kernels;
#   Erf: Williams (1997); Gelu: Tsuchida, Pearce, van der Heide, Roosta &
#   Gallagher (2021); Sin/Cos/Rbf/Exp/Gaussian: Gaussian moment generating
#   function; Monomial: Mehler / Isserlis; all as in neural-tangents' stax.
# ----------------------------------------------------------------------------

@njit(**INLINE)
def versine(c):
    """(ρ, 1 - |ρ|) of an entry from its carried signed versine
    c = sign(ρ) (1 - |ρ|) (``signed_versine``).

    Near ρ = ±1, q12 holds the angle only to ~1e-16/θ (its rounding, relative
    to q11 q22, is all that separates it from the diagonal); the kernels carry
    c beside q12 through the ops that keep it accurate (``_cpu._run_ops``), so
    that nearly parallel and nearly antipodal inputs and deep networks, where
    ρ -> 1, keep their digits in the kinked duals, whose derivatives are
    singular there.  |c| is the versine of the smaller of the angles θ and
    π - θ (to x' and to -x'): 1 - ρ and 1 + ρ both follow to full relative
    accuracy, the one near 0 as |c|, the other as 2 - |c|."""
    omt = abs(c)
    return (omt - 1.0 if math.copysign(1.0, c) < 0.0 else 1.0 - omt), omt


@njit(**INLINE)
def signed_versine(rho, omt):
    """c = sign(ρ) (1 - |ρ|) from ρ and omt = 1 - |ρ| (``versine``'s inverse;
    -0.0 at ρ = -1)."""
    return math.copysign(omt, rho)


@njit(**INLINE)
def _poles(c):
    """(1 - ρ, 1 + ρ) from the signed versine c, each to full relative accuracy."""
    omt = abs(c)
    return (2.0 - omt, omt) if math.copysign(1.0, c) < 0.0 else (omt, 2.0 - omt)


@njit(**INLINE)
def correlation_angle(q12, r1, r2):
    """(ρ, 1 - |ρ|) of an entry whose versine is not carried (``correlation``)."""
    rho = correlation(q12, r1, r2)
    return rho, 1.0 - abs(rho)


@njit(**INLINE)
def entry_angle(carried, c, q12, r1, r2):
    """(ρ, 1 - |ρ|) of an entry: from its signed versine c where it is
    carried (``versine``), else from q12 (``correlation_angle``).  One
    loop for both cases: each dual is inlined once per call site."""
    return versine(c) if carried else correlation_angle(q12, r1, r2)


@njit(**INLINE)
def dual_abrelu(a, b, s1, s2, rho, omt):
    """φ(x) = a min(x, 0) + b max(x, 0).

    With θ = acos ρ, ψ = π - θ and F(t) = sin t - t cos t (``arc_cosine_c``):
      k    = s1 s2 / (2π) [(a² + b²) F(ψ) - 2ab F(θ)]
      kdot = [(a² + b²) ψ + 2ab θ] / (2π)
    and the signed versine of the result (``_arc_versine``).  Takes the angle
    as (ρ, 1 - |ρ|) (``versine`` or ``correlation_angle``); returns
    (k, kdot, c').  Where a variance is 0, ρ = 0 (``_zero_angle``).
    """
    rho, omt, zero = _zero_angle(s1, s2, rho, omt)
    psi, theta, f_psi, f_theta = arc_cosine_c(rho, omt)
    c2 = a * a + b * b
    k = c2 * f_psi - 2.0 * a * b * f_theta
    kdot = c2 * psi + 2.0 * a * b * theta
    m = (a - b) * (a - b) / c2 if c2 != 0.0 else 0.0
    return (s1 * s2 * k * INV_2PI, kdot * INV_2PI,
            1.0 if zero else _arc_versine(rho, omt, f_theta if rho >= 0.0 else f_psi, m))


@njit(**INLINE)
def _zero_angle(s1, s2, rho, omt):
    """(ρ, 1 - |ρ|, zero): ρ = 0 where a variance is 0 (zero = True), as
    ``correlation`` gives it, whatever angle was carried (a point against
    itself in the diagonal pass has versine 0): the derivative duals are then
    φ'(0)² with the finite networks' φ'(0) = (a + b)/2, on the diagonal too,
    and the result's versine is 1 (ρ' = 0)."""
    zero = s1 == 0.0 or s2 == 0.0
    return (0.0 if zero else rho), (1.0 if zero else omt), zero


@njit(**INLINE)
def _arc_versine(rho, omt, f_small, m):
    """The signed versine (``versine``) of ``dual_abrelu``'s result, whose
    correlation is ρ' = ρ + m F(θ)/π, m = (a - b)²/(a² + b²) (F(ψ) = F(θ) +
    π cos θ), without the cancellation of 1 - k12/√(k11 k22): from omt =
    1 - |ρ| and f_small = F of the smaller angle (θ for ρ >= 0, else ψ, where
    F(θ) = F(ψ) + π|ρ|), g = m f_small / π,

      ρ >= 0:  1 - ρ' = omt - g,                      1 + ρ' = 2 - omt + g
      ρ <  0:  1 - ρ' = 2 - m + (m - 1) omt - g,      1 + ρ' = m + (1 - m) omt + g

    the smaller of the two kept (Abs maps nearly antipodal points to nearly
    parallel ones: 1 - ρ' = omt - 2F(ψ)/π there)."""
    g = m * f_small * INV_PI
    if rho >= 0.0:
        lo, hi = omt - g, 2.0 - omt + g
    else:
        lo, hi = (2.0 - m) + (m - 1.0) * omt - g, m + (1.0 - m) * omt + g
    return max(lo, 0.0) if lo <= hi else -max(hi, 0.0)


@njit(**INLINE)
def dual_relu(c2, s1, s2, rho, omt):
    """``dual_abrelu`` when ab = 0 (ReLU, or any one-sided ABRelu), c2 = a² + b²:
    k = c2 s1 s2 F(ψ) / (2π), kdot = c2 ψ / (2π), ρ' = ρ + F(θ)/π >= 0:
    ``_arc_versine`` at m = 1, whose 1 - ρ' is omt - F(θ)/π (ρ >= 0) or
    1 - F(ψ)/π (ρ < 0)."""
    rho, omt, zero = _zero_angle(s1, s2, rho, omt)
    psi, _, f_psi, f_theta = arc_cosine_c(rho, omt)
    c = omt - f_theta * INV_PI if rho >= 0.0 else 1.0 - f_psi * INV_PI
    return s1 * s2 * c2 * f_psi * INV_2PI, c2 * psi * INV_2PI, 1.0 if zero else max(c, 0.0)


@njit(**INLINE)
def versine_of(q12, r1, r2):
    """The signed versine (``versine``) from q12 and r = 1/√q (r = 0 where a
    variance is zero: ρ = 0), where no carried one is known: as accurate as
    q12 is, and ±0 for identical and antipodal points (``correlation``: ρ
    within 4 ulps of ±1 is ±1)."""
    rho = correlation(q12, r1, r2)
    return signed_versine(rho, 1.0 - abs(rho))


@njit(**INLINE)
def mixed_versine(a1, a2, b1, b2, ca, cb):
    """The signed versine (``versine``) of a sum of two independent signals
    A + B (a Dense layer's w h + bias, a fan-in sum), from theirs, ca and cb.
    Per point, (α, β) = (√qA, √qB)/√(qA + qB) is a unit vector, and with Δ the
    angle between the two points' vectors

      ρ = α1 α2 ρA + β1 β2 ρB,
      1 ∓ ρ = α1 α2 (1 ∓ ρA) + β1 β2 (1 ∓ ρB) + (1 - cos Δ),
      1 - cos Δ = ((α1 - α2)² + (β1 - β2)²)/2,

    sums of non-negative terms, each to a few ulps: no cancellation, no
    division (the two add up to 2; the smaller is kept).  (α, β) = (0, 0) for
    a zero variance (ρ = 0 by convention).  A Dense layer's bias is the same
    for both points: cb = 0."""
    if a1 * a1 + b1 * b1 == 0.0 or a2 * a2 + b2 * b2 == 0.0:
        return 1.0
    da, db = a1 - a2, b1 - b2
    d = 0.5 * (da * da + db * db)
    ma, pa = _poles(ca)
    mb, pb = _poles(cb)
    lo = a1 * a2 * ma + b1 * b2 * mb + d
    hi = a1 * a2 * pa + b1 * b2 * pb + d
    return lo if lo <= hi else -hi


@njit(**INLINE)
def mixed_scales(ra, rb, q):
    """A point's (1/√q, α, β) for ``mixed_versine``: q = qA + qB as the
    kernels round it, (α, β) = (ra, rb)/√q with ra = √qA, rb = √qB given as
    products of square roots (w2 qA is not formed: a compiler would share it
    with q's own product and round q differently); zeros where q = 0."""
    v = 1.0 / math.sqrt(q) if q > 0.0 else 0.0
    return v, ra * v, rb * v


@njit(**INLINE)
def dense_theta(w2, c_old, c_new, c_one, q, qn, th):
    """The NTK after a Dense layer, c_old q + c_new q' + w2 θ + c_one
    (``_program.OP_DENSE``), where a zero coefficient contributes exactly 0:
    an overflowed q, q' or θ then gives inf, not 0·inf = NaN."""
    return ((c_old * q if c_old != 0.0 else 0.0) + (c_new * qn if c_new != 0.0 else 0.0)
            + (w2 * th if w2 != 0.0 else 0.0) + c_one)


@njit(**INLINE)
def point_scale(kind, p, q):
    """The per-point scale s of kind ``kind`` (params ``p``) at variance q:
    sqrt(1 + 2b²q) for Erf, sqrt(1 + q) for Gelu, sqrt(q + eps) for
    LayerNorm, sqrt(q) otherwise."""
    if kind == K_ERF:
        v = 2.0 * p[1] * p[1] * q
        return math.sqrt(1.0 + v) if v < math.inf else abs(p[1]) * math.sqrt(2.0) * math.sqrt(q)
    if kind == K_GELU:
        return math.sqrt(1.0 + q)
    if kind == K_LAYERNORM:
        return math.sqrt(q + p[0])
    return math.sqrt(q)


@njit(**INLINE)
def dual_layernorm(q12, r1, r2):
    """Layer normalisation h -> (h - mean h) / sqrt(var h + eps) over infinitely
    many channels of a Gaussian signal: the mean vanishes and the variance is
    q, so Σ' = q12 / (s1 s2) and Θ' = Θ / (s1 s2), s = sqrt(q + eps)
    (neural-tangents' ``LayerNorm``); r = 1/s (0 where s = 0).  The diagonal,
    q r r, is computed by the same expression as identical points' entries."""
    rr = r1 * r2
    return q12 * r1 * r2, rr


@njit(**INLINE)
def erf_overflows(b, q_sum):
    """Whether 2b²(q11 + q22) of ``dual_erf`` (``q_sum`` = q11 + q22) is
    beyond float64, where it takes its extreme-variance form."""
    return not 2.0 * (b * b) * q_sum < math.inf


@njit(**INLINE)
def dual_erf(a, b, c, q11, q12, q22, s1, s2, r1, r2, extreme=True):
    """φ(x) = a erf(bx) + c (Williams 1997); s_i = sqrt(1 + 2b²q_ii):

      k    = a² (2/π) asin(z) + c²,   z = 2b²q12 / (s1 s2)
      kdot = a² (4b²/π) / sqrt(det),  det = s1² s2² - 4b⁴q12² >= 1 + 2b²(q11 + q22)

    ``extreme=False`` (a constant at the call site) leaves the form for
    2b²(q11 + q22) beyond float64 out of a loop over entries none of which
    needs it (``_cpu``: the branch cost 15–20 % of an Erf network's time).
    """
    q12 = snap_q12(q11, q12, q22)
    same = same_point(q11, q12, q22)
    b2 = b * b
    rr = r1 * r2
    # 2b²q overflows from q ~ 1e308/b² (e.g. b = 1e4, q ~ 1e300), the results do
    # not: there z, the bound and k̇ are formed from b/s_i = b r_i (~1/√(2q))
    big = extreme and erf_overflows(b, q11 + q22)
    z = min(max(2.0 * (b * r1) * (b * r2) * q12 if big else 2.0 * b2 * q12 * rr, -1.0), 1.0)
    # at the same point 1 - |z| = 1/(1 + 2b²q) = r1 r2 exactly
    k = a * a * (2.0 / PI) * asin_c(z, rr if same else 1.0 - abs(z)) + c * c
    # sqrt(det) = s1 s2 sqrt(1 - z²) >= sqrt(1 + 2b²(q11 + q22)) (the bound keeps
    # rounding from below, and is exact at the same point); no product of two
    # variances, which would overflow long before the result does
    if big:   # the bound is r1² + r2² - r1² r2² = m² l (s_i² = 1 + 2b²q_ii; m l >> 1e-308)
        m = max(r1, r2)
        a1, a2 = r1 / m, r2 / m
        bound = a1 * a1 + a2 * a2 - (a1 * a2 * m) * (a1 * a2 * m)
        gap = (1.0 - z) * (1.0 + z)
        root = m * math.sqrt(bound) if same or gap < m * m * bound else math.sqrt(gap)
        return k, a * a * (4.0 / PI) * (b * r1) * (b * r2) / root
    low = (1.0 + 2.0 * b2 * (q11 + q22)) * rr * rr
    root = math.sqrt(low if same else max((1.0 - z) * (1.0 + z), low))
    return k, a * a * (4.0 / PI) * b2 / (s1 * s2 * root)


#: Gelu's correlation z below which ``dual_gelu`` takes its antipodal form
GELU_ANTIPODAL_Z = -0.9

# F(t) = sin t − t cos t = t³ Σ (−1)^(n+1) 2n t^(2n−2)/(2n+1)!, n = 1..8: the
# series' rest is below 1e-18 of F for t² <= 0.21, i.e. t <= acos 0.9
_F_TAYLOR = (1 / 3, -1 / 30, 1 / 840, -1 / 45360, 1 / 3991680, -1 / 518918400,
             1 / 93405312000, -1 / 22230464256000)


@njit(**INLINE)
def dual_gelu(q11, q12, q22, s1, s2, r1, r2, near_antipodal=True):
    """φ(x) = x Φ(x) (Tsuchida et al. 2021; neural-tangents' formula).

    With p_i = 1 + q_ii = s_i², z = q12/(s1 s2), ψ = acos(−z) = π/2 + asin z,
    δ = s1 s2 sin ψ = sqrt(p1 p2 - q12²) (bounded below by sqrt(1 + q11 + q22))
    and h = (q11/p1)(q22/p2), where 1 - h = (1 + q11 + q22)/(p1 p2) exactly:
      k    = [q12 ψ + h δ + z²/δ] / (2π)
      kdot = [ψ + q12/δ (1/δ² + 1/(p1p2) + 1 - h)] / (2π)
    Near antipodal points q12 ψ and h δ cancel (±sqrt(2q) each against
    k ~ −0.19/sqrt(q) at z = −1: relative error ε q^1.5).  For z below
    ``GELU_ANTIPODAL_Z`` = −0.9, q12 ψ + h δ = s1 s2 F(ψ) − (1 − h) δ with
    F(t) = sin t − t cos t from its Taylor series (``_F_TAYLOR``) leaves
    terms within a few times k; ψ is 2 asin sqrt((1 - |z|)/2) for z < −1/2,
    not π/2 + asin z, which cancels.  ``near_antipodal=False`` (a constant at
    the call site) leaves that form out of a loop over entries none of which
    is below −0.9 (``_cpu``: it costs ~15 % of a Gelu network's time).
    """
    q12 = snap_q12(q11, q12, q22)
    same = same_point(q11, q12, q22)
    rr = r1 * r2
    z = min(max(q12 * rr, -1.0), 1.0)
    # δ = s1 s2 sqrt(1 - z²), formed without products of two variances (deep
    # networks reach q ~ 1e256, where q11 q22 overflows and the result does not);
    # at the same point 1 - z² is its lower bound 1 - h and 1 - |z| = 1/(1 + q) = r1 r2
    one_minus_h = (1.0 + q11 + q22) * rr * rr
    delta = s1 * s2 * math.sqrt(one_minus_h if same else max((1.0 - z) * (1.0 + z),
                                                               one_minus_h))
    inv_delta = 1.0 / delta
    # asin as in asin_c: of z itself for |z| <= 1/2, else of y = sqrt((1 - |z|)/2)
    small = abs(z) <= 0.5
    a = _asin_core(z if small else math.sqrt(0.5 * (rr if same else 1.0 - abs(z))))
    psi = HALF_PI + a if small else (PI - 2.0 * a if z > 0.0 else 2.0 * a)
    if near_antipodal and z < GELU_ANTIPODAL_Z:
        f_psi = psi * psi * psi * _horner(_F_TAYLOR, psi * psi)
        k = s1 * s2 * f_psi - one_minus_h * delta
    else:
        k = q12 * psi + ((q11 * rr) * (q22 * rr)) * delta
    k += z * z * inv_delta
    bracket = inv_delta * inv_delta + (2.0 + q11 + q22) * rr * rr
    return k * INV_2PI, (psi + q12 * inv_delta * bracket) * INV_2PI


@njit(**INLINE)
def dual_sin(a, b, c, q11, q12, q22, s1, s2, r1, r2):
    """φ(x) = a sin(bx + c).

      k    = a²/2 [e⁻ - e⁺ cos 2c],  kdot = a²b²/2 [e⁻ + e⁺ cos 2c],
      e∓ = exp(-b² (q11 + q22 ∓ 2 q12) / 2),

    evaluated without the cancellation of e⁻ and e⁺ where x = b² q12 is small
    (Sin's k, Cos's k̇, relative error ε/|x| before): with cos 2c = 1 − 2 sin²c,
    e⁻ − e⁺ cos 2c = e^(−A) [sign(x) (1 − e^(−2|x|)) + 2 e^(−(|x| + x)) sin²c],
    A = b² (q11 + q22 − 2|q12|) / 2 ≥ 0, and 1 − e^(−2|x|) = −expm1(−2|x|)
    (no overflow: every exponent is ≤ 0); the same with cos²c for k̇.
    """
    q12 = snap_q12(q11, q12, q22)
    b2 = b * b
    x = b2 * q12
    e = math.exp(-0.5 * b2 * max(q11 + q22 - 2.0 * abs(q12), 0.0))
    m = math.expm1(-2.0 * abs(x))                  # e^(−2|x|) − 1
    odd = -0.5 * m if x >= 0.0 else 0.5 * m       # sign(x) (1 − e^(−2|x|)) / 2
    even = 1.0 + m if x >= 0.0 else 1.0           # e^(−(|x| + x))
    sc, cc = math.sin(c), math.cos(c)
    return a * a * e * (odd + even * sc * sc), a * a * b2 * e * (odd + even * cc * cc)


@njit(**INLINE)
def dual_rbf(gamma, q11, q12, q22, s1, s2, r1, r2):
    """φ(x) = √2 sin(√(2γ) x + π/4):  k = exp(-γ (q11 + q22 - 2 q12)), kdot = 2γ k."""
    q12 = snap_q12(q11, q12, q22)
    k = math.exp(-gamma * max(q11 + q22 - 2.0 * q12, 0.0))
    return k, 2.0 * gamma * k


@njit(**INLINE)
def dual_exp(a, b, q11, q12, q22, s1, s2, r1, r2):
    """φ(x) = a exp(bx):  k = a² exp(b² ((q11 + q22)/2 + q12)), kdot = b² k."""
    q12 = snap_q12(q11, q12, q22)
    b2 = b * b
    k = a * a * math.exp(b2 * (0.5 * (q11 + q22) + q12))
    return k, b2 * k


@njit(**INLINE)
def dual_gaussian(a, b, q11, q12, q22, s1, s2, r1, r2):
    """φ(x) = a exp(b x²).

    With t_i = 1 - 2b q_ii and D = t1 t2 - 4b² q12²:
      k = a² / sqrt(D),  kdot = 4 a² b² q12 / D^{3/2};  +inf where the integral
    diverges (b > 0 and I - 2bΣ not positive definite).  Evaluated as
    D = t1 t2 (1 - z²), z = 2b q12 / sqrt(t1 t2), with no product of two
    variances (for b < 0 they overflow at q ~ 1e154, where k, k̇ do not).
    """
    q12 = snap_q12(q11, q12, q22)
    t1 = 1.0 - 2.0 * b * q11
    t2 = 1.0 - 2.0 * b * q22
    i1 = 1.0 / t1
    i2 = 1.0 / t2
    g1 = math.sqrt(abs(i1))
    g2 = math.sqrt(abs(i2))
    z = (2.0 * b * g1) * (q12 * g2)
    # D / (t1 t2) >= (1 - 2b(q11 + q22)) / (t1 t2) = i1 + i2 - i1 i2 when b < 0
    # (keeps rounding from below), with equality at the same point
    low = i1 + i2 - i1 * i2
    rel = low if same_point(q11, q12, q22) else (
        max((1.0 - z) * (1.0 + z), low) if b < 0.0 else (1.0 - z) * (1.0 + z))
    diverges = (t1 <= 0.0) | (t2 <= 0.0) | (rel <= 0.0)  # branch-free: vectorises
    k = a * a * (g1 * g2) / math.sqrt(abs(rel))
    kdot = 2.0 * b * z * (g1 * g2) * k / rel
    return (math.inf, math.inf) if diverges else (k, kdot)


@njit(**INLINE)
def dual_exp_normalized(gamma, shift, q12, s1, s2, r1, r2):
    """The "Gaussian normalised kernel" (Shankar et al. 2020, neural-tangents'
    ``ExpNormalized``): with ρ = ``correlation`` (within 4 ulps of ±1 it is ±1,
    so identical points stay identical, and it never leaves [-1, 1], which
    makes neural-tangents' ``clip`` a no-op here),
      k = s1 s2 exp(γ (ρ + shift)),   kdot = γ exp(γ (ρ + shift))."""
    rho = correlation(q12, r1, r2)
    g = math.exp(gamma * (rho + shift))
    return s1 * s2 * g, gamma * g


@njit(**INLINE)
def dual_gabor(q11, q12, q22, r1, r2):
    """φ(x) = exp(-x²) sin x.  With D = det(I + 2Σ) = 1 + 2(q11 + q22) + δ,
    δ = 4(q11 q22 - q12²), A = (q11 + q22 + δ)/(2D) and B = q12/D
    (the Gaussian integral of exp(-u² - v² ± i(u ∓ v))):

      k    = exp(-A) sinh(B) / √D,
      kdot = ∂k/∂q12 = exp(-A) D^{-5/2} [4 q12 (D + 1 + q11 + q22) sinh B
                                         + (D + 8 q12²) cosh B]

    (neural-tangents' formula, written with sinh so that it stays accurate
    as q12 → 0, where exp(2B) - 1 loses its digits).  δ is exactly 0 where
    the correlation (``correlation``, r = 1/√q) is ±1: there q11 q22 - q12²
    would leave the rounding of q² (one side of a fused multiply-add), which
    at q ~ 1e12 is 1e-4 of the result."""
    q12 = snap_q12(q11, q12, q22)
    rho = correlation(q12, r1, r2)
    s = q11 + q22
    p = q11 * q22
    if abs(rho) == 1.0:
        delta = 0.0
    elif p < math.inf:
        delta = 4.0 * max(p - q12 * q12, 0.0)
    else:     # q11 q22 overflows (q ~ 1e154): δ from the correlation, maybe inf
        delta = 4.0 * (q11 * (1.0 - rho)) * (q22 * (1.0 + rho))
    d = 1.0 + 2.0 * s + delta
    rest = (1.0 + s) / d                           # (D + 1 + s)/D = 1 + rest
    e = math.exp(-0.5 * (s + delta) / d) if d < math.inf else math.exp(-0.5)
    b = q12 / d
    sh = math.sinh(b)
    root = math.sqrt(d)
    k = e * sh / root
    ch = math.sqrt(1.0 + sh * sh)   # cosh b, without a second libm call
    # D^{-5/2} [...] as D^{-1/2} [4 B (1 + rest) sh + (1 + 8 q12 B) ch / D]: no D² or
    # q12 D, which overflow from q ~ 1e77 (NaN), long before the result does
    kdot = e / root * (4.0 * b * (1.0 + rest) * sh + (1.0 + 8.0 * q12 * b) * ch / d)
    return k, kdot


@njit(**INLINE)
def dual_sign(s1, s2, rho, omt):
    """φ(x) = sign(x):  k = (2/π) asin ρ = 1 - 2θ/π;  kdot = 0 (φ' = 0 almost
    everywhere, neural-tangents' convention, which is what autodiff of a
    finite net gives); the result's 1 - k = 2θ/π, 1 + k = 2ψ/π.  A kinked dual
    (angle in, signed versine out: ``dual_abrelu``); k = 0, c' = 1 where a
    variance is 0 (sign 0 = 0).  One polynomial, as ``asin_c``: for |ρ| > 1/2
    the small angle 2 asin √(omt/2) gives |c'| exactly (k has ρ's sign)."""
    small = abs(rho) <= 0.5
    a = _asin_core(rho if small else math.sqrt(0.5 * omt))
    t = (4.0 / PI) * a        # |ρ| > 1/2: 2θ/π (ρ > 0), 2ψ/π (ρ < 0)
    k = (2.0 / PI) * a if small else (1.0 - t if rho > 0.0 else t - 1.0)
    c = 1.0 - abs(k) if small else t
    if s1 == 0.0 or s2 == 0.0:
        return 0.0, 0.0, 1.0
    return k, 0.0, signed_versine(rho, c)


@njit(**INLINE)
def _poly_rho(coef, lo, n, rho):
    """Σ_{k=0..n} coef[lo + k] ρ^k by Horner."""
    r = 0.0
    for k in range(n, -1, -1):
        r = r * rho + coef[lo + k]
    return r


@njit(**INLINE)
def dual_monomial(n, coef, lo_k, lo_kdot, q11, q12, q22, s1, s2, r1, r2):
    """φ(x) = x^n:  E[u^n v^n] = (s1 s2)^n Σ_k A_{n,k} ρ^k (Mehler),
    A_{n,k} = (n!)² / (k! m!² 4^m), m = (n-k)/2 for n-k even; kdot = n² E[u^{n-1} v^{n-1}].

    ``coef`` holds A_{n,·} at ``lo_k`` and n² A_{n-1,·} at ``lo_kdot``.
    """
    rho = correlation(q12, r1, r2)
    s = s1 * s2
    sn1 = 1.0  # (s1 s2)^(n-1) by multiplication (no libm pow)
    for _ in range(n - 1):
        sn1 *= s
    if n == 0:
        return _poly_rho(coef, lo_k, 0, rho), 0.0
    return sn1 * s * _poly_rho(coef, lo_k, n, rho), sn1 * _poly_rho(coef, lo_kdot, n - 1, rho)


@njit(**INLINE)
def arccos_j(n, rho, omt):
    """Cho & Saul's (J_n(θ), J_{n-1}(θ)), θ = acos ρ (given as ``arc_cosine_c``
    takes it), by the upward recurrence
    J_n = (2n-1) cos θ J_{n-1} + (n-1)² sin²θ J_{n-2},  J_0 = π - θ,  J_1 = F(π - θ)
    (J_{-1} is returned as 0); also θ and F of the smaller angle (θ for ρ >= 0,
    else π - θ), for the versine of the result (``rectified_versine``)."""
    psi, theta, f_psi, f_theta = arc_cosine_c(rho, omt)
    f_small = f_theta if rho >= 0.0 else f_psi
    if n == 0:
        return psi, 0.0, theta, f_small
    sin2 = (1.0 - rho) * (1.0 + rho)
    j0, j1 = psi, f_psi
    for m in range(2, n + 1):
        j0, j1 = j1, (2 * m - 1) * rho * j1 + (m - 1) * (m - 1) * sin2 * j0
    return j1, j0, theta, f_small


@njit(**INLINE)
def rectified_versine(n, s1, s2, rho, omt, theta, f_small):
    """The signed versine (``versine``) of a rectified monomial's result (the
    kinked duals' c'), known in closed form for n <= 1: the step function's
    J_0 = π - θ gives ρ' = 1 - θ/π >= 0, c' = θ/π; n = 1 is ReLU's
    (``_arc_versine``, f_small as ``arccos_j`` gives it); 1 (ρ' = 0) where a
    variance is 0.  NaN (unknown) for n >= 2."""
    if s1 == 0.0 or s2 == 0.0:
        return 1.0
    if n == 0:
        return theta * INV_PI
    return _arc_versine(rho, omt, f_small, 1.0) if n == 1 else math.nan


@njit(**INLINE)
def dual_rectified_monomial(n, s1, s2, rho, omt):
    """φ(x) = max(x, 0)^n (arc-cosine kernel of order n, Cho & Saul 2009):
      k = (s1 s2)^n J_n(θ) / (2π),  kdot = n² (s1 s2)^{n-1} J_{n-1}(θ) / (2π);
    kdot = 0 for n = 0 (neural-tangents' convention for the step function),
    and k = 0 where a variance is 0: step(0) = 0, as the finite networks use
    (so also kdot = 0 there for n = 1, whose φ' is the step).
    A kinked dual (angle in, versine out: ``dual_abrelu``, ``rectified_versine``).
    The upward recurrence loses relative accuracy where J_n is tiny (ρ → −1,
    large n): its error stays ~ε J_n(0), and J ≥ 0 is restored by clamping."""
    jn, jn1, theta, f_small = arccos_j(n, rho, omt)
    c = rectified_versine(n, s1, s2, rho, omt, theta, f_small)
    if jn < 0.0:
        jn = 0.0
    if jn1 < 0.0:
        jn1 = 0.0
    s = s1 * s2
    sn1 = 1.0  # (s1 s2)^(n-1) by multiplication (no libm pow)
    for _ in range(n - 1):
        sn1 *= s
    zero = s1 == 0.0 or s2 == 0.0
    if n == 0:
        return (0.0 if zero else jn * INV_2PI), 0.0, c
    return sn1 * s * jn * INV_2PI, (0.0 if zero else n * n * sn1 * jn1 * INV_2PI), c


@njit(**INLINE)
def poly_b(table, lo, m, l, x):
    """B_l(x) = Σ_{i<m} table[lo + l m + i] xⁱ (Horner)."""
    r = 0.0
    for i in range(m - 1, -1, -1):
        r = r * x + table[lo + l * m + i]
    return r


@njit(**INLINE)
def _poly_sum(table, lo, n, x1, q12, x2):
    """Σ_{l=0..n} B_l(x1) B_l(x2) q12^l, rows of width m = n//2 + 1 (Horner in q12)."""
    m = n // 2 + 1
    r = 0.0
    for l in range(n, -1, -1):
        r = r * q12 + poly_b(table, lo, m, l, x1) * poly_b(table, lo, m, l, x2)
    return r


@njit(**INLINE)
def dual_polynomial(n, q0, table, lo_k, lo_kdot, q11, q12, q22):
    """φ = Σ_{m≤n} b_m e_m(x) with e_m = x^m (q0 = 0) or e_m = He_m (q0 = 1).

    By Mehler's formula with a_l(s) = E[φ(sz) He_l(z)]/√l! (Isserlis, and
    He_m(sz) = Σ_i s^{m-2i} (s²-1)^i m!/(i! (m-2i)! 2^i) He_{m-2i}(z)):

      k = Σ_l B_l(q11 - q0) B_l(q22 - q0) q12^l,
      B_l(x) = Σ_i b_{l+2i} (l+2i)! / (i! 2^i √l!) xⁱ,

    a polynomial in the covariances: exact for every variance, no square root,
    no division.  φ' has the coefficients m b_m of e_{m-1} in both bases, so
    kdot is the same sum of degree n - 1 (``polynomial_tables``).  In the
    Hermite basis at unit variances only the top terms survive: Hermite(n)
    gives k = q12ⁿ exactly, as in neural-tangents.
    """
    q12 = snap_q12(q11, q12, q22)
    x1 = q11 - q0
    x2 = q22 - q0
    k = _poly_sum(table, lo_k, n, x1, q12, x2)
    kdot = _poly_sum(table, lo_kdot, n - 1, x1, q12, x2) if n > 0 else 0.0
    return k, kdot


def polynomial_tables(b):
    """The tables B_l of ``dual_polynomial`` for basis coefficients b_0..b_n
    (row l of width n//2 + 1, then those of φ' = Σ m b_m e_{m-1})."""
    def table(c):
        n = len(c) - 1
        t = np.zeros((n + 1, n // 2 + 1))
        for l in range(n + 1):
            root = math.sqrt(math.factorial(l))
            for i in range((n - l) // 2 + 1):
                t[l, i] = float(c[l + 2 * i]) * (math.factorial(l + 2 * i)
                                                 // (math.factorial(i) * 2 ** i)) / root
        return t.ravel()
    b = np.asarray(b, dtype=np.float64)
    dk = b[1:] * np.arange(1, len(b)) if len(b) > 1 else np.zeros(1)
    return table(b), table(dk)


def monomial_coefficients(n):
    """A_{n,k}, k = 0..n, with E[u^n v^n] = Σ_k A_{n,k} ρ^k for unit variances."""
    coef = np.zeros(n + 1)
    for k in range(n % 2, n + 1, 2):
        m = (n - k) // 2
        coef[k] = (math.factorial(n) ** 2
                   / (math.factorial(k) * math.factorial(m) ** 2 * 4 ** m))
    return coef
