"""scikit-learn interop: check_estimator, kernel gradient, GPR/KernelRidge/SVC."""
import pickle

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import infkernel as ik
from infkernel.sklearn import NetworkKernel, NNGPRegressor, NTKRegressor


@parametrize_with_checks([NNGPRegressor(), NTKRegressor(t=10.0)])
def test_check_estimator(estimator, check):
    check(estimator)


def test_kernel_gradient_matches_finite_differences():
    # sklearn's own convention: gradient with respect to log(θ).  Central
    # differences in log θ with h = 1e-6: error ~1e-10 relative (see test_hyper).
    X = np.random.default_rng(0).standard_normal((12, 3))
    for W, b in ((1.3, 0.2), (np.array([1.3, 0.8, 1.1]), np.array([0.2, 0.1, 0.3]))):
        for get in ("nngp", "ntk"):
            k = NetworkKernel(W_std=W, b_std=b, get=get)
            K, G = k(X, eval_gradient=True)
            assert np.allclose(K, k(X), rtol=1e-12, atol=0)
            theta = k.theta
            h = 1e-6
            for i in range(theta.size):
                tp, tm = theta.copy(), theta.copy()
                tp[i] += h
                tm[i] -= h
                fd = (k.clone_with_theta(tp)(X) - k.clone_with_theta(tm)(X)) / (2 * h)
                assert np.abs(fd - G[..., i]).max() <= 1e-6 * np.abs(G).max()


def test_kernel_diag_and_cross():
    X = np.random.default_rng(1).standard_normal((7, 2))
    Y = np.random.default_rng(2).standard_normal((4, 2))
    k = NetworkKernel(W_std=1.4, b_std=0.1, get="ntk")
    assert np.allclose(k.diag(X), np.diag(k(X)), rtol=1e-12, atol=0)
    upper = NetworkKernel(W_std=1.4, b_std=0.1, get="NTK")     # any case, as neural-tangents
    assert np.array_equal(upper(X, eval_gradient=True)[1], k(X, eval_gradient=True)[1])
    assert np.array_equal(upper.diag(X), k.diag(X)) and upper.get == "NTK"
    assert k(X, Y).shape == (7, 4)
    fixed = NetworkKernel(W_std_bounds="fixed")
    assert fixed.theta.size == 1 and fixed(X, eval_gradient=True)[1].shape == (7, 7, 1)


def test_gpr_optimises_and_other_estimators_accept_kernel():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    y = np.sin(2 * X[:, 0]) + 0.05 * rng.standard_normal(60)
    k0 = NetworkKernel(W_std=0.5, b_std=0.5) + WhiteKernel(0.1)
    gpr = GaussianProcessRegressor(k0, optimizer="fmin_l_bfgs_b", random_state=0).fit(X, y)
    assert gpr.log_marginal_likelihood_value_ > gpr.log_marginal_likelihood(k0.theta)
    KernelRidge(kernel=NetworkKernel(), alpha=1e-2).fit(X, y).predict(X[:3])
    SVC(kernel=NetworkKernel()).fit(X, (y > 0).astype(int)).predict(X[:3])


def test_regressor_std_cov_and_pickle():
    rng = np.random.default_rng(0)
    X, Xt = rng.standard_normal((30, 3)), rng.standard_normal((5, 3))
    y = rng.standard_normal((30, 2))
    for est in (NNGPRegressor(), NTKRegressor(), NTKRegressor(t=5.0)):
        est.fit(X, y)
        m, s = est.predict(Xt, return_std=True)
        m2, c = est.predict(Xt, return_cov=True)
        assert m.shape == (5, 2) and s.shape == (5, 2) and c.shape == (5, 5, 2)
        assert np.allclose(s[:, 0] ** 2, np.diag(c[:, :, 0]), rtol=1e-10, atol=1e-12)
        est2 = pickle.loads(pickle.dumps(est))
        assert np.allclose(est2.predict(Xt), m, rtol=1e-12, atol=0)
        # parameters set after fit act at the next fit, on the live and the
        # unpickled estimator alike (the unpickled one rebuilt its solver)
        est.set_params(W_std=4.0, b_std=1.0)
        if isinstance(est, NTKRegressor):     # the training time, too
            est.set_params(t=100.0, learning_rate=3.0)
        est3 = pickle.loads(pickle.dumps(est))
        assert np.allclose(est3.predict(Xt), m, rtol=1e-12, atol=0)
        assert np.allclose(est.predict(Xt), m, rtol=1e-12, atol=0)
        assert not np.allclose(est.fit(X, y).predict(Xt), m, rtol=1e-3, atol=0)


