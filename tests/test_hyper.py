"""Analytic hyperparameter gradients vs central finite differences.

Central differences with step h = 1e-5 have truncation error ~h²·|f'''| ~1e-10
and rounding error ~eps·|K|/h ~1e-11 relative; we allow 1e-6 relative to the
largest gradient entry.  Kernel values are compared with ``net.kernel`` at
1e-12 (both evaluate the same closed forms in float64), pairs of duplicated
points included: the kinked duals have an infinite derivative in q12 at
correlation ±1, where both snap ρ to ±1, and the pair's derivative is that
along |ρ| = 1.
"""
import warnings

import numpy as np
import pytest

import infkernel as ik
from infkernel import hyper as H

ACTS = [ik.Relu(), ik.LeakyRelu(0.2), ik.Erf(), ik.Gelu(), ik.Sin(1.2, 0.8, 0.3),
        ik.Rbf(0.7), ik.Exp(0.5, 0.4), ik.Gaussian(1.0, -0.6), ik.Sign(), ik.Monomial(3),
        ik.RectifiedMonomial(0), ik.RectifiedMonomial(2), ik.Polynomial([0.3, -1.0, 0.5, 0.2]),
        ik.Hermite(4), ik.Gabor(), ik.ExpNormalized(0.7, -0.5)]


@pytest.fixture(scope="module")
def x():
    x = np.random.default_rng(1).standard_normal((10, 3))
    x[5] = x[4]        # a duplicated point exercises the correlation-1 branch
    return x


def _fd(net, x, get, p, L, h=1e-5):
    idx = H.dense_layers(net)
    W = np.array([net.layers[i].W_std for i in idx])
    B = np.array([net.layers[i].b_std for i in idx])

    def k(s):
        W2, B2 = W.copy(), B.copy()
        (W2 if p < L else B2)[p % L] += s
        return H.with_hyperparameters(net, W2, B2).kernel(x, None, get)
    return (k(h) - k(-h)) / (2 * h)


def _check_gradients(net, x):
    """K and dK of a network with three Dense layers against the kernels and
    central differences, the duplicated pair (4, 5) included."""
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False)
        ref = net.kernel(x, None, get)
        assert np.abs(K - ref).max() <= 1e-12 * np.abs(ref).max()
        scale = np.abs(dK).max()
        for p in range(6):
            fd = _fd(net, x, get, p, 3)
            assert np.abs(fd - dK[p]).max() <= 1e-6 * scale, (get, p)


def _richardson_fd(net, x, get, p, L, h):
    """(4 D(h/2) − D(h)) / 3 of central differences D in the p-th std:
    truncation ~h⁴, for gradients checked tighter than ``_fd``."""
    def d(step):
        return _fd(net, x, get, p, L, step)
    return (4 * d(h / 2) - d(h)) / 3


@pytest.mark.parametrize("act", [ik.Gelu(), ik.Gabor(), ik.Erf(), ik.Relu()], ids=repr)
def test_gradient_at_large_input_scale(act):
    """Inputs of scale 20 put nearby pairs at ρ ≈ 0.9997 with q ~ 500: Gelu's
    and Gabor's partials (from the kernels' formulas in jet arithmetic) stay
    exact there; Richardson differences (self-consistent to ~1e-11 here) are
    the reference.  Central differences in q12 with a step of 1e-3 of the
    scale, which these partials were before, crossed ρ = 1: 2e-3 (Gelu NTK)
    to 5e2 (Gabor NTK) relative errors."""
    x = 20 * np.random.default_rng(7).standard_normal((20, 2))
    net = ik.serial(ik.Dense(1, 1.0, 0.5), act, ik.Dense(1, 1.0, 0.5), act,
                    ik.Dense(1, 1.0, 0.5))
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False)
        scale = np.abs(dK).max()
        for p in range(6):
            h = 1e-3 * (1.0 if p < 3 else 0.5)
            fd = _richardson_fd(net, x, get, p, 3, h)
            assert np.abs(fd - dK[p]).max() <= 1e-8 * scale, (get, p)


@pytest.mark.parametrize("act", [ik.Relu(), ik.Abs(), ik.LeakyRelu(0.1), ik.Sign(),
                                 ik.RectifiedMonomial(0), ik.RectifiedMonomial(1)], ids=repr)
