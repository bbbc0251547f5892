"""Fourier-feature input maps and multi-scale networks."""
import math

import numpy as np
import pytest

import infkernel as ik


def body(depth=4):
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(64, W_std=1.4, b_std=0.1), ik.Relu()]
    return ik.serial(*layers, ik.Dense(1, W_std=1.4, b_std=0.1))


def rel_err(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


# --- the map itself ----------------------------------------------------------------
def test_map_formula_and_normalisations():
    B = np.array([[1.0, 2.0], [0.5, -3.0], [4.0, 0.0]])
    a = np.array([1.0, 0.5, 0.25])
    v = np.random.default_rng(0).uniform(size=(5, 2))
    z = 2 * np.pi * v @ B.T
    raw = np.concatenate([a * np.cos(z), a * np.sin(z)], axis=1)
    # arguments up to 2π·5 ≈ 30 rounded in another order: ~30 ulps ≈ 7e-15 absolute
    assert np.allclose(ik.FourierFeatures(B, a).map(v), raw, rtol=0, atol=2e-14)
    g = ik.FourierFeatures(B, a, normalize="norm").map(v)
    assert np.allclose((g ** 2).sum(1), 1.0, rtol=0, atol=4e-16)        # ‖γ‖ = 1
    g = ik.FourierFeatures(B, a, normalize="norm_sqrt_m").map(v)
    assert np.allclose((g ** 2).sum(1), 3.0, rtol=0, atol=4e-15)        # ‖γ‖² = m


def test_kernel_is_body_kernel_at_mapped_points():
    ff = ik.FourierFeatures.power_law(16, 1.0)
    x = np.random.default_rng(1).uniform(size=(6, 1))
    y = np.random.default_rng(2).uniform(size=(4, 1))
    got = ik.serial(ff, body()).kernel(x, y)
    ref = body().kernel(ff.map(x), ff.map(y))
    np.testing.assert_array_equal(got.ntk, ref.ntk)        # the same computation
    np.testing.assert_array_equal(got.nngp, ref.nngp)
    d = ik.serial(ff, body()).diag(x)
    np.testing.assert_allclose(d.ntk, np.diag(body().kernel(ff.map(x)).ntk), rtol=1e-14)


def test_positional_encoding_and_power_law():
    pe = ik.PositionalEncoding(10.0, 4, input_dim=2)
    lv = 10.0 ** (np.arange(4) / 4)
    np.testing.assert_allclose(pe.frequencies, np.kron(lv[:, None], np.eye(2)), rtol=1e-15)
    assert pe.out_dim(2) == 16
    pl = ik.FourierFeatures.power_law(8, 2.0, normalize=None)
    np.testing.assert_allclose(pl.amplitudes, 1.0 / np.arange(1, 9) ** 2, rtol=1e-15)
    # p = ∞ is the basic map [cos 2πv, sin 2πv]: both give γᵀγ'/D = ½ cos 2π(v − v')
    x = np.random.default_rng(3).uniform(size=(5, 1))
    a = ik.serial(ik.FourierFeatures.power_law(8, math.inf), body()).kernel(x, None, "ntk")
    b = ik.serial(ik.FourierFeatures([1.0]), body()).kernel(x, None, "ntk")
    assert rel_err(a, b) < 1e-13   # different sums of the same terms: rounding only


def test_finite_network_with_features():
    net = ik.serial(ik.FourierFeatures.power_law(5, 1.0), ik.Dense(7), ik.Relu(), ik.Dense(2))
    shape, params = net.init_fn(0, (-1, 1))
    assert shape == (-1, 2)
    out = net.apply_fn(params, np.linspace(0, 1, 3)[:, None])
    assert out.shape == (3, 2) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="maps inputs of dimension 1"):
        net.init_fn(0, (-1, 2))