def test_failed_fit_leaves_estimator_unchanged():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    est = NNGPRegressor().fit(X, y)
    before = est.predict(X[:4])
    bad = y.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError):
        est.fit(rng.standard_normal((20, 5)), bad)
    with pytest.raises(ValueError):
        est.set_params(diag_reg=-1.0).fit(X[:10], y[:10])
    est.set_params(diag_reg=1e-4)
    assert est.n_features_in_ == 3
    assert np.array_equal(est.predict(X[:4]), before)
    for flags in ({"return_cov": "no"}, {"return_std": 1}):    # not truthiness
        with pytest.raises(TypeError, match="must be True or False"):
            est.predict(X[:4], **flags)
    with pytest.raises(ValueError, match="at most one of return_std and return_cov"):
        est.predict(X[:4], return_std=True, return_cov=True)
    with pytest.raises(TypeError, match="activation must be an activation .* or its name, "
                       r"got \['relu'\]"):
        ik.sklearn.make_network(1, ["relu"])
    with pytest.raises(TypeError, match="got a Network: pass a custom network as network="):
        NTKRegressor(ik.serial(ik.Dense(1))).fit(X, X[:, 0])


def test_custom_network():
    net = ik.serial(ik.Dense(1), ik.Erf(), ik.Dense(1))
    X = np.random.default_rng(0).standard_normal((10, 2))
    est = NNGPRegressor(network=net, W_std=1.2, b_std=0.3).fit(X, X[:, 0])
    assert est.score(X, X[:, 0]) > 0.99      # interpolation with ridge 1e-4


def test_auto_stds_keep_the_networks_own():
    """W_std = b_std = "auto" (the default) fit the given network as it is,
    its per-layer values and a bias-free layer included; a value replaces one
    of the two in every Dense layer; without a network "auto" is 1.5 / 0.1."""
    net = ik.serial(ik.Dense(8, 2.0, None), ik.Erf(), ik.Dense(8, 0.7, 0.3), ik.Relu(),
                    ik.Dense(1, 1.1, 0.05))
    X = np.random.default_rng(1).standard_normal((12, 3))
    y = np.sin(X[:, 0])
    for cls in (NNGPRegressor, NTKRegressor):
        assert cls().get_params()["W_std"] == cls().get_params()["b_std"] == "auto"
        get = "nngp" if cls is NNGPRegressor else "ntk"
        fitted = cls(network=net).fit(X, y).network_
        assert np.array_equal(fitted.kernel(X, None, get), net.kernel(X, None, get))
        fitted = cls(network=net, W_std=1.3).fit(X, y).network_
        own_b = ik.serial(ik.Dense(8, 1.3, None), ik.Erf(), ik.Dense(8, 1.3, 0.3), ik.Relu(),
                          ik.Dense(1, 1.3, 0.05))
        assert np.array_equal(fitted.kernel(X, None, get), own_b.kernel(X, None, get))
        fitted = cls(depth=1).fit(X, y).network_
        default = ik.serial(ik.Dense(1, 1.5, 0.1), ik.Relu(), ik.Dense(1, 1.5, 0.1))
        assert np.array_equal(fitted.kernel(X, None, get), default.kernel(X, None, get))
        with pytest.raises(TypeError, match="b_std must be 'auto', a real number >= 0 or one "
                                            "per Dense layer, got 'none'"):
            cls(network=net, b_std="none").fit(X, y)


