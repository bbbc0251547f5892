"""Numeric activations (Mehler series + graded quadrature, ``_numeric.py``).

Reference: nested adaptive ``scipy.integrate.quad`` on the conditional form
    E[g(u) g(v)] = ∫ g(s2 y) ∫ g(s1 (ρ y + c w)) γ(w) dw γ(y) dy,
i.e. conditioning on v (the library conditions on u), split at the kinks and
at their images, requested to 1e-13.  Errors are measured on the
Cauchy–Schwarz scale √(E[g(u)²] E[g(v)²]), the only meaningful scale when the
expectation crosses zero (odd φ at ρ ≈ 0); at ρ = ±1 it is the relative error.
"""
import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special

import infkernel as ik
from infkernel import _numeric
from infkernel._duals import correlation

SQ2PI = math.sqrt(2 * math.pi)

#: (activation, kinks) for every built-in numeric activation
BUILTINS = [(ik.Tanh(), ()), (ik.Sigmoid(), ()), (ik.Softplus(), ()), (ik.Silu(), ()),
            (ik.Elu(0.7), (0.0,)), (ik.Selu(), (0.0,)), (ik.Mish(), ()),
            (ik.SReLU(), (0.0, 1.0)), (ik.S2ReLU(), (0.0, 1.0))]

#: (q1, q2, ρ) over the guaranteed range, edges included
CASES = [(1.0, 1.0, 0.3), (1e-4, 1e-4, -0.7), (100.0, 100.0, 0.5), (100.0, 1e-2, 0.9),
         (2.0, 50.0, -1.0), (30.0, 30.0, 1.0), (5.0, 0.3, 0.97), (80.0, 100.0, 0.99999),
         (0.5, 3.0, 0.0)]


def ref(g, q1, q2, rho, kinks):
    """E[g(u)g(v)] by nested adaptive quadrature (conditioning on v)."""
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    c = math.sqrt(max(1 - rho * rho, 0.0))

    def inner(y):
        m, sig = s1 * rho * y, s1 * c
        if sig == 0:
            return g(m)
        pts = sorted(p for p in [(t - m) / sig for t in kinks] + [-m / sig] if -10 < p < 10)
        return integrate.quad(lambda w: g(m + sig * w) * math.exp(-w * w / 2), -10, 10,
                              points=pts or None, epsabs=1e-16, epsrel=1e-13,
                              limit=400)[0] / SQ2PI
    pts = [0.0] + [t / s2 for t in kinks]
    if s1 * abs(rho) > 0:
        pts += [t / (s1 * rho) for t in kinks] + [0.0]
    pts = sorted(set(p for p in pts if -10 < p < 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return integrate.quad(lambda y: g(s2 * y) * inner(y) * math.exp(-y * y / 2), -10, 10,
                              points=pts or None, epsabs=1e-16, epsrel=1e-13,
                              limit=400)[0] / SQ2PI


@pytest.mark.parametrize("act,kinks", BUILTINS, ids=lambda a: getattr(a, "name", ""))
def test_builtin_against_reference(act, kinks):
    # 1e-10 for smooth φ, 1e-7 with kinks (issue 3); the reference itself is
    # good to ~1e-12 (smooth) / ~1e-9 (derivative duals of kinked φ at ρ = ±1)
    tol = 1e-7 if kinks else 1e-10
    fn = lambda x: float(act.fn(np.float64(x)))      # noqa: E731
    dfn = lambda x: float(act.dfn(np.float64(x)))    # noqa: E731
    for q1, q2, rho in CASES:
        k, kd = _numeric.duals(act.tables[0], q1, rho * math.sqrt(q1 * q2), q2)[:, 0]
        for val, g in ((k, fn), (kd, dfn)):
            scale = math.sqrt(ref(g, q1, q1, 1.0, kinks) * ref(g, q2, q2, 1.0, kinks))
            r = ref(g, q1, q2, rho, kinks)
            assert abs(val - r) <= tol * scale, (act, q1, q2, rho, val, r)


@pytest.mark.parametrize("act,kinks", [
    (ik.Tanh(), ()), (ik.Softplus(), ()), (ik.Mish(), ()),
    (ik.Elementwise(lambda x: np.tanh(4 * x)), ()), (ik.Elu(0.7), (0.0,)),
    (ik.SReLU(), (0.0, 1.0))], ids=lambda a: repr(a) if a else "")
def test_fallback_near_unit_correlation_against_reference(act, kinks):
    """The nested quadrature alone (no Mehler series) where its inner rule is
    Gauss–Hermite (σ = s2√(1-ρ²) ≤ λ/2.5 and no kink near: correlations
    near ±1, as for low-dimensional inputs; the graded rule elsewhere),
    against the adaptive reference: 1e-10 (smooth) / 1e-7 (kinks) of the
    Cauchy–Schwarz scale, as everywhere."""
    tol = 1e-7 if kinks else 1e-10
    tab = act.tables[0]
    fn = lambda x: float(act.fn(np.float64(x)))      # noqa: E731
    dfn = lambda x: float(act.dfn(np.float64(x)))    # noqa: E731
    cases = [(2.0, 3.0, 0.999), (0.5, 0.4, -0.9999), (9.0, 6.0, 0.99999),
             (30.0, 20.0, 0.99995), (1.5, 1.2, 0.99), (4.0, 3.0, -0.98), (1.0, 1.1, 0.9)]
    sigmas = [math.sqrt(q2 * (1 - rho * rho)) / tab[6] for _, q2, rho in cases]
    assert sum(s <= _numeric.GH_SIG for s in sigmas) >= 5    # mostly Gauss–Hermite
    for q1, q2, rho in cases:
        s1, s2 = math.sqrt(q1), math.sqrt(q2)
        k, kd = _numeric.duals_quadrature(tab, s1, s2, rho)
        for val, g in ((k, fn), (kd, dfn)):
            scale = math.sqrt(ref(g, q1, q1, 1.0, kinks) * ref(g, q2, q2, 1.0, kinks))
            assert abs(val - ref(g, q1, q2, rho, kinks)) <= tol * scale, (act, q1, q2, rho)


def _tanh4(x):
    return np.tanh(4 * x)


def _cube(x):
    return x ** 3


@pytest.mark.parametrize("act,kinks,df", [(a, k, a.dfn) for a, k in BUILTINS] + [
    (ik.Elementwise(_tanh4), (), lambda x: 4 / np.cosh(4 * x) ** 2),
    (ik.Elementwise(_cube), (), lambda x: 3 * x ** 2)], ids=lambda a: repr(a) if a else "")
def test_table_values_against_the_function(act, kinks, df):
    """The table (per panel the powers of the panel coordinate, Estrin's
    scheme) against φ and φ' themselves at random points of [-U, U], panel
    edges, both sides of the kinks and (for linear tails) far beyond.  The
    fit is certified to 1e-13 of the local coefficients plus φ's scale
    (interpolation error ≤ twice that): 4e-13 of |φ| + scale; a derivative
    obtained by differentiating φ's fit (user functions without df) 400
    times that (NFIT²) on its local scale |φ'| + (|φ| + scale)/(H/2), as in
    ``_check_derivative``; beyond ±U the tails' lines, checked to 1e-12 when
    the table was built."""
    tab = act.tables[0]
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-8, 8, 4000), rng.uniform(-_numeric.U, _numeric.U, 2000),
                        _numeric.H * np.arange(-64, 65) + 1e-12,
                        np.asarray(kinks) + 1e-9, np.asarray(kinks) - 1e-9])
    if tab[_numeric.HDR_QMAX] > _numeric.Q_MAX:      # the tails' lines beyond ±U
        x = np.concatenate([x, rng.uniform(-1e6, 1e6, 200)])
    got = np.array([_numeric.tab_eval(tab, 0, v) for v in x])
    grid = np.linspace(-8, 8, 1001)
    phi, scale = np.asarray(act.fn(x), dtype=float), np.abs(act.fn(grid)).max()
    dphi = np.asarray(df(x), dtype=float)
    dlocal = (np.abs(dphi) + np.abs(df(grid)).max() if df is act.dfn
              else 400 * (np.abs(dphi) + (np.abs(phi) + scale) / (_numeric.H / 2)))
    tol = np.where(np.abs(x) <= _numeric.U, 4e-13, 1e-12)   # beyond: _tails' check
    for col, want, local in ((0, phi, np.abs(phi) + scale), (1, dphi, dlocal)):
        err = np.abs(got[:, col] - want) / local / tol
        assert err.max() <= 1, (col, x[err.argmax()], err.max())