# --- stationarity --------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.0, 1.0, math.inf])
def test_stationary_on_the_periodic_domain(p):
    """Integer frequencies: K(x + s, x' + s) = K(x, x') for every shift s and
    K is 1-periodic.  The mapped features are cos/sin of arguments up to
    2π·m·2 ≈ 400, which carry ~400 ulps of absolute error: 1e-11 relative."""
    rng = np.random.default_rng(4)
    x, y = rng.uniform(size=(6, 1)), rng.uniform(size=(5, 1))
    net = ik.serial(ik.FourierFeatures.power_law(32, p), body())
    k0 = net.kernel(x, y, "ntk")
    for s in rng.uniform(-1, 1, size=3):
        assert rel_err(net.kernel(x + s, y + s, "ntk"), k0) < 1e-11
        assert rel_err(net.kernel((x + s) % 1.0, (y + s) % 1.0, "ntk"), k0) < 1e-11
    # without the mapping the same network is far from shift-invariant
    k1 = body().kernel(x, y, "ntk")
    assert rel_err(body().kernel(x + 0.3, y + 0.3, "ntk"), k1) > 1e-2


def test_gaussian_features_stationary_in_2d():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(size=(5, 2)), rng.uniform(size=(4, 2))
    for ff in (ik.GaussianFourierFeatures(3.0, 64, input_dim=2, seed=1),
               ik.GaussianFourierFeatures(3.0)):
        net = ik.serial(ff, body(2))
        k0 = net.kernel(x, y, "ntk")
        s = rng.uniform(-1, 1, size=2)
        assert rel_err(net.kernel(x + s, y + s, "ntk"), k0) < 1e-11


# --- infinite-feature limit ------------------------------------------------------------
def _pairs():
    rng = np.random.default_rng(6)
    return rng.uniform(size=(6, 2)) * 0.3, rng.uniform(size=(6, 2)) * 0.3


def test_infinite_gaussian_layer_is_the_gaussian_kernel():
    x, y = _pairs()
    sigma = 1.5
    k = ik.serial(ik.GaussianFourierFeatures(sigma), ik.Dense(1)).kernel(x, y, "nngp")
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(k, 0.5 * np.exp(-2 * np.pi ** 2 * sigma ** 2 * d2),
                               rtol=1e-13, atol=0)   # exp of an argument ≲ 10: ~10 ulps


@pytest.mark.parametrize("m", [16, 256, 4096])
def test_sampled_features_within_monte_carlo_error(m):
    """(1/2m) Σ_j cos(2π b_jᵀΔ), b_j ~ N(0, σ²I), has mean ½ k(Δ) and variance
    Var[cos]/(4m) with Var[cos] = ½(1 + k(2Δ)) − k(Δ)²: every entry within 5
    standard errors (two-sided p ≈ 6e-7 per entry, 36 entries)."""
    x, y = _pairs()
    sigma = 1.5
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    k = np.exp(-2 * np.pi ** 2 * sigma ** 2 * d2)
    k2 = np.exp(-8 * np.pi ** 2 * sigma ** 2 * d2)
    se = 0.5 * np.sqrt((0.5 * (1 + k2) - k ** 2) / m)
    got = ik.serial(ik.GaussianFourierFeatures(sigma, m, input_dim=2, seed=m),
                    ik.Dense(1)).kernel(x, y, "nngp")
    z = np.abs(got - 0.5 * k) / se
    assert z.max() < 5.0, z.max()


def test_composed_kernel_converges_at_monte_carlo_rate():
    """NTK of a ReLU network on sampled features: the RMS error against the
    infinite-feature NTK over 24 seeds scales as m^(-1/2), so 16× the features
    gives 4× less error.  With 24 seeds × 36 entries the ratio of RMS errors is
    4 within a factor ~1.3 (relative error of an RMS over ≥ 24 independent
    draws ≈ 1/√48 per side); the bounds [2, 8] are a factor 2 either way."""
    x, y = _pairs()
    net = ik.serial(ik.Dense(64, W_std=1.4, b_std=0.1), ik.Relu(), ik.Dense(1, W_std=1.4))
    limit = ik.serial(ik.GaussianFourierFeatures(1.5), net).kernel(x, y, "ntk")
    rms = []
    for m in (64, 1024):
        errs = [ik.serial(ik.GaussianFourierFeatures(1.5, m, input_dim=2, seed=s), net)
                .kernel(x, y, "ntk") - limit for s in range(24)]
        rms.append(np.sqrt(np.mean(np.square(errs))))
    assert 2.0 < rms[0] / rms[1] < 8.0, rms