def test_normalize_y_matches_gaussian_process_regressor():
    """normalize_y centres and scales y as GaussianProcessRegressor does:
    same mean, std and covariance for the same kernel and noise."""
    rng = np.random.default_rng(3)
    X, Xt = rng.standard_normal((25, 3)), rng.standard_normal((6, 3))
    y = np.stack([5.0 + 3.0 * rng.standard_normal(25), -2.0 + 0.1 * rng.standard_normal(25)], 1)
    ours = NNGPRegressor(W_std=1.3, b_std=0.2, diag_reg=1e-2, diag_reg_absolute_scale=True)
    kern = NetworkKernel(ik.sklearn.make_network(2, "relu"), W_std=1.3, b_std=0.2,
                         W_std_bounds="fixed", b_std_bounds="fixed")
    gpr = GaussianProcessRegressor(kern, alpha=1e-2, normalize_y=True, optimizer=None)
    for target in (y, y[:, 0]):
        ours.fit(X, target)
        gpr.fit(X, target)
        m, s = ours.predict(Xt, return_std=True)
        mg, sg = gpr.predict(Xt, return_std=True)
        _, c = ours.predict(Xt, return_cov=True)
        _, cg = gpr.predict(Xt, return_cov=True)
        for a, b in ((m, mg), (s, sg), (c, cg)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * np.abs(b).max())


@pytest.mark.parametrize("Regressor", [NNGPRegressor, NTKRegressor])
def test_normalize_y_at_extreme_scales(Regressor):
    """Targets scaled by 1e±300 give the scaled predictions (the std of y is
    taken on y / max|y|: y.std() overflows from |y| ~ 1e154); a covariance
    beyond float64 is an error, not inf."""
    rng = np.random.default_rng(7)
    X, Xt = rng.standard_normal((20, 3)), rng.standard_normal((4, 3))
    y = np.sin(X[:, 0]) + 2.0
    m0, s0 = Regressor().fit(X, y).predict(Xt, return_std=True)
    for f in (1e155, 1e300, 1e-300):
        m, s = Regressor().fit(X, f * y).predict(Xt, return_std=True)
        np.testing.assert_allclose(m / f, m0, rtol=1e-12)
        np.testing.assert_allclose(s / f, s0, rtol=1e-12, atol=1e-14 * s0.max())
    with pytest.raises(ValueError, match="predictive covariance overflows"):
        Regressor().fit(X, 1e200 * y).predict(Xt, return_cov=True)
    with pytest.raises(ValueError, match="y must hold numbers"):
        Regressor().fit(X, np.array(["a"] * 20))


