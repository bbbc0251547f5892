"""CPU backend: fused numba Gram builders (cross, symmetric, diagonal).

Data flow for K(X1, X2): the diagonal pass runs the program on each point
against itself (O(N·L), TILE points at a time) and records each
activation's input variance per point.  Then a numba kernel on each thread
takes groups of up to ``ROWS`` rows; per column tile of ``TILE`` entries one
small single-threaded GEMM gives the inner products and every layer of the
program runs over the tile with its registers in cache, writing each output
entry once.  The only temporaries are per-thread tiles.
The symmetric path computes the strict upper triangle, writes each entry at
(i, j) and (j, i), and takes the diagonal from the diagonal pass; a thin
cross kernel (fewer than THIN columns) runs transposed.  Each
program runs on copies of these kernels compiled with only the groups of
activation kinds it uses (``_GROUPS``), so a first call compiles only what it
needs.
"""
import concurrent.futures
import contextlib
import functools
import math
import os
import threading
import types
import weakref

import numba
import numpy as np
from numba import njit, prange
from numba.core import types as nbtypes
from numba.extending import overload

from ._checks import KernelRangeError
from ._config import (BLOCK_ENTRIES, FEATURE_ROWS, INLINE, JIT, ROWS, SERIAL_WORK, THIN,
                      TILE)
from ._duals import (GELU_ANTIPODAL_Z, INV_2PI, arc_cosine_c, correlation, dense_theta,
                     dual_abrelu, dual_erf, dual_exp, dual_exp_normalized, dual_gabor,
                     dual_gaussian, dual_gelu, dual_layernorm, dual_monomial, dual_polynomial,
                     dual_rbf, dual_rectified_monomial, dual_relu, dual_sign, dual_sin,
                     entry_angle, erf_overflows, mixed_scales, mixed_versine, point_scale, poly_b,
                     signed_versine, snap_q12, versine_of)
from ._numeric import HDR_QMAX, HDR_SCALE, NM, Q_MAX, U, mehler_point, numeric_tile
from ._program import (K_ABRELU, K_ERF, K_EXP, K_EXP_NORMALIZED, K_GABOR, K_GAUSSIAN,
                       K_GELU, K_LAYERNORM, K_MONOMIAL, K_NUMERIC, K_POLYNOMIAL, K_RBF,
                       K_RECTIFIED_MONOMIAL, K_SIGN, K_SIN, KINKED, OP_ACT, OP_AXPY, OP_COPY,
                       OP_DENSE, OP_DIAG_SCALE, OP_MUL, OP_SCALE)


#: The groups of activation kinds: a program runs on copies of the kernels
#: compiled with only the groups it uses (``_variant``), as most of the compile
#: time is theirs.  Name, kinds, and the flag that compiles the group in.
_GROUPS = (("arc", frozenset({K_ABRELU, K_SIGN}), "WITH_ARC"),
           ("smooth", frozenset({K_ERF, K_GELU, K_SIN, K_RBF, K_EXP, K_GAUSSIAN,
                                 K_EXP_NORMALIZED, K_GABOR, K_LAYERNORM}), "WITH_SMOOTH"),
           ("polynomial", frozenset({K_MONOMIAL, K_RECTIFIED_MONOMIAL, K_POLYNOMIAL}),
            "WITH_POLYNOMIAL"),
           ("numeric", frozenset({K_NUMERIC}), "WITH_NUMERIC"))

# The module's kernels compile every group in.  A copy made by ``_rebound``
# with a flag False drops the group's branches before numba inlines their
# functions (its dead-branch pruning treats globals as constants).
WITH_ARC = WITH_SMOOTH = WITH_POLYNOMIAL = WITH_NUMERIC = True

#: The groups whose code the diagonal pass takes from act_tile, point by point
#: (polynomials from ``polynomial_points``), rather than from ``act_rows``.
_COSTLY = ("polynomial", "numeric")
_COSTLY_KINDS = tuple(sorted(set().union(*(kinds for name, kinds, _ in _GROUPS
                                           if name in _COSTLY))))


def _row(values, j):
    """The row point's value for entry j of a tile: ``values`` itself in a
    Gram tile (one row point against the columns), ``values[j]`` in the
    diagonal pass (entry j is point j against itself)."""
    return values if np.ndim(values) == 0 else values[j]


@overload(_row, jit_options=JIT)
def _row_typed(values, j):
    if isinstance(values, nbtypes.Array):
        return lambda values, j: values[j]
    return lambda values, j: values


@njit(**INLINE)
def _carried(C, n):
    """Whether a tile's signed versines C are carried (``_run_ops``): for all
    of its n entries or for none (NaN: the kinked duals take the angle from
    q12; ``_duals.entry_angle``)."""
    return n > 0 and C[0] == C[0]


@njit(**INLINE)
def _count_below(Q, r1, R2, n, bound):
    """How many of a tile's n entries have correlation Q[j] r1 R2[j] < bound
    (r: the inverse point scales; Gelu's z as ``dual_gelu`` forms it)."""
    count = 0
    for j in range(n):
        count += Q[j] * (_row(r1, j) * R2[j]) < bound
    return count


@njit(**INLINE)
def _max_sum(q11, V2, n):
    """The largest q11 + V2[j] of a tile's n entries (``_row``)."""
    m = 0.0
    for j in range(n):
        m = max(m, _row(q11, j) + V2[j])
    return m


@njit(**INLINE)
def keeps_versine(kind, degree):
    """Whether an activation's dual gives the versine of its result: ABRelu,
    Sign and RectifiedMonomial of degree <= 1 (``_duals.rectified_versine``)."""
    return kind == K_ABRELU or kind == K_SIGN or (kind == K_RECTIFIED_MONOMIAL and degree <= 1.0)


@njit(**INLINE)
def _monomial_tile(kind, deg, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n):
    """Monomial or RectifiedMonomial of degree ``deg`` on a tile (act_tile)."""
    if kind == K_MONOMIAL:
        for j in range(n):
            v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
            Q[j], d = dual_monomial(deg, aux, lo, hi, v1, Q[j], V2[j], s, S2[j], r, R2[j])
            TH[j] *= d
    else:
        carried = _carried(C, n)
        for j in range(n):
            rho, omt = entry_angle(carried, C[j], Q[j], _row(r1, j), R2[j])
            Q[j], d, C[j] = dual_rectified_monomial(deg, _row(s1, j), S2[j], rho, omt)
            TH[j] *= d


