"""PINN kernels (infkernel.pinn): operator kernels against independent
references, finite-width networks, blocks, weights, spectra, bad input."""
import importlib.util
import math
import os
import re
import warnings

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import special

import infkernel as ik
from infkernel import pinn

HERE = os.path.dirname(os.path.abspath(__file__))
from reference import gaussian_moment  # noqa: E402


# ---------------------------------------------------------------------------
# independent reference: the recursion in 40-digit mpmath, differentiated by
# mpmath.diff (high-precision finite differences, exact to ~30 digits)
# ---------------------------------------------------------------------------
def _mp_dual(name, p, q1, q12, q2):
    if name == "erf":
        a, b, c = p
        b2 = b * b
        r = (1 + 2 * b2 * q1) * (1 + 2 * b2 * q2)
        k = a * a * 2 / mp.pi * mp.asin(2 * b2 * q12 / mp.sqrt(r)) + c * c
        return k, a * a * 4 * b2 / mp.pi / mp.sqrt(r - 4 * b2 * b2 * q12 ** 2)
    if name == "sin":
        a, b, c = p
        em = mp.exp(-b * b * (q1 + q2 - 2 * q12) / 2)
        ep = mp.exp(-b * b * (q1 + q2 + 2 * q12) / 2) * mp.cos(2 * c)
        return a * a / 2 * (em - ep), a * a * b * b / 2 * (em + ep)
    if name == "gelu":
        p1, p2 = 1 + q1, 1 + q2
        z = q12 / mp.sqrt(p1 * p2)
        dl = mp.sqrt(p1 * p2 - q12 ** 2)
        h = q1 / p1 * q2 / p2
        k = q12 / 4 + (z * z / dl + h * dl + q12 * mp.asin(z)) / (2 * mp.pi)
        br = 1 / dl ** 2 + 1 / (p1 * p2) - h + 1
        return k, mp.mpf(1) / 4 + (mp.asin(z) + q12 / dl * br) / (2 * mp.pi)
    if name == "rbf":
        k = mp.exp(-p[0] * (q1 + q2 - 2 * q12))
        return k, 2 * p[0] * k
    if name == "exp":
        a, b = p
        k = a * a * mp.exp(b * b * ((q1 + q2) / 2 + q12))
        return k, b * b * k
    if name == "gaussian":
        a, b = p
        D = (1 - 2 * b * q1) * (1 - 2 * b * q2) - 4 * b * b * q12 ** 2
        return a * a / mp.sqrt(D), 4 * a * a * b * b * q12 / D ** 1.5
    if name == "monomial":
        n = int(p[0])

        def e(m):
            return mp.fsum(mp.factorial(m) ** 2 / (mp.factorial(j) * mp.factorial((m - j) // 2) ** 2
                                                  * 4 ** ((m - j) // 2))
                           * q12 ** j * (q1 * q2) ** ((m - j) // 2)
                           for j in range(m % 2, m + 1, 2))
        return e(n), n * n * e(n - 1)
    if name == "gabor":        # neural-tangents' form of the closed form
        s, pr = q1 + q2, q1 * q2
        diff = 4 * (pr - q12 ** 2)
        den = 2 * s + diff + 1
        left = mp.exp(-(s + diff + 2 * q12) / (2 * den))
        right = mp.exp(2 * q12 / den)
        shared = 1 + 2 * s + 4 * (q12 ** 2 + pr)
        dterm = 4 * q12 * (diff + 3 * s + 2)
        return (left * (right - 1) / (2 * mp.sqrt(den)),
                left * (shared - dterm + right * (shared + dterm)) / den ** 2.5 / 2)
    if name == "polynomial":     # Isserlis moments, independent of the Mehler tables
        c = p
        dc = [m * c[m] for m in range(1, len(c))]
        k = mp.fsum(ca * cb * gaussian_moment(a, b, q1, q12, q2)
                    for a, ca in enumerate(c) for b, cb in enumerate(c))
        kd = mp.fsum(ca * cb * gaussian_moment(a, b, q1, q12, q2)
                     for a, ca in enumerate(dc) for b, cb in enumerate(dc))
        return k, kd
    raise AssertionError(name)


def _mp_features(ff, x):
    B, amp = ff
    z = [2 * mp.pi * mp.fsum(mp.mpf(float(b)) * xi for b, xi in zip(row, x)) for row in B]
    return ([mp.mpf(float(a)) * mp.cos(v) for a, v in zip(amp, z)]
            + [mp.mpf(float(a)) * mp.sin(v) for a, v in zip(amp, z)])


def _mp_kernel(spec, x, y, get, ff=None):
    if ff is not None:
        x, y = _mp_features(ff, x), _mp_features(ff, y)
    d = len(x)
    q1 = mp.fsum(a * a for a in x) / d
    q2 = mp.fsum(a * a for a in y) / d
    q12 = mp.fsum(a * b for a, b in zip(x, y)) / d
    th = mp.mpf(0)
    for layer in spec:
        if layer[0] == "scale":
            a2 = mp.mpf(layer[1]) ** 2
            q1, q12, q2, th = a2 * q1, a2 * q12, a2 * q2, a2 * th
        elif layer[0] == "dense":
            w2, b2 = mp.mpf(layer[1]) ** 2, mp.mpf(layer[2]) ** 2
            q1, q12, q2 = w2 * q1 + b2, w2 * q12 + b2, w2 * q2 + b2
            th = q12 + w2 * th
        else:
            name, p = layer
            p = [mp.mpf(v) for v in p]
            k, kd = _mp_dual(name, p, q1, q12, q2)
            q1, q2 = _mp_dual(name, p, q1, q1, q1)[0], _mp_dual(name, p, q2, q2, q2)[0]
            q12, th = k, kd * th
    return q12 if get == "nngp" else th


def _mp_operator_kernel(spec, x, y, terms1, terms2, get, ff=None):
    """Σ c1 c2 ∂^α_x ∂^β_y K by mpmath.diff; terms: {axes tuple: coef}."""
    mp.mp.dps = 40
    d = len(x)
    total = mp.mpf(0)
    for a1, c1 in terms1.items():
        for a2, c2 in terms2.items():
            orders = [0] * (2 * d)
            for a in a1:
                orders[a] += 1
            for a in a2:
                orders[d + a] += 1
            f = lambda *z: _mp_kernel(spec, z[:d], z[d:], get, ff)  # noqa: E731
            total += c1 * c2 * mp.diff(f, tuple(float(v) for v in list(x) + list(y)),
                                       tuple(orders))
    return float(total)


CLOSED = [
    ("erf", (1.0, 1.3, 0.1), ik.Erf(1.0, 1.3, 0.1)),
    ("sin", (1.2, 0.9, 0.4), ik.Sin(1.2, 0.9, 0.4)),
    ("sin", (1.0, 1.1, 0.3 + math.pi / 2), ik.Cos(1.0, 1.1, 0.3)),
    ("gelu", (), ik.Gelu()),
    ("rbf", (0.7,), ik.Rbf(0.7)),
    ("exp", (0.8, 0.5), ik.Exp(0.8, 0.5)),
    ("gaussian", (1.0, -0.6), ik.Gaussian(1.0, -0.6)),
    ("monomial", (3,), ik.Monomial(3)),
    ("gabor", (), ik.Gabor()),
    ("polynomial", (0.3, -1.0, 0.5, 0.2), ik.Polynomial([0.3, -1.0, 0.5, 0.2])),
    ("polynomial", tuple(np.polynomial.hermite_e.herme2poly([0, 0, 0, 0, 1]) / 24 ** 0.5),
     ik.Hermite(4)),
]


@pytest.mark.parametrize("name,p,act", CLOSED, ids=[c[0] + str(i) for i, c in enumerate(CLOSED)])
def test_closed_forms_exact(name, p, act):
    """Closed-form activations: second-order operator kernels (NNGP and NTK,
    two hidden layers, 2-D inputs, including x = x') agree with 40-digit
    differentiation of the closed-form kernel to 1e-12 relative: the jets are
    exact, so only rounding (~1e-15 × the terms' condition) remains."""
    spec = [("dense", 1.2, 0.3), (name, p), ("dense", 0.9, 0.2), (name, p), ("dense", 1.1, 0.1)]
    net = ik.serial(ik.Dense(8, 1.2, 0.3), act, ik.Dense(8, 0.9, 0.2), act, ik.Dense(1, 1.1, 0.1))
    x1 = np.array([[0.3, -0.2], [0.5, 0.4]])
    x2 = np.array([[0.3, -0.2], [-0.4, 0.1]])
    op1 = pinn.laplacian(2) + 0.5 * pinn.partial(0)
    op2 = pinn.partial(0) * pinn.partial(1) - 2.0 * pinn.identity()
    for get in ("nngp", "ntk"):
        K = pinn.kernel(net, x1, x2, op1, op2, get)
        for i in range(2):
            for j in range(2):
                ref = _mp_operator_kernel(spec, x1[i], x2[j], op1.terms, op2.terms, get)
                assert abs(K[i, j] - ref) <= 1e-12 * max(1.0, abs(ref)), (get, i, j, K[i, j], ref)


_OPERATORS = [pinn.identity(), pinn.partial(0), pinn.partial(1, 2), pinn.laplacian(2),
              pinn.partial(0) * pinn.partial(1) - 0.5 * pinn.partial(1)]


@settings(max_examples=40, deadline=None)
@given(act=st.sampled_from([c[2] for c in CLOSED]), o1=st.sampled_from(_OPERATORS),
       o2=st.sampled_from(_OPERATORS), depth=st.integers(1, 3), n1=st.integers(1, 5),
       n2=st.integers(1, 5), seed=st.integers(0, 2 ** 16),
       standard=st.booleans())
def test_operator_kernels_transpose(act, o1, o2, depth, n1, n2, seed, standard):
    """kernel(x1, x2, op1, op2) = kernel(x2, x1, op2, op1)ᵀ for random
    closed-form networks, operators and points (both parameterizations), up
    to rounding (the recursion treats its two arguments alike); the
    symmetric call (x2 = None) is exactly symmetric."""
    rng = np.random.default_rng(seed)
    p = "standard" if standard else "ntk"
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(8, rng.uniform(0.5, 1.3), rng.uniform(0.0, 0.5),
                            parameterization=p), act]
    net = ik.serial(*layers, ik.Dense(1, 1.0, 0.1, parameterization=p))
    x1, x2 = rng.uniform(-1, 1, (n1, 2)), rng.uniform(-1, 1, (n2, 2))
    a = pinn.kernel(net, x1, x2, o1, o2, get=None)
    b = pinn.kernel(net, x2, x1, o2, o1, get=None)
    for u, v in zip(a, b):
        assert np.abs(u - v.T).max() <= 1e-12 * max(np.abs(u).max(), 1e-300)
    s = pinn.kernel(net, x1, None, o1, o1, "ntk")
    assert np.array_equal(s, s.T)


def test_fourier_features_and_scale_exact():
    """A leading FourierFeatures map (Fourier-feature PINNs) and Scale layers:
    exact jets of γ(x) = [a cos 2πBx, a sin 2πBx], against 40-digit mpmath
    differentiation (1e-12 relative), and the identity operator against
    ``net.kernel``."""
    B = np.array([[1.0, 0.5], [0.3, -2.0], [2.0, 1.0]])
    amp = np.array([1.0, 0.7, 0.4])
    net = ik.serial(ik.FourierFeatures(B, amp), ik.Dense(8, 1.2, 0.3), ik.Erf(), ik.Scale(0.8),
                    ik.Dense(1, 1.1, 0.1))
    spec = [("dense", 1.2, 0.3), ("erf", (1.0, 1.0, 0.0)), ("scale", 0.8),
            ("dense", 1.1, 0.1)]
    x1 = np.array([[0.3, -0.2], [0.1, 0.25]])
    x2 = np.array([[0.3, -0.2], [-0.4, 0.1]])
    op1 = pinn.laplacian(2)
    op2 = pinn.partial(0) * pinn.partial(1) + pinn.partial(1)
    assert np.allclose(pinn.kernel(net, x1, x2), net.kernel(x1, x2, "ntk"), rtol=1e-13, atol=0)
    for get in ("nngp", "ntk"):
        K = pinn.kernel(net, x1, x2, op1, op2, get)
        for i in range(2):
            for j in range(2):
                ref = _mp_operator_kernel(spec, x1[i], x2[j], op1.terms, op2.terms, get,
                                          ff=(B, amp))
                assert abs(K[i, j] - ref) <= 1e-12 * max(1.0, abs(ref)), (get, i, j)
    # finite width: the empirical kernel's derivatives through the map and Scale
    _, params = net.init_fn(0, (-1, 2))
    f = pinn.operator_apply(net, params, x1, pinn.partial(1, 2))
    def d2(h):
        e = np.array([0.0, h])
        return (net.apply_fn(params, x1 + e) - 2 * net.apply_fn(params, x1)
                + net.apply_fn(params, x1 - e)) / h ** 2
    # Richardson: truncation O(h⁴ (2π|B|)⁶) ≈ 1e-8, rounding 4ε|f|/h² ≈ 1e-8
    R = (4 * d2(5e-4) - d2(1e-3)) / 3
    assert np.abs(f - R).max() <= 1e-6 * np.abs(R).max()


def _dtanh(u, n):
    t = np.tanh(u)
    s = 1 - t * t
    return [t, s, -2 * t * s, s * (6 * t * t - 2)][n]


def test_tanh_one_layer_against_quadrature():
    """Tanh (quadrature path), one hidden layer: the derivative kernels are
    w₂² E[(w₁a)^{i+j} φ⁽ⁱ⁾(u) φ⁽ʲ⁾(v)] (+ product-rule NTK terms) over the
    first layer's Gaussian weights (a, c), u = w₁ax + b₁c, computed here by a
    600² Gauss–Legendre rule on [−10, 10]² with exact tanh derivatives (error
    < 1e-14).  Tolerance 1e-11 relative: our nested graded quadrature of
    φ⁽⁷⁾ measures ≤ 5e-14."""
    w1, b1, w2, b2 = 1.3, 0.4, 1.1, 0.2
    net = ik.serial(ik.Dense(8, w1, b1), ik.Tanh(), ik.Dense(1, w2, b2))
    g, wg = np.polynomial.legendre.leggauss(600)
    g, wg = 10 * g, 10 * wg * np.exp(-50 * g * g) / np.sqrt(2 * np.pi)
    A, C = np.meshgrid(g, g, indexing="ij")
    WW = np.outer(wg, wg)

    def E(x, y, i, j, sh):
        u, v = w1 * A * x + b1 * C, w1 * A * y + b1 * C
        return np.sum(WW * (w1 * A) ** (i + j) * _dtanh(u, i + sh) * _dtanh(v, j + sh))

    def ref(x, y, get):  # ∂_x² ∂_y (I = 2, J = 1)
        nngp = w2 ** 2 * E(x, y, 2, 1, 0)
        if get == "nngp":
            return nngp
        T = {(0, 0): w1 ** 2 * x * y + b1 ** 2, (1, 0): w1 ** 2 * y, (0, 1): w1 ** 2 * x,
             (1, 1): w1 ** 2}
        tot = nngp
        for i in range(3):
            for j in range(2):
                if (i, j) in T:
                    tot += math.comb(2, i) * math.comb(1, j) * w2 ** 2 * E(
                        x, y, 2 - i, 1 - j, 1) * T[(i, j)]
        return tot
    x1 = np.array([[0.3], [0.9]])
    x2 = np.array([[0.3], [-0.5]])
    for get in ("nngp", "ntk"):
        K = pinn.kernel(net, x1, x2, pinn.partial(0, 2), pinn.partial(0), get)
        R = np.array([[ref(a[0], b[0], get) for b in x2] for a in x1])
        assert np.abs(K - R).max() <= 1e-11 * np.abs(R).max()


@pytest.mark.parametrize("kind", [1, 2, 4], ids=["tanh", "logistic", "silu"])
def test_tanh_moment_inner_integral_matches_pointwise_quadrature(kind):
    """For tanh, the logistic function and SiLU the inner integral of
    ``pinn._expect`` is a combination of the moments E_w[tᶜ] and E_w[v tᶜ],
    with t formed from exponentials (``_tanh_nodes``); the general path
    evaluates φ⁽ᵇ⁾ by libm tanh at every node over the whole x range (the
    tanh moment path uses the parity and an even panel count instead).  Both
    are within 4e-13 of a 40-node reference over variances 1e-12 … 128 and ρ
    within 1e-16 of ±1: they agree to 1e-12 of the Cauchy–Schwarz scale
    √(E φ⁽ᵃ⁾(u)² E φ⁽ᵇ⁾(v)²), and entries with a + b odd vanish for tanh."""
    rng = np.random.default_rng(5)
    n = 40
    s1 = np.concatenate([rng.uniform(0.5, 2, 16), np.sqrt(rng.uniform(0, 128, 16)),
                         10 ** rng.uniform(-6, -1, 8)])
    s2 = rng.permutation(s1)
    rho = np.concatenate([rng.uniform(-1, 1, 20), 1 - 10 ** rng.uniform(-16, -1, 10),
                          -1 + 10 ** rng.uniform(-16, -1, 10)])
    amax, tab, lam, plain = 7, np.zeros((1, 1, 1)), math.pi / 2, np.zeros((0, 0, 0))

    def expect(C, a, b, r):
        return pinn._expect(kind, tab, pinn._TP, C, lam, a, b, r, amax, pinn._GLX, pinn._GLW)
    fast = expect(pinn._tanh_coefficients(kind, amax + 1), s1, s2, rho)
    reference = expect(plain, s1, s2, rho)
    d1 = np.sqrt(np.einsum("eaa->ea", expect(plain, s1, s1, np.ones(n))))
    d2 = np.sqrt(np.einsum("eaa->ea", expect(plain, s2, s2, np.ones(n))))
    scale = d1[:, :, None] * d2[:, None, :]
    assert np.all(np.abs(fast - reference) <= 1e-12 * scale + 1e-300)
    if kind == 1:
        parity = (np.arange(amax + 1)[:, None] + np.arange(amax + 1)) % 2 == 1
        assert np.all(fast[:, parity] == 0.0)


def _fd_mixed(f, x1, x2, h):
    """∂_x ∂_x' of f(x1, x2) (1-D inputs) by 4th-order central differences
    in each argument at steps h and h/2, Richardson-extrapolated (error
    O(h⁶); rounding ≈ 5 ε_f / h²)."""
    c = {-2: 1 / 12, -1: -2 / 3, 1: 2 / 3, 2: -1 / 12}

    def fd(s):
        return sum(c[p] * c[q] * f(x1 + p * s, x2 + q * s) for p in c for q in c) / s ** 2
    return (16 * fd(h / 2) - fd(h)) / 15


@pytest.mark.parametrize("act", [ik.Tanh(), ik.Sigmoid(), ik.Softplus(), ik.Silu(),
                                 ik.Mish()], ids=repr)
def test_numeric_first_derivatives_vs_finite_differences(act):
    """∂_x∂_x' Θ for quadrature activations (two hidden layers) against 4th-order
    finite differences of ``net.kernel`` (an independent code path), h = 0.02
    extrapolated: truncation O(h⁶) ≈ 1e-9, rounding 5·1e-12/h² ≈ 5e-8 (the base
    kernel's certified error 1e-12).  Tolerance 1e-6 relative."""
    net = ik.serial(ik.Dense(8, 1.1, 0.3), act, ik.Dense(8, 1.0, 0.2), act, ik.Dense(1))
    x1 = np.array([[0.2], [0.7]])
    x2 = np.array([[0.2], [-0.4], [0.5]])
    K = pinn.kernel(net, x1, x2, pinn.partial(0), pinn.partial(0), "ntk")
    R = _fd_mixed(lambda a, b: net.kernel(a, b, "ntk"), x1, x2, 0.02)
    assert np.abs(K - R).max() <= 1e-6 * np.abs(R).max()


@pytest.mark.parametrize("acts", [(ik.Tanh(), ik.Gelu()), (ik.Erf(), ik.Softplus())],
                         ids=repr)
def test_closed_forms_beside_quadrature_activations(acts):
    """A network with a closed-form and a quadrature activation (the closed
    form's jets then run entry-wise inside the quadrature path's series):
    ∂_x∂_x' Θ against finite differences of ``net.kernel``, as above."""
    net = ik.serial(ik.Dense(8, 1.1, 0.3), acts[0], ik.Dense(8, 1.0, 0.2), acts[1],
                    ik.Dense(1))
    x1 = np.array([[0.2], [0.7]])
    x2 = np.array([[0.2], [-0.4], [0.5]])
    K = pinn.kernel(net, x1, x2, pinn.partial(0), pinn.partial(0), "ntk")
    R = _fd_mixed(lambda a, b: net.kernel(a, b, "ntk"), x1, x2, 0.02)
    assert np.abs(K - R).max() <= 1e-6 * np.abs(R).max()


@pytest.mark.parametrize("second", [ik.Erf(), ik.Tanh()], ids=repr)
def test_divergent_gaussian_dual_is_an_error(second):
    """Gaussian(b > 0) has no dual where 1 − 4bq ≤ 0: a derivative kernel
    there is a ValueError (closed-form and quadrature paths alike), and it is
    computed where the variances are below 1/(4b)."""
    net = ik.serial(ik.Dense(8, 1.5, 0.1), ik.Gaussian(1.0, 0.3), ik.Dense(8, 0.5, 0.1),
                    second, ik.Dense(1))
    L = pinn.laplacian(2)
    with pytest.raises(ValueError, match="diverges"):
        pinn.kernel(net, np.array([[1.0, 1.0], [0.1, 0.2]]), None, L, L)
    K = pinn.kernel(net, np.array([[0.3, 0.2], [0.1, -0.2]]), None, L, L)
    assert np.isfinite(K).all() and np.array_equal(K, K.T)


def test_second_order_consistent_with_first_order():
    """∂²∂² Θ of a two-layer Tanh net equals the extrapolated finite difference
    of the ∂∂ Θ kernel (h = 0.01: the plain 4th-order differences err by
    6e-5 and 4e-6 at h and h/2, shrinking as h⁴; after extrapolation the
    error is O(h⁶) ≈ 1e-8 relative, rounding 5·1e-12/h² ≈ 5e-8)."""
    net = ik.serial(ik.Dense(8, 1.0, 0.2), ik.Tanh(), ik.Dense(8, 1.2, 0.1), ik.Tanh(),
                    ik.Dense(1))
    x1 = np.array([[0.1], [0.6]])
    x2 = np.array([[0.1], [0.35]])
    K = pinn.kernel(net, x1, x2, pinn.partial(0, 2), pinn.partial(0, 2), "ntk")
    R = _fd_mixed(lambda a, b: pinn.kernel(net, a, b, pinn.partial(0), pinn.partial(0)),
                  x1, x2, 0.01)
    assert np.abs(K - R).max() <= 1e-6 * np.abs(R).max()


def test_elementwise_matches_closed_form():
    """A user's ``Elementwise(special.erf)`` (Cauchy derivatives + Chebyshev
    tables + quadrature) against the closed-form Erf: 1e-9 relative for a
    second-order operator in each argument (measured ~1e-11; the table's φ⁽⁷⁾
    carries 7!·2⁷·ε ≈ 1e-10 rounding)."""
    x = np.array([[0.1, 0.2], [0.5, -0.3]])
    net1 = ik.serial(ik.Dense(8, 1.2, 0.3), ik.Erf(), ik.Dense(1))
    net2 = ik.serial(ik.Dense(8, 1.2, 0.3), ik.Elementwise(special.erf), ik.Dense(1))
    L = pinn.laplacian(2)
    K1 = pinn.kernel(net1, x, None, L, L)
    K2 = pinn.kernel(net2, x, None, L, L)
    assert np.abs(K1 - K2).max() <= 1e-9 * np.abs(K1).max()


def test_elementwise_polynomial_growth_matches_closed_form():
    """Entire functions of polynomial growth pass the analyticity check, whose
    two contour radii differ there by the rounding of φ's large values
    (amplified n!/rⁿ), and x²/2 gives Polynomial([0, 0, 0.5])'s kernel: 1e-9,
    as for Erf above."""
    x = np.linspace(-1, 1, 4)[:, None]
    d = pinn.partial(0)
    net1 = ik.serial(ik.Dense(8, b_std=0.2), ik.Polynomial([0, 0, 0.5]), ik.Dense(1))
    net2 = ik.serial(ik.Dense(8, b_std=0.2), ik.Elementwise(lambda z: 0.5 * z * z), ik.Dense(1))
    K1 = pinn.kernel(net1, x, None, d, d)
    K2 = pinn.kernel(net2, x, None, d, d)
    assert np.abs(K1 - K2).max() <= 1e-9 * np.abs(K1).max()
    net3 = ik.serial(ik.Dense(8, b_std=0.2), ik.Elementwise(lambda z: np.sin(z) + 0.1 * z * z),
                     ik.Dense(1))
    assert np.isfinite(pinn.kernel(net3, x, None, d, d)).all()


def test_identity_operator_matches_network_kernel():
    """With identity operators the result is the ordinary kernel, for both
    parameterizations (closed form: 1e-13; quadrature: certified 1e-10)."""
    x = np.array([[0.1, 0.2], [0.5, -0.3], [0.9, 0.4]])
    for par in ("ntk", "standard"):
        net = ik.serial(ik.Dense(8, 1.2, 0.3, par), ik.Erf(), ik.Dense(1, 1.0, 0.1, par))
        k = pinn.kernel(net, x, get=None)
        ref = net.kernel(x, None, None)
        assert np.allclose(k.ntk, ref.ntk, rtol=1e-13, atol=0)
        assert np.allclose(k.nngp, ref.nngp, rtol=1e-13, atol=0)
    net = ik.serial(ik.Dense(8, 1.2, 0.3), ik.Tanh(), ik.Dense(1))
    assert np.allclose(pinn.kernel(net, x), net.kernel(x, None, "ntk"), rtol=1e-10, atol=0)


def test_standard_parameterization_derivative():
    """Standard parameterization: ∂_x∂_x' Θ against finite differences of
    ``net.kernel`` (closed form; h = 1e-2 extrapolated: error ~1e-10)."""
    net = ik.serial(ik.Dense(16, 1.2, 0.3, "standard"), ik.Gelu(),
                    ik.Dense(1, 1.0, 0.1, "standard"))
    x1, x2 = np.array([[0.2], [0.8]]), np.array([[0.2], [-0.3]])
    K = pinn.kernel(net, x1, x2, pinn.partial(0), pinn.partial(0))
    R = _fd_mixed(lambda a, b: net.kernel(a, b, "ntk"), x1, x2, 0.01)
    assert np.abs(K - R).max() <= 1e-7 * np.abs(R).max()


def test_normalisation_chain_rule():
    """shift/scale: the kernel of the net on z = (x − μ)/σ, with ∂_x = ∂_z/σ."""
    net = ik.serial(ik.Dense(8, 1.2, 0.3), ik.Erf(), ik.Dense(1))
    x = np.array([[0.1, 2.0], [0.5, 3.0]])
    mu, sig = np.array([0.5, 2.5]), np.array([0.5, 2.0])
    L = pinn.partial(0, 2) - 4.0 * pinn.partial(1, 2) + pinn.partial(1)
    K = pinn.kernel(net, x, None, L, L, shift=mu, scale=sig)
    Lz = (pinn.partial(0, 2) * (1 / sig[0] ** 2) - pinn.partial(1, 2) * (4.0 / sig[1] ** 2)
          + pinn.partial(1) * (1 / sig[1]))
    Kz = pinn.kernel(net, (x - mu) / sig, None, Lz, Lz)
    assert np.allclose(K, Kz, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------
# finite width
# ---------------------------------------------------------------------------
def test_operator_apply_vs_finite_differences():
    """(L f)(x) of a finite net by jets vs central differences (h = 1e-3:
    error ~h² f⁽⁴⁾/12 ≈ 1e-6 relative)."""
    net = ik.serial(ik.Dense(64, 1.3, 0.4), ik.Tanh(), ik.Dense(64, 1.0, 0.1), ik.Gelu(),
                    ik.Dense(2, 1.1, 0.2))
    _, params = net.init_fn(1, (-1, 2))
    x = np.array([[0.3, 0.1], [0.9, -0.4]])
    L = pinn.laplacian(2) + 0.5 * pinn.partial(0) + pinn.partial(0) * pinn.partial(1)
    f = pinn.operator_apply(net, params, x, L)
    h = 1e-3
    F = lambda y: net.apply_fn(params, y)  # noqa: E731
    e = np.eye(2) * h

    def d2(a, b):
        return (F(x + e[a] + e[b]) - F(x + e[a] - e[b]) - F(x - e[a] + e[b])
                + F(x - e[a] - e[b])) / (4 * h * h)
    R = d2(0, 0) + d2(1, 1) + 0.5 * (F(x + e[0]) - F(x - e[0])) / (2 * h) + d2(0, 1)
    assert np.abs(f - R).max() <= 1e-5 * np.abs(R).max()


def test_empirical_operator_ntk_vs_finite_differences():
    """The empirical PINN NTK's input derivatives are exact: ∂_x∂_x' of the
    empirical NTK against 4th-order differences of the identity-operator
    empirical NTK (itself equal to ``ik.empirical_kernel_fn`` to 1e-14)."""
    net = ik.serial(ik.Dense(32, 1.3, 0.4), ik.Sin(), ik.Dense(32, 1.0, 0.1), ik.Tanh(),
                    ik.Dense(1, 1.1, 0.2))
    _, params = net.init_fn(2, (-1, 1))
    x1, x2 = np.array([[0.2], [0.7]]), np.array([[0.2], [-0.3]])
    e0 = pinn.empirical_kernel(net, params, x1, x2, get=None)
    ref = ik.empirical_kernel_fn(net)(x1, x2, get=None, params=params)
    assert np.allclose(e0.ntk, ref.ntk, rtol=1e-13, atol=1e-14)
    assert np.allclose(e0.nngp, ref.nngp, rtol=1e-13, atol=1e-14)
    K = pinn.empirical_kernel(net, params, x1, x2, pinn.partial(0), pinn.partial(0))
    R = _fd_mixed(lambda a, b: pinn.empirical_kernel(net, params, a, b), x1, x2, 1e-2)
    assert np.abs(K - R).max() <= 1e-7 * np.abs(R).max()


@pytest.mark.parametrize("act, zmax", [
    (ik.Tanh(), 700), (ik.Sigmoid(), 700), (ik.Softplus(), 700), (ik.Silu(), 700),
    (ik.Erf(1.2, 0.8, 0.3), 700), (ik.Sigmoid_like(), 700), (ik.Gelu(), 700),
    (ik.Sin(0.9, 1.1, 0.4), 700), (ik.Cos(1.1, 0.7, 0.2), 700), (ik.Rbf(0.7), 700),
    (ik.Exp(0.8, 0.5), 25), (ik.Gaussian(1.1, -0.6), 25), (ik.Gabor(), 25),
    (ik.Gelu(approximate=True), 25), (ik.Mish(), 700), (ik.Elementwise(np.tanh), 700)],
    ids=repr)
def test_finite_width_derivatives_of_activations(act, zmax):
    """φ and its first three derivatives as the finite-width PINN kernels
    take them (exact formulas: P_k(tanh) for tanh, the logistic function,
    softplus and SiLU; written out for the closed forms; Chebyshev tables,
    ~5e-14 relative, for other quadrature activations) equal Cauchy-integral
    derivatives of φ's complex extension out to |z| = zmax; the Cauchy value
    of φ⁽ᵏ⁾ carries rounding of ~1e-16 k! max|φ| / rᵏ over its circle of
    radius r = 1/2 (≤ 48e-16 max|φ| for k ≤ 3)."""
    z = np.concatenate([np.random.default_rng(4).normal(size=120) * 4,
                        [0.0, 1e-9, 25.0, -25.0, zmax, -zmax]])
    got = pinn._act_derivs(act, z.reshape(2, -1), True)
    assert got.shape == (4, 2, z.size // 2)
    f, _ = pinn._complex_fn(act)
    with np.errstate(all="ignore"):
        ref = pinn._cauchy(f, z, 3).reshape(got.shape)
        circle = np.abs(f(z[:, None] + 0.5 * np.exp(2j * np.pi * np.arange(64) / 64)))
    scale = np.maximum(circle.max(axis=1), 1.0).reshape(2, -1)
    assert np.all(np.abs(got - ref) <= 1e-14 * (np.abs(ref) + 48 * scale))


def test_empirical_converges_to_analytic():
    """One hidden layer (after Fourier features; a Scale before the readout),
    ntk parameterization: the empirical operator kernels
    are unbiased estimates of the analytic ones at every width (the
    expectation over parameters commutes with input derivatives).  Mean of 40
    networks of width 256 within k = 5 standard errors per entry (a false
    failure has probability < 1e-5 over the 18 entries)."""
    net = ik.serial(ik.FourierFeatures([[1.0, 0.5], [0.3, -1.0]]), ik.Dense(256, 1.3, 0.4),
                    ik.Erf(), ik.Scale(0.9), ik.Dense(1, 1.1, 0.2))
    x = np.array([[0.3, 0.1], [0.9, -0.4], [-0.5, 0.2]])
    L1 = pinn.laplacian(2) + 0.5 * pinn.partial(0) - 2.0 * pinn.identity()
    L2 = pinn.partial(1, 2)
    ana = pinn.kernel(net, x, None, L1, L2, get=None)
    samples = {"nngp": [], "ntk": []}
    for seed in range(40):
        _, p = net.init_fn(seed, (-1, 2))
        e = pinn.empirical_kernel(net, p, x, None, L1, L2, get=None)
        samples["nngp"].append(e.nngp)
        samples["ntk"].append(e.ntk)
    for name, arr in samples.items():
        arr = np.array(arr)
        se = arr.std(0, ddof=1) / math.sqrt(len(arr))
        assert np.all(np.abs(arr.mean(0) - getattr(ana, name)) <= 5 * se), name


# ---------------------------------------------------------------------------
# blocks, weights, spectra
# ---------------------------------------------------------------------------
def _wave_blocks(get="ntk"):
    net = ik.serial(ik.Dense(8, 1.0, 0.2), ik.Erf(), ik.Dense(8, 1.0, 0.2), ik.Erf(),
                    ik.Dense(1))
    rng = np.random.default_rng(0)
    xb = np.column_stack([rng.uniform(0, 1, 6), np.repeat([0.0, 1.0], 3)])
    x0 = np.column_stack([np.zeros(5), np.linspace(0, 1, 5)])
    xr = rng.uniform(0, 1, (12, 2))
    wave = pinn.partial(0, 2) - 4.0 * pinn.partial(1, 2)
    return pinn.ntk_blocks(net, {"u": (xb, pinn.identity()), "u_t": (x0, pinn.partial(0)),
                                 "r": (xr, wave)}, get)


@pytest.mark.parametrize("act", [ik.Erf(), ik.Tanh()], ids=repr)
def test_symmetric_blocks_from_the_upper_triangle(act, monkeypatch):
    """With x2 = None and op1 = op2 only the upper triangle is computed (in row
    chunks, on the threads of ``in_parallel``; chunks made small here so that
    there are many) and mirrored: exactly symmetric, and equal to the full
    computation with x2 = x1 up to the rounding of K(x, x') against K(x', x)
    (1e-13 of the largest entry)."""
    net = ik.serial(ik.Dense(16, 1.3, 0.2), act, ik.Dense(16, 1.1, 0.1), act, ik.Dense(1))
    x = np.random.default_rng(3).uniform(-1, 1, (23, 2))
    L = pinn.laplacian(2) + 0.5 * pinn.partial(1)
    monkeypatch.setattr(pinn, "_ROW_ENTRIES", 600)
    monkeypatch.setattr(pinn, "_MIN_CHUNK", 1)
    sym = pinn.kernel(net, x, None, L, L, get=None)
    full = pinn.kernel(net, x, x, L, L, get=None)
    for a, b in zip(sym, full):
        assert np.array_equal(a, a.T)
        assert np.abs(a - b).max() <= 1e-13 * np.abs(b).max()


def test_blocks_symmetry_and_psd():
    """K_ba = K_abᵀ exactly; the assembled K (a Gram matrix of the features
    (L_a)_x ∇_θ f) is PSD: λ_min ≥ −1e-12 λ_max (rounding of eigvalsh)."""
    B = _wave_blocks()
    assert B.matrix.shape == (23, 23)
    assert np.array_equal(B[("r", "u")], B[("u", "r")].T)
    assert np.array_equal(B.matrix, B.matrix.T)
    ev = np.linalg.eigvalsh(B.matrix)
    assert ev[0] >= -1e-12 * ev[-1]
    assert B.names == ("u", "u_t", "r")
    # a block equals the direct operator kernel of its terms
    net = ik.serial(ik.Dense(8, 1.0, 0.2), ik.Erf(), ik.Dense(8, 1.0, 0.2), ik.Erf(),
                    ik.Dense(1))
    rng = np.random.default_rng(0)
    rng.uniform(0, 1, 6)
    xr = rng.uniform(0, 1, (12, 2))
    x0 = np.column_stack([np.zeros(5), np.linspace(0, 1, 5)])
    wave = pinn.partial(0, 2) - 4.0 * pinn.partial(1, 2)
    assert np.array_equal(B[("u_t", "r")], pinn.kernel(net, x0, xr, pinn.partial(0), wave))


def test_weights_and_spectra():
    B = _wave_blocks()
    w = pinn.trace_weights(B)
    tr = {a: np.trace(B[(a, a)]) for a in B.names}
    for a in B.names:
        assert w[a] == pytest.approx(sum(tr.values()) / tr[a], rel=1e-14)
    sp = pinn.spectra(B)
    assert set(sp) == {"u", "u_t", "r", "K"}
    for a in B.names:
        assert np.all(np.diff(sp[a]) <= 0)
        assert sp[a].sum() == pytest.approx(tr[a], rel=1e-10)
    cond = pinn.condition_numbers(B)
    assert cond["u"] == pytest.approx(sp["u"][0] / sp["u"][-1])
    ones = pinn.weighted_spectrum(B, {a: 1.0 for a in B.names})
    assert np.allclose(ones, sp["K"], rtol=1e-12, atol=1e-12 * sp["K"][0])
    # per-point weights: eigenvalues of Λ^{1/2} K Λ^{1/2} = those of Λ K
    rng = np.random.default_rng(3)
    pw = {a: rng.uniform(0.5, 2.0, B.slices[a].stop - B.slices[a].start) for a in B.names}
    lam = np.concatenate([pw[a] for a in B.names])
    ref = np.sort(np.linalg.eigvals(lam[:, None] * B.matrix).real)[::-1]
    assert np.allclose(pinn.weighted_spectrum(B, pw), ref, rtol=1e-9, atol=1e-9 * ref[0])


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_bad_input():
    net = ik.serial(ik.Dense(8), ik.Erf(), ik.Dense(1))
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="order 3"):
        pinn.partial(0, 3)
    with pytest.raises(ValueError, match="order 3"):
        pinn.partial(0, 2) * pinn.partial(1)
    with pytest.raises(ValueError, match="3-dimensional"):
        pinn.kernel(net, x, None, pinn.laplacian(3))
    with pytest.raises(ValueError, match="axis 4"):
        pinn.kernel(net, x, None, None, pinn.partial(4))
    with pytest.raises(TypeError, match="op1"):
        pinn.kernel(net, x, None, "laplacian")
    with pytest.raises(ValueError, match="not smooth"):
        pinn.kernel(ik.serial(ik.Dense(8), ik.Relu(), ik.Dense(1)), x, None,
                    pinn.partial(0, 2))
    with pytest.raises(ValueError, match="not smooth"):
        pinn.kernel(ik.serial(ik.Dense(8), ik.Elu(), ik.Dense(1)), x, None, pinn.partial(0))
    # without derivatives a kinked activation is fine (the ordinary kernel)
    relu = ik.serial(ik.Dense(8), ik.Relu(), ik.Dense(1))
    assert np.allclose(pinn.kernel(relu, x + 0.3), relu.kernel(x + 0.3, None, "ntk"))
    with pytest.raises(ValueError, match="complex"):
        pinn.kernel(ik.serial(ik.Dense(8), ik.Elementwise(special.expit), ik.Dense(1)),
                    x, None, pinn.partial(0))
    with pytest.raises(ValueError, match="features"):
        pinn.kernel(net, x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="scale"):
        pinn.kernel(net, x, scale=0.0)
    with pytest.raises(TypeError, match="terms"):
        pinn.ntk_blocks(net, [])
    with pytest.raises(ValueError, match="dimension"):
        pinn.ntk_blocks(net, {"a": (x, None), "b": (np.zeros((2, 3)), None)})
    with pytest.raises(ValueError, match="weights"):
        pinn.weighted_spectrum(pinn.ntk_blocks(net, {"a": (x, None)}), {})
    # a term without points: no condition number (was an IndexError), as no trace weight
    empty = pinn.ntk_blocks(net, {"u": (x + 0.3, None), "r": (np.zeros((0, 2)),
                                                              pinn.laplacian(2))})
    with pytest.raises(ValueError, match="^term 'r' has no points: condition numbers are "
                                         "undefined"):
        pinn.condition_numbers(empty)
    with pytest.raises(ValueError, match="^term 'r' has no points: the trace weights are"):
        pinn.trace_weights(empty)


def test_operator_apply_checks_params_and_empty_inputs():
    net = ik.serial(ik.Dense(16, b_std=1.0), ik.Tanh(), ik.Dense(1))
    _, params = net.init_fn(0, (-1, 2))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    with pytest.raises(ValueError, match="params has 2 entries, the network has 3 layers"):
        pinn.operator_apply(net, params[:2], x, pinn.partial(0))
    with pytest.raises(TypeError, match="params must be the tuple returned by init_fn"):
        pinn.operator_apply(net, None, x, pinn.partial(0))
    with pytest.raises(ValueError, match="the inputs have 2 features, these params were "
                                         "made for 3"):
        pinn.operator_apply(net, net.init_fn(0, (-1, 3))[1], x, pinn.partial(0))
    z = np.zeros((0, 2))
    assert pinn.operator_apply(net, params, z, pinn.partial(0)).shape == (0, 1)
    assert pinn.kernel(net, x, z, pinn.partial(0)).shape == (5, 0)
    assert pinn.kernel(net, z, None, pinn.laplacian(2)).shape == (0, 0)
    assert pinn.empirical_kernel(net, params, x, z, pinn.partial(0)).shape == (5, 0)
    assert pinn.empirical_kernel(net, params, z, None, pinn.partial(0)).shape == (0, 0)


def test_scale_and_weights_must_be_numbers():
    net = ik.serial(ik.Dense(8), ik.Erf(), ik.Dense(1))
    x = np.zeros((3, 2))
    for kw in ({"scale": "2"}, {"scale": True}, {"shift": True}, {"shift": [1 + 1j]}):
        name = next(iter(kw))
        with pytest.raises(TypeError, match=f"^{name} must be a real scalar or one value per "
                                            r"input axis \(2\), got dtype"):
            pinn.kernel(net, x, None, pinn.partial(0), **kw)
    with pytest.raises(ValueError, match=r"^scale must be .*got shape \(3,\)"):
        pinn.kernel(net, x, None, pinn.partial(0), scale=[1.0, 2.0, 3.0])
    blocks = pinn.ntk_blocks(net, {"u": (x, None)})
    with pytest.raises(ValueError, match="weights has entries \\['r'\\] that are not terms"):
        pinn.weighted_spectrum(blocks, {"u": 1.0, "r": 2.0})
    with pytest.raises(TypeError, match="weights\\['u'\\] must be a real number"):
        pinn.weighted_spectrum(blocks, {"u": "a"})
    with pytest.raises(TypeError, match="weights must be a dict"):
        pinn.weighted_spectrum(blocks, None)
    with pytest.raises(ValueError, match="overflows float64: scale the weights down"):
        pinn.weighted_spectrum(pinn.ntk_blocks(net, {"u": (x + 3.0, None)}), {"u": 1e308})
    # Λ^½KΛ^½ finite, its eigenvalues not (K's rows are equal: λ_max = 3 max M)
    same = pinn.ntk_blocks(net, {"u": (x + 3.0, None)})
    with pytest.raises(ValueError, match=r"\(or its eigenvalues\) overflows float64: scale the "
                                         "weights down"):
        pinn.weighted_spectrum(same, {"u": 1e308 / same.matrix.max()})
    with pytest.raises(ValueError, match="^scale: the operators' coefficients"):
        pinn.kernel(net, x, None, pinn.laplacian(2), scale=1e-300)
    with pytest.raises(ValueError, match="^shift/scale: the normalised points"):
        pinn.kernel(net, x, None, pinn.partial(0), shift=-1e300, scale=1e-10)
    with pytest.raises(ValueError, match="scale must be at least"):
        pinn.kernel(net, x, None, pinn.partial(0), scale=1e-310)


def test_empirical_kernel_wrong_dimension():
    """Points of another dimension than the params were made for: a clear error
    up front, not numpy's matmul message."""
    net = ik.serial(ik.Dense(8), ik.Erf(), ik.Dense(1))
    _, params = net.init_fn(0, (-1, 2))
    with pytest.raises(ValueError, match="params\\[0\\] \\(Dense\\(8.*W must have shape "
                                         "\\(3, 8\\), got \\(2, 8\\) \\(the inputs have 3 "
                                         "features, these params were made for 2\\)"):
        pinn.empirical_kernel(net, params, np.ones((2, 3)), None, pinn.partial(0))
    bad = (params[0], params[1], (params[2][0][:5], params[2][1]))
    with pytest.raises(ValueError, match="params\\[2\\].*W must have shape \\(8, 1\\)"):
        pinn.empirical_kernel(net, bad, np.ones((2, 2)), None, pinn.partial(0))


@pytest.mark.parametrize("call, error, words", [
    (lambda: pinn.Operator([((0,), 1.0)]), TypeError, "terms must be a dict"),
    (lambda: pinn.Operator({0: 1.0}), TypeError, r"tuple of integer axes .*got 0"),
    (lambda: pinn.Operator({(0.5,): 1.0}), TypeError, r"tuple of integer axes .*got \(0.5,\)"),
    (lambda: pinn.Operator({("1",): 1.0}), TypeError, "tuple of integer axes"),
    (lambda: pinn.Operator({(True,): 1.0}), TypeError, "tuple of integer axes"),
    (lambda: pinn.Operator({(0,): "2"}), TypeError, r"coefficient of \(0,\) must be a real"),
    (lambda: pinn.Operator({(0,): True}), TypeError, "coefficient"),
    (lambda: pinn.Operator({(0,): np.inf}), ValueError, "coefficient.* must be finite"),
    (lambda: pinn.Operator({(0,): 1.0}, dim=-1), ValueError, "dim must be a positive integer"),
    (lambda: pinn.Operator({(0,): 1.0}, dim="2"), TypeError, "dim must be a positive integer"),
    (lambda: pinn.Operator({(0,): 1.0}, dim=2.0), TypeError, "dim must be a positive integer"),
    (lambda: pinn.Operator({(2,): 1.0}, dim=2), ValueError, "axis 2 does not exist on dim=2"),
    (lambda: pinn.partial(0.0), TypeError, "partial: axis must be an integer >= 0"),
    (lambda: pinn.partial(0, -1), ValueError, "partial: order must be an integer >= 0"),
    (lambda: pinn.laplacian(10 ** 7), ValueError, "laplacian: dim must be at most 10000"),
    (lambda: pinn.partial(0) * np.array([1.0, 2.0]), TypeError,
     "an Operator multiplies another Operator or a real number, got ndarray"),
    (lambda: np.array([1.0, 2.0]) * pinn.partial(0), TypeError,
     "an Operator multiplies another Operator or a real number, got ndarray"),
])
def test_operator_arguments_are_checked(call, error, words):
    """Axes, coefficients and dim were cast with int() / float(): (0.5,) was
    read as axis 0, "2" as the coefficient 2, dim never checked."""
    with pytest.raises(error, match=words):
        call()


def test_operator_takes_numpy_integers_and_reals():
    """The checks accept NumPy scalars as the plain ones (axes sorted)."""
    op = pinn.Operator({(1, np.int64(0)): np.float32(2.0), (): 1}, dim=np.int64(2))
    assert op.terms == {(0, 1): 2.0, (): 1.0} and op.dim == 2


def test_closed_form_variance_beyond_the_jets_range_is_an_error():
    """Derivative kernels of Erf (and the other closed forms whose jets cancel
    at x = x') lose accuracy as the pre-activation variance grows and are NaN
    from ~1e16 (|x| ~ 1e10 here); beyond the stated range they are an error,
    while net.kernel (no derivatives) stays exact."""
    net = ik.serial(ik.Dense(64, b_std=0.5), ik.Erf(), ik.Dense(64, b_std=0.5), ik.Erf(),
                    ik.Dense(1))
    x = np.array([[1.0, 0.5], [-0.3, 0.8]])
    for s in (1e4, 1e10):
        with pytest.raises(ValueError, match="Erf\\(1, 1, 0\\): pre-activation variance .* "
                                             "exceeds 5e\\+05, the range of derivative"):
            pinn.kernel(net, x * s, None, pinn.laplacian(2), pinn.laplacian(2))
    assert np.isfinite(pinn.kernel(net, x * 1e10)).all()   # no derivatives: net.kernel
    assert np.isfinite(pinn.kernel(net, x * 100, None, pinn.partial(0))).all()
    with pytest.raises(ValueError, match="Gelu\\(\\): pre-activation variance"):
        pinn.kernel(ik.serial(ik.Dense(4), ik.Gelu(), ik.Dense(1)), x * 1e4, None,
                    pinn.partial(0))


# ---------------------------------------------------------------------------
# examples (small versions)
# ---------------------------------------------------------------------------
def _load_example(name):
    path = os.path.join(HERE, "..", "examples", name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["pinn_poisson.py", "pinn_wave.py"])
def test_examples_small(name, tmp_path):
    res = _load_example(name).main(n=8, out_dir=str(tmp_path))
    pngs = [f for f in os.listdir(tmp_path) if f.endswith(".png")]
    assert pngs
    assert all(v > 0 and math.isfinite(v) for v in res["weights"].values())


def test_empirical_operators_of_kinked_activations():
    """Kinked activations take φ and φ' from the activation itself (a contour
    average would smooth the kink): the identity operator reproduces apply_fn
    and the empirical NTK exactly; piecewise-linear φ has φ'' = 0 almost
    everywhere, so first derivatives match central differences (step 1e-6:
    error ~1e-10, no kink within a step of these points) and Laplacians
    vanish; other kinked φ refuse derivatives."""
    x = np.random.default_rng(3).uniform(-1, 1, (6, 2))
    for act in (ik.Relu(), ik.LeakyRelu(0.1), ik.Abs(), ik.Elu(1.0), ik.Elementwise(np.abs)):
        net = ik.serial(ik.Dense(16, 1.5, 0.3), act, ik.Dense(2))
        _, p = net.init_fn(np.random.default_rng(2), (-1, 2))
        # the same φ, φ' and matrix products in another order: rounding only
        np.testing.assert_allclose(pinn.operator_apply(net, p, x, pinn.identity()),
                                   net.apply_fn(p, x), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(
            pinn.empirical_kernel(net, p, x, None, pinn.identity(), pinn.identity()),
            ik.empirical_ntk_fn(net)(x, None, p), rtol=1e-13, atol=1e-15)
    net = ik.serial(ik.Dense(16, 1.5, 0.3), ik.Relu(), ik.Dense(1))
    _, p = net.init_fn(0, (-1, 2))
    e = np.array([1e-6, 0.0])
    fd = (net.apply_fn(p, x + e) - net.apply_fn(p, x - e)) / 2e-6
    np.testing.assert_allclose(pinn.operator_apply(net, p, x, pinn.partial(0)), fd,
                               rtol=0, atol=1e-8)
    assert np.array_equal(pinn.operator_apply(net, p, x, pinn.laplacian(2)), np.zeros((6, 1)))
    elu = ik.serial(ik.Dense(16, 1.5, 0.3), ik.Elu(1.0), ik.Dense(1))
    with pytest.raises(ValueError, match="not piecewise linear"):
        pinn.operator_apply(elu, elu.init_fn(0, (-1, 2))[1], x, pinn.partial(0))


def _tanh_d(n, u):
    """tanh⁽ⁿ⁾(u) = P_n(tanh u), P_{n+1} = P_n' (1 − t²)."""
    P = np.polynomial.Polynomial([0.0, 1.0])
    for _ in range(n):
        P = P.deriv() * np.polynomial.Polynomial([1.0, 0.0, -1.0])
    return P(np.tanh(u))


def test_cancellation_at_large_variance_is_estimated_and_warned():
    """One Tanh layer, W_std = 3: u(x) = 3 w x + ½ β, (w, β) ~ N(0, I), so
    ∂²ₓ∂²ₓ' Σ = 81 E[w⁴ tanh''(u) tanh''(u')], by a tensor trapezoidal rule
    (geometrically convergent: steps 0.01 and 0.007 agree to 1e-14).  At
    |x| ≤ 3 (variance ≤ 81) the Taylor series cancels: the kernel warns, and
    its estimate (expectations perturbed by 2e-13) bounds the true error; at
    |x| ≤ 0.3 (variance ≤ 1.06) it is 1e-11-accurate and silent."""
    net = ik.serial(ik.Dense(16, W_std=3.0, b_std=0.5), ik.Tanh(), ik.Dense(1, b_std=0.2))
    d2 = pinn.partial(0, 2)
    w = np.arange(-10, 10.005, 0.007)
    b = np.arange(-10, 10.05, 0.1)
    wg, bg = np.meshgrid(w, b, indexing="ij")
    weight = np.outer(0.007 * np.exp(-w ** 2 / 2), 0.1 * np.exp(-b ** 2 / 2)) / (2 * np.pi)

    def reference(x):
        u = 3.0 * wg * x + 0.5 * bg
        return 81.0 * np.sum(weight * wg ** 4 * _tanh_d(2, u) ** 2)

    x = np.array([[1.0], [2.0], [3.0]])
    with pytest.warns(pinn.PinnAccuracyWarning, match="estimated error of up to") as rec:
        k = pinn.kernel(net, x, None, d2, d2, get="nngp")
    estimate = float(re.search(r"up to ([0-9.e+-]+) of", str(rec[0].message)).group(1))
    actual = max(abs(k[i, i] - reference(x[i, 0])) for i in range(3)) / np.abs(k).max()
    assert 1e-9 < actual <= estimate, (actual, estimate)
    small = np.array([[0.1], [0.3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        k = pinn.kernel(net, small, None, d2, d2, get="nngp")
    for i in range(2):
        assert abs(k[i, i] - reference(small[i, 0])) <= 1e-11 * abs(k[i, i])


def test_derivative_kernel_overflow_is_a_range_error():
    net = ik.serial(ik.Dense(8, W_std=30.0), ik.Exp(), ik.Dense(1))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 2))
    with pytest.raises(ik.KernelRangeError, match="overflows float64"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")      # no NumPy overflow warnings either
            pinn.kernel(net, x, None, pinn.laplacian(2), pinn.laplacian(2))
    # order 0 too: operators' coefficients that overflow the ordinary kernel
    big, net = pinn.identity() * 1e200, ik.serial(ik.Dense(8), ik.Erf(), ik.Dense(1))
    for call in (lambda: pinn.kernel(net, x, x[:2], big, big),
                 lambda: pinn.ntk_blocks(net, {"u": (x, big)})):
        with pytest.raises(ik.KernelRangeError, match="or the operators' coefficients are "
                                                      "too large"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                call()


def test_test_mode_dropout_is_the_identity():
    """Dropout(mode='test') is the identity (as in neural-tangents): the same
    analytic and finite-width operator kernels as without it; train mode,
    which draws masks, is refused."""
    with_dropout = ik.serial(ik.Dense(8, 1.2, 0.3), ik.Erf(), ik.Dropout(0.8, mode="test"),
                             ik.Dense(8, 1.1, 0.2), ik.Tanh(), ik.Dense(1))
    plain = ik.serial(ik.Dense(8, 1.2, 0.3), ik.Erf(), ik.Dense(8, 1.1, 0.2), ik.Tanh(),
                      ik.Dense(1))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 2))
    lap = pinn.laplacian(2)
    assert np.array_equal(pinn.kernel(with_dropout, x, None, lap, lap),
                          pinn.kernel(plain, x, None, lap, lap))
    _, params = with_dropout.init_fn(0, (-1, 2))
    kept = tuple(p for p, layer in zip(params, with_dropout.layers)
                 if not isinstance(layer, ik.Dropout))
    assert np.array_equal(pinn.empirical_kernel(with_dropout, params, x, None, lap, lap),
                          pinn.empirical_kernel(plain, kept, x, None, lap, lap))
    with pytest.raises(TypeError, match=r"Dropout\(mode='test'\).* layer 2 is Dropout"):
        pinn.kernel(ik.serial(ik.Dense(8), ik.Tanh(), ik.Dropout(0.8), ik.Dense(1)), x, None,
                    lap, lap)


def test_user_function_named_like_a_builtin_is_not_taken_for_it():
    """A user's φ = sin labelled "Tanh" gets sin's kernels, analytic (the
    quadrature, to its accuracy, against the closed form) and finite-width
    (its own derivatives), not tanh's fast evaluators."""
    fake = ik.Elementwise(np.sin, name="Tanh")
    x = np.array([[0.1], [0.5], [0.9]])
    L = pinn.partial(0, 2)
    k_fake = pinn.kernel(ik.serial(ik.Dense(8, 1.0, 0.5), fake, ik.Dense(1)), x, None, L, L)
    k_sin = pinn.kernel(ik.serial(ik.Dense(8, 1.0, 0.5), ik.Sin(), ik.Dense(1)), x, None, L, L)
    assert np.abs(k_fake - k_sin).max() <= 1e-10 * np.abs(k_sin).max()
    z = np.linspace(-3.0, 3.0, 7)
    assert np.allclose(pinn._act_derivs(fake, z, True), ik.Sin().derivs(z), rtol=0, atol=1e-13)


def test_quadrature_range_error_says_how_to_rescale():
    """Numerically integrated activations take pre-activation variances up to
    128: beyond, the error says how to rescale, and shift/scale to the unit
    box then work (a [0, 20]² domain, first derivatives)."""
    net = ik.serial(ik.Dense(16, W_std=1.3, b_std=0.5), ik.Tanh(), ik.Dense(1))
    x = np.random.RandomState(0).uniform(0, 20, (4, 2))
    with pytest.raises(ik.KernelRangeError, match=r"exceeds 128.*shift=, scale="):
        pinn.kernel(net, x, None, pinn.partial(0), None)
    k = pinn.kernel(net, x, None, pinn.partial(0), None, shift=10, scale=10)
    assert k.shape == (4, 4) and np.isfinite(k).all()


def test_overflowing_finite_networks_are_an_error():
    """A finite network's jets that overflow float64 (its parameters are
    checked finite) are a KernelRangeError, not NaN with RuntimeWarnings."""
    x = np.random.default_rng(0).standard_normal((3, 2))
    net = ik.serial(ik.Dense(4), ik.Erf(), ik.Dense(4), ik.Erf(), ik.Dense(1))
    _, p = net.init_fn(0, (-1, 2))
    big = tuple(tuple(None if a is None else a * 1e200 for a in layer) for layer in p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (lambda: pinn.empirical_kernel(net, big, x, None, pinn.laplacian(2)),
                     lambda: pinn.operator_apply(net, big, x, pinn.laplacian(2))):
            with pytest.raises(ik.KernelRangeError, match="overflow float64"):
                call()
