"""Analytic NNGP/NTK of fully-connected networks against independent references."""
import math
import re

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import infkernel as ik
import reference
from infkernel import _cpu, _program as P
from infkernel._duals import arc_cosine_c, dual_erf, dual_gelu, point_scale
from activation_list import CLOSED_FORMS, tile_dual

RNG = np.random.default_rng(1234)
# Moderate scales keep every variance in the recursion below ~2, where the
# reference's Gauss–Hermite rule is exact to ~1e-15 for every activation.
X1 = 0.6 * RNG.standard_normal((7, 3))
X2 = 0.6 * RNG.standard_normal((5, 3))


def _net(act, par, depth=2):
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(4, 1.3, 0.2, par), act]
    return ik.serial(*layers, ik.Dense(1, 1.1, None, par))


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


# The reference quadratures are exact to ~1e-14 relative on these inputs
# (Gauss–Legendre on kink-free arcs, Gauss–Hermite of degree 160 on entire
# functions); the two-layer recursion amplifies rounding by the layers'
# Lipschitz constants and NTK entries of mixed sign cancel: errors relative to
# the largest entry stay below 5e-12 (seen: at most 1.1e-12).
@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("act", CLOSED_FORMS, ids=repr)
def test_matches_reference(act, par):
    net = _net(act, par)
    k = net.kernel(X1, X2)
    nngp, ntk = reference.kernels(net, X1, X2)
    assert _rel(k.nngp, nngp) < 5e-12
    assert _rel(k.ntk, ntk) < 5e-12


@pytest.mark.parametrize("act", [ik.Relu(), ik.LeakyRelu(0.1), ik.Abs(), ik.ABRelu(-0.4, 1.2),
                                 ik.Erf()], ids=repr)
def test_train_mode_dropout_matches_reference(act):
    """Dropout (train) scales a point's entry with itself only: the
    correlation of the other entries changes, and with it the versine the
    kinked kinds carry (it was kept, 0.28 where 0.234 is right).  Symmetric
    path: the entries off the diagonal (the reference's angle at ρ = 1 is
    the arctan of a rounded √(q11 q22 − q12²), ~1e-8)."""
    net = ik.serial(ik.Dense(4, 1.3, 0.2), act, ik.Dropout(0.5), ik.Dense(4, 1.3, 0.2), act,
                    ik.Dense(1, 1.1))
    off = ~np.eye(len(X1), dtype=bool)
    for x2, entries in ((X2, ...), (None, off)):
        k = net.kernel(X1, x2)
        nngp, ntk = reference.kernels(net, X1, x2)
        assert _rel(k.nngp[entries], nngp[entries]) < 5e-12
        assert _rel(k.ntk[entries], ntk[entries]) < 5e-12


@pytest.mark.parametrize("act", [ik.Monomial(4), ik.Monomial(5), ik.Monomial(7),
                                 ik.RectifiedMonomial(4), ik.RectifiedMonomial(6),
                                 ik.Polynomial([0.3, -1.0, 0.5, 0.2, 0.1, -0.05, 0.02]),
                                 ik.Hermite(5), ik.Hermite(8)], ids=repr)
def test_high_degrees_match_reference(act):
    """Degrees above the monomials' literal dispatch (Monomial /
    RectifiedMonomial >= 4) run loops reordered over the tile's entries, and
    polynomials of every degree sums of per-point rows: Gram and symmetric
    kernels against the reference quadrature, as above."""
    net = _net(act, "ntk")
    for x2 in (X2, None):
        k = net.kernel(X1, x2)
        nngp, ntk = reference.kernels(net, X1, x2)
        assert _rel(k.nngp, nngp) < 5e-12
        assert _rel(k.ntk, ntk) < 5e-12


def test_polynomial_layers_read_their_own_rows():
    """Each polynomial layer has its own rows of per-point values (ops[k, 2]):
    layers of degrees 5, 2 and Hermite(4) in series against the reference
    quadrature, and in two branches joined by FanInSum against the sum of the
    branches' kernels (independent read-outs: Σ and Θ add)."""
    p5, p2 = ik.Polynomial([0.3, -1.0, 0.5, 0.2, 0.1, -0.05]), ik.Polynomial([0.2, 0.5, -0.3])
    net = ik.serial(ik.Dense(4, 1.1, 0.3), p5, ik.Dense(4, 0.9, 0.2), p2, ik.Dense(4, 0.8, 0.1),
                    ik.Hermite(4), ik.Dense(1, 1.2, 0.1))
    for x2 in (X2, None):
        k = net.kernel(X1, x2)
        nngp, ntk = reference.kernels(net, X1, x2)
        assert _rel(k.nngp, nngp) < 5e-12
        assert _rel(k.ntk, ntk) < 5e-12
    first = ik.Dense(4, 1.1, 0.3)
    branches = [ik.serial(p5, ik.Dense(1, 0.9, 0.2)), ik.serial(ik.Hermite(4), ik.Dense(1, 1.3))]
    both = ik.serial(first, ik.FanOut(2), ik.parallel(*branches), ik.FanInSum())
    for x2 in (X2, None):
        k = both.kernel(X1, x2)
        parts = [ik.serial(first, b).kernel(X1, x2) for b in branches]
        np.testing.assert_allclose(k.nngp, parts[0].nngp + parts[1].nngp, rtol=1e-14)
        np.testing.assert_allclose(k.ntk, parts[0].ntk + parts[1].ntk, rtol=1e-14)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=9), st.booleans(),
       st.integers(1, 2), st.floats(0.5, 1.2), st.floats(0.0, 0.6))
def test_random_polynomials_match_reference(coef, hermite, depth, w, b):
    """Polynomial and Hermite-basis activations of random coefficients, degree
    0-8, one or two layers, against the reference quadrature (Gauss-Hermite of
    degree 160 integrates these polynomial integrands exactly)."""
    # Σ c_m x^m, or Σ c_m He_m (the Hermite-basis tables, as Hermite(n) has)
    act = (ik.activations._polynomial("HermiteSum", np.array(coef), True, str(coef))
           if hermite else ik.Polynomial(coef))
    net = ik.serial(*[l for _ in range(depth) for l in (ik.Dense(4, w, b), act)],
                    ik.Dense(1, 1.1, 0.1))
    for x2 in (X2, None):
        k = net.kernel(X1, x2)
        nngp, ntk = reference.kernels(net, X1, x2)
        assert _rel(k.nngp, nngp) < 5e-12
        assert _rel(k.ntk, ntk) < 5e-12


@pytest.mark.parametrize("act", CLOSED_FORMS, ids=repr)
def test_dual_matches_monte_carlo(act):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] against 400k samples, within 5 standard
    errors (a false alarm has probability < 1e-6 per check)."""
    q11, q12, q22 = 0.8, 0.35, 1.3
    net = ik.serial(ik.Dense(1, 1.0, None), act)
    x1 = np.array([[math.sqrt(q11), 0.0]]) * math.sqrt(2)
    c = q12 / math.sqrt(q11)
    x2 = np.array([[c, math.sqrt(q22 - c * c)]]) * math.sqrt(2)
    k = net.kernel(x1, x2)
    rng = np.random.default_rng(7)
    z = rng.standard_normal((2, 400_000))
    u = math.sqrt(q11) * z[0]
    v = c * z[0] + math.sqrt(q22 - c * c) * z[1]
    for value, samples in ((k.nngp[0, 0], act.fn(u) * act.fn(v)),
                           (k.ntk[0, 0] / q12, act.dfn(u) * act.dfn(v))):
        if act.name == "Sign" or (act.name in ("RectifiedMonomial", "Monomial")
                                  and act.params[0] == 0):
            continue  # derivative dual is 0 by convention (φ' = 0 a.e.)
        se = samples.std() / math.sqrt(samples.size)
        # + 1e-12: constant samples (Monomial(0): φ = 1) have se = 0, and the
        # mean of 4e5 equal numbers is exact only to ~1e-13
        assert abs(value - samples.mean()) < 5 * se + 1e-12


def test_polynomial_and_hermite_bad_input():
    for bad in (["1", "2"], [True, 1.0], "x", None):
        with pytest.raises(TypeError, match="Polynomial: coef must be a sequence of real"):
            ik.Polynomial(bad)
    with pytest.raises(ValueError, match="1-D sequence"):
        ik.Polynomial([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"coef\[1\] must be finite"):
        ik.Polynomial([1.0, math.inf])
    with pytest.raises(TypeError, match="Hermite: degree must be a non-negative integer"):
        ik.Hermite(2.5)
    with pytest.raises(ValueError, match="Hermite: degree must be a non-negative integer"):
        ik.Hermite(-1)
    with pytest.raises(ValueError, match="n! exceeds the largest double"):
        ik.Hermite(171)
    with pytest.raises(ValueError, match="coef must be a non-empty"):  # as numpy's
        ik.Polynomial([])


@pytest.mark.parametrize("coef", [[0.3, -1.0, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                                  [2.0], [1.0, -2.0, 0.0, 0.7, -0.1, 0.05, 0.3]])
def test_polynomial_dual_matches_isserlis(coef):
    """The Mehler tables against Isserlis' moments Σ c_a c_b E[uᵃvᵇ] (exact
    rational arithmetic in floats), at small, unit, large and zero variances:
    within 1e-13 of the sum of the terms' magnitudes (the condition of the sum)."""
    act = ik.Polynomial(coef)
    dc = [m * c for m, c in enumerate(coef)][1:]
    rng = np.random.default_rng(3)
    q11 = np.concatenate([rng.uniform(0, 40, 30), [0.0, 1.0, 1.0, 7.0]])
    q22 = np.concatenate([rng.uniform(0, 40, 30), [2.0, 1.0, 1.0, 0.0]])
    rho = np.concatenate([rng.uniform(-1, 1, 30), [0.5, 1.0, -1.0, 0.3]])
    q12 = rho * np.sqrt(q11 * q22)
    for i in range(q11.size):
        k, kd = tile_dual(act, q11[i], q12[i], q22[i])
        for value, c in ((k, coef), (kd, dc)):
            terms = [ca * cb * reference.gaussian_moment(a, b, q11[i], q12[i], q22[i])
                     for a, ca in enumerate(c) for b, cb in enumerate(c)]
            size = sum(abs(ca * cb) * reference.gaussian_moment(a, b, q11[i], abs(q12[i]),
                                                                 q22[i])
                       for a, ca in enumerate(c) for b, cb in enumerate(c))
            assert abs(value - math.fsum(terms)) <= 1e-13 * size + 1e-300