@njit(**INLINE)
def _monomial_tile_any(kind, deg, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n, W):
    """``_monomial_tile`` for degrees >= 2, its loops over the degree
    outside and those over the entries inside, so that these vectorise (ρ in
    ``W[0]``, the sums in ρ or J_n, J_{n-1} in ``W[1]``, ``W[2]``,
    (s1 s2)^(n-1) in Q): the operations of ``dual_monomial`` /
    ``dual_rectified_monomial`` (whose result's versine is unknown here:
    NaN in C)."""
    rho, w1, w2 = W[0, :n], W[1, :n], W[2, :n]
    if kind == K_MONOMIAL:
        for j in range(n):
            rho[j] = correlation(Q[j], _row(r1, j), R2[j])
    else:                           # J_0 = ψ, J_1 = F(ψ)
        carried = _carried(C, n)
        for j in range(n):
            rho[j], omt = entry_angle(carried, C[j], Q[j], _row(r1, j), R2[j])
            w2[j], _, w1[j], _ = arc_cosine_c(rho[j], omt)
    for j in range(n):
        Q[j] = 1.0
        C[j] = math.nan
    for _ in range(deg - 1):
        for j in range(n):
            Q[j] *= _row(s1, j) * S2[j]
    if kind == K_MONOMIAL:   # Horner sums in ρ of A_{n,·} and n² A_{n-1,·}
        for j in range(n):
            w1[j] = aux[lo + deg]
            w2[j] = aux[hi + deg - 1]
        for k in range(deg - 1, -1, -1):
            for j in range(n):
                w1[j] = w1[j] * rho[j] + aux[lo + k]
        for k in range(deg - 2, -1, -1):
            for j in range(n):
                w2[j] = w2[j] * rho[j] + aux[hi + k]
        c, cd = 1.0, 1
    else:                    # J_n, J_{n-1} by the upward recurrence (arccos_j)
        for m in range(2, deg + 1):
            a, b = 2 * m - 1, (m - 1) * (m - 1)
            for j in range(n):
                r = rho[j]
                j1 = a * r * w1[j] + b * ((1.0 - r) * (1.0 + r)) * w2[j]
                w2[j] = w1[j]
                w1[j] = j1
        for j in range(n):   # J >= 0 restored by clamping
            w1[j] = max(w1[j], 0.0)
            w2[j] = max(w2[j], 0.0)
        c, cd = INV_2PI, deg * deg
    for j in range(n):
        TH[j] *= cd * Q[j] * w2[j] * c
        Q[j] = Q[j] * (_row(s1, j) * S2[j]) * w1[j] * c


@njit(**JIT)
def monomial_tiles(kind, p, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n, W):
    """Monomial or RectifiedMonomial (params ``p``) on a tile (act_tile).  The
    common degrees as literals: LLVM unrolls the inner loops over the degree
    and vectorises the loop over the entries; higher degrees reordered so
    that the loops over the entries vectorise (2-3x the per-entry loop)."""
    deg = int(p[0])
    if deg == 0:
        _monomial_tile(kind, 0, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n)
    elif deg == 1:
        _monomial_tile(kind, 1, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n)
    elif deg == 2:
        _monomial_tile(kind, 2, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n)
    elif deg == 3:
        _monomial_tile(kind, 3, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n)
    else:
        _monomial_tile_any(kind, deg, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n, W)


@njit(**INLINE)
def _polynomial_term(b1, b2, Q, acc, n):
    """acc[j] = acc[j] q12_j + B_l(x1) B_l(x2_j) over a tile, the values
    B_l of the row point (b1) and the columns (b2) from the point tables;
    no work for the product where B_l(x1) = 0."""
    if b1 == 0.0:
        for j in range(n):
            acc[j] = acc[j] * Q[j]
    else:
        for j in range(n):
            acc[j] = acc[j] * Q[j] + b1 * b2[j]


@njit(**JIT)
def polynomial_tile(p, row, i, c0, n, q11, V2, Q, TH, P1, P2, W):
    """Polynomial (params ``p``: degree n, basis q0) on the tile of entries
    (i, c0 .. c0+n) (``_run_ops``): the Horner sums in q12 of
    ``dual_polynomial``, with the values B_l(q - q0) of the row point and
    the columns read from the per-point tables P1, P2 (rows ``row`` ..,
    ``polynomial_points``), so that an entry costs O(n) multiply-adds, not
    the O(n²) of evaluating each B_l; the loops run over the tile's entries
    and vectorise (k in ``W[0]``, kdot in ``W[1]``).  The same operations
    in the same order as ``dual_polynomial``, so the same numbers;
    Hermite(n) at unit variance keeps one term of n + 1."""
    deg = int(p[0])
    acc, acc_d = W[0, :n], W[1, :n]
    for j in range(n):
        Q[j] = snap_q12(q11, Q[j], V2[j])
        acc[j] = 0.0
        acc_d[j] = 0.0
    for l in range(deg, -1, -1):
        _polynomial_term(P1[row + l, i], P2[row + l, c0:c0 + n], Q, acc, n)
        if l < deg:
            d = row + deg + 1 + l
            _polynomial_term(P1[d, i], P2[d, c0:c0 + n], Q, acc_d, n)
    for j in range(n):
        Q[j] = acc[j]
        TH[j] *= acc_d[j]


@njit(**INLINE)
def polynomial_points(p, aux, lo, hi, row, q, th, P, c0, n):
    """The diagonal pass's Polynomial (params ``p``) for the points c0 .. c0+n
    (variances ``q``): their rows of the per-point tables, B_l(q - q0) for
    l = 0..n and then those of the derivative dual for l = 0..n-1, and
    (k, kdot) of each point with itself (``dual_polynomial``, whose sums
    ``polynomial_tile`` forms from these rows)."""
    deg, q0 = int(p[0]), p[1]
    m, md = deg // 2 + 1, (deg - 1) // 2 + 1
    for j in range(n):
        x = q[j] - q0
        for l in range(deg + 1):
            P[row + l, c0 + j] = poly_b(aux, lo, m, l, x)
        for l in range(deg):
            P[row + deg + 1 + l, c0 + j] = poly_b(aux, hi, md, l, x)
        q[j], d = dual_polynomial(deg, q0, aux, lo, hi, q[j], q[j], q[j])
        th[j] *= d