# --- multi-scale networks ----------------------------------------------------------------
def test_mscale2_is_sum_of_scaled_subnetworks():
    x = np.linspace(0, 1, 5)[:, None]
    y = np.linspace(0.1, 0.9, 3)[:, None]
    scales = [1.0, 3.0, 7.0]
    kw = dict(W_std=1.2, b_std=0.3)
    # The fused net scales the input kernel (a² q) where the reference scales the
    # points ((a x)ᵀ(a y)): inputs differing by an ulp or two.  Relu's closed form
    # passes that on (plus one addition per branch): 1e-13.  The compactly
    # supported s2ReLU varies on the scale 1/a of the support, so its kernel's
    # relative sensitivity to q reaches ~a² ≈ 50 at a = 7, and its quadrature
    # adds ~1e-14 per layer: 1e-11.
    for act, tol in ((ik.Relu(), 1e-13), (ik.S2ReLU(), 1e-11)):
        net = ik.MscaleDNN2(scales, hidden=(32, 16), activation=act, **kw)
        got = net.kernel(x, y)
        sub = ik.serial(ik.Dense(32, **kw), act, ik.Dense(16, **kw), act, ik.Dense(1, **kw))
        parts = [sub.kernel(a * x, a * y) for a in scales]
        assert rel_err(got.nngp, sum(p.nngp for p in parts)) < tol
        assert rel_err(got.ntk, sum(p.ntk for p in parts)) < tol


def test_mscale1_first_layer_groups():
    x = np.linspace(0, 1, 5)[:, None]
    scales = [1.0, 2.0, 4.0]
    kw = dict(W_std=1.1, b_std=0.2)
    net = ik.MscaleDNN1(scales, hidden=(12,), activation=ik.Erf(), **kw)
    got = net.kernel(x)
    groups = [ik.serial(ik.Dense(4, **kw), ik.Erf()).kernel(a * x) for a in scales]
    s = np.mean([g.nngp for g in groups], axis=0)
    t = np.mean([g.ntk for g in groups], axis=0)
    nngp = 1.21 * s + 0.04
    assert rel_err(got.nngp, nngp) < 1e-13
    assert rel_err(got.ntk, nngp + 1.21 * t) < 1e-13
    assert np.isfinite(ik.MscaleDNN1(scales, hidden=(12, 6)).kernel(x).ntk).all()