@pytest.mark.parametrize("act,kinks,tol", [
    (ik.Tanh(), (), 2e-12), (ik.Softplus(), (), 2e-12), (ik.Sigmoid(), (), 2e-12),
    (ik.Elu(0.7), (0.0,), 2e-12), (ik.SReLU(), (0.0, 1.0), 2e-12),
    (ik.Elementwise(_tanh4), (), 2e-11)], ids=lambda a: repr(a) if a else "")
def test_inner_rules_against_adaptive_quadrature(act, kinks, tol):
    """The fallback's inner integral E[φ(m + σw)], E[φ'(m + σw)] at σ just
    inside each Gauss–Hermite rule's range (8, 16, 32, 64 nodes) and beyond
    (graded rule), means near and far from the kinks, against adaptive
    quadrature of φ itself: 2e-12 of φ's scale for the built-ins (the
    table's 4e-13; the rules err by ≤ 6e-16 at the true λ); 2e-11 for
    tanh(4x), whose poles lie nearer (π/8) than the λ = 0.5 assumed for
    user functions (measured 4e-12 for its derivative)."""
    tab = act.tables[0]
    lam = tab[6]
    buf = np.empty(8 * _numeric.MAX_BREAKS * 64)
    scale = np.abs(act.fn(np.linspace(-10, 10, 2001))).max()
    dscale = np.abs(act.dfn(np.linspace(-10, 10, 2001))).max()
    for frac in [*_numeric.GH_SIGS, 0.6, 0.012]:
        sig = 0.999 * frac * lam
        for m in (-2.3, -0.4, 0.0, 0.05, 0.37, 1.0, 3.1):
            h, hd = _numeric._inner(tab, 0, m, sig, buf)
            for val, g, sc in ((h, act.fn, scale), (hd, act.dfn, dscale)):
                pts = sorted(p for p in [(t - m) / sig for t in kinks] if -12 < p < 12)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    want = integrate.quad(lambda w: float(g(m + sig * w)) * math.exp(-w * w / 2),
                                          -12, 12, points=pts or None, epsabs=1e-16,
                                          epsrel=1e-14, limit=400)[0] / SQ2PI
                assert abs(val - want) <= tol * sc, (frac, m, val, want)


def _net(act, par="ntk", depth=2):
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(64, 1.3, 0.2, parameterization=par), act]
    return ik.serial(*layers, ik.Dense(1, 1.1, 0.1, parameterization=par))


