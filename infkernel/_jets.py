"""Truncated bivariate Taylor series ("jets") for the PINN kernels, in numba.

A jet holds the Taylor coefficients of a function of (s, t): a[3i + j] is the
coefficient of sⁱtʲ, i, j ≤ 2 (operators of order ≤ 2 in each argument).  All
nine are always formed (fixed-size loops compile to straight-line code); those
beyond the operators' orders are not read, as a truncated product's
coefficient (i, j) depends only on coefficients up to (i, j).  Products follow
the Cauchy rule; a function of a jet is f(a) = Σₘ f⁽ᵐ⁾(a₀) δᵐ/m! with
δ = a − a₀, nilpotent (δ⁵ = 0), so the coefficients are exact up to rounding.
The closed-form duals k(q1, q12, q2), k̇ of ``_duals.py`` are evaluated here
in jet arithmetic (the same formulas), and :func:`operator_block` runs the
whole layer recursion per kernel entry and direction pair.

Every jet lives in a row of one workspace ``R`` (NSLOT × 9) and functions take
row numbers ("registers"), not arrays: numba counts the references of each
array view it makes, which would cost more than the arithmetic.  Row DV holds
the derivatives f⁽ᵐ⁾(a₀) for :func:`jcompose`; a dual reads rows Q1, Q12, Q2
and writes K, KD, with temporaries from TMP on.
"""
import math

import numpy as np
from numba import njit

from . import _program as P
from ._config import JIT

NJ = 9          # 3 × 3 coefficients
DV, Q1, Q12, Q2, K, KD = 0, 1, 2, 3, 4, 5
TMP = 6          # the duals' temporaries: TMP .. TMP + 10
TH, T = 17, 18   # operator_block's θ and a temporary
NSLOT = 19
INV_2PI = 0.5 / math.pi

#: ``operator_block``'s program rows: (OP_AFFINE, w2, b2, α, β) maps
#: q12 → w2 q12 + b2, θ → α q12 + w2 θ + β (Dense in either parameterization,
#: Scale); (OP_ACT, index of the activation, 0, 0, 0).
OP_AFFINE, OP_ACT = 0.0, 1.0


@njit(**JIT)
def registers(R):
    """(Q1, Q12, Q2, K, KD, TMP, TH, T) as run-time integers: functions that
    pass register numbers start with this, so that numba compiles each helper
    once instead of once per combination of literal arguments (a 3× longer
    first call)."""
    o = R.shape[0] - NSLOT          # 0
    return o + Q1, o + Q12, o + Q2, o + K, o + KD, o + TMP, o + TH, o + T


@njit(**JIT)
def jmul(R, a, b, out):
    """R[out] = R[a] R[b] (``out`` must not be ``a`` or ``b``)."""
    for i in range(3):
        for j in range(3):
            acc = 0.0
            for i1 in range(i + 1):
                for j1 in range(j + 1):
                    acc += R[a, 3 * i1 + j1] * R[b, 3 * (i - i1) + j - j1]
            R[out, 3 * i + j] = acc


@njit(**JIT)
def comb(R, a, alpha, b, beta, c, out):
    """R[out] = α R[a] + β R[b] + c (c on the constant term); ``out`` may be
    ``a`` or ``b``."""
    for k in range(NJ):
        R[out, k] = alpha * R[a, k] + beta * R[b, k]
    R[out, 0] += c


@njit(**JIT)
def lin(R, a, alpha, c, out):
    """R[out] = α R[a] + c; ``out`` may be ``a``."""
    comb(R, a, alpha, a, 0.0, c, out)


@njit(**JIT)
def const(R, c, out):
    """R[out] = c."""
    for k in range(NJ):
        R[out, k] = 0.0
    R[out, 0] = c


@njit(**JIT)
def copy(R, a, out):
    for k in range(NJ):
        R[out, k] = R[a, k]