@pytest.mark.parametrize("n", [0, 1, 2, 3, 6])
def test_hermite_at_unit_variance_is_a_power(n):
    """Hermite(n) at unit variances: k = ρⁿ, k̇ = n ρⁿ⁻¹ (neural-tangents'
    formula, Mehler); within a few ulps of the coefficient sums."""
    act = ik.Hermite(n)
    for rho in (-1.0, -0.6, 0.0, 0.25, 0.9, 1.0):
        k, kd = tile_dual(act, 1.0, rho, 1.0)
        assert k == pytest.approx(rho ** n, abs=1e-14)
        assert kd == pytest.approx(n * rho ** (n - 1) if n else 0.0, abs=1e-13)


def test_known_value_relu_orthogonal():
    """One hidden ReLU layer, orthogonal inputs of unit variance, W_std = 1,
    b_std = 0: NNGP = NTK = 1/(2π) (Cho & Saul; Jacot et al.)."""
    d = 4
    x = np.sqrt(d) * np.eye(d)[:2]
    net = ik.serial(ik.Dense(10), ik.Relu(), ik.Dense(1))
    k = net.kernel(x)
    assert k.nngp[0, 1] == pytest.approx(1 / (2 * math.pi), rel=1e-15)
    assert k.ntk[0, 1] == pytest.approx(1 / (2 * math.pi), rel=1e-15)
    assert k.nngp[0, 0] == pytest.approx(0.5, rel=1e-15)
    assert k.ntk[0, 0] == pytest.approx(1.0, rel=1e-15)  # Σ² + Σ̇²Θ¹ = 1/2 + 1/2


def test_known_value_erf():
    """Williams (1997): E[erf(u) erf(v)] = 2/π asin(2q12/√((1+2q11)(1+2q22)))."""
    x = np.array([[1.0, 0.0], [0.6, 0.8]]) * math.sqrt(2)  # q11 = q22 = 1, q12 = .6
    k = ik.serial(ik.Dense(3), ik.Erf()).kernel(x)
    assert k.nngp[0, 1] == pytest.approx(2 / math.pi * math.asin(1.2 / 3), rel=1e-15)
    assert k.ntk[0, 1] == pytest.approx(0.6 * 4 / math.pi / math.sqrt(9 - 1.44), rel=1e-15)