def test_kinked_duals_at_parallel_and_antipodal_points(act):
    """Without biases x, 2x and −x stay at correlation ±1 in every layer
    (ρ = 1 with unequal variances for x, 2x), where the kinked duals are not
    differentiable in q12: K equals the kernels exactly there and dK (along
    |ρ| = 1) matches central differences of W_std."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3))
    x[1], x[2] = 2 * x[0], -x[0]
    net = ik.serial(ik.Dense(3, 1.3), act, ik.Dense(3, 0.9), act, ik.Dense(1, 1.1))
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False)
        ref = net.kernel(x, None, get)
        assert np.abs(K - ref).max() <= 1e-13 * np.abs(ref).max()
        assert np.isfinite(dK).all()
        for p in range(3):
            fd = _fd(net, x, get, p, 3)
            assert np.abs(fd - dK[p]).max() <= 1e-7 * np.abs(dK).max(), (get, p)


def test_kernel_is_exact_for_nearly_parallel_points():
    """Points 1e-9 apart: the kinked duals of the gradient recursion take the
    angle from q12 (~1e-8 off there); K comes from the kernels, which carry
    the versine, so it matches a 50-digit evaluation of the recursion."""
    from test_kernels import _kinked_reference
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3))
    x[1] = x[0] + 1e-9 * rng.standard_normal(3)
    net = ik.serial(ik.Dense(3, 1.3, 0.1), ik.Relu(), ik.Dense(3, 0.9, 0.2), ik.Relu(),
                    ik.Dense(1, 1.1))
    refs = _kinked_reference(net, x[:1], x[1:])
    for get, ref in zip(("nngp", "ntk"), refs[:, 0, 0]):
        K, _ = H.kernel_and_grad(net, x, get)
        assert abs(K[0, 1] - ref) <= 4e-16 * abs(ref), (get, K[0, 1], ref)


def test_overflowing_gradients_are_an_error():
    """Variances beyond float64 are refused by kernel_and_grad as by the
    kernels (KernelRangeError), not returned as inf / NaN, and without NumPy's
    overflow warnings on the way."""
    x = np.random.default_rng(5).standard_normal((5, 3))
    for W in (1e60, 1e100):
        net = ik.serial(ik.Dense(1, W, 0.1), ik.Relu(), ik.Dense(1, W, 0.1), ik.Relu(),
                        ik.Dense(1, W, 0.1))
        for get in ("nngp", "ntk"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with pytest.raises(ik.KernelRangeError, match="overflow"):
                    net.kernel(x, None, get)
                with pytest.raises(ik.KernelRangeError, match="reduce W_std / b_std"):
                    H.kernel_and_grad(net, x, get)


@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("act", ACTS, ids=repr)
def test_gradient_matches_finite_differences(act, par, x):
    _check_gradients(ik.serial(ik.Dense(8, 1.3, 0.2, par), act, ik.Dense(8, 0.9, 0.3, par), act,
                               ik.Dense(1, 1.1, 0.1, par)), x)


@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_gradient_through_layernorm(par, x):
    """LayerNorm (kept Gaussian, then an activation) differentiates like the
    rest."""
    _check_gradients(ik.serial(ik.Dense(8, 1.3, 0.2, par), ik.LayerNorm(eps=0.1), ik.Erf(),
                               ik.Dense(8, 0.9, 0.3, par), ik.LayerNorm(), ik.Hermite(3),
                               ik.Dense(1, 1.1, 0.1, par)), x)


@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_gradient_through_dropout(par, x):
    """Dropout's 1/rate on the diagonal (train mode) enters the variances the
    next activation sees, and the gradients: against central differences."""
    _check_gradients(ik.serial(ik.Dense(8, 1.3, 0.2, par), ik.Relu(), ik.Dropout(0.7),
                               ik.Dense(8, 0.9, 0.3, par), ik.Erf(), ik.Dropout(0.5, "test"),
                               ik.Flatten(), ik.Dense(1, 1.1, 0.1, par)), x)


def test_shared_gradient_is_sum_over_layers(x):
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Relu(), ik.Dense(1, 0.9, 0.3))
    _, d = H.kernel_and_grad(net, x, "ntk", shared=False)
    _, s = H.kernel_and_grad(net, x, "ntk", shared=True)
    assert np.allclose(s[0], d[:2].sum(0), rtol=1e-14, atol=0)
    assert np.allclose(s[1], d[2:].sum(0), rtol=1e-14, atol=0)


def test_log_marginal_likelihood_gradient(x):
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((15, 3))
    y = rng.standard_normal((15, 2))
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Erf(), ik.Dense(1, 0.9, 0.3))
    noise = 0.1
    lml, g = H.log_marginal_likelihood(net, xs, y, noise, eval_gradient=True)
    assert lml == pytest.approx(H.log_marginal_likelihood(net, xs, y, noise), rel=1e-12)
    h = 1e-6
    fd = [(H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3 + h, 0.25), xs, y, noise)
           - H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3 - h, 0.25), xs, y,
                                       noise)) / (2 * h)]
    lml2, g2 = H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25), xs, y, noise,
                                         eval_gradient=True)
    fd.append((H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25 + h), xs, y,
                                         noise)
               - H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25 - h), xs, y,
                                           noise)) / (2 * h))
    fd.append((H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25), xs, y,
                                         noise + h)
               - H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25), xs, y,
                                           noise - h)) / (2 * h))
    # step 1e-6 on an O(10) objective: rounding ~1e-16·10/1e-6 ~ 1e-9 absolute
    assert np.allclose(g2, fd, rtol=1e-5, atol=1e-6)


def test_fit_hyperparameters_increases_lml():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((40, 2))
    y = np.sin(2 * xs[:, :1]) + 0.05 * rng.standard_normal((40, 1))
    net = ik.serial(ik.Dense(8, 0.5, 0.5), ik.Relu(), ik.Dense(1, 0.5, 0.5))
    before = H.log_marginal_likelihood(net, xs, y, 1e-2)
    fitted, noise, lml = H.fit_hyperparameters(net, xs, y, noise=1e-2)
    assert lml > before
    assert lml == pytest.approx(H.log_marginal_likelihood(fitted, xs, y, noise), rel=1e-10)


# ---------------------------------------------------------------------------
# activation parameters
# ---------------------------------------------------------------------------

PARAM_ACTS = [ik.Relu(), ik.LeakyRelu(0.2), ik.ABRelu(-0.4, 1.3), ik.Erf(1.1, 0.7, 0.2),
              ik.Sin(1.2, 0.8, 0.3), ik.Cos(0.9, 1.1, 0.2), ik.Rbf(0.7), ik.Exp(0.5, 0.4),
              ik.Gaussian(1.0, -0.6)]


def _fd_act(net, x, get, m, h=1e-5):
    a = H.activation_parameters(net)

    def k(s):
        a2 = a.copy()
        a2[m] += s
        return H.with_activation_parameters(net, a2).kernel(x, None, get)
    return (k(h) - k(-h)) / (2 * h)


@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("act", PARAM_ACTS, ids=repr)
def test_activation_parameter_gradient_matches_finite_differences(act, par, x):
    # Same budget as the W/b test: central differences with h = 1e-5 are
    # accurate to ~1e-10 relative here (the worst, Exp's b, whose k grows like
    # exp(b²q), to ~1e-8); 1e-6 relative to each slot's largest entry leaves a
    # wide margin while still catching any wrong closed form (errors O(1)).
    # Pairs of duplicated points are excluded as above (ABRelu's ∂k/∂a
    # contains sin θ, whose derivative is infinite at correlation 1).
    net = ik.serial(ik.Dense(8, 1.3, 0.2, par), act, ik.Dense(8, 0.9, 0.3, par), act,
                    ik.Dense(1, 1.1, 0.1, par))
    mask = np.ones((10, 10), bool)
    mask[4, 5] = mask[5, 4] = False
    names = H.parameter_names(net, shared=False, activation_params=True)
    n_act = H.activation_parameters(net).size
    assert n_act == 2 * len(act.params) and len(names) == 6 + n_act
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False, activation_params=True)
        assert dK.shape == (6 + n_act, 10, 10)
        for m in range(n_act):
            fd = _fd_act(net, x, get, m)
            scale = np.abs(dK[6 + m][mask]).max()
            assert scale > 0, names[6 + m]
            assert np.abs(fd - dK[6 + m])[mask].max() <= 1e-6 * scale, (get, names[6 + m])


def test_activation_params_default_unchanged(x):
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Erf(1.1, 0.7, 0.2), ik.Dense(8, 0.9, 0.3),
                    ik.Gelu(), ik.Dense(1, 1.1, 0.1))
    for shared, p in ((True, 2), (False, 6)):
        K0, d0 = H.kernel_and_grad(net, x, "ntk", shared)
        K1, d1 = H.kernel_and_grad(net, x, "ntk", shared, activation_params=True)
        assert d0.shape == (p, 10, 10) and d1.shape == (p + 3, 10, 10)
        assert np.array_equal(K0, K1) and np.array_equal(d0, d1[:p])
        assert len(H.parameter_names(net, shared)) == p
    assert H.parameter_names(net, True, True) == [
        "W_std", "b_std", "layer 1 Erf.a", "layer 1 Erf.b", "layer 1 Erf.c"]


def test_parameter_names_use_stored_activation():
    net = ik.serial(ik.Dense(4), ik.LeakyRelu(0.1), ik.Dense(4), ik.Cos(1.0, 2.0, 0.5),
                    ik.Dense(4), ik.Monomial(3), ik.Dense(1))
    assert H.parameter_names(net, False, True) == [
        "layer 0 Dense.W_std", "layer 2 Dense.W_std", "layer 4 Dense.W_std",
        "layer 6 Dense.W_std", "layer 0 Dense.b_std", "layer 2 Dense.b_std",
        "layer 4 Dense.b_std", "layer 6 Dense.b_std",
        "layer 1 ABRelu.a", "layer 1 ABRelu.b",
        "layer 3 Sin.a", "layer 3 Sin.b", "layer 3 Sin.c"]
    assert np.allclose(H.activation_parameters(net), [0.1, 1.0, 1.0, 2.0, 0.5 + np.pi / 2])


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_log_marginal_likelihood_gradient_with_activation_params(get):
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((15, 3))
    y = rng.standard_normal((15, 2))
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Sin(1.2, 0.8, 0.3), ik.Dense(8, 0.9, 0.3),
                    ik.LeakyRelu(0.2), ik.Dense(1, 1.1, 0.1))
    noise = 0.1
    lml, g = H.log_marginal_likelihood(net, xs, y, noise, get, shared=True,
                                       eval_gradient=True, activation_params=True)
    names = H.parameter_names(net, True, True) + ["noise"]
    assert g.shape == (len(names),) == (8,)
    # the default gradient is the same, without the activation slots
    _, g0 = H.log_marginal_likelihood(net, xs, y, noise, get, eval_gradient=True)
    assert np.allclose(g0, np.r_[g[:2], g[-1]], rtol=1e-12, atol=0)
    h = 1e-6
    a = H.activation_parameters(net)
    for m in range(a.size):
        ap, am = a.copy(), a.copy()
        ap[m] += h
        am[m] -= h
        fd = (H.log_marginal_likelihood(H.with_activation_parameters(net, ap), xs, y, noise, get)
              - H.log_marginal_likelihood(H.with_activation_parameters(net, am), xs, y, noise,
                                          get)) / (2 * h)
        # step 1e-6 on an O(10-100) objective: rounding ~1e-16·100/1e-6 ~ 1e-8 absolute
        assert fd == pytest.approx(g[2 + m], rel=1e-5, abs=1e-6), names[2 + m]


def test_fit_hyperparameters_with_activation_params():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((40, 2))
    y = np.sin(2 * xs[:, :1]) + 0.05 * rng.standard_normal((40, 1))
    net = ik.serial(ik.Dense(8, 1.0, 0.5), ik.Rbf(0.05), ik.Dense(1, 1.0, 0.1))
    _, _, lml_dense = H.fit_hyperparameters(net, xs, y, noise=1e-2)
    fitted, noise, lml = H.fit_hyperparameters(net, xs, y, noise=1e-2, activation_params=True)
    assert lml >= lml_dense - 1e-6
    assert lml == pytest.approx(H.log_marginal_likelihood(fitted, xs, y, noise), rel=1e-10)
    gamma = fitted.layers[1].params[0]
    assert gamma >= 0 and gamma != 0.05


@pytest.mark.parametrize("kwargs, words", [
    (dict(noise=-1.0), "noise must be finite and > 0, got -1.0"),
    (dict(W_bounds=(0, 1)), "W_bounds must satisfy 0 < low <= high"),
    (dict(b_bounds=(1.0, 0.1)), "b_bounds must satisfy"),
    (dict(maxiter=-1), "maxiter must be a positive integer"),
    (dict(y=np.ones(7)), "y has 7 rows, expected 10"),
    # a user activation tabulated for input variances up to 128
    (dict(net=ik.serial(ik.Dense(4, 30.0), ik.Elementwise(np.sin, np.cos, name="Sin"),
                        ik.Dense(1)), W_bounds=(20, 40)),
     "first failure: Sin(): its input variance reaches"),
    (dict(net=ik.serial(ik.Dense(1)), noise=0.0, fit_noise=False), "not finite at any"),
])
def test_fit_hyperparameters_bad_input(kwargs, words):
    """Every failure is an error naming its cause, before (or instead of)
    returning the optimiser's 'infeasible' sentinel as a result."""
    x = np.random.default_rng(0).standard_normal((10, 3))
    args = dict(net=ik.serial(ik.Dense(4), ik.Relu(), ik.Dense(1)), x=x, y=x[:, 0] ** 2)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        ik.hyper.fit_hyperparameters(**args)
    assert words in str(info.value)