@njit(**JIT)
def jcompose(R, a, out):
    """R[out] = f(R[a]) = Σ_{m ≤ 4} f⁽ᵐ⁾(a₀) δᵐ/m!, δ = R[a] − a₀, with the
    derivatives f⁽ᵐ⁾(a₀) in R[DV] and the coefficients of δ², δ³, δ⁴ (zero
    below total degree m) written out; ``out`` may be ``a``."""
    d10, d01, d20, d11, d02 = R[a, 3], R[a, 1], R[a, 6], R[a, 4], R[a, 2]
    d21, d12, d22 = R[a, 7], R[a, 5], R[a, 8]
    f1, f2, f3, f4 = R[DV, 1], R[DV, 2] / 2, R[DV, 3] / 6, R[DV, 4] / 24
    R[out, 0] = R[DV, 0]
    R[out, 3] = f1 * d10
    R[out, 1] = f1 * d01
    R[out, 6] = f1 * d20 + f2 * d10 * d10
    R[out, 4] = f1 * d11 + f2 * 2 * d10 * d01
    R[out, 2] = f1 * d02 + f2 * d01 * d01
    R[out, 7] = f1 * d21 + f2 * 2 * (d10 * d11 + d20 * d01) + f3 * 3 * d10 * d10 * d01
    R[out, 5] = f1 * d12 + f2 * 2 * (d01 * d11 + d02 * d10) + f3 * 3 * d10 * d01 * d01
    R[out, 8] = (f1 * d22 + f2 * (2 * (d10 * d12 + d01 * d21 + d20 * d02) + d11 * d11)
                 + f3 * (3 * (d10 * d10 * d02 + d01 * d01 * d20) + 6 * d10 * d01 * d11)
                 + f4 * 6 * d10 * d10 * d01 * d01)


@njit(**JIT)
def jpow(R, a, alpha, out):
    """R[out] = R[a]^α (``out`` may be ``a``)."""
    x = R[a, 0]
    v, inv = x ** alpha, 1.0 / x        # x^(α−m) = x^α (1/x)^m: one pow
    for m in range(5):
        R[DV, m] = v
        v *= (alpha - m) * inv
    jcompose(R, a, out)


@njit(**JIT)
def jexp(R, a, out):
    """R[out] = exp(R[a]) (``out`` may be ``a``)."""
    e = math.exp(R[a, 0])
    for m in range(5):
        R[DV, m] = e
    jcompose(R, a, out)


@njit(**JIT)
def jexpm1(R, a, out):
    """R[out] = exp(R[a]) − 1, its value by expm1 (``out`` may be ``a``)."""
    e = math.exp(R[a, 0])
    for m in range(1, 5):
        R[DV, m] = e
    R[DV, 0] = math.expm1(R[a, 0])
    jcompose(R, a, out)


@njit(**JIT)
def jasin(R, a, out):
    """R[out] = arcsin(R[a]) (orders ≤ 4; ``out`` may be ``a``)."""
    x = R[a, 0]
    w = 1.0 - x * x
    r = 1.0 / math.sqrt(w) if w >= 0.0 else math.nan     # w^(-1/2)
    R[DV, 0] = math.asin(x) if abs(x) <= 1.0 else math.nan
    R[DV, 1] = r
    R[DV, 2] = x * r * r * r
    R[DV, 3] = (1 + 2 * x * x) * r ** 5
    R[DV, 4] = (9 * x + 6 * x * x * x) * r ** 7
    jcompose(R, a, out)