@njit(**JIT)
def act_tile(kind, p, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, c0, n,
             i, F1, G1, F2, G2, TM, W):
    """Apply activation ``kind`` (params ``p``) to the entries (i, c0 + j),
    j < n, of one register: Q[j] = q12 becomes E[φφ], TH[j] *= E[φ'φ'];
    the kinked kinds also take the signed versine C[j] = sign(ρ)(1 - |ρ|) (NaN:
    the angle from q12; ``_duals.versine``) and leave that of the result there.

    ``q11, s1, r1`` are the row point's variance, its scale
    (``_duals.point_scale``) and inverse scale: scalars in a Gram tile (one
    row point), arrays in the diagonal pass (entry j is point c0 + j against
    itself; ``_row``); ``V2, S2, R2`` the column points', sliced to the
    tile and indexed by j alone (an offset index c0 + j could be negative as
    far as LLVM knows, which turns the loads into gathers).  The kind is
    dispatched once per tile, so each loop below is branch-free and
    vectorised; each branch names its group's flag (``_GROUPS``).  Kind
    K_NUMERIC (``_numeric.py``) also reads the per-point Mehler features
    ``F1/G1`` (row i), ``F2/G2`` (columns from c0) of slot ``hi``, the
    column tail maxima ``TM`` and scratch ``W``.
    """
    if WITH_ARC and kind == K_ABRELU:
        a, b = p[0], p[1]
        carried = _carried(C, n)
        if a * b == 0.0:                   # ReLU up to scale: one angle per entry
            c2 = a * a + b * b
            for j in range(n):
                rho, omt = entry_angle(carried, C[j], Q[j], _row(r1, j), R2[j])
                Q[j], d, C[j] = dual_relu(c2, _row(s1, j), S2[j], rho, omt)
                TH[j] *= d
        else:
            for j in range(n):
                rho, omt = entry_angle(carried, C[j], Q[j], _row(r1, j), R2[j])
                Q[j], d, C[j] = dual_abrelu(a, b, _row(s1, j), S2[j], rho, omt)
                TH[j] *= d
    elif WITH_ARC and kind == K_SIGN:
        carried = _carried(C, n)
        for j in range(n):
            rho, omt = entry_angle(carried, C[j], Q[j], _row(r1, j), R2[j])
            Q[j], d, C[j] = dual_sign(_row(s1, j), S2[j], rho, omt)
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_ERF:
        a, b, c = p[0], p[1], p[2]
        # the form for overflowing 2b²q only in tiles that need it (a literal flag per loop)
        if erf_overflows(b, _max_sum(q11, V2, n)):
            for j in range(n):
                v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
                Q[j], d = dual_erf(a, b, c, v1, Q[j], V2[j], s, S2[j], r, R2[j], True)
                TH[j] *= d
        else:
            for j in range(n):
                v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
                Q[j], d = dual_erf(a, b, c, v1, Q[j], V2[j], s, S2[j], r, R2[j], False)
                TH[j] *= d
    elif WITH_SMOOTH and kind == K_GELU:
        # the antipodal form only in tiles that need it (a literal flag per loop)
        if _count_below(Q, r1, R2, n, GELU_ANTIPODAL_Z):
            for j in range(n):
                v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
                Q[j], d = dual_gelu(v1, Q[j], V2[j], s, S2[j], r, R2[j], True)
                TH[j] *= d
        else:
            for j in range(n):
                v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
                Q[j], d = dual_gelu(v1, Q[j], V2[j], s, S2[j], r, R2[j], False)
                TH[j] *= d
    elif WITH_SMOOTH and kind == K_SIN:
        a, b, c = p[0], p[1], p[2]
        for j in range(n):
            v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
            Q[j], d = dual_sin(a, b, c, v1, Q[j], V2[j], s, S2[j], r, R2[j])
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_RBF:
        gamma = p[0]
        for j in range(n):
            v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
            Q[j], d = dual_rbf(gamma, v1, Q[j], V2[j], s, S2[j], r, R2[j])
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_EXP:
        a, b = p[0], p[1]
        for j in range(n):
            v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
            Q[j], d = dual_exp(a, b, v1, Q[j], V2[j], s, S2[j], r, R2[j])
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_GAUSSIAN:
        a, b = p[0], p[1]
        for j in range(n):
            v1, s, r = _row(q11, j), _row(s1, j), _row(r1, j)
            Q[j], d = dual_gaussian(a, b, v1, Q[j], V2[j], s, S2[j], r, R2[j])
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_EXP_NORMALIZED:
        gamma, shift = p[0], p[1]
        for j in range(n):
            s, r = _row(s1, j), _row(r1, j)
            Q[j], d = dual_exp_normalized(gamma, shift, Q[j], s, S2[j], r, R2[j])
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_GABOR:
        for j in range(n):
            Q[j], d = dual_gabor(_row(q11, j), Q[j], V2[j], _row(r1, j), R2[j])
            TH[j] *= d
    elif WITH_SMOOTH and kind == K_LAYERNORM:
        for j in range(n):
            Q[j], d = dual_layernorm(Q[j], _row(r1, j), R2[j])
            TH[j] *= d
    elif WITH_POLYNOMIAL and (kind == K_MONOMIAL or kind == K_RECTIFIED_MONOMIAL):
        monomial_tiles(kind, p, aux, lo, hi, q11, s1, r1, Q, TH, C, V2, S2, R2, n, W)
    elif WITH_NUMERIC and kind == K_NUMERIC:
        # a Gram tile's row (the diagonal pass handles numeric kinds itself)
        numeric_tile(aux, lo, _row(q11, 0), _row(s1, 0), _row(r1, 0), Q, TH, V2, S2, R2,
                     c0, n, i, hi, F1, G1, F2, G2, TM, W)
    else:   # a kind this copy is not compiled for
        for j in range(n):
            Q[j] = math.nan
            TH[j] = math.nan


@njit(**INLINE)
def _mix_tile(ca, cb, a1, b1, a2, b2, n):
    """ca[j] = the signed versine of the sum A + B (``mixed_versine``) for
    entries j < n of a tile: the row point's unit vector (a1, b1), the
    columns' in a2, b2 (the op's S, R tables); cb the versines of B (0: a
    Dense layer's bias)."""
    for j in range(n):
        ca[j] = mixed_versine(a1, a2[j], b1, b2[j], ca[j], _row(cb, j))