def test_helpers_bad_input():
    net = ik.serial(ik.Dense(8, b_std=0.1), ik.Erf(), ik.Dense(1))
    for call in (lambda: H.parameter_names("net"), lambda: H.dense_layers("net"),
                 lambda: H.with_hyperparameters("net", 1.0, 0.1),
                 lambda: H.activation_parameters("net"),
                 lambda: H.with_activation_parameters("net", [1.0])):
        with pytest.raises(TypeError, match="net must be an infkernel network"):
            call()
    for values in (["a", "b", "c"], None, [1.0, 1j, 0.0]):
        with pytest.raises(TypeError, match="values must be 3 real numbers"):
            H.with_activation_parameters(net, values)
    for values in ([1.0, np.nan, 0.0], [np.inf, 1.0, 0.0]):
        with pytest.raises(ValueError, match="values has NaN or Inf entries"):
            H.with_activation_parameters(net, values)
    with pytest.raises(ValueError, match="expected 3 activation parameters, got 2"):
        H.with_activation_parameters(net, [1.0, 2.0])


def test_identical_points_match_the_kernels_in_a_chaotic_deep_network():
    """kernel_and_grad snaps q12 like the kernels (``_duals.snap_q12``): with
    duplicate rows in a chaotic depth-300 Erf network both agree, and the
    duplicates' entry equals the diagonal exactly."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 5))
    x[3], x[5] = x[2], -x[4]
    net = ik.serial(*[l for _ in range(300) for l in (ik.Dense(8, 1.5, 0.1), ik.Erf())],
                    ik.Dense(1, 1.5, 0.1))
    K, _ = H.kernel_and_grad(net, x, "nngp")
    ref = net.kernel(x, None, "nngp")
    assert K[2, 3] == K[2, 2]
    # two float64 implementations of the same recursion, 300 layers
    assert np.abs(K - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_numeric_activation_gradient_by_differences(shared, get, par):
    """Networks with numerically integrated activations get dK/dW_std, dK/db_std
    by Richardson differences: a tabulated erf against the closed-form Erf,
    whose gradient is analytic.  Steps 1e-3 of the values against the
    quadrature's 1e-10 (measured agreement 1e-10): 1e-7 of the largest
    derivative."""
    from scipy import special
    x = np.random.default_rng(0).standard_normal((12, 3))

    def net(act):
        return ik.serial(ik.Dense(8, 1.3, 0.2, par), act, ik.Dense(8, 0.9, None, par), act,
                         ik.Dense(1, 1.1, 0.3, par))
    K, dK = H.kernel_and_grad(net(ik.Elementwise(special.erf)), x, get, shared)
    K_ref, dK_ref = H.kernel_and_grad(net(ik.Erf()), x, get, shared)
    np.testing.assert_allclose(K, K_ref, rtol=0, atol=1e-10 * np.abs(K_ref).max())
    assert dK.shape == dK_ref.shape
    for g, g_ref in zip(dK, dK_ref):
        np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-7 * np.abs(g_ref).max() + 1e-300)


def test_fit_hyperparameters_with_a_numeric_activation():
    """Tanh networks fit through the difference gradients; the optimum's
    likelihood is at least the starting one."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 2))
    y = np.tanh(2 * x[:, 0]) + 0.05 * rng.standard_normal(30)
    net = ik.serial(ik.Dense(16, 1.0, 0.1), ik.Tanh(), ik.Dense(1, 1.0, 0.1))
    start = H.log_marginal_likelihood(net, x, y, noise=1e-2)
    fitted, noise, lml = H.fit_hyperparameters(net, x, y, noise=1e-2, maxiter=30)
    assert lml >= start
    assert lml == pytest.approx(H.log_marginal_likelihood(fitted, x, y, noise), rel=1e-12)
    with pytest.raises(ValueError, match="Tanh\\(\\) has no closed-form dual: activation"):
        H.kernel_and_grad(net, x, activation_params=True)