def test_bias_free_network_stays_bias_free():
    """b_std=None means no bias, as in Dense: in the standard parameterization
    it differs from b_std=0 (whose NTK gets 1 per layer), and the wrappers
    give the kernel of the bias-free network built by hand; a None b_std is
    not a hyperparameter (nothing to optimise)."""
    X = np.random.default_rng(0).standard_normal((6, 2))

    def net(b):
        return ik.serial(ik.Dense(8, 1.3, b, "standard"), ik.Relu(),
                         ik.Dense(1, 1.3, b, "standard"))
    free, zero = net(None).kernel(X, None, "ntk"), net(0.0).kernel(X, None, "ntk")
    assert np.abs(free - zero).min() > 1       # +1 per layer with a bias
    k = NetworkKernel(net(0.5), W_std=1.3, b_std=None, get="ntk")
    np.testing.assert_array_equal(k(X), free)
    np.testing.assert_array_equal(NetworkKernel(net(None), W_std=1.3, b_std=0.0, get="ntk",
                                                b_std_bounds="fixed")(X), zero)
    assert k.theta.shape == (1,) and k(X, eval_gradient=True)[1].shape == (6, 6, 1)
    assert "b_std=None" in repr(k)
    # one layer bias-free, the other not (a fixed hyperparameter)
    mixed = ik.serial(ik.Dense(8, 1.3, None, "standard"), ik.Relu(),
                      ik.Dense(1, 1.3, 0.2, "standard"))
    km = NetworkKernel(net(0.5), W_std=1.3, b_std=[None, 0.2], b_std_bounds="fixed", get="ntk")
    np.testing.assert_array_equal(km(X), mixed.kernel(X, None, "ntk"))
    with pytest.raises(ValueError, match="b_std\\[0\\] is None \\(no bias\\), which cannot be "
                                         "optimised: pass b_std_bounds='fixed'"):
        NetworkKernel(net(0.5), b_std=[None, 0.2]).theta
    # the regressors: the same bias-free network
    y = X[:, 0]
    ours = NNGPRegressor(network=net(0.5), W_std=1.3, b_std=None, normalize_y=False,
                         diag_reg=1e-2, diag_reg_absolute_scale=True).fit(X, y)
    gpr = GaussianProcessRegressor(NetworkKernel(net(None), W_std=1.3, b_std=None,
                                                 W_std_bounds="fixed"),
                                   alpha=1e-2, optimizer=None).fit(X, y)
    # the same kernel and ridge through two Cholesky solves (cond ≲ 1e3): rounding only
    np.testing.assert_allclose(ours.predict(X[:3]), gpr.predict(X[:3]), rtol=1e-10)
    np.testing.assert_array_equal(
        NNGPRegressor(b_std=None, depth=1)._net().kernel(X, None, "nngp"),
        ik.serial(ik.Dense(1, 1.5), ik.Relu(), ik.Dense(1, 1.5)).kernel(X, None, "nngp"))
    with pytest.raises(ValueError, match="W_std must be a number >= 0, got None"):
        NNGPRegressor(W_std=None).fit(X, y)


def test_dense_layers_inside_branches_get_the_hyperparameters():
    """W_std / b_std reach the Dense layers inside parallel branches
    (MscaleDNN2, Residual): the kernels of the networks built by hand with
    those values; per-layer values in depth-first, branch order; gradients
    against central differences in log θ (as above)."""
    X = np.random.default_rng(0).standard_normal((8, 2))
    y = np.sin(X[:, 0])
    ms = ik.MscaleDNN2([1, 2], hidden=(8,))
    for get in ("nngp", "ntk"):
        np.testing.assert_array_equal(
            NetworkKernel(ms, W_std=1.7, b_std=0.4, get=get)(X),
            ik.MscaleDNN2([1, 2], hidden=(8,), W_std=1.7, b_std=0.4).kernel(X, None, get))
    p1 = NNGPRegressor(network=ms, W_std=0.5).fit(X, y).predict(X[:3])
    p2 = NNGPRegressor(network=ms, W_std=1.5, b_std=0.5).fit(X, y).predict(X[:3])
    assert np.abs(p1 - p2).max() > 1e-3
    res = ik.serial(ik.Dense(4), ik.Residual(ik.serial(ik.Relu(), ik.Dense(4))), ik.Relu(),
                    ik.Dense(1))
    by_hand = ik.serial(ik.Dense(4, 1.1, 0.1), ik.Residual(ik.serial(ik.Relu(),
                                                                     ik.Dense(4, 1.2, 0.2))),
                        ik.Relu(), ik.Dense(1, 1.3, 0.3))
    k = NetworkKernel(res, W_std=[1.1, 1.2, 1.3], b_std=[0.1, 0.2, 0.3], get="ntk")
    np.testing.assert_array_equal(k(X), by_hand.kernel(X, None, "ntk"))
    with pytest.raises(ValueError, match="one value per Dense layer \\(3\\)"):
        NetworkKernel(res, W_std=[1.0, 1.0])(X)
    for kern in (k, NetworkKernel(ms, W_std=1.2, b_std=0.3)):
        K, G = kern(X, eval_gradient=True)
        # the gradient path's kernel (the unperturbed point of the differences,
        # or the forward-mode recursion) against the plain kernel: rounding only
        assert np.allclose(K, kern(X), rtol=1e-12, atol=0)
        theta, h = kern.theta, 1e-6
        assert G.shape == (8, 8, theta.size)
        for i in range(theta.size):
            tp, tm = theta.copy(), theta.copy()
            tp[i] += h
            tm[i] -= h
            fd = (kern.clone_with_theta(tp)(X) - kern.clone_with_theta(tm)(X)) / (2 * h)
            assert np.abs(fd - G[..., i]).max() <= 1e-6 * np.abs(G).max()