@njit(**JIT)
def _run_ops(ops, params, aux, i, c0, n, V1, S1, R1, V2, S2, R2, Q, TH, C, known,
             F1, G1, F2, G2, TM, W, P1, P2):
    """Apply every op of the program to the tile of entries (i, c0 .. c0+n):
    registers Q (q12), TH (θ) and C, the signed versine (``_duals.versine``)
    where ``known[r]`` (the same for all entries: activations without a
    versine formula lose it, as does a sum or product with a branch that has,
    and a Dense layer regains it; a program without kinked activations, which
    alone read it, starts and stays without: ``Program.carries_versine``)."""
    for k in range(ops.shape[0]):
        op = ops[k, 0]
        r = ops[k, 1]
        p = params[k]
        if op == OP_DENSE:
            w2, b2, c_old, c_new, c_one = p[0], p[1], p[2], p[3], p[4]
            if known.size and known[r]:   # w h + bias (the same for both points)
                _mix_tile(C[r], 0.0, S1[k, i], R1[k, i], S2[k, c0:c0 + n], R2[k, c0:c0 + n], n)
            for j in range(n):
                q = Q[r, j]
                qn = w2 * q + b2
                TH[r, j] = dense_theta(w2, c_old, c_new, c_one, q, qn, TH[r, j])
                Q[r, j] = qn
            if known.size and not known[r]:   # from the new q12: 1/√q' in V
                v1, v2 = V1[k, i], V2[k, c0:c0 + n]
                for j in range(n):
                    C[r, j] = versine_of(Q[r, j], v1, v2[j])
                known[r] = True
        elif op == OP_ACT:
            kind = ops[k, 3]
            if kind in KINKED and not (known.size and known[r]):
                for j in range(n):
                    C[r, j] = math.nan      # the dual's angle from q12
            if WITH_POLYNOMIAL and kind == K_POLYNOMIAL:
                polynomial_tile(p, ops[k, 2], i, c0, n, V1[k, i], V2[k, c0:c0 + n], Q[r],
                                TH[r], P1, P2, W)
            else:
                act_tile(kind, p, aux, ops[k, 4], ops[k, 5], V1[k, i], S1[k, i],
                         R1[k, i], Q[r], TH[r], C[r], V2[k, c0:c0 + n], S2[k, c0:c0 + n],
                         R2[k, c0:c0 + n], c0, n,
                         i, F1, G1, F2, G2, TM, W)
            if known.size:
                known[r] = keeps_versine(kind, p[0]) or (kind == K_LAYERNORM and known[r])
        elif op == OP_SCALE:
            for j in range(n):
                Q[r, j] *= p[0]
                TH[r, j] *= p[0]
            if known.size and p[0] == 0.0:   # zero variances: ρ = 0
                for j in range(n):
                    C[r, j] = 1.0
        elif op == OP_DIAG_SCALE:   # the diagonal only: ρ of the others changes
            if known.size:
                known[r] = False
        elif op == OP_COPY:
            r2 = ops[k, 2]
            for j in range(n):
                Q[r2, j] = Q[r, j]
                TH[r2, j] = TH[r, j]
            if known.size:
                for j in range(n):
                    C[r2, j] = C[r, j]
                known[r2] = known[r]
        elif op == OP_AXPY:
            r2 = ops[k, 2]
            if known.size and known[r] and known[r2]:
                _mix_tile(C[r], C[r2], S1[k, i], R1[k, i], S2[k, c0:c0 + n], R2[k, c0:c0 + n],
                          n)
            elif known.size:
                known[r] = False
            for j in range(n):
                Q[r, j] = p[0] * Q[r, j] + p[1] * Q[r2, j]
                TH[r, j] = p[0] * TH[r, j] + p[1] * TH[r2, j]
        elif op == OP_MUL:    # ρ = ρ1 ρ2: 1 - |ρ| = t1 + t2 - t1 t2, t = 1 - |ρi|
            r2 = ops[k, 2]
            for j in range(n):
                TH[r, j] = TH[r, j] * Q[r2, j] + Q[r, j] * TH[r2, j]
                Q[r, j] = Q[r, j] * Q[r2, j]
            if known.size:
                for j in range(n):
                    t1, t2 = abs(C[r, j]), abs(C[r2, j])
                    C[r, j] = math.copysign(t1 + t2 - t1 * t2, C[r, j] * C[r2, j])
                known[r] = known[r] and known[r2]


@njit(**JIT)
def _diag_pass(lo, hi, sq, ops, params, aux, n_regs, V, S, R, K, T, F, G, P):
    """Run the program on (x, x) for the points lo .. hi-1, TILE points at a
    time and op by op, as the Gram tiles run it (entry j is point j against
    itself, versine 0: ``act_rows`` gets the row values as arrays, and its loops
    vectorise over the points; the costly kinds take act_tile per point,
    polynomials ``polynomial_points``);
    record activation inputs V, scales S and R = 1/S (a Dense layer's or a
    sum's: V = 1/√q' and the unit vector (S, R), for ``mixed_versine``), and
    the Mehler features F, G of numeric activations and the per-point
    values P of polynomial ones (``polynomial_points``)."""
    TM = np.ones((F.shape[0], 2, F.shape[2]))
    one = np.int64(1)   # n of a single point, typed as _run_ops types it
    Q = np.empty((n_regs, TILE))
    TH = np.empty((n_regs, TILE))
    W = np.empty((3, TILE))
    C = np.empty(TILE)
    for c0 in range(lo, hi, TILE):
        n = min(hi, c0 + TILE) - c0
        for j in range(n):
            Q[0, j] = sq[c0 + j]
            TH[0, j] = 0.0
        for k in range(ops.shape[0]):
            op = ops[k, 0]
            r = ops[k, 1]
            p = params[k]
            q = Q[r, :n]
            th = TH[r, :n]
            if op == OP_DENSE:
                v, a, b = V[k, c0:c0 + n], S[k, c0:c0 + n], R[k, c0:c0 + n]
                for j in range(n):
                    qn = p[0] * q[j] + p[1]
                    th[j] = dense_theta(p[0], p[2], p[3], p[4], q[j], qn, th[j])
                    v[j], a[j], b[j] = mixed_scales(math.sqrt(p[0]) * math.sqrt(q[j]),
                                                    math.sqrt(p[1]), qn)
                    q[j] = qn
            elif op == OP_ACT:
                kind = ops[k, 3]
                v, s, rs = V[k, c0:c0 + n], S[k, c0:c0 + n], R[k, c0:c0 + n]
                for j in range(n):
                    v[j] = q[j]
                    s[j] = point_scale(kind, p, q[j])
                    rs[j] = 1.0 / s[j] if s[j] > 0.0 else 0.0
                    C[j] = 0.0
                if WITH_NUMERIC and kind == K_NUMERIC:  # E[φ²], E[φ'²] (and the features)
                    slot = ops[k, 5]
                    s_cap = 2.0 * math.sqrt(aux[ops[k, 4] + HDR_QMAX])  # errors after
                    for j in range(n):
                        mehler_point(aux, ops[k, 4], min(s[j], s_cap), F, G, slot, c0 + j)
                        q[j] = G[slot, 0, c0 + j]
                        th[j] *= G[slot, 1, c0 + j]
                elif WITH_POLYNOMIAL and kind == K_POLYNOMIAL:
                    polynomial_points(p, aux, ops[k, 4], ops[k, 5], ops[k, 2], q, th, P, c0, n)
                elif kind in _COSTLY_KINDS:  # act_tile's code for Gram tiles, point by point
                    for j in range(n):
                        act_tile(kind, p, aux, ops[k, 4], ops[k, 5], v[j], s[j], rs[j],
                                 q[j:j + 1], th[j:j + 1], C[j:j + 1], v[j:j + 1], s[j:j + 1],
                                 rs[j:j + 1], c0 + j, one, c0 + j, F, G, F, G, TM, W)
                else:
                    act_rows(kind, p, aux, ops[k, 4], ops[k, 5], v, s, rs, q, th, C, v, s,
                             rs, c0, n, c0, F, G, F, G, TM, W)
            elif op == OP_SCALE or op == OP_DIAG_SCALE:
                for j in range(n):
                    q[j] *= p[0]
                    th[j] *= p[0]
            elif op == OP_COPY:
                q2 = Q[ops[k, 2], :n]
                th2 = TH[ops[k, 2], :n]
                for j in range(n):
                    q2[j] = q[j]
                    th2[j] = th[j]
            elif op == OP_AXPY:
                q2 = Q[ops[k, 2], :n]
                th2 = TH[ops[k, 2], :n]
                v, a, b = V[k, c0:c0 + n], S[k, c0:c0 + n], R[k, c0:c0 + n]
                for j in range(n):
                    qn = p[0] * q[j] + p[1] * q2[j]     # as the Gram tiles round it
                    v[j], a[j], b[j] = mixed_scales(math.sqrt(p[0]) * math.sqrt(q[j]),
                                                    math.sqrt(p[1]) * math.sqrt(q2[j]), qn)
                    q[j] = qn
                    th[j] = p[0] * th[j] + p[1] * th2[j]
            elif op == OP_MUL:
                q2 = Q[ops[k, 2], :n]
                th2 = TH[ops[k, 2], :n]
                for j in range(n):
                    th[j] = th[j] * q2[j] + q[j] * th2[j]
                    q[j] = q[j] * q2[j]
        # loops, not slice assignments: those compile numba's shape-mismatch
        # error formatting (~2.5 s of the first call)
        for j in range(n):
            K[c0 + j] = Q[0, j]
            T[c0 + j] = TH[0, j]