# ---------------------------------------------------------------------------
# Dense layers inside parallel branches; bias-free layers; argument checks
# ---------------------------------------------------------------------------

def _residual(w=(1.0, 1.0, 1.0), b=(None, None, None), par="ntk"):
    return ik.serial(ik.Dense(4, w[0], b[0], par),
                     ik.Residual(ik.serial(ik.Relu(), ik.Dense(4, w[1], b[1], par))),
                     ik.Relu(), ik.Dense(1, w[2], b[2], par))


def test_with_hyperparameters_reaches_dense_layers_in_branches(x):
    """Every Dense layer, inside parallel branches too, gets the values: the
    kernels of the networks built by hand; per-layer values go depth-first in
    branch order (``dense_layers``)."""
    net = _residual()
    assert H.dense_layers(net) == [0, (2, 1, 1), 5]
    assert H.parameter_names(net, shared=False)[:3] == [
        "layer 0 Dense.W_std", "layer 2 branch 1 layer 1 Dense.W_std", "layer 5 Dense.W_std"]
    for W, B in ((2.0, 0.5), ([1.1, 1.2, 1.3], [0.1, None, 0.3])):
        got = H.with_hyperparameters(net, W, B).kernel(x)
        want = _residual(np.broadcast_to(W, 3), np.broadcast_to(np.asarray(B, object), 3))
        want = want.kernel(x)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    ms = ik.MscaleDNN2([1, 2], hidden=(8,))
    assert len(H.dense_layers(ms)) == 4
    np.testing.assert_array_equal(
        H.with_hyperparameters(ms, 1.7, 0.4).kernel(x, None, "ntk"),
        ik.MscaleDNN2([1, 2], hidden=(8,), W_std=1.7, b_std=0.4).kernel(x, None, "ntk"))
    with pytest.raises(ValueError, match="W_std must be a number >= 0 or one per Dense layer "
                                         "\\(3\\), got \\[1.0, 2.0\\]"):
        H.with_hyperparameters(net, [1.0, 2.0], 0.1)