@njit(**JIT)
def _monomial(coef, m, R, out):
    """Σ_{j ≡ m (2)} coef[j] q12ʲ (q1 q2)^((m−j)/2) (``_duals.dual_monomial``):
    with y = q12², P = q1 q2, S_k = y S_{k−1} + coef[m − 2k] Pᵏ."""
    Q1, Q12, Q2, K, KD, TMP, TH, T = registers(R)
    y, pp, pk, t = TMP, TMP + 1, TMP + 2, TMP + 3
    jmul(R, Q12, Q12, y)
    jmul(R, Q1, Q2, pp)
    const(R, coef[m], out)
    const(R, 1.0, pk)
    for k in range(1, m // 2 + 1):
        jmul(R, pk, pp, t)
        copy(R, t, pk)
        jmul(R, y, out, t)
        comb(R, t, 1.0, pk, coef[m - 2 * k], 0.0, out)
    if m % 2:
        jmul(R, out, Q12, t)
        copy(R, t, out)


@njit(**JIT)
def _horner(coef, lo, n, x, out, t, R):
    """R[out] = Σ_{c < n} coef[lo + c] R[x]ᶜ."""
    const(R, coef[lo + n - 1], out)
    for c in range(n - 2, -1, -1):
        jmul(R, out, x, t)
        lin(R, t, 1.0, coef[lo + c], out)


@njit(**JIT)
def _polynomial(coef, m, q0, R, out):
    """Σ_l q12ˡ B_l(q1 − q0) B_l(q2 − q0), B_l the l-th row of ``coef``
    ((m + 1) × (m // 2 + 1), ``_duals.dual_polynomial``), by Horner in q12
    and in the variances."""
    Q1, Q12, Q2, K, KD, TMP, TH, T = registers(R)
    x1, x2, b1, b2, t = TMP, TMP + 1, TMP + 2, TMP + 3, TMP + 4
    ncol = m // 2 + 1
    lin(R, Q1, 1.0, -q0, x1)
    lin(R, Q2, 1.0, -q0, x2)
    const(R, 0.0, out)
    for l in range(m, -1, -1):
        _horner(coef, l * ncol, ncol, x1, b1, t, R)
        _horner(coef, l * ncol, ncol, x2, b2, t, R)
        jmul(R, out, Q12, t)
        jmul(R, b1, b2, out)
        comb(R, out, 1.0, t, 1.0, 0.0, out)


@njit(**JIT)
def dual(kind, p, tab, R):
    """(k, k̇)(q1, q12, q2) in jet arithmetic for a closed-form kind: reads
    R[Q1], R[Q12], R[Q2], writes R[K], R[KD] (rows TMP on are temporaries).
    ``p``: the activation's parameters; ``tab``: its two coefficient tables.
    Returns 1 where Gaussian(b > 0) diverges (I − 2bΣ not positive definite),
    else 0."""
    Q1, Q12, Q2, K, KD, TMP, TH, T = registers(R)
    t1, t2, t3, t4, t5, t6 = TMP, TMP + 1, TMP + 2, TMP + 3, TMP + 4, TMP + 5
    if kind == P.K_ERF:
        a, b, c = p[0], p[1], p[2]
        b2 = b * b
        lin(R, Q1, 2 * b2, 1.0, t1)
        lin(R, Q2, 2 * b2, 1.0, t2)
        jmul(R, t1, t2, t3)                 # r = (1 + 2b²q1)(1 + 2b²q2)
        jpow(R, t3, -0.5, t4)
        jmul(R, Q12, t4, t1)
        lin(R, t1, 2 * b2, 0.0, t1)
        jasin(R, t1, K)
        lin(R, K, a * a * (2 / math.pi), c * c, K)
        jmul(R, Q12, Q12, t4)
        comb(R, t3, 1.0, t4, -4 * b2 * b2, 0.0, t4)
        jpow(R, t4, -0.5, KD)
        lin(R, KD, a * a * (4 / math.pi) * b2, 0.0, KD)
    elif kind == P.K_GELU:
        p1, p2, pp, z, dd, dl = t1, t2, t3, t4, t5, t6
        idl, h, ang, t, u = TMP + 6, TMP + 7, TMP + 8, TMP + 9, TMP + 10
        lin(R, Q1, 1.0, 1.0, p1)
        lin(R, Q2, 1.0, 1.0, p2)
        jmul(R, p1, p2, pp)
        jpow(R, pp, -0.5, t)
        jmul(R, Q12, t, z)                  # z = q12 / √(p1 p2)
        jmul(R, Q12, Q12, t)
        comb(R, pp, 1.0, t, -1.0, 0.0, dd)  # Δ² = p1 p2 − q12²
        jpow(R, dd, 0.5, dl)
        jpow(R, dd, -0.5, idl)
        jpow(R, p1, -1.0, t)
        jmul(R, Q1, t, u)                   # q1 / p1
        jpow(R, p2, -1.0, t)
        jmul(R, Q2, t, p1)                  # q2 / p2 (p1 is free)
        jmul(R, u, p1, h)
        jasin(R, z, ang)
        jmul(R, z, z, t)
        jmul(R, t, idl, u)                  # z² / Δ
        jmul(R, h, dl, t)
        comb(R, u, 1.0, t, 1.0, 0.0, u)
        jmul(R, Q12, ang, t)
        comb(R, u, INV_2PI, t, INV_2PI, 0.0, u)
        comb(R, Q12, 0.25, u, 1.0, 0.0, K)
        jpow(R, dd, -1.0, t)
        jpow(R, pp, -1.0, u)
        comb(R, t, 1.0, u, 1.0, 1.0, t)
        comb(R, t, 1.0, h, -1.0, 0.0, t)    # 1/Δ² + 1/(p1 p2) − h + 1
        jmul(R, Q12, idl, u)
        jmul(R, u, t, p2)
        comb(R, ang, INV_2PI, p2, INV_2PI, 0.25, KD)
    elif kind == P.K_SIN or kind == P.K_RBF:
        # Sin: ½a²(e₋ − cos 2c e₊), k̇ = ½a²b²(e₋ + cos 2c e₊), e∓ = exp(−½b²(q1 + q2 ∓ 2q12)),
        # as _duals.dual_sin without the cancellation at small x = b²q12:
        # e^(−A) [∓½ m + (1 + m or 1) w], m = expm1(∓2x), w = sin²c (k) or cos²c (k̇);
        # Rbf: k = exp(−γ(q1 + q2 − 2q12)), k̇ = 2γk
        g = 0.5 * p[1] * p[1] if kind == P.K_SIN else p[0]
        up = kind == P.K_RBF or R[Q12, 0] >= 0.0
        sign = 1.0 if up else -1.0                      # sign(x)
        for m in range(NJ):
            R[t1, m] = -g * (R[Q1, m] + R[Q2, m] - 2 * sign * R[Q12, m])   # −A
            R[t2, m] = -4.0 * sign * g * R[Q12, m]                          # ∓2x
        jexp(R, t1, t1)
        if kind == P.K_RBF:
            copy(R, t1, K)
            lin(R, t1, 2 * g, 0.0, KD)
        else:
            jexpm1(R, t2, t2)
            a2 = p[0] * p[0]
            for w, out, scale in ((math.sin(p[2]) ** 2, K, a2), (math.cos(p[2]) ** 2, KD,
                                                                 2 * g * a2)):
                for m in range(NJ):
                    R[t3, m] = (w - 0.5 if up else 0.5) * R[t2, m]
                R[t3, 0] += w
                jmul(R, t1, t3, out)
                lin(R, out, scale, 0.0, out)
    elif kind == P.K_EXP:
        a, b = p[0], p[1]
        b2 = b * b
        for m in range(NJ):
            R[K, m] = b2 * (0.5 * (R[Q1, m] + R[Q2, m]) + R[Q12, m])
        jexp(R, K, K)
        lin(R, K, a * a, 0.0, K)
        lin(R, K, b2, 0.0, KD)
    elif kind == P.K_GAUSSIAN:
        a, b = p[0], p[1]
        lin(R, Q1, -2 * b, 1.0, t1)
        lin(R, Q2, -2 * b, 1.0, t2)
        jmul(R, t1, t2, t3)
        jmul(R, Q12, Q12, t4)
        comb(R, t3, 1.0, t4, -4 * b * b, 0.0, t3)   # D = det(I − 2bΣ)
        if b > 0 and R[t3, 0] <= 0:
            return 1
        jpow(R, t3, -0.5, K)
        lin(R, K, a * a, 0.0, K)
        jpow(R, t3, -1.5, t4)
        jmul(R, Q12, t4, KD)
        lin(R, KD, 4 * a * a * b * b, 0.0, KD)
    elif kind == P.K_MONOMIAL:
        n = int(p[0])
        _monomial(tab[0], n, R, K)
        if n:
            _monomial(tab[1], n - 1, R, KD)
        else:
            const(R, 0.0, KD)
    elif kind == P.K_POLYNOMIAL:
        n = int(p[0])
        _polynomial(tab[0], n, p[1], R, K)
        if n:
            _polynomial(tab[1], n - 1, p[1], R, KD)
        else:
            const(R, 0.0, KD)
    elif kind == P.K_GABOR:
        s, dl, d, idl, e, bb = t1, t2, t3, t4, t5, t6
        sh, ch, t, u = TMP + 6, TMP + 7, TMP + 8, TMP + 9
        comb(R, Q1, 1.0, Q2, 1.0, 0.0, s)
        jmul(R, Q1, Q2, t)
        jmul(R, Q12, Q12, u)
        comb(R, t, 4.0, u, -4.0, 0.0, dl)     # Δ = 4(q1 q2 − q12²)
        comb(R, s, 2.0, dl, 1.0, 1.0, d)      # d = 2s + Δ + 1
        jpow(R, d, -1.0, idl)
        comb(R, s, 1.0, dl, 1.0, 0.0, t)
        jmul(R, t, idl, e)
        lin(R, e, -0.5, 0.0, e)
        jexp(R, e, e)                         # exp(−(s + Δ)/(2d))
        jmul(R, Q12, idl, bb)
        jexp(R, bb, t)
        lin(R, bb, -1.0, 0.0, u)
        jexp(R, u, u)
        comb(R, t, 0.5, u, -0.5, 0.0, sh)
        comb(R, t, 0.5, u, 0.5, 0.0, ch)
        jmul(R, e, sh, t)
        jpow(R, d, -0.5, u)
        jmul(R, t, u, K)
        comb(R, d, 1.0, s, 1.0, 1.0, t)       # d + s + 1
        jmul(R, Q12, t, u)
        jmul(R, u, sh, t)                     # q12 (d + s + 1) sh
        jmul(R, Q12, Q12, u)
        comb(R, d, 1.0, u, 8.0, 0.0, u)       # d + 8 q12²
        jmul(R, u, ch, bb)
        comb(R, t, 4.0, bb, 1.0, 0.0, t)
        jpow(R, d, -2.5, u)
        jmul(R, e, u, bb)
        jmul(R, bb, t, KD)
    else:
        raise AssertionError("not a closed-form kind")
    return 0


@njit(**JIT)
def dual_entries(kind, p, tab, S1, S12, S2, k, kd):
    """``dual`` for each row of S1, S12, S2 (M × 9) into k, kd; returns the
    number of rows where it diverges."""
    R = np.zeros((NSLOT, NJ))
    Q1, Q12, Q2, K, KD, TMP, TH, T = registers(R)
    bad = 0
    for m in range(S12.shape[0]):
        for c in range(NJ):
            R[Q1, c], R[Q12, c], R[Q2, c] = S1[m, c], S12[m, c], S2[m, c]
        bad += dual(kind, p, tab, R)
        for c in range(NJ):
            k[m, c], kd[m, c] = R[K, c], R[KD, c]
    return bad


def dual_derivatives(kind, params, q1, q12, q2, ds, dt):
    """(k, k̇) of a closed-form ``kind`` without coefficient tables (not
    Monomial / Polynomial; parameters ``params``) at (q1, q12, q2), arrays
    broadcast, and their derivatives along the directions ``ds`` and ``dt``
    (each the coefficients of q1, q12, q2): returns k, k̇, ∂ₛk, ∂ₜk, ∂ₛk̇,
    ∂ₜk̇.  ``dual`` on first-order jets: exact up to rounding."""
    q = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (q1, q12, q2)))
    rows = np.zeros((3, q[0].size, NJ))
    for row, value, s, t in zip(rows, q, ds, dt):
        row[:, 0], row[:, 3], row[:, 1] = value.ravel(), s, t
    p = np.zeros(P.N_PARAMS)
    p[:len(params)] = params
    k, kd = np.zeros((2, q[0].size, NJ))
    dual_entries(kind, p, np.zeros((2, 1)), rows[0], rows[1], rows[2], k, kd)
    return tuple(v[:, c].reshape(q[0].shape)
                 for v, c in ((k, 0), (kd, 0), (k, 3), (k, 1), (kd, 3), (kd, 1)))