@njit(**INLINE)
def _store(A, values, i, j_lo, n, sym, flip):
    """A[i, j_lo + j] = values[j], j < n (``flip``: A[j_lo + j, i] instead);
    with ``sym`` also the mirror image A[j_lo + j, i], written while the tile
    is in cache.  Slices, not offset indices, keep the stores contiguous (see
    act_tile)."""
    if not flip:
        a_row = A[i, j_lo:j_lo + n]
        for j in range(n):
            a_row[j] = values[j]
    if sym or flip:
        a_col = A[j_lo:j_lo + n, i]
        for j in range(n):
            a_col[j] = values[j]


@njit(**JIT)
def _gram_tiles(task_lo, task_hi, x1, x2, sym, flip, inv_d, r_lo, r_hi, rows, ops, params,
                aux, n_regs, t0, V1, S1, R1, V2, S2, R2, K, T, want_k, want_t,
                F1, G1, F2, G2, TM, U1, U2, P1, P2, carry):
    """Tasks task_lo .. task_hi-1 of rows r_lo .. r_hi of the kernel (``sym``:
    strict upper triangle, x2 is x1; ``flip``: K, T hold the kernel of x2
    against x1, entry (i, j) is stored at (j, i)).  The row tables ``V1 ..
    G1`` start at row ``t0`` of x1.

    Each task takes a group of ``rows`` rows; per column tile it forms the
    inner products by one small single-threaded GEMM (x1[rows] x2[cols]ᵀ, kept
    in cache) and runs the whole program on each row of the tile (the input
    signed versine ±(1 - |cos∠(x1, x2)|) from the GEMM, or below VERSINE_DIRECT
    from |x̂1 ∓ x̂2|²/2, x̂ = x U with U = 1/|x| per point, which keeps the
    small angles to x2 or -x2 that the GEMM's rounding blurs).  In the
    symmetric case each entry is also written to its mirror image, and a task
    is a pair of groups (g, last - g), so that all tasks cost the same.
    """
    n2 = x2.shape[0]
    n_groups = (r_hi - r_lo + rows - 1) // rows
    Q = np.empty((n_regs, TILE))
    TH = np.empty((n_regs, TILE))
    C = np.empty((n_regs, TILE))
    known = np.empty(n_regs if carry else 0, np.bool_)
    X1 = np.empty(x1.shape[1] if carry else 0)
    W = np.empty((3, TILE))
    for first in range(task_lo, task_hi):
        for half in range(2 if sym else 1):
            g = first if half == 0 else n_groups - 1 - first
            if half == 1 and g == first:
                break
            i0 = r_lo + g * rows
            i1 = min(r_hi, i0 + rows)
            for c0 in range(i0 if sym else 0, n2, TILE):
                c1 = min(n2, c0 + TILE)
                G = np.dot(x1[i0:i1], x2[c0:c1].T)
                for i in range(i0, i1):
                    j_lo = max(c0, i + 1) if sym else c0
                    n = c1 - j_lo
                    if n <= 0:
                        continue
                    # slices, not offset indices, keep the loops' loads and
                    # stores contiguous (see act_tile)
                    g_row = G[i - i0, j_lo - c0:]
                    for j in range(n):
                        Q[0, j] = g_row[j] * inv_d
                        TH[0, j] = 0.0
                    if carry:
                        u1, u2 = U1[i - t0], U2[j_lo:j_lo + n]
                        for j in range(n):
                            rho = g_row[j] * u1 * u2[j]
                            C[0, j] = signed_versine(rho, 1.0 - abs(rho))
                        scaled = False    # x̂1 in X1, made at the row's first use
                        for j in range(n):
                            c = C[0, j]
                            if abs(c) < VERSINE_DIRECT and u1 * u2[j] > 0.0:
                                if not scaled:
                                    for m in range(x1.shape[1]):
                                        X1[m] = x1[i, m] * u1
                                    scaled = True
                                # |x̂1 ∓ x̂2|²/2, with ρ's sign
                                C[0, j] = signed_versine(
                                    c, _input_versine(X1, x2[j_lo + j], math.copysign(u2[j], c)))
                        for m in range(n_regs):
                            known[m] = m == 0
                    _run_ops(ops, params, aux, i - t0, j_lo, n, V1, S1, R1, V2, S2, R2,
                             Q, TH, C, known, F1, G1, F2, G2, TM, W, P1, P2)
                    if want_k:
                        _store(K, Q[0], i, j_lo, n, sym, flip)
                    if want_t:
                        _store(T, TH[0], i, j_lo, n, sym, flip)


#: Input versines below this come from the points themselves (``_gram_tiles``):
#: the GEMM's rounding (~d ulps) is then at most ~1e-11 of them
VERSINE_DIRECT = 1.0 / 64


@njit(**dict(JIT, fastmath={"reassoc"}))
def _input_versine(a_hat, b, ub):
    """1 - cos∠(a, b) = |â - b ub|²/2 (â = a/|a|, ub = 1/|b|; ub = -1/|b|
    gives 1 + cos∠(a, b)), at most 2.
    Not inlined: its sum is reassociated (vectorised), which matters where
    most pairs are nearly parallel (each costs O(d) here).  Not contracted:
    b ub rounded as â was, identical points give exactly 0 (an FMA would leave
    the product's rounding error, ~1e-33, which step activations such as
    Sign raise to ~1e-8 two layers on)."""
    acc = 0.0
    for k in range(b.shape[0]):
        t = a_hat[k] - b[k] * ub
        acc += t * t
    return min(0.5 * acc, 2.0)


@njit(parallel=True, **JIT)
def _mirror(A, block):
    """A[j, i] = A[i, j] for j > i (lower triangle from upper), cache-blocked."""
    n = A.shape[0]
    nb = (n + block - 1) // block
    for bi in prange(nb):
        i0 = bi * block
        i1 = min(n, i0 + block)
        for bj in range(bi + 1):
            j0 = bj * block
            for i in range(i0, i1):
                for j in range(j0, min(i, j0 + block)):
                    A[i, j] = A[j, i]


def _kernels(program):
    """(diagonal pass, tile kernel) compiled for the groups of kinds that
    ``program`` uses (first-call times: ``benchmarks/bench_cold.py``)."""
    pair = _program_kernels.get(program)
    if pair is None:
        pair = _program_kernels[program] = _variant(
            frozenset(name for name, kinds, _ in _GROUPS if program.act_kinds & kinds))
    return pair