@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_gradient_through_branches(par, x):
    """A network inside a one-branch parallel block has the kernel of the
    serial one, and its gradients (by differences of the kernel) match the
    serial network's forward mode; a residual network's match central
    differences."""
    body = [ik.Dense(8, 1.3, 0.2, par), ik.Erf(), ik.Dense(8, 0.9, None, par), ik.Gelu(),
            ik.Dense(1, 1.1, 0.3, par)]
    branched = ik.serial(ik.FanOut(1), ik.parallel(ik.serial(*body)), ik.FanInSum())
    for get in ("nngp", "ntk"):
        for shared in (True, False):
            K0, d0 = H.kernel_and_grad(ik.serial(*body), x, get, shared)
            K1, d1 = H.kernel_and_grad(branched, x, get, shared)
            np.testing.assert_allclose(K1, K0, rtol=0, atol=1e-14 * np.abs(K0).max())
            # Richardson differences (h = 1e-3): truncation ~1e-12 of the scale
            np.testing.assert_allclose(d1, d0, rtol=0, atol=1e-9 * np.abs(d0).max())
    net = _residual((1.3, 0.9, 1.1), (0.2, 0.3, 0.1), par)
    mask = np.ones((10, 10), bool)
    mask[4, 5] = mask[5, 4] = False      # ReLU's dual is kinked at ρ = 1
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False)
        assert dK.shape == (6, 10, 10)
        W, B = np.array([1.3, 0.9, 1.1]), np.array([0.2, 0.3, 0.1])
        for p in range(6):
            def k(s):
                W2, B2 = W.copy(), B.copy()
                (W2 if p < 3 else B2)[p % 3] += s
                return _residual(W2, B2, par).kernel(x, None, get)
            fd = (k(1e-5) - k(-1e-5)) / 2e-5
            assert np.abs(fd - dK[p])[mask].max() <= 1e-6 * np.abs(dK[:, mask]).max(), (get, p)
    ms = ik.MscaleDNN2([1, 2], hidden=(8,))
    assert H.kernel_and_grad(ms, x, "ntk", shared=False)[1].shape == (8, 10, 10)
    for call in (lambda: H.kernel_and_grad(net, x, activation_params=True),
                 lambda: H.parameter_names(net, activation_params=True),
                 lambda: H.fit_hyperparameters(net, x, x[:, 0], activation_params=True)):
        with pytest.raises(ValueError, match="net.layers\\[1\\] is FanOut\\(num=2\\): activation "
                                             "parameters are differentiated only in serial"):
            call()