@pytest.mark.parametrize("act", CLOSED_FORMS, ids=repr)
def test_exact_at_correlation_plus_minus_one(act):
    """Identical and antipodal inputs (ρ = ±1 exactly on the symmetric path)
    against the reference evaluated at ρ = ±1 exactly."""
    x = np.array([[0.3, -1.2, 0.5], [-0.3, 1.2, -0.5], [0.3, -1.2, 0.5]])
    net = ik.serial(ik.Dense(4, 1.0, None), act, ik.Dense(1, 1.0, None))
    k = net.kernel(x)
    q = (x[0] ** 2).sum() / 3
    for j, rho in ((1, -1.0), (2, 1.0)):
        nngp, kdot = reference.duals(act, q, rho * q, q)
        assert np.isfinite(k.nngp[0, j]) and np.isfinite(k.ntk[0, j])
        assert k.nngp[0, j] == pytest.approx(float(nngp), rel=1e-13, abs=1e-15)
        assert k.ntk[0, j] == pytest.approx(float(nngp + kdot * rho * q), rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("act", [ik.Erf(), ik.Gelu(), ik.Sin(), ik.Rbf(0.8), ik.Tanh()],
                         ids=repr)
def test_identical_points_stay_identical_in_chaotic_deep_networks(act):
    """In the chaotic phase (χ > 1) the correlation map repels ρ = 1: one ulp
    between the inner product x_i·x_j of identical rows and |x_i|² grows layer
    by layer.  Identical rows must keep K(x_i, x_j) = K(x_i, x_i) exactly, and
    the Gram matrix must stay PSD (with a q12 past √(q11 q22) it did not:
    Erf at depth 300 gave K[2, 3] = 2.26 > K[2, 2] = 1.09)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 5))
    x[3] = x[2]
    x[5] = -x[4]
    net = ik.serial(*[l for _ in range(300) for l in (ik.Dense(8, 1.5, 0.1), act)],
                    ik.Dense(1, 1.5, 0.1))
    k = net.kernel(x)
    kxx = net.kernel(x, x.copy())
    d = net.diag(x)
    off = ~np.eye(30, dtype=bool)
    off[2, 3] = off[3, 2] = False
    assert k.nngp[2, 3] == d.nngp[2] == d.nngp[3] == kxx.nngp[2, 3]
    # the NTK's first layer Θ¹ = q12 keeps the inner product's few-ulp rounding
    # (a linear recursion: it stays a few ulps)
    np.testing.assert_allclose([k.ntk[2, 3], kxx.ntk[2, 3]], d.ntk[2], rtol=1e-13)
    for f in ("nngp", "ntk"):
        A, B = getattr(k, f), getattr(kxx, f)
        assert np.linalg.eigvalsh(A).min() >= -1e-12 * np.abs(A).max()
        # distinct points: the fixed point of the correlation map, same on both paths
        np.testing.assert_allclose(A[off], B[off], rtol=1e-9)


def test_rectified_monomial_finite_at_plus_minus_one_deep():
    """neural-tangents 0.6.5 returns NaN here (ρ = ±1)."""
    x = np.array([[1.0, 2.0], [-1.0, -2.0], [1.0, 2.0]])
    for n in range(4):
        layers = [ik.Dense(1, 1.0, 0.1), ik.RectifiedMonomial(n)] * 5
        k = ik.serial(*layers, ik.Dense(1)).kernel(x)
        assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()


def test_rectified_monomial_high_degree_against_extended_precision():
    """Cho & Saul's recurrence at 60 digits (mpmath) against the float64 one at
    ρ near −1, where J_n is tiny: the error stays within 1e-14 of the
    Cauchy–Schwarz scale J_n(0)/(2π) (rounding of O(J_n(0)) terms), entries
    are never negative, and degrees whose moments overflow are refused."""
    import mpmath
    mpmath.mp.dps = 60

    def k_ref(n, rho):
        th = mpmath.acos(rho)
        j0, j1 = mpmath.pi - th, mpmath.sin(th) + (mpmath.pi - th) * rho
        for m in range(2, n + 1):
            j0, j1 = j1, (2 * m - 1) * rho * j1 + (m - 1) ** 2 * (1 - rho * rho) * j0
        return (j1 if n else j0) / (2 * mpmath.pi)
    for n in (2, 10, 15, 20, 50):
        for rho in (-0.999, -0.9, -0.5, 0.3, 0.95):
            x = np.array([[1.0, 0.0], [rho, np.sqrt(1 - rho * rho)]])
            k = ik.serial(ik.Dense(1, W_std=2 ** 0.5), ik.RectifiedMonomial(n)).kernel(
                x, None, "nngp")[0, 1]
            ref = k_ref(n, mpmath.mpf(rho))
            assert k >= 0.0 and abs(k - float(ref)) <= 1e-14 * float(k_ref(n, mpmath.mpf(1)))
    ik.RectifiedMonomial(150)
    with pytest.raises(ValueError, match="RectifiedMonomial: degree 151 is too large"):
        ik.RectifiedMonomial(151)


def test_zero_norm_inputs_with_bias():
    x = np.array([[0.0, 0.0], [1.0, -0.5], [0.0, 0.0]])
    for act in CLOSED_FORMS:
        net = ik.serial(ik.Dense(3, 1.2, 0.3), act, ik.Dense(3, 1.2, 0.3), act, ik.Dense(1))
        k = net.kernel(x, x[:2].copy())
        nngp, ntk = reference.kernels(net, x, x[:2])
        assert _rel(k.nngp, nngp) < 1e-12 and _rel(k.ntk, ntk) < 1e-12, act


def test_zero_variance_without_bias_is_finite():
    """x = 0 and no bias: zero variance; ρ is taken as 0 (the symmetric
    sub-gradient convention), results are finite."""
    x = np.array([[0.0, 0.0], [1.0, -0.5]])
    for act in CLOSED_FORMS:
        k = ik.serial(ik.Dense(3), act, ik.Dense(1)).kernel(x)
        assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all(), act


def test_depth_1000_relu_critical():
    """ReLU at W_std = √2, b = 0 keeps q fixed; the NTK grows linearly with
    depth: Θ(x,x) = L' q (Jacot et al.), here checked exactly on the diagonal
    and against the reference off the diagonal."""
    L = 1000
    x = RNG.standard_normal((4, 3))
    net = ik.serial(*([ik.Dense(1, math.sqrt(2)), ik.Relu()] * L), ik.Dense(1))
    k = net.kernel(x)
    q = (x ** 2).sum(1) / 3
    assert np.allclose(np.diag(k.nngp), q, rtol=1e-12)
    assert np.allclose(np.diag(k.ntk), (L + 1) * q, rtol=1e-12)
    # Correlations approach 1 with depth (1 - ρ ~ 1/L²), where the ReLU
    # derivative dual has a √(1-ρ) singularity: the float64 reference's
    # rounding of q12 is amplified ~1/√(1-ρ) ~ L per layer, so it is good to
    # ~1e-9 (the 40-digit check: test_depth_1000_relu_exact_off_the_diagonal).
    nngp, ntk = reference.kernels(net, x)
    off = ~np.eye(4, dtype=bool)
    assert _rel(k.nngp[off], nngp[off]) < 1e-8
    assert _rel(k.ntk[off], ntk[off]) < 1e-8


def _kinked_reference(net, x1, x2, dps=40):
    """(NNGP, NTK) of the rows of x1 against x2, at ``dps`` digits, by running
    the network's layer program (``_program``) with its only activations the
    arc-cosine closed forms at θ = acos ρ of the exact inputs (ABRelu, Sign,
    RectifiedMonomial; Cho & Saul 2009): registers of (q11, q12, q22, θ) per
    entry."""
    mp = mpmath
    prog = net.program(x1.shape[1])
    with mp.workdps(dps):
        pi = mp.pi
        out = np.empty((2, len(x1), len(x2)))
        for i, u in enumerate(x1):
            for j, v in enumerate(x2):
                u_, v_ = ([mp.mpf(float(t)) for t in z] for z in (u, v))
                d = len(u_)
                reg = {0: [sum(t * t for t in u_) / d, sum(s * t for s, t in zip(u_, v_)) / d,
                           sum(t * t for t in v_) / d, mp.mpf(0)]}
                for (op, r, r2, kind, _, _), p in zip(prog.ops, prog.params):
                    p = [mp.mpf(float(t)) for t in p]
                    q11, q12, q22, th = reg.get(r, [None] * 4)
                    if op == P.OP_DENSE:
                        w2, b2, c_old, c_new, c_one = p[:5]
                        new = [w2 * q + b2 for q in (q11, q12, q22)]
                        reg[r] = new + [c_old * q12 + c_new * new[1] + w2 * th + c_one]
                    elif op == P.OP_ACT and kind == P.K_ABRELU:
                        a, b = p[:2]
                        c2 = a * a + b * b
                        rr = mp.sqrt(q11 * q22)
                        t = mp.acos(max(min(q12 / rr, 1), -1)) if rr else pi / 2
                        f_psi = mp.sin(t) + (pi - t) * mp.cos(t)
                        f_th = mp.sin(t) - t * mp.cos(t)
                        kd = (c2 * (pi - t) + 2 * a * b * t) / (2 * pi)
                        reg[r] = [c2 * q11 / 2, rr * (c2 * f_psi - 2 * a * b * f_th) / (2 * pi),
                                  c2 * q22 / 2, th * kd]
                    elif op == P.OP_ACT and kind in (P.K_SIGN, P.K_RECTIFIED_MONOMIAL):
                        rr = mp.sqrt(q11 * q22)
                        t = mp.acos(max(min(q12 / rr, 1), -1)) if rr else pi / 2
                        if kind == P.K_SIGN:    # (2/π) asin ρ, φ' = 0
                            reg[r] = [mp.sign(q11), 1 - 2 * t / pi if rr else 0,
                                      mp.sign(q22), 0]
                            continue
                        n = int(p[0])           # Cho & Saul's J_n by recurrence

                        def j_n(m, t):
                            j0, j1 = pi - t, mp.sin(t) + (pi - t) * mp.cos(t)
                            for i in range(2, m + 1):
                                j0, j1 = j1, ((2 * i - 1) * mp.cos(t) * j1
                                              + (i - 1) ** 2 * mp.sin(t) ** 2 * j0)
                            return j1 if m else j0

                        def k(qa, qb, t):
                            if n == 0 and not qa * qb:
                                return mp.mpf(0)
                            return mp.sqrt(qa * qb) ** n * j_n(n, t) / (2 * pi)
                        kd = (n * n * rr ** (n - 1) * j_n(n - 1, t) / (2 * pi) if n else 0)
                        reg[r] = [k(q11, q11, 0), k(q11, q22, t), k(q22, q22, 0), th * kd]
                    elif op == P.OP_COPY:
                        reg[r2] = list(reg[r])
                    elif op == P.OP_AXPY:
                        reg[r] = [p[0] * s + p[1] * t for s, t in zip(reg[r], reg[r2])]
                    elif op == P.OP_MUL:
                        o = reg[r2]
                        reg[r] = [q11 * o[0], q12 * o[1], q22 * o[2], th * o[1] + q12 * o[3]]
                    else:
                        raise AssertionError(f"no reference for op {op}")
                out[:, i, j] = float(reg[0][1]), float(reg[0][3])
    return out


@pytest.mark.parametrize("act", [ik.Relu(), ik.LeakyRelu(0.1), ik.Abs(), ik.ABRelu(-0.3, 0.7)],
                         ids=repr)
@pytest.mark.parametrize("b_std", [0.2, None])
def test_kinked_kernels_keep_small_angles(act, b_std):
    """Nearly parallel inputs (x' = x + ε n, and x' = 2.5 x + ε n: parallel
    but of other norm) and nearly antipodal ones (x' = -x + ε n, -2.5 x + ε n),
    cross and symmetric paths, against 40 digits: the NTK's k̇ = (π - θ)/2π
    follows θ, which q12 alone holds only to ~1e-16/θ near ρ = 1 and ~1e-16/ψ
    near ρ = -1 (1e-9 of the kernel at ε ~ 1e-8); the carried signed versine
    keeps both (``_duals.versine``).  1e-14: a few ulps per operation over
    three layers."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 6))
    noise = rng.standard_normal((4, 6))
    x2 = np.vstack([x + eps * noise for eps in (1e-5, 1e-8, 1e-11)]
                   + [2.5 * x + 1e-9 * noise]
                   + [-x + eps * noise for eps in (1e-8, 1e-11)] + [-2.5 * x + 1e-9 * noise])
    net = ik.serial(ik.Dense(8, 1.3, b_std), act, ik.Dense(8, 0.9, b_std and 0.1), act,
                    ik.Dense(1, 1.1, b_std and 0.05))
    ref = _kinked_reference(net, x, x2)
    k = net.kernel(x, x2)
    sym = net.kernel(np.vstack([x, x2]))
    for got in ((k.nngp, k.ntk), (sym.nngp[:4, 4:], sym.ntk[:4, 4:])):
        for g, r in zip(got, ref):
            assert np.abs(g - r).max() <= 1e-14 * np.abs(r).max(), np.abs(g - r).max()


@pytest.mark.parametrize("act, b_std", [(ik.Sign(), None), (ik.Sign(), 0.1),
                                        (ik.RectifiedMonomial(0), None),
                                        (ik.RectifiedMonomial(0), 0.1),
                                        (ik.RectifiedMonomial(1), None),
                                        (ik.RectifiedMonomial(3), 0.1)], ids=repr)
def test_step_kernels_keep_small_angles(act, b_std):
    """Sign and the rectified monomials, nearly parallel, parallel of other
    norm, antipodal, nearly antipodal and zero inputs, cross and symmetric paths, against 40
    digits.  The step functions' k = 1 - 2θ/π feed the next layer an angle
    θ' ~ √θ: a relative error δ of θ becomes δ/2 of θ', so their kernels are
    ill-conditioned near ρ = 1 (the inputs' own rounding, which normalising
    them adds, moves the result by ~1e-12 at ε = 1e-11).  The tolerance is
    that: 1e-14 plus 8 times the reference's change when every input
    coordinate moves by an ulp; q12 alone (before the versine was carried)
    was 1e-8 off."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6))
    noise = rng.standard_normal((2, 6))
    x2 = np.vstack([x + eps * noise for eps in (1e-5, 1e-8, 1e-11)]
                   + [2.5 * x + 1e-9 * noise, -x, -x + 1e-11 * noise, np.zeros((1, 6))])
    net = ik.serial(ik.Dense(8, 1.3, b_std), act, ik.Dense(8, 0.9, b_std and 0.1), act,
                    ik.Dense(1, 1.1, b_std and 0.05))
    ref = _kinked_reference(net, x, x2)
    def ulp(z):
        return z * (1 + 2.0 ** -52 * rng.choice([-1.0, 1.0], size=z.shape))
    moved = _kinked_reference(net, ulp(x), ulp(x2))
    k = net.kernel(x, x2)
    sym = net.kernel(np.vstack([x, x2]))
    for got in ((k.nngp, k.ntk), (sym.nngp[:2, 2:], sym.ntk[:2, 2:])):
        for g, r, m in zip(got, ref, moved):
            tol = 1e-14 * np.abs(r).max() + 8 * np.abs(m - r)
            assert (np.abs(g - r) <= tol).all(), np.abs(g - r).max()


@pytest.mark.parametrize("act", [ik.Sign(), ik.RectifiedMonomial(0), ik.Relu()], ids=repr)
def test_identical_points_through_step_activations(act):
    """Identical points have versine exactly 0 (``_cpu._input_versine``):
    each step activation takes a square root of the angle (θ' ~ √θ), so an
    FMA's leftover rounding error (1e-33) became 1e-8 after two Sign layers
    and 1e-4 after three.  K(X, X.copy()) has K(X)'s diagonal."""
    x = np.random.default_rng(9).standard_normal((8, 5))
    net = ik.serial(*[ik.Dense(8, 1.2, 0.1), act] * 3, ik.Dense(1))
    cross, sym = net.kernel(x, x.copy()), net.kernel(x)
    for c, s in zip(cross, sym):
        np.testing.assert_allclose(np.diag(c), np.diag(s), rtol=1e-14, atol=0)


def test_cross_and_symmetric_paths_round_alike():
    """K(X) computes one triangle, K(X, X.copy()) both: each entry must round
    the same either way (``_duals.correlation`` takes r1, r2 in a symmetric
    order).  Tiny inputs behind biases make every pair nearly parallel, where
    kinked and step activations raise an ulp of ρ to ~1e-10 (measured before
    the fix: 2.5e-10)."""
    rng = np.random.default_rng(56)
    x = 1e-4 * rng.standard_normal((5, 5))
    x[3] = 0.0
    net = ik.serial(ik.Dense(8, 1.2, 0.6), ik.Monomial(1), ik.Dense(8, 2.0, 0.2),
                    ik.LeakyRelu(-0.17), ik.Dense(8, 1.5, 0.76), ik.Gelu(),
                    *[ik.Dense(8, 1.8, 0.54), ik.RectifiedMonomial(0)] * 3, ik.Dense(1))
    for s, c in zip(net.kernel(x), net.kernel(x, x.copy())):
        assert np.abs(s - c).max() <= 1e-15 * np.abs(s).max(), np.abs(s - c).max()


def test_kinked_branches_keep_small_angles():
    """The versine through fan-outs, sums (residual blocks, concatenations)
    and products, both parameterizations: nearly parallel inputs against 40
    digits, as above."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5))
    x2 = np.vstack([x + 1e-9 * rng.standard_normal((3, 5)), 2.5 * x])
    for par in ("ntk", "standard"):
        block = ik.serial(ik.Dense(8, 1.2, 0.1, parameterization=par), ik.Relu(),
                          ik.Dense(8, 0.8, 0.05, parameterization=par))
        net = ik.serial(ik.Dense(8, 1.1, 0.2, parameterization=par), ik.Relu(),
                        ik.FanOut(2),
                        ik.parallel(block, ik.Dense(8, 1.0, None, parameterization=par)),
                        ik.FanInSum(), ik.Abs(), ik.Dense(8, 1.2, 0.1, parameterization=par),
                        ik.FanOut(2), ik.parallel(ik.Relu(), ik.LeakyRelu(0.2)),
                        ik.FanInConcat(), ik.Dense(8, 1.3, 0.1, parameterization=par),
                        ik.Relu(), ik.FanOut(2),
                        ik.parallel(ik.Dense(8, 1.1, 0.1, parameterization=par), ik.Identity()),
                        ik.FanInProd(),
                        ik.Dense(1, 0.9, 0.1, parameterization=par))
        ref = _kinked_reference(net, x, x2)
        k = net.kernel(x, x2)
        for g, r in zip((k.nngp, k.ntk), ref):
            assert np.abs(g - r).max() <= 1e-14 * np.abs(r).max(), (par, np.abs(g - r).max())


def test_antipodal_branches_keep_small_angles():
    """Nearly antipodal inputs (ρ near -1, where the kernels carry 1 + ρ) into
    bias-free sums and products of branches: a sum keeps ρ near -1, a product
    of two such branches brings it near +1 (the signs multiply); ReLU's k̇
    reads the angle, LeakyRelu(0.9) keeps ρ near -1, Abs folds it to +1.
    Against 40 digits, 1e-14 as above (from q12 alone: ~1e-9)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 5))
    x2 = np.vstack([-x + 1e-9 * rng.standard_normal((3, 5)), -2.5 * x])
    two = ik.parallel(ik.Dense(8, 1.2), ik.Dense(8, 0.7))
    for tail in (ik.FanInSum(), ik.FanInProd(), ik.FanInConcat()):
        net = ik.serial(ik.Dense(8, 1.1), ik.FanOut(2), two, tail, ik.Dense(8), ik.Relu(),
                        ik.Dense(8, 1.3),
                        ik.LeakyRelu(0.9), ik.Dense(8, 0.9), ik.Abs(), ik.Dense(1, 0.8))
        ref = _kinked_reference(net, x, x2)
        k = net.kernel(x, x2)
        for g, r in zip((k.nngp, k.ntk), ref):
            assert np.abs(g - r).max() <= 1e-14 * np.abs(r).max(), (tail, np.abs(g - r).max())


@pytest.mark.parametrize("act", [ik.Relu(), ik.Abs(), ik.LeakyRelu(-0.3), ik.ABRelu(0.2, 1.0),
                                 ik.RectifiedMonomial(1), ik.Sign()], ids=repr)
def test_zero_variance_takes_the_finite_networks_derivative(act):
    """A pre-activation of variance 0 (a zero input, a zero bias: its NTK is
    the bias's 1) has E[φ'(u)φ'(v)] = φ'(0) E[φ'(v)], and φ'(0)² against
    itself, with φ'(0) the finite networks' (``act.dfn(0)``: (a + b)/2 for
    ABRelu, 0 for the step that is RectifiedMonomial(1)'s φ'); K(X), K(X, X')
    and ``diag`` agree on it (the diagonal took the ρ -> 1 limit (a² + b²)/2
    before, 1e12 behind a LayerNorm)."""
    x = np.array([[0.0, 0.0], [1.0, 0.5], [0.0, 0.0], [-0.3, 2.0]])
    net = ik.serial(ik.Dense(8, 1.3, 0.0, parameterization="standard"), act)
    d0 = float(act.dfn(np.zeros(1))[0])
    mean = 0.5 * float(act.dfn(np.ones(1))[0] + act.dfn(-np.ones(1))[0])  # E[φ'(v)], v ≠ 0
    zero = np.array([True, False, True, False])
    want = np.where(zero, d0 * d0, d0 * mean)   # a zero row's entries
    for got in (net.kernel(x, None, "ntk"), net.kernel(x, x.copy(), "ntk")):
        for entries in (got[zero], got[:, zero].T):
            np.testing.assert_allclose(entries, np.broadcast_to(want, entries.shape),
                                       rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(net.diag(x, "ntk")[zero], d0 * d0, rtol=1e-15, atol=1e-300)


def test_depth_1000_relu_exact_off_the_diagonal():
    """ReLU at depth 1000 with and without bias, against 40 digits: 1 - ρ ~
    1/L² there, where each layer's rounding of q12 used to be amplified ~1/θ
    (4.6e-10 of the NTK); with the versine carried, what remains is the
    rounding of 1000 layers (measured 1.4e-13)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 5))
    for b in (0.0, 0.05):
        net = ik.serial(*([ik.Dense(1, math.sqrt(2), b), ik.Relu()] * 1000),
                        ik.Dense(1, math.sqrt(2), b))
        ref = _kinked_reference(net, x, x)
        k = net.kernel(x)
        for g, r in zip((k.nngp, k.ntk), ref):
            assert np.abs(g - r).max() <= 1e-12 * np.abs(r).max(), (b, np.abs(g - r).max())


def test_depth_1000_no_overflow_where_representable():
    """W_std = 1.9: q grows like 1.805^L ≈ 1e256 at L = 1000, representable;
    products of variances (1e512) are never formed."""
    x = RNG.standard_normal((3, 2))
    net = ik.serial(*([ik.Dense(1, 1.9), ik.Relu()] * 1000), ik.Dense(1))
    k = net.kernel(x)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    assert k.nngp.max() > 1e250
    # Gelu ≈ ReLU for large inputs: the same growth (products of two variances
    # would overflow where the kernel does not)
    k = ik.serial(*([ik.Dense(1, 1.9), ik.Gelu()] * 1000), ik.Dense(1)).kernel(x)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    assert k.nngp.max() > 1e250
    # past the largest double: an error naming the point and the layer, not
    # entries of inf − inf or 0·inf (NaN, or the wrong sign)
    for par in ("ntk", "standard"):
        with pytest.raises(ValueError, match="x1 row 0: the variance overflows float64 at the "
                                             "output"):
            ik.serial(*([ik.Dense(1, 2.0, 0.1, par), ik.Identity()] * 1100)).kernel(x)
    # growth per layer at most 1.5² (1 + 0.1²)/2: q stays below 1e60
    for act in (ik.Erf(), ik.Gelu(), ik.Sin(), ik.LeakyRelu(0.1), ik.Sign()):
        k = ik.serial(*([ik.Dense(1, 1.5, 0.1), act] * 1000), ik.Dense(1)).kernel(x)
        assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all(), act


def test_overflow_midway_is_an_error_before_any_output():
    """1000 ReLU layers at W_std = 3 overflow (q ~ 4.5^L); a Sign or Erf layer
    after them would normalise the kernel again, but the recursion cannot
    carry inf: an error names the point and the first layer whose input
    variance overflowed, for the kernel, its diagonal and the cross kernel,
    and the output is left untouched."""
    x = RNG.standard_normal((3, 2))
    deep = [ik.Dense(4, 3.0), ik.Relu()] * 1000
    for tail in (ik.Sign(), ik.Erf(), ik.LayerNorm(eps=0.0)):
        net = ik.serial(*deep, ik.Dense(4), tail, ik.Dense(1))
        out = np.full((3, 3), 7.0)
        with pytest.raises(ValueError, match=r"x1 row 0: .* at the input of Relu\(\)"):
            net.kernel(x, None, "nngp", out=out)
        assert (out == 7.0).all()
        with pytest.raises(ValueError, match="x row 0: the variance overflows"):
            net.diag(x)
        with pytest.raises(ValueError, match="x2 row 0: the variance overflows"):
            net.kernel(x[:1] * 0.0, x)
    # Dense layers alone carry inf (q ~ 9^L): the first layer told is the
    # normalising one after them, by name
    for tail in (ik.ExpNormalized(), ik.LayerNorm(eps=0.0), ik.Erf(), ik.Tanh()):
        net = ik.serial(*[ik.Dense(4, 3.0)] * 400, tail, ik.Dense(1))
        with pytest.raises(ValueError, match=re.escape(f"at the input of {tail!r} (inf")):
            net.kernel(x)
    # a divergent expectation: E[exp(b u²)] is infinite once 2 b q ≥ 1
    net = ik.serial(ik.Dense(4, 2.0), ik.Gaussian(1.0, 0.4), ik.Dense(1))
    with pytest.raises(ValueError, match="overflows float64 at the output"):
        net.kernel(np.ones((2, 2)))


def test_large_finite_values_are_not_taken_for_overflow():
    """Finite inputs whose squares sum past the largest double (any check by
    a sum over all rows would overflow) are neither an error nor a warning:
    the inputs are checked by their per-row squared norms.  Nine points of
    squared norm up to 3e307 (their sum 2.1e308) through three Identity
    layers: variances up to 3e307 at each, NTK diagonals up to 4 × 3e307,
    all finite; NNGP = x xᵀ and NTK = 4 x xᵀ to one rounding per product."""
    x = np.sqrt(3e307) * np.array([[1.0], [-1.0], [0.5], [1.0], [-0.25], [1.0], [0.75],
                                   [1.0], [-1.0]])
    assert np.isinf(np.einsum("ij,ij", x, x))
    net = ik.serial(*([ik.Dense(1, 1.0, 0.0), ik.Identity()] * 3), ik.Dense(1, 1.0, 0.0))
    k = net.kernel(x)
    np.testing.assert_allclose(k.nngp, x @ x.T, rtol=4e-16)
    np.testing.assert_allclose(k.ntk, 4 * (x @ x.T), rtol=4e-16)
    np.testing.assert_allclose(net.diag(x, "ntk"), 4 * x[:, 0] ** 2, rtol=4e-16)


def test_float32_results_beyond_range_are_an_error():
    """Entries are bounded by the largest diagonal value (Cauchy–Schwarz), so
    a float32 result that would overflow is refused before it is computed."""
    net = ik.serial(ik.Dense(4, 1e10, 0.1), ik.Relu(), ik.Dense(4, 1e10), ik.Relu(),
                    ik.Dense(1))
    x = RNG.standard_normal((3, 2))
    assert np.isfinite(net.kernel(x).ntk).all() and net.kernel(x).ntk.max() > 1e39
    with pytest.raises(ValueError, match="dtype=float32: the NNGP reaches .* at x1 row"):
        net.kernel(x, dtype=np.float32)
    with pytest.raises(ValueError, match="dtype=float32: the NTK reaches .* at x2 row"):
        net.kernel(x[:1] * 0.0, x, "ntk", dtype=np.float32)
    with pytest.raises(ValueError, match="dtype=float32: the NNGP reaches .* at x row"):
        net.diag(x, dtype=np.float32)


@pytest.mark.parametrize("scale", [1.0, 1e52, 1e78, 1e100])
def test_gaussian_and_gabor_where_products_of_variances_overflow(scale):
    """Gaussian(b < 0) and Gabor at variances q ~ 1e104 … 1e200: q11 q22, D² or
    q12 D overflow float64 where the kernels do not (they were wrong by 100 %,
    or NaN); against the closed forms at 40 digits.  One layer after
    Dense(1, 1), so Σ' = k(q11, q12, q22) and Θ' = k̇ q12 (ρ = 0.6, 1);
    entries whose k or k̇ is below 1e-290 are left out (subnormal or zero: a
    product k̇ Θ whose first factor underflows loses its digits).  450 digits: the closed
    forms subtract products of q ~ 1e200 that agree to 400 digits."""

    def gaussian(a, b):
        def k(q11, q12, q22):
            d = (1 - 2 * b * q11) * (1 - 2 * b * q22) - 4 * b * b * q12 * q12
            return a * a / mpmath.sqrt(d), 4 * a * a * b * b * q12 / d ** 1.5
        return k

    def gabor(q11, q12, q22):
        s, delta = q11 + q22, 4 * (q11 * q22 - q12 * q12)
        d = 1 + 2 * s + delta
        e, b = mpmath.exp(-(s + delta) / (2 * d)), q12 / d
        return (e * mpmath.sinh(b) / mpmath.sqrt(d),
                e * d ** -2.5 * (4 * q12 * (d + 1 + s) * mpmath.sinh(b)
                                 + (d + 8 * q12 * q12) * mpmath.cosh(b)))
    x = scale * np.array([[1.0, 0.0], [0.6, 0.8]])
    with mpmath.workdps(450):
        q = [[mpmath.mpf(float(v)) for v in row] for row in x @ x.T / 2]
        for act, closed in ((ik.Gaussian(1.0, -1.0), gaussian(1, -1)),
                            (ik.Gaussian(0.8, -1e4), gaussian(mpmath.mpf("0.8"), -10 ** 4)),
                            (ik.Gabor(), gabor)):
            got = ik.serial(ik.Dense(1, 1.0), act).kernel(x)
            for i, j in ((0, 0), (0, 1)):
                k, kd = closed(q[i][i], q[i][j], q[j][j])
                for value, want, factor in ((got.nngp[i, j], k, k),
                                            (got.ntk[i, j], kd * q[i][j], kd)):
                    if abs(factor) > 1e-290:
                        # a few roundings of exp, sinh, sqrt: measured ≤ 7.6e-16
                        assert abs(value - want) <= 2e-15 * abs(want), (act, i, j, value, want)


@pytest.mark.parametrize("scale", [1.0, 1e150, 1e152])
@pytest.mark.parametrize("second", ["same", "unit"])
@pytest.mark.parametrize("cross", [False, True])
def test_erf_where_2b2q_overflows(scale, second, cross):
    """Erf(a, b, c) with b = 1e4 at q ~ 1e300 … 1e304: 2b²q overflows float64
    (the NTK was 0, or a range error), the kernels do not; against Williams'
    closed form at 700 digits (s_i² = 1 + 2b²q_ii ~ 1e312 and det subtracts
    products of them).  One layer after Dense(1, 1): Θ' = k̇ q12.  The second
    point at the same scale or at scale 1 (a tile that mixes both forms), on
    the symmetric and the cross path."""
    x = np.array([[scale], [scale if second == "same" else 1.0]]) * [[1.0, 0.0], [0.6, 0.8]]
    with mpmath.workdps(700):
        q = [[mpmath.mpf(float(v)) for v in row] for row in x @ x.T / 2]
        for a, b, c in ((1.0, 1e4, 0.0), (2.0, 1e4, 0.5)):
            net = ik.serial(ik.Dense(1, 1.0), ik.Erf(a, b, c))
            got = net.kernel(x, x.copy()) if cross else net.kernel(x)
            for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
                s1, s2 = (mpmath.sqrt(1 + 2 * b * b * q[n][n]) for n in (i, j))
                k = a * a * 2 / mpmath.pi * mpmath.asin(2 * b * b * q[i][j] / (s1 * s2)) + c * c
                kd = a * a * 4 / mpmath.pi * b * b / mpmath.sqrt(
                    (s1 * s2) ** 2 - 4 * b ** 4 * q[i][j] ** 2)
                # asin (or the square root) and a few products: ≤ 2 ulps (measured 1)
                assert abs(got.nngp[i, j] - k) <= 4e-16 * abs(k), (a, b, c, i, j)
                assert abs(got.ntk[i, j] - kd * q[i][j]) <= 4e-16 * abs(kd * q[i][j])


def test_float32_results_that_would_underflow_are_an_error():
    """|K(x, x')| ≤ sqrt(max k · max k'): when that bound is below float32's
    smallest normal every stored entry would be zero or subnormal (refused);
    one side tiny against a normal one, or an exactly zero kernel, is fine."""
    net = ik.serial(ik.Dense(8, 1.5, None), ik.Relu(), ik.Dense(1, 1.5, None))
    x, y = RNG.standard_normal((4, 3)), RNG.standard_normal((3, 3))
    tiny = np.finfo(np.float32).tiny
    for call in (lambda: net.kernel(x * 1e-25, y * 1e-25, "ntk", dtype=np.float32),
                 lambda: net.kernel(x * 1e-25, None, dtype=np.float32),
                 lambda: net.diag(x * 1e-25, "nngp", dtype=np.float32)):
        with pytest.raises(ValueError, match="dtype=float32: every N.* entry is at most .* "
                                             "below the smallest normal"):
            call()
    for a, b in ((x * 1e-25, y), (x, y * 1e-25), (x * 1e-17, y * 1e-17)):
        k = net.kernel(a, b, dtype=np.float32)
        exact = net.kernel(a, b)
        for got, want in zip(k, exact):
            assert np.abs(want).max() > tiny
            np.testing.assert_allclose(got, want, rtol=2 ** -24, atol=0)   # one rounding
    assert not net.kernel(x * 0, y * 0, "ntk", dtype=np.float32).any()


def test_lone_dense_is_linear_kernel():
    x = RNG.standard_normal((4, 3))
    k = ik.serial(ik.Dense(2, 2.0, 0.5)).kernel(x, x[:2])
    expected = 4.0 * x @ x[:2].T / 3 + 0.25
    assert np.allclose(k.nngp, expected, rtol=1e-15) and np.allclose(k.ntk, expected, rtol=1e-15)
    k = ik.serial(ik.Dense(2, 2.0, 0.5, "standard")).kernel(x, x[:2])
    assert np.allclose(k.ntk, x @ x[:2].T + 1, rtol=1e-15)


def test_identity_is_a_no_op():
    a = ik.serial(ik.Dense(3, 1.1, 0.1), ik.Identity(), ik.Erf(), ik.Identity(), ik.Dense(1))
    b = ik.serial(ik.Dense(3, 1.1, 0.1), ik.Erf(), ik.Dense(1))
    ka, kb = a.kernel(X1, X2), b.kernel(X1, X2)
    assert np.array_equal(ka.nngp, kb.nngp) and np.array_equal(ka.ntk, kb.ntk)


@pytest.mark.parametrize("act", CLOSED_FORMS + [ik.ExpNormalized(0.8, 0.1), ik.Tanh()],
                         ids=repr)
def test_kernel_variants_agree_with_the_full_kernels(act, monkeypatch):
    """A program runs on kernels compiled with only the groups of kinds it
    uses (``_cpu._kernels``); forcing the kernels of all kinds gives the same
    Gram matrices (a kind routed to a variant without its code would give
    NaN).  rtol 1e-14: the same code in separately compiled units, which may
    contract multiply-adds differently."""
    first = ik.LayerNorm() if act.name == "ExpNormalized" else ik.Relu()
    net = ik.serial(ik.Dense(4, 1.3, 0.2), first, ik.Dense(4, 1.3, 0.2), act, ik.Dense(1))
    group = {"ABRelu": "arc", "Sign": "arc", "Monomial": "polynomial",
             "RectifiedMonomial": "polynomial", "Polynomial": "polynomial",
             "Hermite": "polynomial", "Tanh": "numeric"}.get(act.name, "smooth")
    used = frozenset({group, "smooth" if act.name == "ExpNormalized" else "arc"})
    assert _cpu._kernels(net.program(X1.shape[1])) == _cpu._variant(used)
    routed = net.kernel(X1, X2), net.kernel(X1), net.diag(X1)
    monkeypatch.setattr(_cpu, "_kernels", lambda program: (_cpu._diag_pass, _cpu._gram_tiles))
    full = net.kernel(X1, X2), net.kernel(X1), net.diag(X1)
    for a, b in zip(routed, full):
        assert np.all(np.isfinite(a.ntk))
        np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-14, atol=1e-300)
        np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-14, atol=1e-300)


def test_in_parallel_runs_every_task_once():
    """``in_parallel`` runs a numba kernel's first call (its compilation) as
    task 0 alone, then shares out the rest: every task runs exactly once, for
    fresh and compiled kernels, any task count, on 1 and 2 threads."""
    import numba

    def count(lo, hi, out):
        for t in range(lo, hi):
            out[t] += 1
    threads = numba.get_num_threads()
    try:
        for n_threads in {1, 2, threads}:
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            for n_tasks in (0, 1, 2, 3, 8):
                kernel = numba.njit(count)            # fresh: no signatures yet
                for _ in range(2):                    # then compiled
                    out = np.zeros(n_tasks, dtype=np.int64)
                    _cpu.in_parallel(kernel, n_tasks, out)
                    assert (out == 1).all(), (n_threads, n_tasks, out)
                out = np.zeros(n_tasks, dtype=np.int64)
                _cpu.in_parallel(count, n_tasks, out)  # a Python callable
                assert (out == 1).all()
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("act", [ik.Relu(), ik.Tanh()], ids=repr)
def test_results_do_not_depend_on_threads(act):
    """The shares of ``in_parallel`` (row groups, the diagonal pass) give the
    same Gram matrices on 1 thread as on several, up to the rounding of the
    inner-product GEMM, whose blocks follow the row groups' size (1e-14 of the
    largest entry; seen ≤ 4e-16); and bitwise the same when several Python
    threads call the kernel at once, after which BLAS has its own thread
    count back (the calls share one single-thread limit while they run).
    The sizes are above ``SERIAL_WORK``."""
    import numba
    from concurrent.futures import ThreadPoolExecutor
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    before = blas_threads()
    net = _net(act, "ntk", depth=3)
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((300, 4)), rng.standard_normal((250, 4))
    assert 250 * 300 * net.program(4).n_ops > ik._config.SERIAL_WORK

    def both():
        return net.kernel(x1, x2), net.kernel(x1)
    alone = both()
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(both) for _ in range(3)]
        for c in calls:
            for a, b in zip(c.result(), alone):
                assert np.array_equal(a.nngp, b.nngp) and np.array_equal(a.ntk, b.ntk)
    assert blas_threads() == before
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = both()
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(alone, one_thread):
        for u, v in ((a.nngp, b.nngp), (a.ntk, b.ntk)):
            assert np.abs(u - v).max() <= 1e-14 * np.abs(v).max()


def _kernel_in_child(net, x, q):
    q.put(net.kernel(x).ntk)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_children_compute_kernels():
    """A child forked after the parent used the thread pool has none of its
    threads: it must make its own (a shared pool would wait forever)."""
    import multiprocessing as mp
    import queue
    net = _net(ik.Relu(), "ntk", depth=2)
    x = np.random.default_rng(8).standard_normal((400, 4))
    assert 400 * 400 * net.program(4).n_ops / 2 > ik._config.SERIAL_WORK
    parent = net.kernel(x).ntk
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_kernel_in_child, args=(net, x, q))
    child.start()
    try:
        assert np.array_equal(q.get(timeout=120), parent)
    except queue.Empty:
        pytest.fail("the forked child did not finish its kernel within 120 s")
    finally:
        child.kill()
        child.join()


def test_every_kind_is_in_one_group():
    """Each activation kind is compiled in with exactly one group (a kind in
    none would give NaN in every routed kernel)."""
    kinds = sorted(v for name, v in vars(P).items() if name.startswith("K_"))
    assert sorted(k for _, group, _ in _cpu._GROUPS for k in group) == kinds


def test_programs_with_every_group_use_the_full_kernels():
    net = ik.serial(ik.Dense(4), ik.Tanh(), ik.Dense(4), ik.Monomial(2), ik.Dense(4), ik.Relu(),
                    ik.Dense(4), ik.Gelu(), ik.Dense(1))
    assert _cpu._kernels(net.program(3)) == (_cpu._diag_pass, _cpu._gram_tiles)
    fewer = ik.serial(ik.Dense(4), ik.Tanh(), ik.Dense(4), ik.Monomial(2), ik.Dense(1))
    assert _cpu._kernels(fewer.program(3)) != (_cpu._diag_pass, _cpu._gram_tiles)


def _ulps(got, exact):
    return abs(float(mpmath.mpf(float(got)) - exact)) / np.spacing(abs(float(exact)))


def test_arc_cosine_within_a_few_ulps():
    """_duals.arc_cosine_c (one square root, shared polynomials) against mpmath:
    θ = acos ρ, ψ = π - θ, F(t) = sin t - t cos t at both, over random ρ, ρ
    within 1e-16 .. 1 of ±1, at and next to the branch points ±1/2, and ±1, 0.
    F is where the t³/3 cancellation lives; 8 ulps (measured: 4.5)."""
    rng = np.random.default_rng(3)
    near = np.logspace(-16, 0, 200)
    rhos = np.concatenate([rng.uniform(-1, 1, 400), 1 - near, near - 1,
                           [0.5, -0.5, np.nextafter(0.5, 1), np.nextafter(-0.5, -1),
                            np.nextafter(0.5, 0), 1.0, -1.0, 0.0, 1e-300]])
    worst = 0.0
    with mpmath.workdps(50):
        for rho in np.clip(rhos, -1, 1):
            theta = mpmath.acos(mpmath.mpf(float(rho)))
            psi = mpmath.pi - theta
            exact = (psi, theta, mpmath.sin(psi) - psi * mpmath.cos(psi),
                     mpmath.sin(theta) - theta * mpmath.cos(theta))
            for got, ex in zip(arc_cosine_c(rho, 1.0 - abs(rho)), exact):
                if ex == 0:
                    assert got == 0.0
                else:
                    worst = max(worst, _ulps(got, ex))
    assert worst <= 8, worst


def _gelu_kdot_exact(q1, q12, q2):
    """neural-tangents' Gelu derivative dual, evaluated in mpmath as written."""
    p1, p2 = 1 + q1, 1 + q2
    z = q12 / mpmath.sqrt(p1 * p2)
    delta = mpmath.sqrt(p1 * p2 - q12 ** 2)
    h = (q1 / p1) * (q2 / p2)
    return (mpmath.mpf(1) / 4 + mpmath.asin(z) / (2 * mpmath.pi)
            + q12 / (2 * mpmath.pi * delta) * (1 / delta ** 2 + 1 / (p1 * p2) - h + 1))


def test_erf_gelu_duals_at_large_variance():
    """Erf and Gelu with per-point scales, at variances up to 1e12 (deep
    networks reach them): the derivative duals against their closed forms in
    60-digit arithmetic, to 1e-12 relative.  At ρ = 1 with q = 1e12 the closed
    form needs 1 - z ≈ 5e-13 from z rounded to ~1e-16, so 1 - z² is known to
    ~4e-4 and kd = c / sqrt(det) to ~2e-4 (the same holds for the input q12
    itself: the dual is that ill-conditioned there); bound 1e-3."""
    params = np.array([1.0, 1.0, 0.0])  # Erf(a=1, b=1, c=0); ignored by Gelu
    with mpmath.workdps(60):
        for q1, q2, rho in ((1e6, 3e6, 0.3), (1e12, 1e12, 1.0), (1e12, 4e11, -0.7),
                            (2.0, 1e10, 0.999)):
            q12 = rho * math.sqrt(q1) * math.sqrt(q2)
            Q1, Q2, Q12 = (mpmath.mpf(v) for v in (q1, q2, q12))
            erf_kd = 4 / mpmath.pi / mpmath.sqrt((1 + 2 * Q1) * (1 + 2 * Q2) - 4 * Q12 ** 2)
            for kind, dual, exact in (
                    (P.K_ERF, lambda *a: dual_erf(1.0, 1.0, 0.0, *a), erf_kd),
                    (P.K_GELU, dual_gelu, _gelu_kdot_exact(Q1, Q12, Q2))):
                s1, s2 = point_scale(kind, params, q1), point_scale(kind, params, q2)
                kd = dual(q1, q12, q2, s1, s2, 1 / s1, 1 / s2)[1]
                tol = 1e-3 if rho == 1.0 else 1e-12
                assert abs(kd - exact) <= tol * abs(exact), (kind, q1, q2, rho)


@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("eps", [0.0, 1e-12, 0.3])
def test_layernorm_divides_by_the_variances(eps, par):
    """LayerNorm after a Dense layer: Σ' = Σ / √((Σ11 + eps)(Σ22 + eps)), Θ
    likewise (neural-tangents' formula), against the kernels and diagonals of
    the network before it; the diagonal is Σ/(Σ + eps)."""
    body = ik.serial(ik.Dense(32, 1.3, 0.2, par), ik.Relu(), ik.Dense(16, 0.9, 0.1, par))
    net = ik.serial(body, ik.LayerNorm(eps=eps))
    for x2 in (X2, None):
        kb, k = body.kernel(X1, x2), net.kernel(X1, x2)
        d1 = body.diag(X1)
        d2 = d1 if x2 is None else body.diag(x2)
        s = np.outer(np.sqrt(d1.nngp + eps), np.sqrt(d2.nngp + eps))
        assert _rel(k.nngp, kb.nngp / s) < 1e-15
        assert _rel(k.ntk, kb.ntk / s) < 1e-15
    d = net.diag(X1)
    assert _rel(d.nngp, d1.nngp / (d1.nngp + eps)) < 1e-15
    assert _rel(d.ntk, d1.ntk / (d1.nngp + eps)) < 1e-15


def test_layernorm_then_hermite_is_a_power_of_the_correlation():
    """With eps = 0 the normalised variances are 1, where Hermite(n) maps the
    correlation ρ to ρⁿ (and the NTK factor to n ρⁿ⁻¹)."""
    body = ik.serial(ik.Dense(32, 1.3, 0.2), ik.LayerNorm(eps=0.0))
    rho = body.kernel(X1, X2).nngp
    for n in (0, 1, 2, 3, 5):
        k = ik.serial(body, ik.Hermite(n)).kernel(X1, X2)
        assert np.abs(k.nngp - rho ** n).max() < 1e-14


def test_layernorm_finite_width_ntk_converges():
    """The empirical NTK of wide networks with LayerNorm averages to the
    analytic one: mean of 48 draws at width 1024 within 5 standard errors plus
    2/width of the scale (the finite-width bias is O(1/width); measured: z ≤ 2,
    and 1.1 % → 0.56 % relative error from width 1024 to 4096)."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    x[1] = x[0]
    width = 1024
    net = ik.serial(ik.Dense(width, 1.3, 0.2), ik.LayerNorm(eps=0.05), ik.Erf(),
                    ik.Dense(width, 1.1, 0.1), ik.LayerNorm(), ik.Relu(), ik.Dense(1, 0.9, 0.1))
    mc = ik.monte_carlo_kernel_fn(net, 48, seed=3)(x)
    ref = net.kernel(x).ntk
    assert np.all(np.abs(mc.mean.ntk - ref) <= 5 * mc.stderr.ntk + 2 / width * np.abs(ref).max())


def test_layernorm_bad_input():
    with pytest.raises(ValueError, match="LayerNorm.*network input, which is not Gaussian"):
        ik.serial(ik.LayerNorm(), ik.Dense(1)).program(3)
    with pytest.raises(ValueError, match="not Gaussian"):
        ik.serial(ik.Dense(4), ik.Relu(), ik.LayerNorm()).program(3)
    with pytest.raises(ValueError, match="axis must be the channel axis"):
        ik.LayerNorm(axis=0)
    with pytest.raises(ValueError, match="LayerNorm: eps must be finite and >= 0"):
        ik.LayerNorm(eps=-1.0)
    with pytest.raises(ValueError, match="channel_axis"):
        ik.LayerNorm(channel_axis=0)
    ik.LayerNorm(axis=[-1])     # neural-tangents' spellings of the channel axis
    ik.LayerNorm(axis=(1,))


@pytest.mark.parametrize("clip", [False, True])
def test_exp_normalized_kernel_map(clip):
    """ExpNormalized: Σ' = √(Σ11 Σ22) exp(γ(ρ + shift)), Θ' = γ exp(γ(ρ + shift)) Θ
    (neural-tangents' formula), against the network before it; a kernel map
    only: no finite-width forward pass, and no activation directly after it."""
    body = ik.serial(ik.Dense(32, 1.3, 0.2), ik.Relu(), ik.Dense(16, 0.9, 0.1))
    net = ik.serial(body, ik.ExpNormalized(gamma=0.7, shift=-0.5, do_clip=clip))
    for x2 in (X2, None):
        kb, k = body.kernel(X1, x2), net.kernel(X1, x2)
        d1 = body.diag(X1)
        d2 = d1 if x2 is None else body.diag(x2)
        s = np.outer(np.sqrt(d1.nngp), np.sqrt(d2.nngp))
        g = np.exp(0.7 * (kb.nngp / s - 0.5))
        assert _rel(k.nngp, s * g) < 1e-14
        assert _rel(k.ntk, 0.7 * g * kb.ntk) < 1e-14
    assert _rel(net.diag(X1).nngp, d1.nngp * math.exp(0.7 * 0.5)) < 1e-15
    _, params = net.init_fn(0, X1.shape)
    with pytest.raises(NotImplementedError, match="without a finite-width network"):
        net.apply_fn(params, X1)
    with pytest.raises(ValueError, match="applied to the output of ExpNormalized"):
        ik.serial(net, ik.Relu()).program(3)
    with pytest.raises(ValueError, match="ExpNormalized: gamma must be finite"):
        ik.ExpNormalized(gamma=math.nan)


def test_dropout_scales_the_diagonal_only():
    """Dropout(rate) in train mode multiplies Σ(x, x) and Θ(x, x) by 1/rate
    (same point, same mask) and leaves every other entry, identical points in
    K(x, x') included; as neural-tangents, K(x, x.copy()) counts as K(x).
    With nothing nonlinear after it, the cross kernel is that without it;
    test mode is the identity."""
    rate = 0.8
    body = ik.serial(ik.Dense(32, 1.3, 0.2), ik.Relu())
    head = ik.Dense(1, 0.9, 0.1)
    net, plain = ik.serial(body, ik.Dropout(rate), head), ik.serial(body, head)
    k, ref = net.kernel(X1), plain.kernel(X1)
    off = ~np.eye(len(X1), dtype=bool)
    assert np.array_equal(k.nngp[off], ref.nngp[off])
    e = body.diag(X1).nngp * 0.81            # W_std² E[φ²]
    assert _rel(np.diag(k.nngp), e / rate + 0.01) < 1e-15
    # Θ = Σ + W² Θ_dropout, and Θ_dropout(x, x) = Θ_body(x, x) / rate
    assert _rel(np.diag(k.ntk) - np.diag(k.nngp),
                (np.diag(ref.ntk) - np.diag(ref.nngp)) / rate) < 1e-14
    for g in ("nngp", "ntk"):
        assert np.array_equal(getattr(net.kernel(X1, X1.copy()), g), getattr(k, g))
        assert np.array_equal(net.diag(X1, g), np.diag(getattr(k, g)))
        assert _rel(net.kernel(X1, X2, g), plain.kernel(X1, X2, g)) < 1e-15
    test_mode = ik.serial(body, ik.Dropout(rate, mode="test"), head)
    assert np.array_equal(test_mode.kernel(X1).ntk, ref.ntk)


def test_dropout_monte_carlo():
    """E[f(x) f(x')] over weights and masks (apply_fn with rng) of a network
    with one hidden layer and dropout equals K(X), diagonal factor included, at
    any width: within 5 standard errors of 4000 draws."""
    net = ik.serial(ik.Dense(12, 1.2, 0.3), ik.Erf(), ik.Dropout(0.6), ik.Dense(1, 1.1, 0.2))
    x = np.random.default_rng(4).standard_normal((4, 3))
    rng = np.random.default_rng(5)
    f = np.empty((4000, 4))
    for s in range(len(f)):
        _, params = net.init_fn(rng, x.shape)
        f[s] = net.apply_fn(params, x, rng=rng)[:, 0]
    ff = f[:, :, None] * f[:, None, :]
    mean, se = ff.mean(0), ff.std(0) / np.sqrt(len(f))
    assert np.all(np.abs(mean - net.kernel(x).nngp) <= 5 * se)


def test_dropout_bad_input():
    for rate in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError, match="Dropout: rate"):
            ik.Dropout(rate)
    with pytest.raises(ValueError, match="mode must be 'train' or 'test'"):
        ik.Dropout(0.5, mode="eval")
    with pytest.raises(ValueError, match="applied to the network input"):
        ik.serial(ik.Dropout(0.5), ik.Dense(1)).program(3)
    with pytest.raises(ValueError, match="output of Dropout in train mode"):
        ik.serial(ik.Dense(4), ik.Dropout(0.5), ik.Relu()).program(3)
    net = ik.serial(ik.Dense(4), ik.Relu(), ik.Dropout(0.5), ik.Dense(1))
    _, params = net.init_fn(0, X1.shape)
    with pytest.raises(ValueError, match="needs random masks"):
        net.apply_fn(params, X1)
    # masks also reach Dropout layers inside parallel branches
    branched = ik.serial(ik.Dense(8), ik.FanOut(2), ik.parallel(
        ik.serial(ik.Relu(), ik.Dropout(0.5), ik.Dense(8)), ik.Dense(8)), ik.FanInProd(),
        ik.Dense(1))
    _, params = branched.init_fn(0, X1.shape)
    assert np.array_equal(branched.apply_fn(params, X1, rng=3),
                          branched.apply_fn(params, X1, rng=3))


def _exact_at_same_point(name, q):
    """(k, k̇) at q11 = q12 = q22 = q from the closed forms in 40 digits."""
    with mpmath.workdps(40):
        q = mpmath.mpf(q)
        if name == "Erf":                # Erf(): det = (1 + 2q)² - 4q² = 1 + 4q
            return (2 / mpmath.pi * mpmath.asin(2 * q / (1 + 2 * q)),
                    4 / mpmath.pi / mpmath.sqrt(1 + 4 * q))
        if name == "Gelu":
            p = 1 + q                    # p² - q² = 1 + 2q, 1 - q²/p² = (1 + 2q)/p²
            d = mpmath.sqrt(1 + 2 * q)
            h = (q / p) ** 2
            angle = mpmath.atan2(q, d)        # asin(q/p), cos = d/p
            return (q / 4 + (h / d + h * d + q * angle) / (2 * mpmath.pi),
                    mpmath.mpf(1) / 4 + (angle + q / d * (1 / d ** 2 + (2 + 2 * q) / p ** 2))
                    / (2 * mpmath.pi))
        if name == "Gaussian":           # Gaussian(1, -0.6): det = 1 + 2.4 q
            d = 1 + mpmath.mpf(2.4) * q
            return 1 / mpmath.sqrt(d), 4 * mpmath.mpf(0.36) * q / d ** 1.5
        d = 1 + 4 * q                    # Gabor: δ = 0
        e, b = mpmath.exp(-q / d), q / d
        return (e * mpmath.sinh(b) / mpmath.sqrt(d),
                e / d ** 2.5 * (4 * q * (d + 1 + 2 * q) * mpmath.sinh(b)
                                + (d + 8 * q * q) * mpmath.cosh(b)))


@pytest.mark.parametrize("act", [ik.Erf(), ik.Gelu(), ik.Gaussian(1.0, -0.6), ik.Gabor()],
                         ids=repr)
def test_same_point_exact_at_large_variance(act):
    """Identical and antipodal points (and the diagonal) at variances up to
    1e60: the smooth duals use exact forms there of what q11 q22 - q12² would
    leave with the rounding of q² (a fused multiply-add made it nonzero: 1e-4
    off at q = 1e12, up to 30 % at 1e15); within 1e-14 of 40-digit values.
    Gelu's antipodal entry, ~−0.19/√q from terms ~q/4, was 4e-5 off at
    q = 1e6 and wholly wrong from q ~ 1e11 before it took F(ψ) = sin ψ − ψ cos ψ."""
    net = ik.serial(ik.Dense(1, 1.0, None), act)
    for scale in (1.0, 1e3, 1e6, 1e8, 1e30):
        x = scale * np.array([[1.0, 0.3, -0.7], [-1.0, -0.3, 0.7]])
        q = float((x[0] * x[0]).sum() / 3)
        k, kd = (float(v) for v in _exact_at_same_point(act.name, q))
        got = net.kernel(x, x.copy())
        assert net.diag(x, "nngp")[0] == pytest.approx(k, rel=1e-14)
        assert got.nngp[0, 0] == pytest.approx(k, rel=1e-14)
        assert got.ntk[0, 0] == pytest.approx(kd * q, rel=1e-14)
        if act.name in ("Erf", "Gabor"):      # odd φ: the antipodal entry is -k
            assert got.nngp[0, 1] == pytest.approx(-k, rel=1e-14)
        if act.name == "Gelu":
            k, kd = (float(v) for v in _gelu_antipodal_exact(q))
            assert got.nngp[0, 1] == pytest.approx(k, rel=1e-14)
            assert got.ntk[0, 1] == pytest.approx(-kd * q, rel=1e-14)


def test_gelu_antipodal_entries_among_others():
    """Gelu's antipodal form runs in the tiles that have an entry with z < −0.9
    (``_cpu._count_below``), the plain form elsewhere: 600 points and the
    antipodes of four, at q ~ 1e8, over several tiles — the antipodal entries
    within 1e-14 of their exact values, and K(X) (one triangle) equal to
    K(X, X') (both) entry for entry (the NTK to its rounding: the two paths
    order its products differently)."""
    x = np.random.default_rng(5).standard_normal((600, 3))
    X = 1e4 * np.vstack([x, -x[:4]])
    net = ik.serial(ik.Dense(1, 1.0, None), ik.Gelu())
    got, cross = net.kernel(X), net.kernel(X, X.copy())
    assert np.array_equal(got.nngp, cross.nngp)
    assert np.allclose(got.ntk, cross.ntk, rtol=1e-15, atol=0)
    for i in range(4):
        q = float(X[i] @ X[i] / 3)
        k, kd = (float(v) for v in _gelu_antipodal_exact(q))
        assert got.nngp[i, 600 + i] == pytest.approx(k, rel=1e-14)
        assert got.ntk[i, 600 + i] == pytest.approx(-kd * q, rel=1e-14)


def _gelu_antipodal_exact(q):
    """Gelu's (k, k̇) at q11 = q22 = q, q12 = −q (a point and its antipode):
    neural-tangents' closed form in mpmath, with the digits that its terms'
    cancellation takes (k ~ −0.19/√q from terms ~q/4)."""
    with mpmath.workdps(50 + 2 * max(0, int(math.log10(q)))):
        q = mpmath.mpf(q)
        p, d = 1 + q, mpmath.sqrt(1 + 2 * q)    # δ² = p² − q² = 1 + 2q
        h = (q / p) ** 2
        return (-q / 4 + (h / d + h * d - q * mpmath.asin(-q / p)) / (2 * mpmath.pi),
                _gelu_kdot_exact(q, -q, q))


@pytest.mark.parametrize("act", [a for a in CLOSED_FORMS if a.kind not in _cpu._COSTLY_KINDS]
                         + [ik.LayerNorm(eps=0.1)], ids=repr)
def test_diagonal_copy_of_the_tile_function(act):
    """``act_rows``, the tile function compiled for the diagonal pass (row
    values as arrays, one point per entry, loops vectorised over points),
    gives exactly what ``act_tile`` (compiled for Gram tiles: one row point)
    gives for each point against itself, at variances from 1e-8 to 1e3.
    (Monomials and polynomials take act_tile itself in the diagonal pass.)"""
    net = ik.serial(ik.Dense(1), act) if act.kind != P.K_LAYERNORM else ik.serial(
        ik.Dense(1), act, ik.Relu())
    prog = net.program(1)
    k = int(np.flatnonzero(prog.ops[:, 0] == P.OP_ACT)[0])
    kind, p, lo, hi = prog.ops[k, 3], prog.params[k], prog.ops[k, 4], prog.ops[k, 5]
    v = np.logspace(-8, 3, 700)
    s = np.array([point_scale(kind, p, q) for q in v])
    r = np.where(s > 0, 1 / np.where(s > 0, s, 1), 0.0)
    F, G, TM, W = np.zeros((0, 4, 0, 1)), np.zeros((0, 2, 1)), np.ones((0, 2, 0)), np.empty((3, 512))
    rows_q, rows_t = v.copy(), np.ones_like(v)
    for c0 in range(0, 700, 512):           # as the diagonal pass: tiles of 512 points
        n = min(700, c0 + 512) - c0
        sl = slice(c0, c0 + n)
        _cpu.act_rows(kind, p, prog.aux, lo, hi, v[sl], s[sl], r[sl], rows_q[sl], rows_t[sl],
                      np.zeros(n), v[sl], s[sl], r[sl], c0, n, c0, F, G, F, G, TM, W)
    for j in range(0, 700, 7):
        q, t = v[j:j + 1].copy(), np.ones(1)
        _cpu.act_tile(kind, p, prog.aux, lo, hi, v[j], s[j], r[j], q, t, np.zeros(1), v[j:j + 1],
                      s[j:j + 1], r[j:j + 1], j, 1, j, F, G, F, G, TM, W)
        assert (q[0], t[0]) == (rows_q[j], rows_t[j]), (j, v[j])


def test_row_norms():
    """The squared row norms of the input checks and the diagonal pass
    (vectorised, reassociated sums) against np.einsum, to the rounding of a
    sum of d positive terms; NaN, Inf and overflow propagate per row."""
    for shape in ((0, 3), (1, 1), (7, 100), (300, 33)):
        x = RNG.standard_normal(shape)
        np.testing.assert_allclose(_cpu.row_norms(x), np.einsum("ij,ij->i", x, x),
                                   rtol=shape[1] * 2e-16)
    x = np.array([[np.nan, 1.0], [np.inf, -np.inf], [1e200, 1e200], [3.0, 4.0]])
    r = _cpu.row_norms(x)
    assert np.isnan(r[0]) and r[1] == r[2] == np.inf and r[3] == 25.0


@pytest.mark.parametrize("a, b, c, q", [
    (1e6, 1e-6, 0.0, (1.0, 0.6, 1.0)),            # a near-identity sine
    (1.0, 1.0, 0.0, (1e-12, 3e-13, 1e-12)),       # tiny variances
    (1.0, 1e-5, np.pi / 2, (1.0, 0.5, 2.0)),      # Cos: its k̇ cancelled
    (2.0, 1.3, 0.4, (0.7, -0.2, 1.5)),
    (1.0, 3.0, 0.2, (1.0, -0.99, 1.0))])
def test_sin_dual_without_cancellation(a, b, c, q):
    """Sin's k = a²/2 (e⁻ − e⁺ cos 2c) cancelled where b²q12 is small (3e-5
    relative for Sin(1e6, 1e-6) at unit variance); now within a few ulps of
    40-digit mpmath, through a one-layer network whose Dense output has the
    covariances q, and in hyper's NumPy duals."""
    import mpmath as mp
    from infkernel import hyper
    from infkernel import _program as P
    q1, q12, q2 = q
    x = np.sqrt(2.0) * np.array([[np.sqrt(q1), 0.0],
                                 [q12 / np.sqrt(q1), np.sqrt(q2 - q12 * q12 / q1)]])
    net = ik.serial(ik.Dense(1, 1.0, None), ik.Sin(a, b, c))
    k = net.kernel(x, None, ("nngp", "ntk"))
    with mp.workdps(40):
        A, B, C, m1, m12, m2 = map(mp.mpf, (a, b, c, q1, q12, q2))
        em = mp.exp(-B * B * (m1 + m2 - 2 * m12) / 2)
        ep = mp.exp(-B * B * (m1 + m2 + 2 * m12) / 2) * mp.cos(2 * C)
        exact_k, exact_kd = float(A * A / 2 * (em - ep)), float(A * A * B * B / 2 * (em + ep))
    assert k.nngp[0, 1] == pytest.approx(exact_k, rel=1e-14, abs=0)
    assert k.ntk[0, 1] == pytest.approx(exact_kd * q12, rel=1e-14, abs=0)
    hk, hkd = hyper.dual_values(P.K_SIN, (a, b, c), q1, q12, q2)
    assert hk == pytest.approx(exact_k, rel=1e-14, abs=0)
    assert hkd == pytest.approx(exact_kd, rel=1e-14, abs=0)


def test_step_function_at_a_zero_input_is_its_finite_network():
    """RectifiedMonomial(0) and Sign at a zero-variance point: φ(0) = 0 in
    the finite networks (step(0) = 0, sign(0) = 0), so every finite output at
    that point is 0 and so are its kernel entries (the step's dual gave
    step(0) = 1/2: K(0, 0) = W_std²/4)."""
    from infkernel import hyper
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-0.3, 2.0]])
    for act in (ik.RectifiedMonomial(0), ik.Sign()):
        net = ik.serial(ik.Dense(64, 1.3), act, ik.Dense(1, 0.9))
        _, params = net.init_fn(0, (-1, 2))
        assert net.apply_fn(params, x)[0, 0] == 0.0
        for k in (net.kernel(x, None, "nngp"), net.kernel(x, x[:1], "nngp")):
            assert np.all(k[0] == 0.0) and np.all(k[:, 0] == 0.0)
        assert net.diag(x, "nngp")[0] == 0.0 and net.kernel(x, None, "nngp")[1, 1] > 0
        assert hyper.dual_values(act.kind, act.params, 0.0, 0.0, 1.0)[0] == 0.0