def _inputs(n=24, d=5, seed=0):
    """Points with norms spread over two decades (input variances ~1e-3..1e2),
    plus a duplicate and a negated point (ρ = ±1 exactly)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x *= math.sqrt(d) * np.logspace(-1.5, 0.8, n)[:, None] / np.linalg.norm(x, axis=1)[:, None]
    x[1] = x[0]
    x[2] = -x[3]
    return x


@pytest.mark.parametrize("user,closed,tol", [
    # erf, sin: smooth -> 1e-10 relative; relu: kinks -> 1e-7
    (lambda: ik.Elementwise(special.erf), lambda: ik.Erf(), 1e-10),
    (lambda: ik.Elementwise(np.sin, np.cos), lambda: ik.Sin(), 1e-10),
    (lambda: ik.Elementwise(lambda x: x * special.ndtr(x)), lambda: ik.Gelu(), 1e-10),
    (lambda: ik.Elementwise(lambda x: np.maximum(x, 0.0)), lambda: ik.Relu(), 1e-7),
    (lambda: ik.ElementwiseNumerical(special.erf, deg=25), lambda: ik.Erf(), 1e-10),
])
def test_elementwise_matches_closed_forms(user, closed, tol):
    x = _inputs()
    a = _net(user()).kernel(x)
    b = _net(closed()).kernel(x)
    for u, c in zip(a, b):
        np.testing.assert_allclose(u, c, rtol=0, atol=tol * np.abs(c).max())


def test_scalar_only_function_and_numba():
    """Scalar-only functions are tabulated point by point, silently (NumPy < 2
    lets math.tanh take a 1-element array, with a DeprecationWarning)."""
    numba = pytest.importorskip("numba")
    f = numba.njit(lambda x: math.tanh(x))
    x = _inputs(10)
    ref_k = _net(ik.Tanh()).kernel(x)
    for fn, df in ((math.tanh, None), (f, None), (math.tanh, lambda v: 1 - math.tanh(v) ** 2)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            k = _net(ik.Elementwise(fn, df)).kernel(x)
        assert not seen, [str(w.message) for w in seen]
        # derivative from Chebyshev interpolants: ~1e-13, well within 1e-10
        np.testing.assert_allclose(k.ntk, ref_k.ntk, rtol=1e-10)
        np.testing.assert_allclose(k.nngp, ref_k.nngp, rtol=1e-10)


@pytest.mark.parametrize("act,kinks", BUILTINS, ids=lambda a: getattr(a, "name", ""))
def test_invariants(act, kinks):
    # the cross path's GEMM q12 may differ from q11 in the last bits; the
    # correlation snaps to 1 and equal variances take E[φ²], E[φ'²] of the
    # diagonal pass: the NNGP diagonal is exact, the NTK's carries the few-ulp
    # difference of Θ¹ = q12 through its linear recursion
    tol = 1e-7 if kinks else 1e-10
    x = _inputs(20)
    y = _inputs(7, seed=1)
    net = _net(act)
    k = net.kernel(x)
    for A in k:
        assert np.all(np.isfinite(A))
        np.testing.assert_array_equal(A, A.T)                       # symmetric path mirrors
        # PSD up to rounding of a Gram of ~1e2 scale entries
        assert np.linalg.eigvalsh(A).min() >= -1e-9 * np.abs(A).max()
    kxx = net.kernel(x, x.copy())                                   # cross path
    off = ~np.eye(len(x), dtype=bool)
    for A, B in zip(k, kxx):
        np.testing.assert_allclose(A[off], B[off], rtol=tol, atol=tol * np.abs(A).max())
    np.testing.assert_array_equal(np.diag(k.nngp), np.diag(kxx.nngp))
    np.testing.assert_allclose(np.diag(k.ntk), np.diag(kxx.ntk), rtol=1e-14)
    dg = net.diag(x)
    for A, v in zip(k, dg):
        np.testing.assert_array_equal(np.diag(A), v)
    dup = [3, 7, 3]                     # duplicate points in a cross kernel
    kd = net.kernel(x, x[dup])
    np.testing.assert_array_equal(kd.nngp[dup, [0, 1, 2]], dg.nngp[dup])
    np.testing.assert_allclose(kd.ntk[dup, [0, 1, 2]], dg.ntk[dup], rtol=1e-14)
    kxy = net.kernel(x, y)
    kyx = net.kernel(y, x)
    for A, B in zip(kxy, kyx):
        np.testing.assert_allclose(A, B.T, rtol=1e-12, atol=1e-13 * np.abs(A).max())


def test_mixed_parameterizations_dtypes_out():
    x = _inputs(15)
    net = ik.serial(ik.Dense(32, 1.2, 0.1, parameterization="standard"), ik.Tanh(),
                    ik.Dense(32, 1.0, 0.1, parameterization="standard"), ik.Relu(),
                    ik.Dense(16, 1.4, 0.0, parameterization="standard"), ik.Softplus(),
                    ik.Dense(1, parameterization="standard"))
    k64 = net.kernel(x)
    k32 = net.kernel(x, dtype=np.float32)
    for a, b in zip(k64, k32):
        assert b.dtype == np.float32
        # computed in float64, rounded once on store: 2^-24 relative
        np.testing.assert_allclose(b, a, rtol=2 ** -23, atol=0)
    out = np.empty((15, 15))
    net.kernel(x, get="ntk", out=out)
    np.testing.assert_array_equal(out, k64.ntk)


def test_deep_network_matches_quadrature_recursion():
    """Depth-3 tanh vs the same recursion with every expectation by the nested
    graded quadrature alone (validated against scipy above), no Mehler series."""
    x = np.random.default_rng(3).standard_normal((12, 4))
    net = ik.serial(*[l for _ in range(3) for l in (ik.Dense(8, 1.5, 0.05), ik.Tanh())],
                    ik.Dense(1, 1.5, 0.05))
    k = net.kernel(x)
    tab = ik.Tanh().tables[0]
    q = 2.25 * x @ x.T / 4 + 0.0025
    th = q.copy()
    for _ in range(3):
        d = np.sqrt(np.diag(q))
        kk, kd = np.empty_like(q), np.empty_like(q)
        for i in range(len(x)):
            for j in range(len(x)):
                rho = 1.0 if i == j else q[i, j] / (d[i] * d[j])
                kk[i, j], kd[i, j] = _numeric.duals_quadrature(tab, d[i], d[j], rho)
        q = 2.25 * kk + 0.0025
        th = q + 2.25 * kd * th
    # both ~1e-13 per expectation; three layers, Θ amplified by ≤ 2.25 per layer;
    # errors are absolute on the scale of the diagonal (entries near 0 cancel)
    np.testing.assert_allclose(k.nngp, q, rtol=1e-11, atol=1e-12 * q.max())
    np.testing.assert_allclose(k.ntk, th, rtol=1e-11, atol=1e-12 * th.max())


def test_df_none_agrees_with_given_df():
    x = _inputs(10)
    a = _net(ik.Elementwise(lambda t: np.log1p(np.exp(t)))).kernel(x)
    b = _net(ik.Softplus()).kernel(x)
    for u, c in zip(a, b):
        np.testing.assert_allclose(u, c, rtol=1e-10)


def test_mehler_and_quadrature_agree_where_both_apply():
    tab = ik.Tanh().tables[0]
    for q1, q2, rho in [(1.0, 2.0, 0.4), (0.3, 0.3, -0.8), (2.0, 1.0, 0.95)]:
        k, kd = _numeric.duals(tab, q1, rho * math.sqrt(q1 * q2), q2)[:, 0]
        kq, kdq = _numeric.duals_quadrature(tab, math.sqrt(q1), math.sqrt(q2), rho)
        assert abs(k - kq) < 1e-12 and abs(kd - kdq) < 1e-12


# ---------------------------------------------------------------- bad input
def test_bad_user_functions():
    def boom(x):
        raise RuntimeError("nope")
    with pytest.raises(ValueError, match="Elementwise\\(boom\\).*RuntimeError"):
        ik.Elementwise(boom)
    with pytest.raises(ValueError, match="returned (nan|inf)"):
        ik.Elementwise(lambda x: np.log(x))
    with pytest.raises(TypeError, match="real scalar"):
        ik.Elementwise(lambda x: (x, x))
    with pytest.raises(TypeError, match="callable"):
        ik.Elementwise(3.0)
    with pytest.raises(ValueError, match="not smooth on"):
        ik.Elementwise(lambda x: np.abs(x - 0.3))     # kink off the 1/8 grid
    with pytest.raises(ValueError, match="deg"):
        ik.ElementwiseNumerical(np.tanh, deg=0)
    with pytest.raises(TypeError, match="alpha"):
        ik.Elu("1")
    with pytest.raises(ValueError, match="Elu: alpha must be at most 1e\\+150"):
        ik.Elu(1e200)         # alpha² would overflow, as Dense's W_std
    # neural-tangents' Elementwise(fn, nngp_fn) (a second argument of two or
    # more required parameters) is checked as nngp_fn: these are wrong
    for wrong in (lambda cov12, var1, var2: cov12, lambda cov12, var1, var2=None: cov12,
                  np.vectorize(lambda cov12, var1, var2: cov12)):
        with pytest.raises(ValueError, match="nngp_fn\\(cov12="):
            ik.Elementwise(np.tanh, wrong)
    with pytest.raises(TypeError, match="nngp_fn= is given too"):
        ik.Elementwise(np.tanh, lambda cov12, var1, var2: cov12, nngp_fn=lambda c, a, b: c)


def test_neural_tangents_closed_form_duals_are_checked():
    """neural-tangents' ``nngp_fn`` / ``d_nngp_fn`` are checked against the
    kernel computed from ``fn`` (Williams' arcsine kernel of erf and its
    derivative here): consistent ones pass, others are an error rather than
    a silently different kernel; a kernel-only activation is refused."""
    def nngp(c, v1, v2):
        return 2 / np.pi * np.arcsin(2 * c / np.sqrt((1 + 2 * v1) * (1 + 2 * v2)))

    def d_nngp(c, v1, v2):
        return 4 / np.pi / np.sqrt((1 + 2 * v1) * (1 + 2 * v2) - 4 * c * c)
    x = np.linspace(-1, 1, 7)
    ported = ik.Elementwise(special.erf, nngp_fn=nngp, d_nngp_fn=d_nngp)
    assert np.array_equal(ported.fn(x), special.erf(x))
    # neural-tangents' positional order, as its docstring example writes it
    positional = ik.Elementwise(special.erf, nngp, d_nngp)
    xs = np.random.default_rng(0).standard_normal((4, 3))
    net = [ik.serial(ik.Dense(5, 1.2, 0.1), a, ik.Dense(1)) for a in (ported, positional)]
    np.testing.assert_array_equal(net[0].kernel(xs).ntk, net[1].kernel(xs).ntk)
    with pytest.raises(ValueError, match="nngp_fn\\(cov12=0.5, var1=1, var2=1\\) = 0.5, but"):
        ik.Elementwise(special.erf, nngp_fn=lambda c, v1, v2: c)
    with pytest.raises(ValueError, match="d_nngp_fn.*fix d_nngp_fn or drop it"):
        ik.Elementwise(special.erf, nngp_fn=nngp, d_nngp_fn=lambda c, v1, v2: 1.01 * d_nngp(c, v1, v2))
    with pytest.raises(TypeError, match="fn .* is required"):
        ik.Elementwise(nngp_fn=nngp, d_nngp_fn=d_nngp)


def test_variance_outside_range_fails_loudly():
    # a user function not linear beyond the table: variances up to 128
    net = ik.serial(ik.Dense(4, 20.0), ik.Elementwise(np.sin, np.cos, name="Sin"))
    with pytest.raises(ValueError, match=r"Sin.*guaranteed range \[0, 128\].*not constant or "
                                         r"linear"):
        net.kernel(np.ones((3, 2)))
    with pytest.raises(ValueError, match="guaranteed range"):
        net.diag(np.ones((3, 2)))
    # the built-ins: up to 1e20
    net = ik.serial(ik.Dense(4, 2e10), ik.Tanh())
    with pytest.raises(ik.KernelRangeError, match=r"Tanh\(\).*4e\+20.*\[0, 1e\+20\]"):
        net.kernel(np.ones((3, 2)))


def _quad_pieces(f, a, b, marks):
    cuts = [a] + sorted(p for p in set(marks) if a < p < b) + [b]
    return sum(integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-13, limit=400)[0]
               for lo, hi in zip(cuts[:-1], cuts[1:]))


def ref_large(g, q1, q2, rho, kinks):
    """E[g(u)g(v)] at any variance: nested adaptive quadrature in g's own
    variables (v, then u given v), where g's features have width ~1 and the
    Gaussian weights are smooth, split at the kinks and at ±1, ±40 (where
    tanh-like functions reach their tails)."""
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    c = math.sqrt(max(1 - rho * rho, 0.0))
    marks = list(kinks) + [-40.0, -1.0, 0.0, 1.0, 40.0]

    def inner(v):
        m, sig = s1 * rho * v / s2, s1 * c
        if sig == 0:
            return g(m)
        return _quad_pieces(lambda t: g(t) * math.exp(-0.5 * ((t - m) / sig) ** 2),
                            m - 10 * sig, m + 10 * sig, marks) / (sig * SQ2PI)
    pts = marks + ([s2 / (s1 * rho) * t for t in marks] if rho else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _quad_pieces(lambda v: g(v) * inner(v) * math.exp(-0.5 * (v / s2) ** 2),
                            -10 * s2, 10 * s2, pts) / (s2 * SQ2PI)


@pytest.mark.parametrize("act,kinks", [(ik.Tanh(), ()), (ik.Softplus(), ()),
                                       (ik.Elu(0.7), (0.0,))], ids=["Tanh", "Softplus", "Elu"])
def test_large_variances_against_reference(act, kinks):
    """Input variances far beyond the table (φ continued by its end lines):
    the same accuracy as inside.  ρ is taken as the library forms it from
    q12 (near ρ = 1 at large variance the result's condition number in ρ
    reaches ~1e6: one ulp of ρ moves it by ~1e-10)."""
    tol = 1e-7 if kinks else 1e-10
    fn = lambda x: float(act.fn(np.float64(x)))      # noqa: E731
    dfn = lambda x: float(act.dfn(np.float64(x)))    # noqa: E731
    assert act.tables[0][_numeric.HDR_QMAX] == _numeric.Q_TAIL_MAX
    for q1, q2, rho in [(1e3, 5e2, 0.3), (1e8, 4e7, 0.9999999), (1e12, 1e12, -0.97),
                        (1e20, 3e19, 0.999), (1e6, 1e-2, 0.9)]:
        q12 = rho * math.sqrt(q1 * q2)
        rho = correlation(q12, 1.0 / math.sqrt(q1), 1.0 / math.sqrt(q2))
        k, kd = _numeric.duals(act.tables[0], q1, q12, q2)[:, 0]
        for val, g in ((k, fn), (kd, dfn)):
            scale = math.sqrt(ref_large(g, q1, q1, 1.0, kinks) * ref_large(g, q2, q2, 1.0, kinks))
            r = ref_large(g, q1, q2, rho, kinks)
            assert abs(val - r) <= tol * scale, (act, q1, q2, rho, val, r)


@pytest.mark.parametrize("fn, dfn", [
    (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
     lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0)))),          # ELU(1)
    (lambda x: np.maximum(x, 0.0) ** 2, lambda x: 2 * np.maximum(x, 0.0)),
    (lambda x: x * np.abs(x), lambda x: 2 * np.abs(x)),
    (lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2),  # softsign
    (lambda x: 100 * x + np.maximum(x, 0.0) ** 2, lambda x: 100 + 2 * np.maximum(x, 0.0)),
], ids=["elu1", "relu2", "x_abs_x", "softsign", "linear_plus_relu2"])
def test_user_functions_with_a_kinked_derivative(fn, dfn):
    """φ continuous with φ' continuous but kinked at 0 (φ'' jumps): found
    when the table is built, so that E[φ'φ'] is split there (without,
    3e-4 off); against adaptive quadrature split at 0, 1e-10 of the CS scale
    (the smooth functions' bound: measured ≤ 1.4e-12 here, a kink split
    exactly costs no accuracy)."""
    act = ik.Elementwise(fn)
    assert 0.0 in act.tables[0][_numeric.HDR:_numeric.HDR + int(act.tables[0][4])]
    f = lambda x: float(fn(np.float64(x)))      # noqa: E731
    df = lambda x: float(dfn(np.float64(x)))    # noqa: E731
    for q1, q2, rho in [(1.0, 0.5, 0.96), (1.0, 1e-4, 0.96), (30.0, 0.5, -0.5), (0.01, 100.0, 0.3)]:
        q12 = rho * math.sqrt(q1 * q2)
        rho = correlation(q12, 1.0 / math.sqrt(q1), 1.0 / math.sqrt(q2))
        k, kd = _numeric.duals(act.tables[0], q1, q12, q2)[:, 0]
        for val, g in ((k, f), (kd, df)):
            scale = math.sqrt(ref_large(g, q1, q1, 1.0, (0.0,)) * ref_large(g, q2, q2, 1.0, (0.0,)))
            r = ref_large(g, q1, q2, rho, (0.0,))
            assert abs(val - r) <= 1e-10 * scale, (q1, q2, rho, val, r)


def _sin20_duals(q1, q12, q2):
    """E[sin(bu) sin(bv)], E[b² cos(bu) cos(bv)], b = 20, in closed form
    (the product-to-sum formulas and E[cos(w)] = exp(-Var w / 2))."""
    b2 = 400.0
    minus, plus = math.exp(-b2 * (q1 + q2 - 2 * q12) / 2), math.exp(-b2 * (q1 + q2 + 2 * q12) / 2)
    return (minus - plus) / 2, b2 * (minus + plus) / 2


#: sharp user functions, tabulated as ψ(y) = φ(y/a) on panels 1/(8a) wide:
#: (φ, φ', kinks, a, (q1, q2, ρ) cases within the range of each, the duals in
#: closed form or None: adaptive quadrature)
SHARP = [
    (lambda x: np.tanh(8 * x), lambda x: 8 * (1 - np.tanh(8 * x) ** 2), (), 2.0,
     [(1.0, 0.5, 0.96), (1e-3, 1e-2, -0.5), (30.0, 0.01, 0.3)], None),
    (lambda x: np.tanh(50 * x), lambda x: 50 * (1 - np.tanh(50 * x) ** 2), (), 16.0,
     [(1.0, 0.5, 0.96), (1e-4, 1e-3, -0.5), (0.3, 0.3, 0.9999)], None),
    (lambda x: np.sin(20 * x), lambda x: 20 * np.cos(20 * x), (), 2.0,
     [(0.05, 0.02, 0.7), (0.3, 0.3, -0.4), (1e-4, 1e-3, 0.9), (20.0, 30.0, 0.999)],
     _sin20_duals),
    (lambda x: np.maximum(x - 1 / 16, 0.0), lambda x: np.where(x > 1 / 16, 1.0, 0.0),
     (1 / 16,), 2.0, [(1.0, 0.5, 0.96), (0.01, 0.02, -0.3), (20.0, 4.0, 0.5)], None),
]


@pytest.mark.parametrize("fn,dfn,kinks,a,cases,closed", SHARP,
                         ids=["tanh8x", "tanh50x", "sin20x", "relu_x_minus_1_16"])
def test_sharp_user_functions_against_reference(fn, dfn, kinks, a, cases, closed):
    """Features narrower than the 1/8 panels (refused before): φ(x) = ψ(ax)
    with ψ tabulated, a the first power of 2 that certifies, and the duals
    ψ's at a² times the covariances; against ``ref_large`` split at the
    kinks or a closed form, to the bounds of the panel-wide
    functions (1e-10 smooth, 1e-7 kinked); φ' from the table (no df) is φ'
    itself."""
    act = ik.Elementwise(fn)
    assert act.tables[0][_numeric.HDR_SCALE] == a
    # φ' = a ψ', ψ' the derivative of ψ's fit: ≤ 4e-11 of its local scale
    # (``_check_derivative``), ~1e-10 a here; 1e-9 a leaves a margin of 10
    x = np.linspace(-3, 3, 2001)
    np.testing.assert_allclose(act.dfn(x[np.abs(x - 1 / 16) > 1e-6]),
                               dfn(x[np.abs(x - 1 / 16) > 1e-6]), rtol=0, atol=1e-9 * a)
    tol = 1e-7 if kinks else 1e-10
    f = lambda x: float(fn(np.float64(x)))      # noqa: E731
    df = lambda x: float(dfn(np.float64(x)))    # noqa: E731
    for q1, q2, rho in cases:
        q12 = rho * math.sqrt(q1 * q2)
        rho = correlation(q12, 1.0 / math.sqrt(q1), 1.0 / math.sqrt(q2))
        got = _numeric.duals(act.tables[0], q1, q12, q2)[:, 0]
        if closed is not None:
            want = closed(q1, q12, q2)
            scales = np.sqrt(np.multiply(closed(q1, q1, q1), closed(q2, q2, q2)))
        else:
            want = [ref_large(g, q1, q2, rho, kinks) for g in (f, df)]
            scales = [math.sqrt(ref_large(g, q1, q1, 1.0, kinks) * ref_large(g, q2, q2, 1.0, kinks))
                      for g in (f, df)]
        for val, r, scale in zip(got, want, scales):
            assert abs(val - r) <= tol * scale, (q1, q2, rho, val, r)


_GL20 = np.polynomial.legendre.leggauss(20)


def _fine_nodes(a, b, width):
    n = max(1, math.ceil((b - a) / width))
    e = np.linspace(a, b, n + 1)
    h, m = 0.5 * np.diff(e), 0.5 * (e[1:] + e[:-1])
    return (m[:, None] + h[:, None] * _GL20[0]).ravel(), (h[:, None] * _GL20[1]).ravel()


def ref_fine(g, q1, q2, rho):
    """E[g(u)g(v)] for a smooth NumPy g whose features are ≥ ~0.3 wide, by
    brute force: 20-point Gauss–Legendre on panels ≤ 0.1 wide in g's own
    variables (u over ±11 √q1, then v given u over ±11 σ), everywhere,
    whatever g's shape (exact for polynomials of degree 39 per panel: error
    far below 1e-14 for such g; truncation e^{-60})."""
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    sig = s2 * math.sqrt(max(0.0, 1 - rho * rho))
    u, wu = _fine_nodes(-11 * s1, 11 * s1, min(0.1, s1 / 10))
    wu = wu * np.exp(-0.5 * (u / s1) ** 2) / (s1 * math.sqrt(2 * math.pi)) * g(u)
    m = rho * s2 / s1 * u
    if sig == 0:
        return float(wu @ g(m))
    t, wt = _fine_nodes(-11, 11, min(0.1 / sig, 0.25))
    wt = wt * np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    return float(sum(wu[i:i + 2000] @ (g(m[i:i + 2000, None] + sig * t) @ wt)
                     for i in range(0, u.size, 2000)))


@pytest.mark.parametrize("fn,dfn,cap", [
    (np.sin, np.cos, (4.0, -_numeric.U, _numeric.U)),
    (lambda x: np.tanh(4 * (x - 3)), lambda x: 4 * (1 - np.tanh(4 * (x - 3)) ** 2),
     (0.5, 2.0, 8.0)),
    (lambda x: np.exp(-(x - 2) ** 2), lambda x: -2 * (x - 2) * np.exp(-(x - 2) ** 2),
     (2.0, 4.0, 8.0)),
], ids=["sin", "tanh_4_x_minus_3", "bump_at_2"])
def test_panel_cap_for_features_away_from_the_centres(fn, dfn, cap):
    """φ with features where the graded panels are wide (``_numeric``, "Panel
    cap"): sin x oscillating everywhere (the fallback was 1e-4 off at q = 120,
    sin 8x 0.14), a transition or a bump away from the soft centre 0 (2e-2,
    2e-10 off): the table caps its quadrature panels (W within ±R), and the
    duals are within 1e-10 of the Cauchy–Schwarz scale up to q = 100 and
    correlations near ±1, where the Mehler series gives way to the
    quadrature (at ρ < 0 the mean of v moves against u: the cap mirrored);
    against ``ref_fine``.  (W, L, R) in φ's variable: with its given
    derivative, tanh(4(x - 3)) is tabulated at a = 2."""
    act = ik.Elementwise(fn, dfn)
    tab = act.tables[0]
    a = tab[_numeric.HDR_SCALE]
    assert tuple(tab[[_numeric.HDR_WCAP, _numeric.HDR_LCAP, _numeric.HDR_RCAP]] / a) == cap
    for q1, q2, rho in [(1.0, 0.5, 0.96), (4.0, 5.0, 0.999), (30.0, 20.0, 0.9999),
                        (100.0, 100.0, 0.99999), (4.0, 5.0, -0.999), (30.0, 20.0, -0.9999)]:
        q12 = rho * math.sqrt(q1 * q2)
        rho = correlation(q12, 1.0 / math.sqrt(q1), 1.0 / math.sqrt(q2))
        got = _numeric.duals(tab, q1, q12, q2)[:, 0]
        for val, g in zip(got, (fn, dfn)):
            scale = math.sqrt(ref_fine(g, q1, q1, 1.0) * ref_fine(g, q2, q2, 1.0))
            assert abs(val - ref_fine(g, q1, q2, rho)) <= 1e-10 * scale, (q1, q2, rho)


def test_builtins_have_no_panel_cap():
    """Their features sit at their breakpoints (the graded panels resolve
    them): no cap, so no extra quadrature nodes."""
    for act, _ in BUILTINS:
        assert act.tables[0][_numeric.HDR_WCAP] == 0.0, act


@pytest.mark.parametrize("c", [8.0, 50.0])
def test_sharp_tanh_network_is_tanh_with_scaled_weights(c):
    """tanh(c(Wx + b)) = tanh((cW)x + cb): a network of Elementwise(tanh(cx))
    is, as a function of the same standard-normal parameters, the network of
    Tanh() with W_std and b_std times c before each activation (ntk
    parameterization), so NNGP and NTK agree to the 1e-10 of the duals."""
    sharp = ik.Elementwise(lambda x: np.tanh(c * x))
    x1, x2 = _inputs(20), _inputs(11, seed=1)
    for w, b in [(1.0, 0.1), (0.3, 0.0)]:
        a = ik.serial(ik.Dense(16, w, b), sharp, ik.Dense(16, 1.2, 0.2), sharp, ik.Dense(1))
        t = ik.serial(ik.Dense(16, c * w, c * b), ik.Tanh(), ik.Dense(16, 1.2 * c, 0.2 * c),
                      ik.Tanh(), ik.Dense(1))
        for xa, xb in ((x1, x2), (x1, None)):
            for got, want in zip(a.kernel(xa, xb), t.kernel(xa, xb)):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
        for got, want in zip(a.diag(x1), t.diag(x1)):
            np.testing.assert_allclose(got, want, rtol=1e-10)


def test_sharp_functions_range_and_refusal():
    """A sharp function with tails neither constant nor linear serves input
    variances up to 128/a² (sin(64x): a = 8, 2), named in φ's variable; one
    sharper than the finest panels (1/512) is refused, as is a kink off
    every grid."""
    act = ik.Elementwise(lambda x: np.sin(64 * x), name="Sin64")
    assert act.tables[0][_numeric.HDR_SCALE] == 8.0
    net = ik.serial(ik.Dense(4, 1.0, 0.0), act, ik.Dense(1))
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = net.kernel(x)       # variances 0.5, 0.5, 1: in range
    assert np.isfinite(k).all()
    with pytest.raises(ik.KernelRangeError, match=r"Sin64\(\): its input variance reaches "
                       r"5\.0.*range \[0, 2\].*tabulated on \[-18, 18\]"):
        net.kernel(np.sqrt(5.0) * x)
    with pytest.raises(ValueError, match="not smooth on .*1/512"):
        ik.Elementwise(lambda x: np.tanh(1000 * x))
    with pytest.raises(ValueError, match="not smooth on .*1/512"):
        ik.Elementwise(lambda x: np.abs(x - 0.3))


def _cubic_bump(x):
    return x ** 3 * np.exp(-x * x)


def _cubic_bump_df(x):
    return (3 * x * x - 2 * x ** 4) * np.exp(-x * x)


#: built-ins and a user function vanishing like x³ at 0 (its dual like q³)
TINY_ACTS = BUILTINS + [(ik.Elementwise(_cubic_bump, df=_cubic_bump_df), ())]


@pytest.mark.parametrize("act,kinks", TINY_ACTS, ids=lambda a: repr(a) if a else "")
def test_tiny_variances_against_reference(act, kinks):
    """Input variances down to 1e-60 (tiny inputs without biases): the
    table's graded panels keep φ relatively accurate near 0, so the duals
    are relatively accurate too, against ``ref_large`` (adaptive quadrature
    in φ's own variables, relatively accurate at any scale): 1e-12 of the
    Cauchy–Schwarz scale, kinks included (measured ≤ 1e-13).  The uniform
    panels alone rounded x to ~1e-17 absolutely: Tanh 1.4e-7 at q = 1e-16,
    S2ReLU 2e-2, the x³ bump wrong by orders of magnitude at q = 1e-12."""
    fn = lambda x: float(act.fn(np.float64(x)))      # noqa: E731
    dfn = lambda x: float(act.dfn(np.float64(x)))    # noqa: E731
    for q1, q2, rho in [(1e-12, 1e-12, 0.3), (1e-16, 4e-16, -0.6), (1e-60, 3e-60, 0.5),
                        (1e-12, 1.0, 0.7), (1e-30, 2e-30, -0.2)]:
        q12 = rho * math.sqrt(q1) * math.sqrt(q2)     # q1 q2 underflows
        rho = correlation(q12, 1.0 / math.sqrt(q1), 1.0 / math.sqrt(q2))
        k, kd = _numeric.duals(act.tables[0], q1, q12, q2)[:, 0]
        for val, g in ((k, fn), (kd, dfn)):
            scale = (math.sqrt(ref_large(g, q1, q1, 1.0, kinks))
                     * math.sqrt(ref_large(g, q2, q2, 1.0, kinks)))
            r = ref_large(g, q1, q2, rho, kinks)
            assert abs(val - r) <= 1e-12 * scale, (act, q1, q2, rho, val, r)


@pytest.mark.parametrize("act", [a for a, _ in TINY_ACTS] + [
    ik.Elementwise(lambda x: np.clip(x, 0, 6), df=lambda x: ((x > 0) & (x < 6)) * 1.0)],
    ids=repr)
def test_table_near_zero_is_relative_and_exact_at_zero(act):
    """Within ±H/2 (the graded panels) φ and φ' from the table against the
    given fn, df relatively: 1e-13 of |φ(x)| + |x φ'(x)| (the panel's
    rounding, a few ulps of φ's size on [|x|/2, 2|x|]); at x = 0 exactly
    fn(0) and df(0), the values the finite networks use (a kink's side
    derivative as df gives it: Elu's α, clip's 0), so that a dual at zero
    variance is (fn(0)², df(0)²) exactly."""
    tab = act.tables[0]
    mags = 10.0 ** -np.linspace(1.3, 158, 60)
    x = np.concatenate([mags, -mags])
    got = np.array([_numeric.tab_eval(tab, 0, v) for v in x])
    phi, dphi = np.asarray(act.fn(x), dtype=float), np.asarray(act.dfn(x), dtype=float)
    assert np.all(np.abs(got[:, 0] - phi) <= 1e-13 * (np.abs(phi) + np.abs(x * dphi)))
    d2 = np.abs(act.dfn(2 * x) - act.dfn(x / 2))     # φ'' |x| within a few ulps' margin
    assert np.all(np.abs(got[:, 1] - dphi) <= 1e-13 * (np.abs(dphi) + d2) + 1e-300)
    zero = np.zeros(1)
    f0, df0 = float(act.fn(zero)[0]), float(act.dfn(zero)[0])
    assert _numeric.tab_eval(tab, 0, 0.0) == (f0, df0)
    assert tuple(_numeric.duals(tab, 0.0, 0.0, 0.0)[:, 0]) == (f0 * f0, df0 * df0)
    k, kd = _numeric.duals(tab, 0.0, 0.0, 1.0)[:, 0]     # φ(0) E[φ(v)], v ~ N(0, 1)
    means = [integrate.quad(lambda v: float(g(np.array([v]))[0]) * math.exp(-v * v / 2),
                            -40, 40, points=[0.0, 1.0], epsabs=1e-13, limit=200)[0]
             / math.sqrt(2 * math.pi) for g in (act.fn, act.dfn)]
    assert k == pytest.approx(f0 * means[0], rel=1e-12, abs=1e-13 * abs(f0))
    assert kd == pytest.approx(df0 * means[1], rel=1e-12, abs=1e-13 * abs(df0))


def _log1p_x4_over_x3(x):
    return math.log1p(x ** 4) / x ** 4 * x    # ZeroDivisionError once x⁴ underflows


def test_functions_failing_near_zero_keep_the_uniform_panels():
    """A function that raises (or is not finite) where a power of x
    underflows was accepted before the tables had graded panels and still
    is: those panels keep the uniform fit (absolute accuracy), the others
    are relatively accurate (here φ(x) = x to 1e-24 for |x| < 1e-6)."""
    act = ik.Elementwise(_log1p_x4_over_x3)
    tab = act.tables[0]
    for x in (1e-6, -3e-20, 2e-80):
        assert _numeric.tab_eval(tab, 0, x)[0] == pytest.approx(x, rel=1e-14, abs=0)
    assert abs(_numeric.tab_eval(tab, 0, 1e-90)[0]) <= 1e-15       # the uniform fit
    assert _numeric.tab_eval(tab, 0, 0.0) == _numeric.tab_eval(tab, 0, 1e-300)  # limits
    q = 1e-12
    k = _numeric.duals(tab, q, 0.3 * q, q)[0, 0]
    assert k == pytest.approx(0.3 * q, rel=1e-12, abs=0)


def test_unnormalised_inputs_through_a_network():
    """Raw features (first-layer variances ~1e2 … 1e6) through Tanh: entries
    of the one-hidden-layer NNGP against ``ref_large``; symmetric, PSD and
    equal to the cross and diagonal paths."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 3)) * np.logspace(1, 3, 12)[:, None]
    net = ik.serial(ik.Dense(64, 1.5, 0.5), ik.Tanh(), ik.Dense(1, 1.2, 0.1))
    k = net.kernel(x, None, ("nngp", "ntk"))
    assert np.all(np.isfinite(k.ntk))
    np.testing.assert_array_equal(k.nngp, k.nngp.T)
    # eigenvalues: rounding of a 12 x 12 symmetric solve, ~n ε of the largest
    assert np.linalg.eigvalsh(k.ntk).min() > -1e-12 * np.abs(k.ntk).max()
    # the cross path's inner products round differently from the symmetric
    # path's (GEMM order): a few ulps of ρ, passed on with gain O(1) (NNGP ≤ 1.5)
    np.testing.assert_allclose(net.kernel(x, x.copy(), "nngp"), k.nngp, rtol=0, atol=1e-13)
    # the same diagonal pass: equal up to the store
    np.testing.assert_allclose(net.diag(x, "ntk"), np.diag(k.ntk), rtol=1e-14)
    q = 1.5 ** 2 * x @ x.T / 3 + 0.25
    for i, j in [(0, 1), (3, 11), (7, 7), (11, 10)]:
        r = ref_large(math.tanh, q[i, i], q[j, j], q[i, j] / math.sqrt(q[i, i] * q[j, j]), ())
        assert abs(k.nngp[i, j] - (1.2 ** 2 * r + 0.01)) <= 1e-10 * 1.2 ** 2, (i, j)


def test_table_tails_of_user_functions():
    """Variances beyond 128 only for functions that are their end lines beyond
    ±144 (checked when the table is built)."""
    tails = lambda act: act.tables[0][_numeric.HDR_QMAX]    # noqa: E731
    for fn in (np.tanh, math.tanh, lambda x: np.logaddexp(0.0, x), special.expit,
               lambda x: np.maximum(x, 0.0) + 0.1 * np.minimum(x, 0.0)):
        assert tails(ik.Elementwise(fn)) == _numeric.Q_TAIL_MAX
    for fn in (np.sin, lambda x: np.sqrt(1.0 + x * x), lambda x: special.erf(x / 300.0),
               lambda x: x ** 3, lambda x: np.exp(-x * x) + x * 1e-300 * np.cosh(x / 1e8),
               lambda x: np.tanh(x) + np.exp(-(x - 520.0) ** 2 / 10.0)):   # a bump beyond U
        assert tails(ik.Elementwise(fn)) == _numeric.Q_MAX

    def raises_far_out(x):
        if abs(x) > 1e6:
            raise OverflowError("too far")
        return math.tanh(x)
    assert tails(ik.Elementwise(raises_far_out)) == _numeric.Q_MAX
    # a given df must be the line's slope too
    assert tails(ik.Elementwise(np.tanh, lambda x: 1.0 / np.cosh(x) ** 2)) == _numeric.Q_TAIL_MAX
    assert tails(ik.Elementwise(np.tanh, lambda x: 1.0 / np.cosh(x) ** 2
                                + 1e-3 * (np.abs(x) > 150))) == _numeric.Q_MAX
    # the tabulated φ' (finite networks, df=None) continues as the tails' slopes
    # (inside: the differentiated interpolant, ~1e-13 of φ's scale 144)
    softplus = ik.Elementwise(lambda x: np.logaddexp(0.0, x))
    np.testing.assert_allclose(softplus.dfn(np.array([-1e6, -200.0, 3.0, 200.0, 1e6])),
                               [0.0, 0.0, special.expit(3.0), 1.0, 1.0], rtol=0, atol=1e-10)
    # ... and for other functions it is their central difference (relative error ~1e-10)
    x = np.array([-300.0, 144.1, 200.0])
    np.testing.assert_allclose(ik.Elementwise(lambda x: x * x).dfn(x), 2 * x, rtol=1e-8)
    np.testing.assert_allclose(ik.Elementwise(np.sin).dfn(x), np.cos(x), rtol=0, atol=1e-8)


def test_activation_without_dense_is_rejected():
    with pytest.raises(ValueError, match="not Gaussian"):
        ik.serial(ik.Tanh(), ik.Dense(1)).kernel(np.ones((2, 2)))


def test_points_of_equal_norm_share_the_diagonal_pass():
    """Inputs with equal |x| (sign patterns of one vector: exactly equal norms)
    run the program once per distinct norm; the result must equal that of
    each point on its own (one-row kernels, no sharing): the diagonal exactly,
    the rows to the certified series truncation (1e-12 of √(K(x,x) K(x',x'))
    per layer; the two paths certify different tiles, so they may stop at
    different terms)."""
    rng = np.random.default_rng(11)
    x = rng.choice([-1.0, 1.0], size=(60, 5)) * np.array([0.3, 1.2, 0.7, 2.0, 0.9])
    x[-1] *= 1.5  # and one other norm
    net = ik.serial(ik.Dense(16, 1.4, 0.1), ik.Tanh(), ik.Dense(16, 1.2), ik.Selu(),
                    ik.Dense(1))
    k = net.kernel(x)
    d = net.diag(x)
    for i in (0, 17, 59):
        row = net.kernel(x[i:i + 1], x)
        for f in ("nngp", "ntk"):
            scale = np.sqrt(getattr(d, f)[i] * getattr(d, f))
            err = np.abs(getattr(k, f)[i] - getattr(row, f)[0]) / scale
            assert err.max() <= 4e-12, (f, err.max())
        single = net.diag(x[i:i + 1])
        assert d.nngp[i] == single.nngp[0] and d.ntk[i] == single.ntk[0]


def test_numeric_runs_are_kept_bounded_and_never_shared_writably(monkeypatch):
    """Repeated calls against the same points reuse the diagonal pass of the
    numeric activations (one test point at a time against a training set):
    the same numbers as a fresh network's; the diagonal given out is a copy
    (writing to it changes no later result); at most NUMERIC_RUNS runs and
    NUMERIC_RUNS_BYTES are kept per program."""
    from infkernel import _cpu

    def make():
        return ik.serial(ik.Dense(32, 1.5, 0.05), ik.Tanh(), ik.Dense(32, 1.5, 0.05),
                         ik.Softplus(), ik.Dense(1))
    rng = np.random.default_rng(5)
    X, xs = rng.standard_normal((300, 10)), rng.standard_normal((8, 10))
    net = make()
    got = [net.kernel(xs[i:i + 1], X) for i in range(8)] + [net.kernel(X, xs[:3])]
    fresh = [make().kernel(xs[i:i + 1], X) for i in range(8)] + [make().kernel(X, xs[:3])]
    for a, b in zip(got, fresh):
        assert np.array_equal(a.nngp, b.nngp) and np.array_equal(a.ntk, b.ntk)
    d = net.diag(X)
    expected = d.ntk.copy()
    d.ntk[:] = -1.0
    d.nngp[:] = -1.0
    assert np.array_equal(net.diag(X).ntk, expected)
    assert np.array_equal(np.diag(net.kernel(X).ntk), expected)
    prog = net.program(10)
    runs = _cpu._numeric_runs[prog]
    assert 0 < len(runs) <= _cpu.NUMERIC_RUNS
    assert sum(a.nbytes for r in runs.values() for a in r) <= _cpu.NUMERIC_RUNS_BYTES
    monkeypatch.setattr(_cpu, "NUMERIC_RUNS_BYTES", 4096)   # runs beyond it are not kept
    net.kernel(xs[:2], X[:7])          # a new column side: kept, then evicted
    assert sum(a.nbytes for r in runs.values() for a in r) <= 4096


def test_given_df_is_checked_against_fn():
    """A user's df is compared with the derivative of fn's interpolants inside
    every panel: a wrong derivative (a constant, sech instead of sech², an
    offset of 1e-6, a step at 0.5 for max(x, 0)) is an error naming the place;
    correct ones pass, including derivatives that jump at a kink on a panel
    edge (|x|, sign) and the built-ins (checked when they are built)."""
    for df, where in ((lambda x: 100 + 0 * x, "df(x) = 100 but fn's slope is 0.98"),
                      (lambda x: 1 / np.cosh(x), "on [1.125, 1.25]"),
                      (lambda x: 1 / np.cosh(x) ** 2 + 1e-6, "on [-0.125, 0]")):
        with pytest.raises(ValueError, match="Elementwise\\(tanh\\): the derivative df "
                                             "disagrees with fn") as info:
            ik.Elementwise(np.tanh, df)
        assert where in str(info.value)
    with pytest.raises(ValueError, match="on \\[0, 0.125\\]: at x = 0.1248"):
        ik.Elementwise(lambda x: np.maximum(x, 0.0), lambda x: (x >= 0.5) * 1.0)
    with pytest.raises(ValueError, match="disagrees with fn"):
        ik.ElementwiseNumerical(np.sin, 25, np.sin)
    ik.Elementwise(np.tanh, lambda x: 1 / np.cosh(x) ** 2)
    ik.Elementwise(np.abs, np.sign)
    ik.Elementwise(np.sign, np.zeros_like)
    ik.Elementwise(lambda x: np.maximum(x, 0.0), lambda x: (x > 0) * 1.0)


def test_numeric_activations_by_name():
    """Every numeric activation the README lists is known by name to the
    command line, ``infkernel fit`` and the scikit-learn adapters."""
    from infkernel.activations import ACTIVATIONS
    for name in ("tanh", "sigmoid", "softplus", "silu", "swish", "elu", "selu", "mish",
                 "srelu", "s2relu"):
        assert repr(ACTIVATIONS[name]()) == repr(getattr(ik, {
            "srelu": "SReLU", "s2relu": "S2ReLU"}.get(name, name.capitalize()))())


@pytest.mark.parametrize("fn,parity", [
    (np.tanh, -1.0), (np.sin, -1.0), (_tanh4, -1.0), (_cube, -1.0), (np.cos, 1.0),
    (lambda x: x * np.tanh(x), 1.0), (np.abs, 1.0), (lambda x: np.logaddexp(0.0, x), 0.0),
    (lambda x: np.tanh(x) + 1e-9, 0.0), (lambda x: np.tanh(x - 0.125), 0.0)],
    ids=lambda v: getattr(v, "__name__", repr(v)))
def test_parity_and_half_range_quadrature(fn, parity):
    """Odd and even φ are detected (φ(-x) = ∓φ(x) at the table's nodes, the
    tails mirrored), their tables made exactly symmetric, and the nested
    quadrature runs its outer integral over x ≥ 0 (the integrand is even),
    doubled: the same as over the whole line (the table with its parity
    cleared) to the rounding of the lookups and sums, 1e-13 of the
    Cauchy–Schwarz scale, at half the cost."""
    tab = _numeric.build_table("f", fn)
    assert tab[_numeric.HDR_PARITY] == parity
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-140, 140, 4000), rng.uniform(-1, 1, 1000)])
    if parity:  # to the rounding of the panel coordinate, |x + U| ≤ 2U: 6e-14 in x
        v, vm = _numeric.tab_values(tab, x), _numeric.tab_values(tab, -x)
        np.testing.assert_allclose(vm[0], parity * v[0], rtol=4e-15, atol=1e-13)
        np.testing.assert_allclose(vm[1], -parity * v[1], rtol=4e-15, atol=1e-13)
    whole = tab.copy()
    whole[_numeric.HDR_PARITY] = 0.0
    for s1, s2, rho in [(1.0, 1.5, 0.3), (4.0, 4.4, 0.9), (0.3, 2.0, -0.99), (2.0, 3.0, 0.999),
                        (9.0, 0.5, -0.5), (1e-3, 5.0, 0.97), (1.0, 1.0, 1.0), (3.0, 2.0, -1.0)]:
        a = np.array(_numeric.duals_quadrature(tab, s1, s2, rho))
        b = np.array(_numeric.duals_quadrature(whole, s1, s2, rho))
        scale = np.sqrt(np.array(_numeric.duals(tab, s1 * s1, s1 * s1, s1 * s1))[:, 0]
                        * np.array(_numeric.duals(tab, s2 * s2, s2 * s2, s2 * s2))[:, 0])
        assert np.all(np.abs(a - b) <= 1e-13 * scale), (s1, s2, rho, a, b)