@pytest.mark.parametrize("b_std", [None, 0.0])
@pytest.mark.parametrize("act", ACTS + [ik.LayerNorm(eps=0.0)], ids=repr)
def test_zero_variance_points(act, b_std):
    """A zero input row without bias has variance 0 in every layer, where
    partials such as ∂k/∂q11 ∝ q11^(-1/2) are infinite or 0/0: K equals the
    kernels (LayerNorm(eps=0): 0 there, sign(0) = 0) and dK is finite and
    matches central differences of W_std; the b_std slots are 0, the
    symmetric derivative of a kernel even in b_std (used by sklearn's GP)."""
    x = np.r_[np.zeros((1, 3)), np.random.default_rng(4).standard_normal((5, 3))]
    net = ik.serial(ik.Dense(3, 1.3, b_std), act, ik.Dense(3, 1.1, b_std), ik.Relu(),
                    ik.Dense(1, 0.9, b_std))
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False)
        ref = net.kernel(x, None, get)
        assert np.abs(K - ref).max() <= 1e-12 * np.abs(ref).max()
        assert np.isfinite(dK).all()
        np.testing.assert_array_equal(dK[3:], 0.0)
        scale = np.abs(ref).max()
        for p in range(3):
            fd = _fd(net, x, get, p, 3)
            assert np.abs(fd - dK[p]).max() <= 1e-6 * scale, (get, p)


def test_bias_free_layers_stay_bias_free(x):
    """b_std=None is no bias, as in Dense (in the standard parameterization
    not the same as b_std=0, whose NTK gets 1 per layer); fitting keeps
    bias-free layers bias-free and fits b_std of the others only."""
    def net(b1, b2):
        return ik.serial(ik.Dense(8, 1.3, b1, "standard"), ik.Relu(),
                         ik.Dense(1, 1.3, b2, "standard"))
    free = net(None, None)
    assert np.abs(free.kernel(x, None, "ntk") - net(0.0, 0.0).kernel(x, None, "ntk")).min() > 1
    for got in (H.with_hyperparameters(net(0.5, 0.5), 1.3, None),
                H.with_hyperparameters(net(0.5, 0.5), [1.3, 1.3], [None, None])):
        for a, b in zip(got.kernel(x), free.kernel(x)):
            np.testing.assert_array_equal(a, b)
    y = np.sin(x[:, 0])
    for start, shared in ((free, True), (free, False), (net(None, 0.5), True),
                          (net(None, 0.5), False)):
        fitted, noise, lml = H.fit_hyperparameters(start, x, y, shared=shared, maxiter=20)
        d0, d1 = fitted.layers[0], fitted.layers[2]
        assert d0.b_std is None
        assert (d1.b_std is None) == (start.layers[2].b_std is None)
        assert lml == pytest.approx(H.log_marginal_likelihood(fitted, x, y, noise), rel=1e-10)
    # the fitted shared b_std of the biased layers, bias-free layers left alone
    fitted, _, _ = H.fit_hyperparameters(_residual(b=(0.1, None, 0.1)), x, y, maxiter=5)
    dense = [fitted.layers[0], fitted.layers[2].branches[1][1], fitted.layers[5]]
    assert dense[1].b_std is None and dense[0].b_std == dense[2].b_std > 0