def test_kernel_inputs_are_checked_not_cast():
    """X and Y go through the library's input checks: complex inputs (whose
    imaginary part a float cast drops) and numeric strings are errors naming
    the argument."""
    X = np.random.default_rng(0).standard_normal((3, 2))
    k = NetworkKernel()
    for call in (lambda: k(X + 1j), lambda: k.diag(X + 1j), lambda: k(X, X + 1j),
                 lambda: k(X + 1j, eval_gradient=True)):
        with pytest.raises(TypeError, match="must be real, got dtype complex128"):
            call()
    with pytest.raises(TypeError, match="X must be a numeric array"):
        k([["1", "2"]])
    with pytest.raises(ValueError, match="Y has 1 features, expected 2 \\(the same as X\\)"):
        k(X, X[:, :1])
    assert np.array_equal(k(X.tolist()), k(X)) and np.array_equal(k.diag(X), np.diag(k(X)))


def test_zero_std_needs_fixed_bounds():
    """A std of 0 has no logarithm: with bounds to search it is an error
    naming it (not theta = -inf with warnings); fixed, it is kept."""
    import warnings
    for kw, name in ((dict(b_std=0), "b_std"), (dict(W_std=0.0), "W_std"),
                     (dict(b_std=[0.1, 0.0, 0.1]), "b_std\\[1\\]")):
        k = NetworkKernel(**kw)
        with pytest.raises(ValueError, match=f"{name} is 0, which cannot be optimised"):
            k.theta
        with pytest.raises(ValueError, match=f"{name} is 0"):
            GaussianProcessRegressor(k).fit(np.eye(3), np.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        k = NetworkKernel(b_std=0, b_std_bounds="fixed")
        assert k.theta.shape == (1,) and np.isfinite(k.theta).all()


def test_custom_networks_pickle():
    """Activations pickle as their factory calls; so do networks and fitted
    estimators built from them (joblib.dump of a model)."""
    net = ik.serial(ik.Dense(8, 1.3, 0.1), ik.LeakyRelu(0.2), ik.Dense(8), ik.Tanh(),
                    ik.Dense(8), ik.Erf(1.0, 2.0, 0.1), ik.Dense(1))
    X = np.random.default_rng(0).standard_normal((10, 3))
    net2 = pickle.loads(pickle.dumps(net))
    assert repr(net2) == repr(net)
    assert np.array_equal(net2.kernel(X).ntk, net.kernel(X).ntk)
    _, params = net.init_fn(0, (-1, 3))
    assert np.array_equal(net2.apply_fn(params, X), net.apply_fn(params, X))
    est = NTKRegressor(network=net).fit(X, np.sin(X[:, 0]))
    closed = ik.serial(ik.Dense(8), ik.LeakyRelu(0.2), ik.Dense(8), ik.Erf(1, 2, 0.1),
                       ik.Dense(1))
    gpr = GaussianProcessRegressor(NetworkKernel(closed)).fit(X, np.sin(X[:, 0]))
    # numerically integrated activations: gradients by differences (test_hyper)
    gpr_tanh = GaussianProcessRegressor(NetworkKernel(net)).fit(X, np.sin(X[:, 0]))
    for model in (est, gpr, gpr_tanh):
        again = pickle.loads(pickle.dumps(model))
        assert np.allclose(again.predict(X[:3]), model.predict(X[:3]), rtol=1e-12, atol=0)


def test_regressor_arguments_are_checked_in_fit():
    """t is None or one real time >= 0 (inf allowed); the flags are booleans:
    a list of times, a numeric string or the string "no" (truthy) is an error,
    not a silently different model."""
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = X[:, 0]
    for est, exc, words in (
            (NTKRegressor(t=[1.0, 2.0]), TypeError, "t must be None (t = ∞) or one training time"),
            (NTKRegressor(t="5"), TypeError, "t must be None (t = ∞) or one training time"),
            (NTKRegressor(t=-1.0), ValueError, "t must be a number (inf allowed) and >= 0"),
            (NTKRegressor(t=float("nan")), ValueError, "t must be"),
            (NNGPRegressor(normalize_y="no"), TypeError, "normalize_y must be True or False"),
            (NTKRegressor(diag_reg_absolute_scale="no"), TypeError,
             "diag_reg_absolute_scale must be True or False"),
            (NNGPRegressor(W_std="1.5"), TypeError, "W_std must be 'auto', a real number"),
            (NNGPRegressor(b_std=[0.1, "x", 0.1]), TypeError, "b_std[1] must be a real number")):
        with pytest.raises(exc) as info:
            est.fit(X, y)
        assert words in str(info.value)
    # t = inf is the t = None limit
    mean = NTKRegressor(t=np.inf).fit(X, y).predict(X[:3])
    assert mean.shape == (3,) and np.isfinite(mean).all()


def test_network_kernel_arguments_are_checked():
    X = np.random.default_rng(0).standard_normal((5, 2))
    with pytest.raises(TypeError, match="W_std must be a real number, got str"):
        NetworkKernel(W_std="1")(X)
    with pytest.raises(TypeError, match="W_std must be a real number, got str"):
        NetworkKernel(W_std="1").theta
    with pytest.raises(ValueError, match="b_std must be a scalar or have one value per Dense "
                                         "layer \\(3\\)"):
        NetworkKernel(b_std=[0.1, 0.2])(X)
    for bounds, words in (("foo", "W_std_bounds must be 'fixed' or a pair"),
                          ((1.0,), "W_std_bounds must be 'fixed', a pair"),
                          ((1, -1), "W_std_bounds must satisfy 0 < lower <= upper < inf"),
                          ((2.0, 1.0), "got (2.0, 1.0)"),
                          ((0.0, 1.0), "0 < lower"),
                          ((1e-2, np.inf), "upper < inf")):
        with pytest.raises(ValueError) as info:
            NetworkKernel(W_std_bounds=bounds).bounds
        assert words in str(info.value)
    with pytest.raises(ValueError, match="b_std_bounds must satisfy"):
        NetworkKernel(b_std_bounds=(1.0, 0.5)).theta
    assert NetworkKernel(W_std=[1.0, 1.2, 0.9], W_std_bounds=[(0.1, 2)] * 3).bounds.shape == (4, 2)


def test_network_kernel_equality_compares_the_networks():
    """Kernels of different activations are different even when their reprs
    match; kernels of equal networks (built twice, or cloned) are equal."""
    from sklearn.base import clone
    import scipy.special

    def kernel(fn, **kw):
        return NetworkKernel(ik.serial(ik.Dense(3), ik.Elementwise(fn, **kw), ik.Dense(1)))
    a, b = kernel(np.tanh), kernel(np.sin, name="Elementwise(tanh)")
    assert repr(a) == repr(b) and a != b
    assert a == kernel(np.tanh) and hash(a) == hash(kernel(np.tanh))
    assert kernel(scipy.special.erf) != kernel(scipy.special.expit)
    net = ik.serial(ik.Dense(3), ik.Tanh(), ik.Dense(3), ik.LeakyRelu(0.1), ik.Dense(1))
    k = NetworkKernel(net, W_std=[1.0, 1.1, 1.2])
    assert k == clone(k) == NetworkKernel(
        ik.serial(ik.Dense(3), ik.Tanh(), ik.Dense(3), ik.LeakyRelu(0.1), ik.Dense(1)),
        W_std=[1.0, 1.1, 1.2])
    assert k != NetworkKernel(
        ik.serial(ik.Dense(3), ik.Tanh(), ik.Dense(3), ik.LeakyRelu(0.2), ik.Dense(1)),
        W_std=[1.0, 1.1, 1.2])
    assert k != NetworkKernel(net, W_std=[1.0, 1.1, 1.3])
    # networks with parallel branches: equal to their clones and copies too
    import copy
    for net in (ik.serial(ik.Dense(3), ik.Residual(ik.serial(ik.Dense(3), ik.Relu(),
                                                             ik.Dense(3))), ik.Dense(1)),
                ik.MscaleDNN2([1.0, 2.0], hidden=(4,))):
        k = NetworkKernel(net)
        assert k == clone(k) == copy.deepcopy(k) == pickle.loads(pickle.dumps(k))
    assert NetworkKernel(ik.MscaleDNN2([1.0, 2.0], hidden=(4,))) != NetworkKernel(
        ik.MscaleDNN2([1.0, 3.0], hidden=(4,)))


def test_network_kernel_gradient_overflow_is_an_error():
    """Hyperparameters at which the kernel overflows are refused with and
    without eval_gradient (the gradient path returned inf / NaN before)."""
    X = np.random.default_rng(5).standard_normal((5, 3))
    for get in ("nngp", "ntk"):
        for W in (1e60, 1e100):
            k = NetworkKernel(W_std=W, W_std_bounds=(1e-2, 1e200), get=get)
            for grad in (False, True):
                with pytest.raises(ik.KernelRangeError, match=r"W_std=1e\+"):
                    k(X, eval_gradient=grad)


def test_numeric_activation_by_name():
    """The README's numeric activations (Tanh, ...) are valid names."""
    X = np.random.default_rng(0).standard_normal((15, 2))
    for name in ("tanh", "softplus", "swish", "elu"):
        pred = NNGPRegressor(activation=name, depth=1).fit(X, X[:, 0]).predict(X[:3])
        assert pred.shape == (3,) and np.isfinite(pred).all()


def test_kernel_out_of_range_names_the_hyperparameters():
    """An optimiser's trial W_std beyond a numerically integrated activation's
    variance range: a KernelRangeError (a ValueError) naming the values and
    the remedy, not a bare quadrature message."""
    from infkernel._checks import KernelRangeError
    # a user activation tabulated for input variances up to 128
    net = ik.serial(ik.Dense(4), ik.Elementwise(np.sin, np.cos, name="Sin"), ik.Dense(1))
    X = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(KernelRangeError, match="W_std=100.*narrow W_std_bounds"):
        NetworkKernel(net, W_std=100.0)(X, eval_gradient=True)


def test_gaussian_process_with_tanh_on_unnormalised_data():
    """scikit-learn's optimiser may try W_std up to the default bound 100 on
    raw features (tanh's input variances ~1e4 · |x|²/d): the kernel is
    computable there, so the fit completes, with a kernel at least as likely
    as the start."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)) * 3.0
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=40)
    net = ik.serial(ik.Dense(512, 1.5, 0.05), ik.Tanh(), ik.Dense(1))
    gp = GaussianProcessRegressor(kernel=NetworkKernel(net), alpha=1e-2).fit(X, y)
    start = gp.log_marginal_likelihood(gp.kernel.theta)
    assert gp.log_marginal_likelihood_value_ >= start
    assert np.all(np.isfinite(gp.predict(X[:3])))