#: program -> its (diagonal pass, tile kernel), looked up once per program
_program_kernels = weakref.WeakKeyDictionary()


def _flags(used):
    """The group flags of a copy compiled with the groups named in ``used``."""
    return {flag: name in used for name, _, flag in _GROUPS}


@functools.lru_cache(maxsize=None)
def _variant(used):
    """Copies of ``act_tile``, ``act_rows``, ``_run_ops``, ``_diag_pass`` and
    ``_gram_tiles`` compiled with the groups named in ``used`` only."""
    if len(used) == len(_GROUPS):
        return _diag_pass, _gram_tiles
    flags = _flags(used)
    suffix = "_with_" + ("_".join(name for name, _, _ in _GROUPS if name in used) or "none")
    tile = _rebound(act_tile, suffix, **flags)
    rows = _rebound(act_tile, suffix + "_rows", **_flags(used - set(_COSTLY)))
    return (_rebound(_diag_pass, suffix, act_tile=tile, act_rows=rows, **flags),
            _rebound(_gram_tiles, suffix,
                     _run_ops=_rebound(_run_ops, suffix, act_tile=tile, **flags)))


def _rebound(fn, suffix, **names):
    """A copy of the numba function ``fn`` (named with ``suffix``, compiled
    and cached on its own) in which the module-level ``names`` are bound to
    other values."""
    py = fn.py_func
    copy = types.FunctionType(py.__code__, {**py.__globals__, **names},
                              py.__name__ + suffix, py.__defaults__)
    copy.__qualname__ = py.__qualname__ + suffix
    copy.__doc__ = py.__doc__
    return njit(**JIT, parallel=fn.targetoptions.get("parallel", False))(copy)


#: act_tile for the diagonal pass, whose row values are arrays (one point per
#: entry, loops vectorised over the points): a second compiled copy, without
#: the costly groups (Mehler features, monomials, polynomials), which the
#: diagonal pass takes point by point (``_COSTLY``).
act_rows = _rebound(act_tile, "_rows",
                    **_flags({name for name, _, _ in _GROUPS} - set(_COSTLY)))


@njit(**dict(JIT, fastmath={"contract", "reassoc"}))
def _norm2(row):
    """|row|², the sum reassociated: vectorised."""
    acc = 0.0
    for j in range(row.shape[0]):
        acc += row[j] * row[j]
    return acc


@njit(**JIT)
def _row_norms(x, out):
    """out[i] = |x_i|² (row_norms)."""
    for i in range(x.shape[0]):
        out[i] = _norm2(x[i])


@njit(**JIT)
def squared_norm_sum(x):
    """Σ_i |x_i|² of a 2-D array: finite iff every entry and every squared
    row norm is (and their sum does not overflow)."""
    acc = 0.0
    for i in range(x.shape[0]):
        acc += _norm2(x[i])
    return acc


@njit(**JIT)
def _all_finite(a):
    """No NaN or ±inf in the 2-D C-contiguous array ``a``."""
    for v in a.ravel():
        if not math.isfinite(v):
            return False
    return True


@njit(**JIT)
def _point_norms(x, d_in, sq, U):
    """sq[i] = |x_i|²/d_in and U[i] = 1/|x_i| (0 for x_i = 0) (point_tables)."""
    for i in range(x.shape[0]):
        norm2 = _norm2(x[i])
        sq[i] = norm2 / d_in
        U[i] = 1.0 / math.sqrt(norm2) if norm2 > 0.0 else 0.0


def row_norms(x):
    """|x_i|² of the rows of a 2-D float64 array, vectorised (np.einsum's
    loop is ~6x slower; BLAS would wake its threads, which then spin beside
    the kernels' own).  NaN and Inf propagate; an overflow gives inf."""
    out = np.empty(x.shape[0])
    _row_norms(x, out)
    return out


def point_tables(program, x, features=True, start=0, name="x", keep=True):
    """Run the program on the diagonal of ``x``.

    Returns ``(V, S, R, F, G, U, P), k, t``: per activation op k and point i the
    input variance V[k, i], its scale S = ``_duals.point_scale`` (sqrt(V) for
    most kinds) and R = 1/S (0 where S = 0); per Dense op (q' = w2 q + b²) V =
    1/√q' and the unit vector (S, R) = (√(w2 q), b)/√q' (0 where q' = 0), per
    sum q' = a q + b q2 the same with (√(a q), √(b q2))/√q'; the
    per-point Mehler features F, G of numeric activations (``_numeric.py``;
    ``features=False``: G only, F has no terms, for the diagonal alone);
    U = 1/|x_i| (0 for x_i = 0, for the input versine of ``_gram_tiles``);
    the per-point values P of polynomial activations (``polynomial_points``);
    and the diagonals k = Σ(x_i, x_i), t = Θ(x_i, x_i) of the output (float64).
    ``start``, ``name``: the index of x's first point in the user's array
    and that array's name (for errors).

    All of it depends on the point only through |x|²/d: with numerically
    integrated activations, whose runs are costly, points of equal norm
    (inputs on a sphere, duplicates) share one run of the program, and the
    latest runs are kept (``_numeric_run``; ``keep=False``: this one is not,
    as for the row blocks of a Gram matrix, whose features are freed block
    by block).
    """
    n = x.shape[0]
    sq, U = np.empty(n), np.empty(n)
    _point_norms(x, program.d_in, sq, U)
    numeric = program.numeric_ops
    n_ops = program.n_ops
    buf, F, G = (_numeric_run(program, sq, features, keep) if numeric
                 else _diag_run(program, sq, features))
    # one buffer: V, k, t first (checked together), then S, R, P; a kept
    # numeric run is shared by later calls: its diagonals k, t go out as copies
    V, k, t = buf[:n_ops], buf[n_ops], buf[n_ops + 1]
    if numeric:
        k, t = k.copy(), t.copy()
    S, R, P = (buf[n_ops + 2:2 * n_ops + 2], buf[2 * n_ops + 2:3 * n_ops + 2],
               buf[3 * n_ops + 2:])
    if not _all_finite(buf[:n_ops + 2]):   # all of V, k, t
        check_finite_variances(program, V, k, t, start, name)
    for op in numeric:
        if n and V[op].max() > variance_limit(program, op):
            i = int(V[op].argmax())
            raise quadrature_range_error(program, op, V[op, i], f"{name} row {start + i}")
    return (V, S, R, F, G, U, P), k, t


def _diag_run(program, sq, features):
    """The diagonal pass on squared norms ``sq``: (buf, F, G) of point_tables,
    buf holding V, k, t, S, R, P."""
    m, n_ops, numeric = len(sq), program.n_ops, program.numeric_ops
    buf = np.zeros((3 * n_ops + 2 + program.polynomial_rows, m))
    F = np.zeros((len(numeric), 4, NM if numeric and features else 0, m))
    G = np.zeros((len(numeric), 2, m))
    diag_pass, _ = _kernels(program)
    in_parallel(diag_pass, m, sq, program.ops, program.params, program.aux, program.n_regs,
                buf[:n_ops], buf[n_ops + 2:2 * n_ops + 2], buf[2 * n_ops + 2:3 * n_ops + 2],
                buf[n_ops], buf[n_ops + 1], F, G, buf[3 * n_ops + 2:],
                work=math.inf if numeric else m * n_ops)
    return buf, F, G