@pytest.mark.parametrize("call, exc, words", [
    (lambda n, x, y: H.fit_hyperparameters(n, x, y, shared="no"), TypeError,
     "shared must be True or False, got 'no'"),
    (lambda n, x, y: H.fit_hyperparameters(n, x, y, fit_noise="no"), TypeError,
     "fit_noise must be True or False"),
    (lambda n, x, y: H.fit_hyperparameters(n, x, y, activation_params="no"), TypeError,
     "activation_params must be True or False"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, shared="no", eval_gradient=True),
     TypeError, "shared must be True or False"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, eval_gradient="no"), TypeError,
     "eval_gradient must be True or False"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, eval_gradient=True,
                                               activation_params="no"),
     TypeError, "activation_params must be True or False"),
    (lambda n, x, y: H.kernel_and_grad(n, x, shared="no"), TypeError,
     "shared must be True or False"),
    (lambda n, x, y: H.kernel_and_grad(n, x, activation_params=1), TypeError,
     "activation_params must be True or False"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, noise=np.inf), ValueError,
     "noise must be finite and >= 0, got inf"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, noise=True), TypeError,
     "noise must be a real number, got bool"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, noise="0.1"), TypeError,
     "noise must be a real number, got str"),
    (lambda n, x, y: H.log_marginal_likelihood(n, "abc", y), TypeError,
     "x must be an array, got the string 'abc'"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x[:, 0], y), ValueError,
     "x must be 2-D (N, d)"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x[:0], y[:0]), ValueError, "x has no rows"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x[:3], y), ValueError,
     "y has 10 rows, expected 3"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, y, get="cov1"), ValueError,
     "get must be 'nngp' or 'ntk'"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, 1e200 * y), ValueError,
     "overflows float64 (|y| up to"),
    (lambda n, x, y: H.log_marginal_likelihood(n, x, 1e200 * y, eval_gradient=True), ValueError,
     "overflows float64 (|y| up to"),
])
def test_flags_and_noise_are_checked(call, exc, words, x):
    """Flags are booleans (the string "no" is truthy) and the noise a finite
    real number >= 0: errors naming them, not a different computation."""
    net = ik.serial(ik.Dense(4), ik.Relu(), ik.Dense(1))
    with pytest.raises(exc) as info:
        call(net, x, x[:, 0])
    assert words in str(info.value)


def test_copies_keep_the_network_structure():
    """with_hyperparameters / with_activation_parameters change values only:
    the input width (``from_torch`` networks) and the nesting of ``serial``
    (neural-tangents' params layout) stay; a wrong number of activation
    parameters is refused before any layer is rebuilt."""
    inner = ik.serial(ik.Dense(8, b_std=0.1), ik.LeakyRelu(0.1))
    net = ik.serial(inner, ik.Dense(1, b_std=0.1))
    net.input_dim = 3
    x = np.random.default_rng(0).standard_normal((4, 3))
    _, nested = net.init_fn(0, (-1, 3))          # ((W, b), ()), (W, b)
    from infkernel.verification import with_width
    for copy in (H.with_hyperparameters(net, 1.3, 0.2),
                 H.with_activation_parameters(net, [0.2, 1.0]), with_width(net, 16)):
        assert copy.input_dim == 3 and copy.nesting == net.nesting
        with pytest.raises(ValueError, match="takes inputs of dimension 3, got points of "
                                             "dimension 2"):
            copy.kernel(x[:, :2])
    for copy in (H.with_hyperparameters(net, 1.3, 0.2),
                 H.with_activation_parameters(net, [0.2, 1.0])):
        assert copy.apply_fn(nested, x).shape == (4, 1)
    with pytest.raises(ValueError, match="values: expected 2 activation parameters, got 1"):
        H.with_activation_parameters(net, [0.2])


@pytest.mark.parametrize("sign", [1, -1], ids=["identical", "antipodal"])
@pytest.mark.parametrize("act", [ik.Erf(0.7, 3.0, -0.4), ik.Sin(1.1, 0.9, 0.4),
                                 ik.Gaussian(1.1, -0.6), ik.Gelu(), ik.Gabor()], ids=repr)