# --- bad input ---------------------------------------------------------------------------
def test_bad_frequencies_and_amplitudes():
    with pytest.raises(ValueError, match="FourierFeatures: frequencies must have 1 or 2"):
        ik.FourierFeatures(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="FourierFeatures: frequencies must not be empty"):
        ik.FourierFeatures([])
    with pytest.raises(ValueError, match="FourierFeatures: frequencies has NaN"):
        ik.FourierFeatures([1.0, np.nan])
    with pytest.raises(ValueError, match=r"amplitudes must have shape \(3,\)"):
        ik.FourierFeatures([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="amplitudes must have 0 or 1"):
        ik.FourierFeatures([1.0, 2.0], np.ones((2, 1)))
    with pytest.raises(ValueError, match="normalize must be one of"):
        ik.FourierFeatures([1.0], normalize="l2")
    with pytest.raises(ValueError, match="amplitudes are all zero"):
        ik.FourierFeatures([1.0], [0.0], normalize="norm")
    with pytest.raises(TypeError, match="frequencies must be an array of real numbers"):
        ik.FourierFeatures(["a"])
    with pytest.raises(ValueError, match="features' squared norm Σa² overflows"):
        ik.FourierFeatures([1.0], [1e160])
    with pytest.raises(ValueError, match="power_law: p = -1000 makes the amplitudes"):
        ik.FourierFeatures.power_law(300, -1000.0)
    # normalising huge or tiny amplitudes: ‖a‖ without overflow or underflow
    for a in (1e160, 1e-200):
        ff = ik.FourierFeatures([1.0, 2.0], [a, a], normalize="norm")
        np.testing.assert_allclose(ff.amplitudes, [0.5 ** 0.5] * 2, rtol=1e-15)


def test_mapping_dimension_must_match_data():
    net = ik.serial(ik.FourierFeatures(np.ones((4, 2))), ik.Dense(3), ik.Relu(), ik.Dense(1))
    with pytest.raises(ValueError, match="x1 has 3 features, but FourierFeatures.*dimension 2"):
        net.kernel(np.ones((2, 3)))
    with pytest.raises(ValueError, match="x2 has 1 features, expected 2"):
        net.kernel(np.ones((2, 2)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="x1 has 3 features"):
        net.diag(np.ones((2, 3)))


def test_map_placement_and_limit_errors():
    with pytest.raises(ValueError, match="must come first"):
        ik.serial(ik.Dense(3), ik.FourierFeatures([1.0])).kernel(np.ones((2, 1)))
    with pytest.raises(ValueError, match="acts on the network input"):
        ik.serial(ik.Dense(3), ik.GaussianFourierFeatures(1.0)).kernel(np.ones((2, 1)))
    with pytest.raises(ValueError, match="standard parameterization's NTK diverges"):
        ik.serial(ik.GaussianFourierFeatures(1.0),
                  ik.Dense(3, parameterization="standard")).kernel(np.ones((2, 1)))
    with pytest.raises(ValueError, match="no infinite-feature limit"):
        ik.GaussianFourierFeatures(1.0, normalize="norm")
    with pytest.raises(ValueError, match="no finite-width"):
        ik.serial(ik.GaussianFourierFeatures(1.0), ik.Dense(2)).init_fn(0, (-1, 1))
    with pytest.raises(ValueError, match="sigma must be finite"):
        ik.GaussianFourierFeatures(-1.0, 8)
    with pytest.raises(ValueError, match="n_features must be a positive integer"):
        ik.GaussianFourierFeatures(1.0, 0)
    with pytest.raises(ValueError, match="input_dim must be a positive integer"):
        ik.GaussianFourierFeatures(1.0, None, input_dim=0)
    with pytest.raises(ValueError, match="the input has 7 features, but GaussianFourierFeatures"
                       r"\(2, n_features=None, input_dim=2\) takes inputs of dimension 2"):
        ik.serial(ik.GaussianFourierFeatures(2.0, None, input_dim=2),
                  ik.Dense(1)).kernel(np.ones((2, 7)))


def test_chained_maps_finite_networks():
    """Two input maps in a row: init_fn's parameters fit apply_fn (the body
    sees the second map's width), which equals the body on hand-mapped inputs."""
    rng = np.random.default_rng(0)
    f1, f2 = ik.FourierFeatures(rng.normal(size=(3, 2))), ik.FourierFeatures(rng.normal(size=(4, 6)))
    net = ik.serial(f1, f2, ik.Dense(16, b_std=0.1), ik.Erf(), ik.Dense(1))
    x = rng.normal(size=(5, 2))
    _, p = net.init_fn(0, (-1, 2))
    by_hand = net.body.apply_fn(p[2:], f2.map(f1.map(x)))
    assert np.array_equal(net.apply_fn(p, x), by_hand)
    with pytest.raises(ValueError, match="compile net.body"):
        ik.serial(ik.FourierFeatures([1.0]), ik.Dense(1)).program(2)


def test_mscale_bad_input():
    with pytest.raises(ValueError, match="MscaleDNN2: scales must be > 0"):
        ik.MscaleDNN2([1.0, -2.0])
    with pytest.raises(ValueError, match="MscaleDNN1: hidden\\[0\\]=10 must be divisible"):
        ik.MscaleDNN1([1.0, 2.0, 4.0], hidden=(10,))
    with pytest.raises(ValueError, match="hidden must be a non-empty"):
        ik.MscaleDNN2([1.0], hidden=())
    with pytest.raises(ValueError, match="hidden must be a non-empty .* got 5"):
        ik.MscaleDNN2([1.0], hidden=5)


def test_finite_width_fourier_network_matches_analytic_ntk():
    """Empirical kernels map the inputs too.  For one hidden layer (ntk
    parameterization) the expected empirical NNGP/NTK equal the analytic ones
    at every width (empirical.py), so the Monte Carlo means over 300 networks
    lie within 5 standard errors (two-sided p ≈ 6e-7 per entry)."""
    net = ik.serial(ik.FourierFeatures.power_law(6, 1.0), ik.Dense(128, b_std=0.1), ik.Relu(),
                    ik.Dense(1, b_std=0.2))
    x = np.linspace(0, 1, 4, endpoint=False)[:, None]
    mc = ik.monte_carlo_kernel_fn(net, 300, seed=2)(x)
    exact = net.kernel(x)
    for g in ("nngp", "ntk"):
        z = np.abs(getattr(mc.mean, g) - getattr(exact, g)) / getattr(mc.stderr, g)
        assert z.max() < 5.0, (g, z.max())
    _, params = net.init_fn(0, x.shape)
    emp = ik.empirical_ntk_fn(net)(x, x, params)
    assert emp.shape == (4, 4) and np.isfinite(emp).all()
    with pytest.raises(ValueError, match="x1 has 2 features"):
        ik.empirical_ntk_fn(net)(np.ones((2, 2)), None, params)


@pytest.mark.parametrize("sigma, error, words", [
    (np.nan, ValueError, "GaussianFeatureLimit: sigma must be finite and >= 0, got nan"),
    (-1.0, ValueError, "GaussianFeatureLimit: sigma must be finite and >= 0"),
    (1e200, ValueError, "GaussianFeatureLimit: sigma must be at most 1e+150"),
    ("abc", TypeError, "GaussianFeatureLimit: sigma must be a real number, got str"),
])
def test_gaussian_feature_limit_checks_sigma(sigma, error, words):
    """The exported limit layer checks sigma like GaussianFourierFeatures (NaN
    used to surface as a misleading variance overflow, 1e200 as a raw
    OverflowError, a string as an unnamed float() error)."""
    with pytest.raises(error, match=words.replace("+", r"\+")):
        ik.GaussianFeatureLimit(sigma)
    assert ik.GaussianFeatureLimit(np.float32(2.0)).sigma == 2.0


def test_seed_and_numeric_strings_are_refused():
    with pytest.raises(ValueError, match="GaussianFourierFeatures: seed must be >= 0, got -1"):
        ik.GaussianFourierFeatures(1.0, 4, seed=-1)
    with pytest.raises(TypeError, match="GaussianFourierFeatures: seed must be a non-negative"):
        ik.GaussianFourierFeatures(1.0, 4, seed="a")
    with pytest.raises(ValueError, match="GaussianFourierFeatures: sigma must be at most"):
        ik.GaussianFourierFeatures(1e200)          # the limit squares sigma
    a = ik.GaussianFourierFeatures(1.0, 4, seed=np.array([0, 3], dtype=np.uint32))  # a PRNG key
    b = ik.GaussianFourierFeatures(1.0, 4, seed=np.array([0, 3], dtype=np.uint32))
    assert a == b
    with pytest.raises(TypeError, match="FourierFeatures: frequencies must be an array of real"):
        ik.FourierFeatures(["1", "2"])
    with pytest.raises(TypeError, match="FourierFeatures: amplitudes must be an array of real"):
        ik.FourierFeatures([1.0, 2.0], "2")
    with pytest.raises(TypeError, match="frequencies must be an array of real numbers, got "
                                        "dtype complex128"):
        ik.FourierFeatures([1.0 + 1j])
    with pytest.raises(TypeError, match="PositionalEncoding: sigma must be a real number"):
        ik.PositionalEncoding("10", 4)
    with pytest.raises(TypeError, match="power_law: p must be a real number"):
        ik.FourierFeatures.power_law(4, "1")
    with pytest.raises(ValueError, match="power_law: p must be a number"):
        ik.FourierFeatures.power_law(4, np.nan)