#: program -> {(features, squared norms): (buf, F, G)}: the latest runs of
#: programs with numeric activations (~64 µs per point and layer), so that
#: repeated calls against the same points (one test point at a time against a
#: training set) run the costly pass only for the new points
_numeric_runs = weakref.WeakKeyDictionary()
_numeric_runs_lock = threading.Lock()
NUMERIC_RUNS = 4                  # runs kept per program
NUMERIC_RUNS_BYTES = 2 ** 26      # and at most 64 MiB of them (~7000 points, 3 layers)


def _numeric_run(program, sq, features, keep=True):
    """``_diag_run`` for a program with numeric activations: one run per
    distinct norm, and the latest runs kept (this one too if ``keep``); the
    arrays returned may be shared with later calls, so they are only read."""
    key = (features, sq.tobytes())
    with _numeric_runs_lock:
        runs = _numeric_runs.setdefault(program, {})
        hit = runs.pop(key, None)
        if hit is not None:
            runs[key] = hit          # the most recent last
            return hit
    uniq, where = np.unique(sq, return_inverse=True)
    if len(uniq) == len(sq):
        run = _diag_run(program, sq, features)
    else:   # points of equal norm (inputs on a sphere, duplicates) share a run
        run = tuple(np.ascontiguousarray(a[..., where])
                    for a in _diag_run(program, uniq, features))
    if not keep:
        return run
    with _numeric_runs_lock:
        runs[key] = run
        while len(runs) > NUMERIC_RUNS or sum(
                a.nbytes for r in runs.values() for a in r) > NUMERIC_RUNS_BYTES:
            del runs[next(iter(runs))]       # the oldest (the new one, if too large)
    return run


def variance_limit(program, op):
    """The largest input variance of the numeric activation ``op``: its
    table's q_max (``_numeric``: 1e20 for φ linear beyond the table, else 128)."""
    return program.aux[program.ops[op, 4] + HDR_QMAX]


def quadrature_range_error(program, op, v, where):
    """The KernelRangeError for a numeric activation (op) whose input
    variance v, at the point ``where``, leaves the quadrature's range."""
    act = (program.names or {}).get(op, "a numeric activation")
    q_max = variance_limit(program, op)
    a = program.aux[program.ops[op, 4] + HDR_SCALE]    # v, q_max: of ψ(y) = φ(y/a)
    why = ("" if q_max > Q_MAX else
           f" (the function is tabulated on [-{U / a:g}, {U / a:g}]; beyond, it was not "
           "constant or linear at the points checked, or could not be evaluated there: it "
           "raised or was not finite, so larger variances would need values that are not known)")
    return KernelRangeError(
        f"{act}: its input variance reaches {float(v / (a * a))!r} ({where}), outside the "
        f"guaranteed range [0, {q_max / (a * a):g}] of the quadrature{why}; rescale the inputs "
        "or reduce W_std / b_std of the Dense layer before it")


def check_finite_variances(program, V, k, t, start, name):
    """A KernelRangeError when a point's variance overflows (or diverges) at
    some layer: its kernel entries would be inf − inf or 0·inf, NaN or of the wrong
    sign, so none is returned.  V: activation-input variances per op and
    point; k, t: the output diagonals Σ(x, x), Θ(x, x)."""
    bad_v = ~np.isfinite(V)
    bad = bad_v.any(axis=0) | ~np.isfinite(k) | ~np.isfinite(t)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    ops = np.flatnonzero(bad_v[:, i])
    where = ("at the input of " + (program.names or {}).get(int(ops[0]), f"op {ops[0]}")
             if ops.size else "at the output")
    value = f"{V[ops[0], i]:g}" if ops.size else f"Σ = {k[i]:.3g}, Θ = {t[i]:.3g}"
    raise KernelRangeError(
        f"{name} row {start + i}: the variance overflows float64 {where} ({value}: it grows "
        "beyond 1.8e308 through the layers, or an expectation such as E[exp(b u²)] "
        "diverges), so the kernel cannot be computed; reduce W_std, b_std, Scale factors, "
        "the depth or the input scale")


#: ``check_range``'s ``other`` before the other side's diagonals are known:
#: no underflow bound yet (the overflow check needs only this side's)
OTHER_UNKNOWN = (np.zeros(0), np.zeros(0))


def check_range(dtype, k, t, name, start=0, other=None):
    """A ValueError before a Gram matrix is stored in ``dtype`` (float32) when
    its largest entry, bounded by the largest diagonal value (Cauchy–Schwarz:
    both kernels are positive semi-definite), exceeds that type's range, or
    when every entry would fall below its smallest normal (|K(x, x')| ≤
    sqrt(max k · max k'), k' the diagonal on the other side: ``other`` = (k',
    t'); None: the same points, or the diagonal itself is stored)."""
    info = np.finfo(dtype)
    other = (k, t) if other is None else other
    for what, d, d2 in (("NNGP", k, other[0]), ("NTK", t, other[1])):
        if d is None or not d.size:
            continue
        top = np.abs(d).max()
        if top > info.max:
            i = int(np.abs(d).argmax())
            raise ValueError(f"dtype={info.dtype.name}: the {what} reaches {d[i]:.4g} at "
                             f"{name} row {start + i}, beyond the largest {info.dtype.name} "
                             f"({info.max:.4g}); compute in float64")
        bound = np.sqrt(top * np.abs(d2).max(initial=0.0))
        if 0 < bound < info.tiny:
            raise ValueError(f"dtype={info.dtype.name}: every {what} entry is at most "
                             f"{bound:.3g}, below the smallest normal {info.dtype.name} "
                             f"({info.tiny:.4g}): stored, it would be zero or subnormal; "
                             "compute in float64 or rescale the inputs")


def _tail_max(F):
    """TM[slot, 0/1, n]: largest normalised Mehler tails over the points."""
    if F.shape[0] == 0 or F.shape[3] == 0:
        return np.ones((F.shape[0], 2, F.shape[2]))
    return np.ascontiguousarray(F[:, 2:4].max(axis=3))