def test_same_points_exact_at_large_variance(act, sign):
    """One hidden layer, pre-activation variances up to ~1e14 (and ~1e200 for
    Erf and Sin): dK at a point against itself, at a duplicated row, and at
    its antipode behind a bias-free Dense layer (q12 = −q) equals the
    derivative of the pair's recursion in 60 digits (450 where K spans
    1e-200 … 1e200) to 1e-14, a few tens of ulps of a few closed-form steps.
    The sum of partials 2∂₁₁k ± ∂₁₂k cancels there: it was 2e-3 off for Erf
    at q ~ 1e13 (0.5 for Erf(b = 3), 0.14 for the antipode), 4e-2 for
    Gaussian's antipode at q ~ 1e13 and wrong in sign for Gelu's at q ~ 1e10;
    Erf's derivatives overflowed from q ~ 1e154.  Gaussian, Gelu and Gabor up
    to scale 1e7 (the jets of Gabor and Gelu, which the other entries take,
    overflow from q ~ 1e104 and 1e152)."""
    import mpmath as mp
    moderate = act.name in ("Gaussian", "Gelu", "Gabor")

    def duals(p, q):          # k, k̇ at (q, ±q, q)
        if act.name == "Erf":
            a, b, c = p
            z = sign * 2 * b * b * q / (1 + 2 * b * b * q)
            return (a * a * 2 / mp.pi * mp.asin(z) + c * c,
                    a * a * 4 / mp.pi * b * b / mp.sqrt(1 + 4 * b * b * q))
        if act.name == "Sin":         # e∓ = exp(−b²(2q ∓ 2q12)/2)
            a, b, c = p
            e = mp.exp(-2 * b * b * q)
            minus, plus = (1, e) if sign > 0 else (e, 1)
            return (a * a / 2 * (minus - plus * mp.cos(2 * c)),
                    a * a * b * b / 2 * (minus + plus * mp.cos(2 * c)))
        if act.name == "Gelu":        # neural-tangents' formula
            P, q12 = 1 + q, sign * q
            z, d = q12 / P, mp.sqrt(1 + 2 * q)
            h = (q / P) ** 2
            return (q12 / 4 + (z * z / d + h * d + q12 * mp.asin(z)) / (2 * mp.pi),
                    mp.mpf(1) / 4 + mp.asin(z) / (2 * mp.pi)
                    + q12 / (2 * mp.pi * d) * (1 / d ** 2 + 1 / P ** 2 - h + 1))
        if act.name == "Gabor":       # odd φ, even φ': k changes sign at the antipode
            d, e = 1 + 4 * q, mp.exp(-q / (1 + 4 * q))
            b = q / d
            return (sign * e * mp.sinh(b) / mp.sqrt(d),
                    e / d ** 2.5 * (4 * q * (d + 1 + 2 * q) * mp.sinh(b)
                                    + (d + 8 * q * q) * mp.cosh(b)))
        a, b = p
        return (a * a / mp.sqrt(1 - 4 * b * q),
                sign * 4 * a * a * b * b * q * (1 - 4 * b * q) ** -1.5)

    x0 = np.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5], [0.3, 0.1, -0.7]])
    x0[1] *= sign
    b1 = 0.1 if sign > 0 else None      # the antipode stays one without a bias
    net = ik.serial(ik.Dense(8, 1.2, b1), act, ik.Dense(1, 1.3, 0.2))
    names = H.parameter_names(net, shared=False, activation_params=True)
    for scale in [1.0, 1e3, 1e7] + ([] if moderate else [1e100]):
        with mp.workdps(60 if moderate else 450):
            x = x0 * scale
            sq = sum(mp.mpf(float(v)) ** 2 for v in x[0]) / 3
            for get in ("nngp", "ntk"):
                _, dK = H.kernel_and_grad(net, x, get, shared=False, activation_params=True)

                def theta(*t):        # t: names' order, W_std 1, 2, b_std 1, 2, act params
                    q = t[0] ** 2 * sq + t[2] ** 2
                    k, kd = duals(t[4:], q)
                    s = t[1] ** 2 * k + t[3] ** 2
                    return s if get == "nngp" else s + t[1] ** 2 * kd * sign * q
                t0 = [mp.mpf(v) for v in (1.2, 1.3, b1 or 0, 0.2) + tuple(act.params)]
                for i, name in enumerate(names):
                    ref = mp.diff(lambda u: theta(*(t0[:i] + [u] + t0[i + 1:])), t0[i])
                    for j in (0, 1) if sign > 0 else (1,):
                        assert abs(dK[i, 0, j] - ref) <= 1e-14 * abs(ref), (scale, get, name, j)


def test_gelu_duplicated_rows_at_huge_variance():
    """Gelu's general partials (jets of neural-tangents' formula) are not
    finite at identical points from q ~ 1e16; the diagonal and a duplicated
    row take the closed form along q12 = q and stay finite, the row's
    derivatives those of its point's diagonal (to the rounding of the inner
    products; a KernelRangeError before, from q ~ 3e16 to 1e150)."""
    x = np.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5], [0.3, 0.1, -0.7]])
    net = ik.serial(ik.Dense(8, 1.2, 0.1), ik.Gelu(), ik.Dense(1, 1.3, 0.2))
    for scale in (1e10, 1e40, 1e74):
        for get in ("nngp", "ntk"):
            _, dK = H.kernel_and_grad(net, scale * x, get, shared=False)
            assert np.isfinite(dK).all()
            np.testing.assert_allclose(dK[:, 0, 1], dK[:, 0, 0], rtol=1e-13, atol=0)
            np.testing.assert_allclose(dK[:, 1, 2], dK[:, 0, 2], rtol=1e-13, atol=0)