@njit(**JIT)
def variance_jets(ops, kinds, params, tabs, Q, S):
    """The variance jets q(x + s v) (s-jets, J = 0) before each activation:
    ``S[l, n]`` for the l-th activation, from the input jets ``Q[n]`` (n over
    points × directions).  Returns the number of divergent duals."""
    R = np.zeros((NSLOT, NJ))
    Q1, Q12, Q2, K, KD, TMP, TH, T = registers(R)
    bad = 0
    for n in range(Q.shape[0]):
        for c in range(NJ):
            R[Q12, c] = Q[n, c]
        for o in range(ops.shape[0]):
            if ops[o, 0] == OP_AFFINE:
                lin(R, Q12, ops[o, 1], ops[o, 2], Q12)
            else:
                l = int(ops[o, 1])
                for c in range(NJ):
                    S[l, n, c] = R[Q1, c] = R[Q2, c] = R[Q12, c]
                bad += dual(kinds[l], params[l], tabs[l], R)
                copy(R, K, Q12)
    return bad


@njit(**JIT)
def operator_block(ops, kinds, params, tabs, Q12in, S1, S2, c1, c2, I, J, row0, col0, upper,
                   nngp, ntk):
    """Operator kernels Σ c1[a, i] c2[b, j] ∂ˢⁱ∂ᵗʲ K for the rows row0 + r and
    columns col0 + c of ``nngp``/``ntk`` (either may be empty: not wanted),
    one entry at a time: for each direction pair (a, b) the jets
    q12 = Q12in[:, :, a, r, b, c] (input layer) and θ = 0 run through ``ops``
    with the variance jets S1[l, a, row], S2[l, b, column] (``variance_jets``)
    at the l-th activation.  With ``upper`` only the columns from the
    diagonal on, each also written to its mirror image.  Returns the number
    of divergent duals."""
    G1, R_, G2, C = Q12in.shape[2], Q12in.shape[3], Q12in.shape[4], Q12in.shape[5]
    R = np.zeros((NSLOT, NJ))
    Q1, Q12, Q2, K, KD, TMP, TH, T = registers(R)
    bad = 0
    for r in range(R_):
        first = max(0, row0 + r - col0) if upper else 0
        for c in range(first, C):
            acc_n, acc_t = 0.0, 0.0
            for a in range(G1):
                for b in range(G2):
                    const(R, 0.0, Q12)
                    const(R, 0.0, TH)
                    for i in range(I + 1):
                        for j in range(J + 1):
                            R[Q12, 3 * i + j] = Q12in[i, j, a, r, b, c]
                    for o in range(ops.shape[0]):
                        if ops[o, 0] == OP_AFFINE:
                            comb(R, Q12, ops[o, 3], TH, ops[o, 1], ops[o, 4], TH)
                            lin(R, Q12, ops[o, 1], ops[o, 2], Q12)
                        else:
                            l = int(ops[o, 1])
                            const(R, 0.0, Q1)
                            const(R, 0.0, Q2)
                            for i in range(I + 1):
                                R[Q1, 3 * i] = S1[l, a, row0 + r, 3 * i]
                            for j in range(J + 1):
                                R[Q2, j] = S2[l, b, col0 + c, 3 * j]
                            bad += dual(kinds[l], params[l], tabs[l], R)
                            jmul(R, KD, TH, T)
                            copy(R, T, TH)
                            copy(R, K, Q12)
                    for i in range(I + 1):
                        for j in range(J + 1):
                            f = c1[a, i] * c2[b, j]
                            acc_n += f * R[Q12, 3 * i + j]
                            acc_t += f * R[TH, 3 * i + j]
            for out, acc in ((nngp, acc_n), (ntk, acc_t)):
                if out.size:
                    out[row0 + r, col0 + c] = acc
                    if upper:
                        out[col0 + c, row0 + r] = acc
    return bad