def gram(program, x1, x2, K, T, progress=None):
    """Fill K (NNGP) and/or T (NTK), 2-D arrays or None, with the kernels of
    rows of ``x1`` against rows of ``x2`` (``x2 is None``: symmetric path).

    ``progress(done, total)`` is called after each block of rows."""
    sym = x2 is None
    K = None if K is None else np.asarray(K)  # a memmap becomes a plain view
    T = None if T is None else np.asarray(T)
    # a thin kernel (few columns) runs transposed, its few points as the rows
    # (not where the many points' Mehler features would then be held at once)
    flip = (not sym and x2.shape[0] < min(THIN, x1.shape[0])
            and (not program.numeric_ops or x1.shape[0] <= FEATURE_ROWS))
    names = ("x2", "x1") if flip else ("x1", "x2")
    if flip:
        x1, x2 = x2, x1
    dummy = np.empty((1, 1))
    # column tables for all points; row tables (cross case) block by block
    # (a numeric activation's input range is checked block by block, too)
    _, gram_tiles = _kernels(program)
    narrow = next((A.dtype for A in (K, T) if A is not None and A.dtype != np.float64), None)

    def in_range(k, t, name, start=0, other=None):
        if narrow is not None:
            check_range(narrow, None if K is None else k, None if T is None else t, name, start,
                        other)
    tables2, k2, t2 = point_tables(program, x1 if sym else x2, name=names[0 if sym else 1])
    # (underflow is known once both sides' diagonals are: with each row block)
    in_range(k2, t2, names[0 if sym else 1], other=None if sym else OTHER_UNKNOWN)
    TM = _tail_max(tables2[3])
    n1 = x1.shape[0]
    n2 = n1 if sym else x2.shape[0]
    total = n1 * (n1 - 1) // 2 if sym else n1 * n2
    # rows per call: progress granularity; the kernel itself needs no buffer
    # rows per group: up to ROWS, but at least four groups per thread
    # (below 256 rows that is 32 whatever the thread count, which takes ~1 µs to ask)
    rows = 32 if n1 < 256 else max(32, min(ROWS, n1 // (4 * numba.get_num_threads()) // 32 * 32))
    block = max(8 * rows, BLOCK_ENTRIES // max(n2, 1))
    if not sym and tables2[3].shape[2]:  # numeric activations: bounded features
        block = min(block, max(8 * rows, FEATURE_ROWS))
    block = block // rows * rows
    done = 0
    # BLAS runs single-threaded inside the parallel kernel (one small GEMM per
    # tile and thread): no oversubscription, no idle spinning BLAS threads.
    # (Small calls run on one thread and skip the switch, which costs ~30 µs.)
    with (_single_threaded_blas() if total * program.n_ops >= SERIAL_WORK
          else contextlib.nullcontext()):
        for r0 in range(0, n1, block):
            r1 = min(n1, r0 + block)
            if sym:
                tables1 = tables2
            else:
                tables1, k1, t1 = point_tables(program, x1[r0:r1], start=r0, name=names[0],
                                               keep=False)
                in_range(k1, t1, names[0], r0, (k2, t2))
            n_groups = -(-(r1 - r0) // rows)
            in_parallel(gram_tiles, (n_groups + 1) // 2 if sym else n_groups,
                        x1, x1 if sym else x2, sym, flip, 1.0 / program.d_in, r0, r1, rows,
                        program.ops, program.params, program.aux, program.n_regs,
                        0 if sym else r0, *tables1[:3], *tables2[:3],
                        dummy if K is None else K, dummy if T is None else T,
                        K is not None, T is not None,
                        tables1[3], tables1[4], tables2[3], tables2[4], TM,
                        tables1[5], tables2[5], tables1[6], tables2[6],
                        program.carries_versine,
                        work=(r1 - r0) * (n2 - (r0 + r1) / 2 if sym else n2) * program.n_ops)
            del tables1  # before the next block's features are computed
            if progress is not None:
                done += ((r1 - r0) * (2 * n1 - r0 - r1 - 1) // 2 if sym
                         else (r1 - r0) * n2)
                progress(done, total)
    if sym and n1:
        idx = np.arange(n1)
        for A, diag_values in ((K, k2), (T, t2)):
            if A is not None:
                A[idx, idx] = diag_values


def in_parallel(kernel, n_tasks, *args, work=math.inf):
    """``kernel(lo, hi, *args)`` on equal contiguous shares of the tasks
    0 .. n_tasks-1, one per thread (``numba.get_num_threads()``; the calling
    thread takes the last share), or all on the calling thread when there is
    one thread or task, when ``work`` (entries × ops) is below
    ``SERIAL_WORK``, or when the caller is itself a share (no share waits for
    the pool it runs on).  The kernels are serial and release the GIL:
    numba's ``parallel=True`` would double their compile time (the first call
    in a fresh installation) for no gain at run time."""
    n_threads = 1 if work < SERIAL_WORK else max(1, min(numba.get_num_threads(), n_tasks))
    alone = n_threads == 1 or getattr(_share, "running", False)
    first = 0
    if not alone and not getattr(kernel, "signatures", True):
        # a numba kernel's first call compiles it (or loads it from the disk
        # cache): task 0 on this thread alone, before the others start.
        # Compiled while another thread waits for it, it took 1.4x as long
        # (Tanh + Monomial(2), a fresh process: 45 s against 33 s).
        kernel(0, 1, *args)
        first = 1
        n_threads = min(n_threads, n_tasks - 1)
    if alone or n_threads <= 1:
        kernel(first, n_tasks, *args)   # alone: nested calls may still use the pool
        return
    cuts = [first + (n_tasks - first) * s // n_threads for s in range(n_threads + 1)]
    shares = [_threads(n_threads - 1, os.getpid()).submit(_run_share, kernel, lo, hi, *args)
              for lo, hi in zip(cuts[:-2], cuts[1:-1])]
    try:
        _run_share(kernel, cuts[-2], cuts[-1], *args)
    finally:
        for share in shares:
            share.result()


_share = threading.local()


def _run_share(kernel, lo, hi, *args):
    """One share of ``in_parallel``; nested calls from it run on its thread."""
    outer = getattr(_share, "running", False)
    _share.running = True
    try:
        kernel(lo, hi, *args)
    finally:
        _share.running = outer


@functools.lru_cache(maxsize=None)
def _threads(n, pid):
    """A pool of ``n`` worker threads, kept for the process ``pid`` (a forked
    child has none of its parent's threads: it makes its own pool)."""
    return concurrent.futures.ThreadPoolExecutor(max(n, 1), thread_name_prefix="infkernel")


@functools.lru_cache(maxsize=None)
def _blas_controller():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


_blas = types.SimpleNamespace(lock=threading.Lock(), users=0, limiter=None, pid=None)


@contextlib.contextmanager
def _single_threaded_blas():
    """Context in which BLAS runs on the calling thread only.  BLAS's thread
    count is a process-wide setting: overlapping calls (from several Python
    threads) share one limit, set by the first to enter and restored by the
    last to leave, so that the original count comes back."""
    with _blas.lock:
        if _blas.pid != os.getpid():    # a forked child starts afresh
            _blas.users, _blas.limiter, _blas.pid = 0, None, os.getpid()
        if _blas.users == 0:
            _blas.limiter = _blas_controller().limit(limits=1, user_api="blas")
        _blas.users += 1
    try:
        yield
    finally:
        with _blas.lock:
            _blas.users -= 1
            if _blas.users == 0:
                _blas.limiter.restore_original_limits()
                _blas.limiter = None
