"""Empirical kernels of finite networks against an explicit Jacobian, and Monte
Carlo kernels against the analytic infinite-width kernels."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import infkernel as ik
from infkernel import empirical as E
from infkernel.layers import Dense
from infkernel.activations import Activation


# ---------------------------------------------------------------------------
# reference: the full Jacobian by forward-mode differentiation, one tangent per
# parameter (independent of the reverse-mode structured formula under test)
def _param_blocks(net, params):
    """[(layer index, 'W'|'b', array)] in a fixed order."""
    out = []
    for i, (layer, p) in enumerate(zip(net.layers, params)):
        if isinstance(layer, Dense):
            out.append((i, "W", p[0]))
            if p[1] is not None:
                out.append((i, "b", p[1]))
    return out


def jacobian(net, params, x):
    """J[p, n, j] = ∂f_j(x_n)/∂θ_p by forward mode, for all P parameters at once."""
    blocks = _param_blocks(net, params)
    P = sum(a.size for _, _, a in blocks)
    offset, start = {}, 0
    for i, name, a in blocks:
        offset[(i, name)] = start
        start += a.size
    h = x
    t = np.zeros((P,) + x.shape)            # tangents dh/dθ_p
    for i, (layer, p) in enumerate(zip(net.layers, params)):
        if isinstance(layer, Dense):
            W, b = p
            n_in, n_out = W.shape
            if layer.parameterization == "ntk":
                c, s = layer.W_std / np.sqrt(n_in), (layer.b_std or 0.0)
            else:     # neural-tangents: y = W h/√s0 + b
                c, s = 1.0 / np.sqrt(layer.s[0]), 1.0
            tz = c * (t @ W)
            o = offset[(i, "W")]
            for a in range(n_in):
                for u in range(n_out):
                    tz[o + a * n_out + u, :, u] += c * h[:, a]
            if b is not None:
                o = offset[(i, "b")]
                for u in range(n_out):
                    tz[o + u, :, u] += s
            z = c * (h @ W) + (0.0 if b is None else s * b)
            h, t = z, tz
        elif isinstance(layer, Activation):
            t = t * layer.dfn(h)
            h = layer.fn(h)
        elif isinstance(layer, ik.LayerNorm):   # y = c/σ, c = h - mean h
            c = h - h.mean(-1, keepdims=True)
            sigma = np.sqrt((c * c).mean(-1, keepdims=True) + layer.eps)
            h = c / sigma
            tc = t - t.mean(-1, keepdims=True)
            t = (tc - h * (h * tc).mean(-1, keepdims=True)) / sigma
    return t


def ntk_reference(net, params, x1, x2, mode="trace"):
    """Θ from the explicit Jacobians: traced over the k outputs (mean), or per
    channel pair (N1, N2, k, k), or per channel (N1, N2, k)."""
    J1, J2 = jacobian(net, params, x1), jacobian(net, params, x2)
    if mode == "full":
        return np.einsum("paj,pbk->abjk", J1, J2)
    if mode == "diagonal":
        return np.einsum("paj,pbj->abj", J1, J2)
    return np.einsum("pak,pbk->ab", J1, J2) / J1.shape[-1]


_MODES = {"trace": {}, "full": {"trace_axes": ()},
          "diagonal": {"trace_axes": (), "diagonal_axes": (-1,)}}
_TABULATED = ik.Elementwise(np.tanh)   # φ' from the tabulated interpolants


ACTS = {
    "relu": ik.Relu, "leaky": lambda: ik.LeakyRelu(0.2), "abs": ik.Abs,
    "erf": ik.Erf, "gelu": ik.Gelu, "sin": lambda: ik.Sin(1.2, 0.8, 0.3),
    "rbf": lambda: ik.Rbf(0.7), "exp": lambda: ik.Exp(0.5, 0.4),
    "gaussian": ik.Gaussian, "monomial3": lambda: ik.Monomial(3),
    "rmono2": lambda: ik.RectifiedMonomial(2), "sigmoid_like": ik.Sigmoid_like,
    "tabulated": lambda: _TABULATED,
}


@st.composite
def networks(draw):
    depth = draw(st.integers(0, 3))
    layers = []
    for _ in range(depth):
        layers.append(ik.Dense(draw(st.integers(1, 5)),
                               W_std=draw(st.floats(0.3, 2.0)),
                               b_std=draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
                               parameterization=draw(st.sampled_from(["ntk", "standard"]))))
        if draw(st.integers(0, 3)) == 0:
            layers.append(ik.LayerNorm(eps=draw(st.sampled_from([1e-12, 0.1]))))
        layers.append(ACTS[draw(st.sampled_from(sorted(ACTS)))]())
        if draw(st.booleans()):
            layers.append(ik.Identity())
    layers.append(ik.Dense(draw(st.integers(1, 3)), W_std=draw(st.floats(0.3, 2.0)),
                           b_std=draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
                           parameterization=draw(st.sampled_from(["ntk", "standard"]))))
    return ik.serial(*layers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2**31), n1=st.integers(1, 4), n2=st.integers(1, 4),
       d=st.integers(1, 3), symmetric=st.booleans(), mode=st.sampled_from(sorted(_MODES)))
def test_structured_ntk_equals_jacobian_product(net, seed, n1, n2, d, symmetric, mode):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n1, d))
    x2 = x1 if symmetric else rng.normal(size=(n2, d))
    _, params = net.init_fn(rng, (-1, d))
    got = E.empirical_kernel_fn(net, **_MODES[mode])(x1, None if symmetric else x2, None,
                                                     params)
    ref = ntk_reference(net, params, x1, x2, mode)
    # Both are sums of the same O(P) products in float64: agreement to 1e-12
    # relative to the kernel's scale leaves a margin of ~1e3 over rounding.
    scale = max(1.0, np.abs(ref).max())
    np.testing.assert_allclose(got.ntk, ref, rtol=0, atol=1e-12 * scale)
    f1, f2 = net.apply_fn(params, x1), net.apply_fn(params, x2)
    nngp = {"trace": f1 @ f2.T / f1.shape[1], "full": np.einsum("aj,bk->abjk", f1, f2),
            "diagonal": np.einsum("aj,bj->abj", f1, f2)}[mode]
    np.testing.assert_allclose(got.nngp, nngp, rtol=0,
                               atol=1e-12 * max(1.0, np.abs(got.nngp).max()))


def _leaves(tree):
    """The arrays of a (nested) params tuple, in order."""
    if isinstance(tree, (tuple, list)):
        for t in tree:
            yield from _leaves(t)
    elif isinstance(tree, np.ndarray):
        yield tree


def _fd_jacobian(net, params, x, h=1e-6):
    """J[p, n, j] by central differences of apply_fn in every parameter entry
    (truncation O(h²) ~ 1e-12, rounding ~1e-10 relative)."""
    rows = []
    for a in _leaves(params):
        for idx in np.ndindex(a.shape):
            orig = a[idx]
            a[idx] = orig + h
            fp = net.apply_fn(params, x)
            a[idx] = orig - h
            fm = net.apply_fn(params, x)
            a[idx] = orig
            rows.append((fp - fm) / (2 * h))
    return np.array(rows)


def test_reference_jacobian_is_the_derivative_of_apply_fn():
    """Guards the reference itself: central differences of ``apply_fn``
    (step 1e-6, truncation error O(h²·f''') ≈ 1e-11, rounding ≈ 1e-10)."""
    net = ik.serial(ik.Dense(4, W_std=1.3, b_std=0.2), ik.Erf(),
                    ik.Dense(3, W_std=0.9, b_std=0.1, parameterization="standard"),
                    ik.Gelu(), ik.Dense(2, W_std=1.1))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 2))
    _, params = net.init_fn(rng, (-1, 2))
    # the same parameter order: layer by layer, W before b
    np.testing.assert_allclose(jacobian(net, params, x), _fd_jacobian(net, params, x),
                               atol=1e-8)


SCALED = [((1, 2), (2, 3), (3, 1)), ((1, 2), (1, 1), (2, 2))]


@pytest.mark.parametrize("scales", SCALED, ids=["consistent", "inconsistent"])
def test_width_scalings_s(scales):
    """Dense(..., "standard", s=(s0, s1)) as in neural-tangents: W is
    (s0·n, s1·out_dim) and y = W h/√s0 + b.  The empirical NTK equals the
    explicit Jacobian's (the reference is checked against central differences
    of apply_fn here too); consistent scalings (s0 = the previous s1) leave
    the analytic kernels exactly as with s = (1, 1)."""
    def net_with(ss):
        return ik.serial(ik.Dense(6, 1.3, 0.1, "standard", s=ss[0]), ik.Relu(),
                         ik.Dense(4, 1.1, 0.2, "standard", s=ss[1]), ik.Erf(),
                         ik.Dense(1, 1.0, None, "standard", s=ss[2]))
    net = net_with(scales)
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(3, 2)), rng.normal(size=(2, 2))
    _, params = net.init_fn(rng, (-1, 2))
    assert params[0][0].shape == (2, 6 * scales[0][1])
    assert params[4][0].shape == (4 * scales[1][1], scales[2][1])
    np.testing.assert_allclose(jacobian(net, params, x1), _fd_jacobian(net, params, x1),
                               atol=1e-8)
    ref = ntk_reference(net, params, x1, x2, "full")
    got = ik.empirical_ntk_fn(net, trace_axes=())(x1, x2, params)
    # the same sums of products in another order: rounding only (~1e-16)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    plain = net_with([(1, 1)] * 3).kernel(x1, x2)
    k = net.kernel(x1, x2)
    if scales == SCALED[0]:
        assert np.array_equal(k.nngp, plain.nngp) and np.array_equal(k.ntk, plain.ntk)
    else:   # the NTK's fan-ins change: the last layer sees 4·1/2 = 2, not 4
        assert np.array_equal(k.nngp, plain.nngp) and not np.allclose(k.ntk, plain.ntk)


@pytest.mark.parametrize("s_last", [(1, 1), (3, 1)])
def test_width_scalings_monte_carlo(s_last, points):
    """One hidden layer of 3·5 units (s1 = 3): the standard-parameterization
    kernels are unbiased at any width, so the Monte Carlo mean matches the
    analytic kernel (fan-in 15/s0 in the NTK) within K_SE s.e."""
    net = ik.serial(ik.Dense(5, 1.2, 0.3, "standard", s=(1, 3)), ik.Erf(),
                    ik.Dense(1, 1.1, 0.2, "standard", s=s_last))
    mc = E.monte_carlo_kernel_fn(net, 4000, seed=5)(points)
    _assert_within(mc, net.kernel(points, points), f"s_last={s_last}")


def test_output_chunking_gives_the_same_kernel(monkeypatch):
    net = ik.serial(ik.Dense(6, b_std=0.1), ik.Relu(), ik.Dense(7, b_std=0.3))
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    _, params = net.init_fn(rng, (-1, 3))
    full = E.empirical_ntk_fn(net)(x1, x2, params)
    monkeypatch.setattr(E, "_MAX_ENTRIES", 1)     # one output channel at a time
    np.testing.assert_allclose(E.empirical_ntk_fn(net)(x1, x2, params), full,
                               rtol=1e-14, atol=1e-14)


def test_value_and_grad_matches_finite_differences():
    net = ik.serial(ik.Dense(5, W_std=1.4, b_std=0.2, parameterization="standard"), ik.Erf(),
                    ik.Dense(2, W_std=1.1, b_std=0.3))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    _, params = net.init_fn(rng, (-1, 3))

    def loss(p):
        return 0.5 * np.sum((net.apply_fn(p, x) - y) ** 2)
    f, grads = E.value_and_grad(net, params, x, lambda F: F - y)
    np.testing.assert_allclose(f, net.apply_fn(params, x), rtol=0, atol=1e-15)
    h = 1e-6
    for (i, name, a) in _param_blocks(net, params):
        g = grads[i][0 if name == "W" else 1]
        for idx in np.ndindex(a.shape):
            orig = a[idx]
            a[idx] = orig + h
            lp = loss(params)
            a[idx] = orig - h
            lm = loss(params)
            a[idx] = orig
            assert abs(g[idx] - (lp - lm) / (2 * h)) < 1e-7


# ---------------------------------------------------------------------------
# Monte Carlo against the analytic kernels
CLOSED_FORM = [ik.Relu(), ik.LeakyRelu(0.1), ik.ABRelu(-0.3, 1.2), ik.Abs(), ik.Erf(),
               ik.Sigmoid_like(), ik.Gelu(), ik.Sin(), ik.Cos(), ik.Rbf(0.5),
               ik.Exp(0.5, 0.5), ik.Gaussian(1.0, -0.5), ik.Sign(), ik.Monomial(2),
               ik.Monomial(3), ik.RectifiedMonomial(0), ik.RectifiedMonomial(2),
               ik.Polynomial([0.3, -1.0, 0.5]), ik.Hermite(2), ik.Gabor()]

#: z-score bound for Monte Carlo comparisons.  The suite makes about
#: 17 activations × 2 parameterizations × 2 kernels × 10 entries ≈ 700 such
#: comparisons, plus ~100 in the width tests.  P(|Z| > 5) = 5.7e-7 for a
#: normal Z, so by the union bound (Bonferroni) a correct implementation fails
#: with probability below 5e-4 even though the standard errors are themselves
#: estimated (with ≥ 2000 samples the t-correction is negligible).  A wrong
#: kernel, e.g. a 2 % scale error, gives z ≈ 2 % / (relative s.e. ~0.3 %) ≫ 5.
K_SE = 5.0


def _assert_within(mc, analytic, what):
    for name, m, s, a in zip(("nngp", "ntk"), mc.mean, mc.stderr, analytic):
        zero = s <= 1e-14 * np.abs(a).max()
        # Entries with zero variance are deterministic (e.g. sign(z)² = 1): they
        # must agree to the analytic side's accuracy.  Kinked duals at
        # correlation ±1 turn a few ulps of rounding in ρ into √(ulps) ≈ 1e-8.
        np.testing.assert_allclose(m[zero], a[zero], rtol=1e-7, atol=1e-12,
                                   err_msg=f"{what} {name}")
        z = np.abs(m - a)[~zero] / s[~zero]
        assert z.size == 0 or z.max() < K_SE, f"{what} {name}: max z-score {z.max():.2f}"


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)) * 0.7
    x[3] = x[0]          # a repeated point: correlation exactly 1
    return x


@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("act", CLOSED_FORM, ids=repr)
def test_monte_carlo_agrees_with_analytic(act, par, points):
    """One hidden layer: both empirical kernels are unbiased at every width, so
    the Monte Carlo mean must match the analytic kernel within K_SE s.e."""
    net = ik.serial(ik.Dense(16, W_std=1.2, b_std=0.3, parameterization=par), act,
                    ik.Dense(1, W_std=1.1, b_std=0.2, parameterization=par))
    mc = E.monte_carlo_kernel_fn(net, 2000, seed=11)(points)
    _assert_within(mc, net.kernel(points, points), f"{act!r} {par}")


@pytest.mark.parametrize("width", [1, 2, 5])
@pytest.mark.parametrize("act", [ik.Relu(), ik.Erf(), ik.Sin(1.0, 1.5, 0.2)], ids=repr)
def test_depth1_estimate_unbiased_at_any_width(act, width, points):
    """E[f(x)f(x')] = W_std² E[φ(z)φ(z')] + b_std² holds exactly for one hidden
    layer of any width, since z is exactly Gaussian; so even width 1 matches."""
    net = ik.serial(ik.Dense(width, W_std=1.5, b_std=0.4), act,
                    ik.Dense(1, W_std=0.8, b_std=0.3))
    mc = E.monte_carlo_kernel_fn(net, 20000, seed=width)(points, points[:2])
    _assert_within(mc, net.kernel(points, points[:2]), f"{act!r} width {width}")


@pytest.mark.parametrize("act", [ik.Relu(), ik.Erf()], ids=repr)
def test_error_falls_with_width_at_the_expected_rate(act, points):
    """Two hidden layers: E‖K_emp − K‖_F/‖K‖_F ∝ width^(−1/2) (fluctuations
    dominate the O(1/width) bias).  The fitted slope over widths 16..512 with
    64 networks each has a standard error of about 0.03; accept ±0.15."""
    widths = [16, 64, 256, 512]
    errs = []
    for n in widths:
        net = ik.serial(ik.Dense(n, W_std=1.4, b_std=0.1), act, ik.Dense(n, W_std=1.4, b_std=0.1),
                        act, ik.Dense(1, W_std=1.4, b_std=0.1))
        ana = net.kernel(points, points, get="ntk")
        e = []
        for batch in E.sample_kernels(net, points, None, ("ntk",), 64, seed=n):
            d = batch["ntk"] - ana
            e.extend(np.sqrt((d ** 2).sum(axis=(1, 2))) / np.linalg.norm(ana))
        errs.append(np.mean(e))
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.65 < slope < -0.35, (slope, errs)


def test_monte_carlo_independent_of_batch_size_and_reproducible(points):
    net = ik.serial(ik.Dense(8, b_std=0.1), ik.Gelu(), ik.Dense(2))
    a = E.monte_carlo_kernel_fn(net, 10, seed=3, batch_size=3)(points)
    b = E.monte_carlo_kernel_fn(net, 10, seed=3, batch_size=10)(points)
    c = E.monte_carlo_kernel_fn(net, 10, seed=4, batch_size=10)(points)
    for u, v in zip(a.mean + a.stderr, b.mean + b.stderr):
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-14)
    assert not np.allclose(a.mean.ntk, c.mean.ntk)
    # the mean equals the average of the individual empirical kernels
    kfn = E.empirical_kernel_fn(net)
    seqs = np.random.SeedSequence(3).spawn(10)
    ks = [kfn(points, None, "ntk", net.init_fn(np.random.default_rng(s), (-1, 3))[1]) for s in seqs]
    np.testing.assert_allclose(a.mean.ntk, np.mean(ks, axis=0), rtol=1e-13)
    np.testing.assert_allclose(a.stderr.ntk, np.std(ks, axis=0, ddof=1) / np.sqrt(10), rtol=1e-10)
    single = E.monte_carlo_kernel_fn(net, 10, seed=3)(points, get="nngp")
    assert isinstance(single.mean, np.ndarray) and single.n_samples == 10


# ---------------------------------------------------------------------------
# bad input
def test_flatten_and_test_mode_dropout_are_no_ops():
    """Flatten and Dropout(mode='test') leave a finite network unchanged; train
    mode is refused (its masks change on every call)."""
    x = np.random.default_rng(2).normal(size=(4, 3))
    plain = ik.serial(ik.Dense(6, 1.2, 0.1), ik.Erf(), ik.Dense(2))
    net = ik.serial(ik.Flatten(), ik.Dense(6, 1.2, 0.1), ik.Erf(), ik.Dropout(0.5, "test"),
                    ik.Dense(2))
    _, params = net.init_fn(0, x.shape)
    got = E.empirical_kernel_fn(net)(x, None, None, params)
    ref = E.empirical_kernel_fn(plain)(x, None, None, (params[1], params[2], params[4]))
    assert np.array_equal(got.ntk, ref.ntk) and np.array_equal(got.nngp, ref.nngp)
    with pytest.raises(TypeError, match="draws new masks"):
        E.empirical_ntk_fn(ik.serial(ik.Dense(3), ik.Relu(), ik.Dropout(0.5), ik.Dense(1)))(
            x, None, params)


def test_bad_input_is_rejected_before_work():
    net = ik.serial(ik.Dense(4, b_std=0.1), ik.Relu(), ik.Dense(1))
    x = np.ones((2, 3))
    _, params = net.init_fn(0, (-1, 3))
    with pytest.raises(ValueError, match="n_samples"):
        E.monte_carlo_kernel_fn(net, 1)
    with pytest.raises(TypeError, match="n_samples"):
        E.monte_carlo_kernel_fn(net, 2.5)
    with pytest.raises(ValueError, match="batch_size"):
        E.monte_carlo_kernel_fn(net, 4, batch_size=0)
    fn = E.empirical_ntk_fn(net)
    with pytest.raises(ValueError, match="3 layers"):
        fn(x, None, params[:2])
    with pytest.raises(ValueError, match=r"W must have shape \(5, 4\), got \(3, 4\) \(the "
                                         r"inputs have 5 features, these params were made for 3"):
        fn(np.ones((2, 5)), None, params)
    with pytest.raises(ValueError, match=r"W must have shape \(5, 4\)"):   # x1 is the odd one
        fn(np.ones((2, 5)), x, params)
    for W, kind in ((params[0][0] + 0.5j, "complex"), (params[0][0].astype(str), "<U")):
        with pytest.raises(TypeError, match=r"params\[0\].*W must be a real numeric array, "
                                            f"got dtype {kind}"):
            fn(x, None, ((W, params[0][1]),) + params[1:])
        with pytest.raises(TypeError, match="must be a real numeric array"):
            net.apply_fn(((W, params[0][1]),) + params[1:], x)
    with pytest.raises(ValueError, match="b must have shape"):
        fn(x, None, ((params[0][0], None),) + params[1:])
    with pytest.raises(ValueError, match="no bias"):
        fn(x, None, params[:2] + ((params[2][0], np.zeros(1)),))
    with pytest.raises(ValueError, match="takes"):
        fn(x, None, (params[0], (np.ones(1),), params[2]))
    bad = (params[0][0].copy(), params[0][1])
    bad[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(x, None, (bad,) + params[1:])
    with pytest.raises(ValueError, match="params is required"):
        E.empirical_kernel_fn(net)(x)
    with pytest.raises(ValueError, match="unknown get"):
        E.empirical_kernel_fn(net)(x, None, "foo", params)

    class Weird(ik.Layer):
        def _apply(self, params, h):
            return h
    with pytest.raises(TypeError, match="layer 1"):
        E.empirical_kernel_fn(ik.serial(ik.Dense(2), Weird(), ik.Dense(1)))
    with pytest.raises(TypeError, match="infkernel network"):
        E.empirical_kernel_fn(lambda p, x: x)


def test_neural_tangents_call_forms_and_edge_inputs():
    """empirical_*_fn accept apply_fn (neural-tangents' argument); Monte Carlo
    kernels of zero points are empty, a negative seed is an error."""
    net = ik.serial(ik.Dense(32, 1.3, 0.1), ik.Relu(), ik.Dense(1))
    _, params = net.init_fn(0, (-1, 3))
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert np.array_equal(ik.empirical_ntk_fn(net.apply_fn)(x, None, params),
                          ik.empirical_ntk_fn(net)(x, None, params))
    # neural-tangents' Dense biases have shape (1, out)
    nt_params = tuple((p[0], p[1] if p[1] is None else p[1][None]) if len(p) == 2 else p
                      for p in params)
    assert np.array_equal(ik.empirical_ntk_fn(net)(x, None, nt_params),
                          ik.empirical_ntk_fn(net)(x, None, params))
    mc = ik.monte_carlo_kernel_fn(net, 4)(np.zeros((0, 3)), x)
    assert mc.mean.nngp.shape == (0, 4) and mc.stderr.ntk.shape == (0, 4)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        ik.monte_carlo_kernel_fn(net, 4, seed=-1)


def test_neural_tangents_monte_carlo_form():
    """``monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples)`` draws the
    same networks as ``monte_carlo_kernel_fn(net, n_samples, seed)`` and
    returns their means alone; a list of counts gives a generator of the means
    after each count; untraced layouts trace back to the traced kernel."""
    net = ik.serial(ik.Dense(16, 1.3, 0.1), ik.Erf(), ik.Dense(3, b_std=0.2))
    init_fn, apply_fn, _ = net
    x, y = np.random.default_rng(1).standard_normal((2, 5, 3))
    ours = ik.monte_carlo_kernel_fn(net, 6, seed=9)(x, y)
    nt_form = ik.monte_carlo_kernel_fn(init_fn, apply_fn, 9, 6)
    k = nt_form(x, y)
    # same samples, merged in possibly different batches: equal to rounding
    np.testing.assert_allclose(k.ntk, ours.mean.ntk, rtol=1e-13)
    np.testing.assert_allclose(nt_form(x, y, "nngp"), ours.mean.nngp, rtol=1e-13)
    gen = ik.monte_carlo_kernel_fn(init_fn, apply_fn, 9, [2, 6])(x, y, "ntk")
    first, last = list(gen)
    np.testing.assert_allclose(last, ours.mean.ntk, rtol=1e-13)
    np.testing.assert_allclose(first, ik.monte_carlo_kernel_fn(net, 2, seed=9)(x, y, "ntk").mean,
                               rtol=1e-13)
    full = ik.monte_carlo_kernel_fn(init_fn, apply_fn, 9, 6, trace_axes=())(x, y, "ntk")
    diag = ik.monte_carlo_kernel_fn(init_fn, apply_fn, 9, 6, trace_axes=(),
                                    diagonal_axes=(-1,))(x, y, "ntk")
    assert full.shape == (5, 5, 3, 3) and diag.shape == (5, 5, 3)
    np.testing.assert_allclose(np.einsum("abjj->abj", full), diag, rtol=1e-13)
    np.testing.assert_allclose(diag.mean(-1), k.ntk, rtol=1e-13)
    # a JAX PRNG key's value is accepted as the key; the ensemble predictor
    # takes either form (the first contributes its mean)
    key = np.array([0, 9], dtype=np.uint32)
    assert ik.monte_carlo_kernel_fn(init_fn, apply_fn, key, 2)(x, None, "ntk").shape == (5, 5)
    yt = np.sin(x[:, :2])
    # the means agree to rounding (above); the solve with diag_reg 1e-2 keeps
    # the condition number ≲ 1e3, so the predictions agree to ~1e-13
    preds = [ik.predict.gradient_descent_mse_ensemble(f, x, yt, diag_reg=1e-2)(
        t=1.0, x_test=y, get="ntk") for f in (nt_form, ik.monte_carlo_kernel_fn(net, 6, 9))]
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-10, atol=1e-12)


def test_neural_tangents_forms_reject_bad_options():
    net = ik.serial(ik.Dense(4), ik.Relu(), ik.Dense(2))
    other = ik.serial(ik.Dense(4), ik.Relu(), ik.Dense(2))
    with pytest.raises(ValueError, match="trace_axes: .* batch axis"):
        ik.empirical_ntk_fn(net, trace_axes=(0,))
    with pytest.raises(ValueError, match="diagonal_axes=\\(-1,\\) with trace_axes=\\(\\)"):
        ik.empirical_kernel_fn(net, diagonal_axes=(-1,))
    with pytest.raises(ValueError, match="same network"):
        ik.monte_carlo_kernel_fn(other.init_fn, net.apply_fn, 0, 4)
    with pytest.raises(ValueError, match="increasing list"):
        ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, [4, 2])
    with pytest.raises(TypeError, match="key must be a non-negative int or a PRNG key"):
        ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, "k", 4)
    with pytest.raises(ValueError, match="x1 has NaN"):   # checked before the generator runs
        ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, [2, 4])(np.full((2, 3), np.nan))


def test_neural_tangents_monte_carlo_options_are_checked():
    net = ik.serial(ik.Dense(4), ik.Relu(), ik.Dense(2))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 0, got -1"):
        ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, 2, batch_size=-1)
    with pytest.raises(ValueError, match="device_count must be an integer >= -1"):
        ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, 2, device_count=-2)
    with pytest.raises(TypeError, match="store_on_device must be True or False"):
        ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, 2, store_on_device="no")


@pytest.mark.parametrize("axes", [dict(), dict(trace_axes=()),
                                  dict(trace_axes=(), diagonal_axes=(-1,))],
                         ids=["trace", "full", "diagonal"])
def test_empty_inputs_give_empty_kernels(axes):
    """x1 or x2 with no rows: (0, N2) / (N1, 0) kernels in every layout, as the
    analytic kernels give (the per-layer Gram formula reshapes with N = 0)."""
    net = ik.serial(ik.Dense(8), ik.Relu(), ik.Residual(ik.Dense(8)), ik.Dense(3))
    _, p = net.init_fn(0, (-1, 4))
    x, z = np.ones((3, 4)), np.zeros((0, 4))
    kf = ik.empirical_kernel_fn(net, **axes)
    tail = {"trace": (), "full": (3, 3), "diagonal": (3,)}[
        "trace" if not axes else "full" if len(axes) == 1 else "diagonal"]
    for a, b, shape in ((z, None, (0, 0)), (x, z, (3, 0)), (z, x, (0, 3))):
        k = kf(a, b, None, p)
        assert k.nngp.shape == k.ntk.shape == shape + tail
    assert ik.empirical_ntk_vp_fn(net, x, z, p)(np.zeros((0, 3))).shape == (3, 3)


def test_linearize_takes_one_point_like_apply_fn():
    net = ik.serial(ik.Dense(8), ik.Erf(), ik.Dense(3))
    _, p = net.init_fn(0, (-1, 4))
    x = np.random.default_rng(0).standard_normal(4)
    f_lin = ik.linearize(net.apply_fn, p)
    assert f_lin(p, x).shape == (3,)
    np.testing.assert_array_equal(f_lin(p, x), net.apply_fn(p, x[None])[0])
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        f_lin(p, np.ones((2, 2, 4)))


def test_flatten_first_networks_take_unflattened_inputs():
    """As net.kernel and apply_fn do, the empirical and Monte Carlo kernels of
    a network starting with Flatten take (N, ...) inputs."""
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    net = ik.serial(ik.Flatten(), ik.Dense(16, 1.3, 0.2), ik.Erf(), ik.Dense(2, 1.0, 0.1))
    _, p = net.init_fn(0, (-1, 2, 3))
    flat = x.reshape(4, -1)
    assert np.array_equal(ik.empirical_ntk_fn(net)(x, x[:2], p),
                          ik.empirical_ntk_fn(net)(flat, flat[:2], p))
    assert np.array_equal(ik.monte_carlo_kernel_fn(net, 3)(x, None, "ntk").mean,
                          ik.monte_carlo_kernel_fn(net, 3)(flat, None, "ntk").mean)
    assert np.array_equal(ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, 3)(x),
                          ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, 3)(flat))


def test_monte_carlo_batches_budget_the_untraced_layouts():
    """Batches of networks keep the kernels of the untraced layouts (k² or k
    values per entry) within the temporaries budget too."""
    net = ik.serial(ik.Dense(32), ik.Relu(), ik.Dense(16))
    n = 60
    for mode, per_entry in (("trace", 1), ("diagonal", 16), ("full", 256)):
        b = E._auto_batch(net, n, n, 5, mode)
        assert b == 1 or 4 * b * n * n * per_entry <= E._MAX_ENTRIES, (mode, b)
    assert E._auto_batch(net, n, n, 5, "full") < E._auto_batch(net, n, n, 5, "trace")


BRANCHED = {
    "residual": ik.serial(ik.Dense(6, 1.2, 0.1), ik.Residual(ik.Relu(), ik.Dense(6, 0.9, 0.2)),
                          ik.Erf(), ik.Dense(2, 1.1, 0.3)),
    "product": ik.serial(ik.FanOut(2), ik.parallel(ik.serial(ik.Dense(5, 1.2, 0.3), ik.Relu()),
                                                   ik.serial(ik.Dense(5, 1.0, 0.5), ik.Erf())),
                         ik.FanInProd(), ik.Dense(2, 0.9, 0.1)),
    "concat": ik.serial(ik.Dense(4, 1.3, 0.1, "standard"), ik.FanOut(3), ik.parallel(
        ik.Identity(), ik.serial(ik.Relu(), ik.Dense(3, 1.0, None, "standard")),
        ik.serial(ik.Gelu(), ik.Scale(0.7), ik.Dense(2))), ik.FanInConcat(),
        ik.Dense(3, 1.0, 0.2, "standard")),
}


@pytest.mark.parametrize("name", sorted(BRANCHED))
def test_branched_networks_empirical_kernels_against_finite_differences(name):
    """Residual blocks, products and concatenations of branches: the
    per-Dense-layer Gram formula, back-propagated through the combinators,
    against Jacobians by central differences of apply_fn (1e-8 relative:
    their error is ~1e-10); the gradient of value_and_grad likewise."""
    net = BRANCHED[name]
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    _, params = net.init_fn(1, (-1, 3))
    J1, J2 = _fd_jacobian(net, params, x1), _fd_jacobian(net, params, x2)
    k = J1.shape[-1]
    for mode, ref in (({}, np.einsum("paj,pbj->ab", J1, J2) / k),
                      ({"trace_axes": ()}, np.einsum("paj,pbk->abjk", J1, J2))):
        got = ik.empirical_ntk_fn(net, **mode)(x1, x2, params)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    ref = np.einsum("paj,pbj->ab", J1, J1) / k
    np.testing.assert_allclose(ik.empirical_ntk_fn(net)(x1, None, params), ref, rtol=0,
                               atol=1e-8 * np.abs(ref).max())
    y = rng.standard_normal((4, k))
    _, grads = E.value_and_grad(net, params, x1, lambda f: f - y)
    g = np.concatenate([a.ravel() for a in _leaves(grads)])
    np.testing.assert_allclose(g, np.einsum("pnj,nj->p", J1, net.apply_fn(params, x1) - y),
                               rtol=0, atol=1e-8 * np.abs(g).max())


def test_branched_params_are_checked_against_init_fn():
    """Params of a branched network must have init_fn's nesting and shapes."""
    net = BRANCHED["product"]        # FanOut, parallel(Dense + Relu, Dense + Erf), ...
    x = np.ones((2, 3))
    _, params = net.init_fn(0, (-1, 3))
    (W, b), rest = params[1][0][0], params[1][0][1:]
    bad = (params[0], ((((W[:2], b),) + rest), params[1][1])) + params[2:]
    with pytest.raises(ValueError, match=r"params\[1\]\[0\]\[0\]\[0\] must have shape "
                                         r"\(3, 5\), got \(2, 5\)"):
        ik.empirical_ntk_fn(net)(x, None, bad)
    with pytest.raises(ValueError, match=r"params\[1\] must be a tuple of 2 entries"):
        ik.empirical_ntk_fn(net)(x, None, (params[0], params[1][:1]) + params[2:])


def test_neural_tangents_nested_params_layout_is_accepted():
    """neural-tangents' params keep a tuple per serial(...) argument that is a
    network and do not wrap a parallel branch's single layer: apply_fn, the
    empirical kernels, linearize and the PINN operators take that layout too,
    with the same results; a layout that is neither is refused as before."""
    block = ik.serial(ik.FanOut(2), ik.parallel(ik.serial(ik.Dense(6, 1.3, 0.1), ik.Relu(),
                                                          ik.Dense(6)), ik.Identity()),
                      ik.FanInSum())
    net = ik.serial(ik.serial(ik.Dense(6, 1.5, 0.05), ik.Erf()), block, ik.Tanh(), ik.FanOut(2),
                    ik.parallel(ik.Dense(2, b_std=0.2), ik.serial(ik.Dense(2), ik.Erf())),
                    ik.FanInConcat(), ik.Dense(3))
    x = np.random.default_rng(3).standard_normal((5, 4))
    _, p = net.init_fn(0, (-1, 4))
    (d1, a1, fan, par, fin, tanh, fan2, par2, cat, out) = p
    nested = ((d1, a1), (fan, ((par[0][0], par[0][1], par[0][2]), par[1][0]), fin), tanh,
              fan2, (par2[0][0], par2[1]), cat, out)
    assert net._flat_params(nested) == p
    assert np.array_equal(net.apply_fn(nested, x), net.apply_fn(p, x))
    ntk = ik.empirical_ntk_fn(net)
    assert np.array_equal(ntk(x, None, nested), ntk(x, None, p))
    shifted = (((d1[0] + 0.1, d1[1]), a1),) + nested[1:]
    assert np.array_equal(ik.linearize(net, nested)(shifted, x),
                          ik.linearize(net, p)(net._flat_params(shifted), x))
    chain = ik.serial(*[ik.serial(ik.Dense(5), ik.Tanh())] * 2, ik.Dense(1))
    _, q = chain.init_fn(0, (-1, 4))
    lap = ik.pinn.laplacian(4)
    assert np.array_equal(ik.pinn.operator_apply(chain, (q[:2], q[2:4], q[4]), x, lap),
                          ik.pinn.operator_apply(chain, q, x, lap))
    with pytest.raises(ValueError, match=r"params has 9 entries, the network has 10 layers"):
        net.apply_fn(p[:9], x)
    with pytest.raises(ValueError, match=r"params has 7 entries"):
        net.apply_fn(nested[:6] + (nested[6][0],), x)


def test_branched_networks_monte_carlo_agrees_with_analytic():
    """One hidden layer per branch on the raw input, then a product and a
    readout: the empirical kernels are unbiased at any width, the Monte Carlo
    mean within 5 standard errors of the analytic kernel."""
    net = BRANCHED["product"]
    x = np.random.default_rng(4).standard_normal((4, 3))
    mc = ik.monte_carlo_kernel_fn(net, 400, seed=2)(x)
    ana = net.kernel(x)
    for g in ("nngp", "ntk"):
        z = np.abs(getattr(mc.mean, g) - getattr(ana, g)) / getattr(mc.stderr, g)
        assert z.max() <= 5, (g, z.max())


def _tree_map(fn, *trees):
    """fn over the arrays of params-like nested tuples (None stays None)."""
    t = trees[0]
    if isinstance(t, np.ndarray):
        return fn(*trees)
    return None if t is None else tuple(_tree_map(fn, *ts) for ts in zip(*trees))


LINEARIZED = dict(BRANCHED, layernorm=ik.serial(
    ik.Dense(5, 1.4, 0.2), ik.LayerNorm(), ik.Tanh(),
    ik.Dense(3, 1.1, None, "standard"), ik.Sin(), ik.Dense(2, 0.8, 0.1)))


@pytest.mark.parametrize("name", sorted(LINEARIZED))
def test_linearize_is_the_first_order_expansion(name):
    """f_lin(p) = f(p0) + J (p − p0): equal to apply_fn at p0 (exactly), affine
    in p, and its slope is the Jacobian by central differences of apply_fn
    (1e-8 relative: the differences' own error is ~1e-10)."""
    net = LINEARIZED[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3))
    _, p0 = net.init_fn(2, (-1, 3))
    dp = _tree_map(lambda a: rng.standard_normal(a.shape), p0)
    f_lin = ik.linearize(net.apply_fn, p0)
    f0 = net.apply_fn(p0, x)
    assert np.array_equal(f_lin(p0, x), f0)
    step = f_lin(_tree_map(np.add, p0, dp), x) - f0
    ref = np.einsum("pnj,p->nj", _fd_jacobian(net, p0, x),
                    np.concatenate([a.ravel() for a in _leaves(dp)]))
    np.testing.assert_allclose(step, ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    # affine in p: doubling the step doubles the change, up to the rounding of
    # sums of ~10 products per layer (1e-12 relative leaves a margin of ~1e3)
    twice = f_lin(_tree_map(lambda a, b: a + 2 * b, p0, dp), x) - f0
    np.testing.assert_allclose(twice, 2 * step, rtol=0, atol=1e-12 * np.abs(step).max())


def test_linearized_gradient_step_moves_outputs_by_the_empirical_ntk():
    """One gradient step on Σ r·f moves the linearised outputs by exactly
    −η Σ Θ(x, x') r (Θ the untraced empirical NTK, (N, N, k, k)): linearize,
    value_and_grad and empirical_ntk_fn agree with each other."""
    net = BRANCHED["residual"]
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3))
    _, p0 = net.init_fn(3, (-1, 3))
    r = rng.standard_normal((5, 2))
    _, g = E.value_and_grad(net, p0, x, lambda f: r)
    eta = 0.3
    moved = ik.linearize(net, p0)(_tree_map(lambda a, b: a - eta * b, p0, g), x) \
        - net.apply_fn(p0, x)
    theta = ik.empirical_ntk_fn(net, trace_axes=())(x, None, p0)
    expected = -eta * np.einsum("abjk,bk->aj", theta, r)
    # the same exact identity summed in another order: rounding only (~1e-15)
    np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("name", sorted(LINEARIZED))
def test_ntk_vector_product_is_the_untraced_ntk_times_the_vector(name):
    """empirical_ntk_vp_fn (a back-propagation at x2, a forward-mode pass at
    x1) against the per-layer Gram formula's (N1, N2, k, k) kernel contracted
    with v; x2=None is x1.  The same sums in another order: 1e-12 of the
    largest entry (seen ~1e-16)."""
    net = LINEARIZED[name]
    rng = np.random.default_rng(8)
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    _, p = net.init_fn(2, (-1, 3))
    k = net.apply_fn(p, x1).shape[1]
    for a, b in ((x1, x2), (x1, None)):
        v = rng.standard_normal((len(a if b is None else b), k))
        got = ik.empirical_ntk_vp_fn(net.apply_fn, a, b, p)(v)
        theta = ik.empirical_ntk_fn(net, trace_axes=())(a, b, p)
        expected = np.einsum("abjk,bk->aj", theta, v)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_ntk_vector_product_bad_input_and_input_maps():
    net = ik.serial(ik.GaussianFourierFeatures(0.5, 8, input_dim=3), ik.Dense(4), ik.Erf(),
                    ik.Dense(2))
    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
    _, p = net.init_fn(0, (-1, 3))
    v = rng.standard_normal((2, 2))
    theta = ik.empirical_ntk_fn(net, trace_axes=())(x1, x2, p)
    # as above: one identity summed in two orders (rounding ~1e-16)
    np.testing.assert_allclose(ik.empirical_ntk_vp_fn(net, x1, x2, p)(v),
                               np.einsum("abjk,bk->aj", theta, v), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"cotangents must have the shape of f\(x2\), "
                                         r"\(2, 2\), got \(3, 2\)"):
        ik.empirical_ntk_vp_fn(net, x1, x2, p)(np.ones((3, 2)))
    with pytest.raises(TypeError, match="cotangents must be an array of real numbers"):
        ik.empirical_ntk_vp_fn(net, x1, x2, p)(v + 1j)
    with pytest.raises(ValueError, match="cotangents has NaN"):
        ik.empirical_ntk_vp_fn(net, x1, x2, p)(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"x2 has 2 features, expected 3"):
        ik.empirical_ntk_vp_fn(net, x1, x2[:, :2], p)


def test_linearize_checks_params_and_takes_input_maps():
    net = ik.serial(ik.GaussianFourierFeatures(0.5, 8, input_dim=3), ik.Dense(4), ik.Erf(),
                    ik.Dense(2))
    x = np.random.default_rng(7).standard_normal((3, 3))
    _, p0 = net.init_fn(0, (-1, 3))
    f_lin = ik.linearize(net.apply_fn, p0)
    assert np.array_equal(f_lin(p0, x), net.apply_fn(p0, x))
    W, b = p0[1]
    with pytest.raises(ValueError, match=r"must have shape \(16, 4\), got \(15, 4\)"):
        f_lin((p0[0], (W[:15], b)) + p0[2:], x)
    with pytest.raises(TypeError, match="net must be an infkernel network"):
        ik.linearize(lambda p, x: x, p0)


def test_apply_fn_checks_inputs_and_params():
    """apply_fn refuses NaN inputs, NaN or misshapen parameters by name (a
    misshapen W was numpy's broadcast error, NaN gave NaN outputs), for plain,
    Fourier-feature and flattening networks alike."""
    nets = [(ik.serial(ik.Dense(4, b_std=0.1), ik.Erf(), ik.Dense(1)), np.ones((3, 2))),
            (ik.serial(ik.FourierFeatures([1.0, 2.0]), ik.Dense(4), ik.Relu(), ik.Dense(1)),
             np.ones((3, 1))),
            (ik.serial(ik.Flatten(), ik.Dense(4), ik.Relu(), ik.Dense(1)), np.ones((3, 2, 2)))]
    for net, x in nets:
        _, params = net.init_fn(0, x.shape)
        assert np.isfinite(net.apply_fn(params, x)).all()
        with pytest.raises(ValueError, match="apply_fn: x has NaN or Inf"):
            net.apply_fn(params, np.full_like(x, np.nan))
        i = next(i for i, l in enumerate(net.layers) if isinstance(l, ik.Dense))
        W, b = params[i]
        for bad, words in ((W[:1], r"W must have shape"), (np.full_like(W, np.nan), "NaN")):
            p = params[:i] + ((bad, b),) + params[i + 1:]
            with pytest.raises(ValueError, match=rf"params\[{i}\] \(Dense.*{words}"):
                net.apply_fn(p, x)


def test_ntk_implementation_as_in_neural_tangents():
    """neural-tangents' ``implementation`` choices are accepted (by its enum or
    value) and give the same exact kernel; anything else is refused by name."""
    net = ik.serial(ik.Dense(6, b_std=0.1), ik.Erf(), ik.Dense(2))
    x = np.random.default_rng(0).standard_normal((3, 2))
    _, params = net.init_fn(0, x.shape)
    ref = ik.empirical_ntk_fn(net)(x, None, params)
    for impl in (None, *ik.NtkImplementation, 2):
        np.testing.assert_array_equal(
            ik.empirical_ntk_fn(net, implementation=impl)(x, None, params), ref)
    assert ik.NtkImplementation.STRUCTURED_DERIVATIVES == 3
    # neural-tangents' **apply_fn_kwargs (e.g. rng=) are accepted: the networks
    # here are deterministic (train-mode Dropout is refused)
    np.testing.assert_array_equal(ik.empirical_ntk_fn(net)(x, None, params, rng=0), ref)
    np.testing.assert_array_equal(ik.empirical_kernel_fn(net)(x, None, "ntk", params, rng=0),
                                  ref)
    for bad in (7, "fast", True):
        with pytest.raises(ValueError, match="implementation must be None or a "
                                             "NtkImplementation"):
            ik.empirical_ntk_fn(net, implementation=bad)
        with pytest.raises(ValueError, match="implementation must be"):
            ik.monte_carlo_kernel_fn(net.init_fn, net.apply_fn, 0, 2, implementation=bad)


def test_scalar_elementwise_function_in_finite_networks():
    """Elementwise(math.tanh), a scalar-only function (and its scalar derivative),
    runs in finite networks entry by entry: apply_fn, the empirical and Monte
    Carlo kernels equal Tanh's (they raised NumPy's scalar-conversion error)."""
    import math
    ref = ik.serial(ik.Dense(8, 1.2, 0.1), ik.Tanh(), ik.Dense(1))
    x = np.random.default_rng(1).standard_normal((4, 2))
    _, p = ref.init_fn(0, x.shape)
    for act in (ik.Elementwise(math.tanh),
                ik.Elementwise(math.tanh, lambda v: 1.0 - math.tanh(v) ** 2)):
        net = ik.serial(ik.Dense(8, 1.2, 0.1), act, ik.Dense(1))
        np.testing.assert_allclose(net.apply_fn(p, x), ref.apply_fn(p, x), rtol=1e-15)
        np.testing.assert_allclose(ik.empirical_ntk_fn(net)(x, None, p),
                                   ik.empirical_ntk_fn(ref)(x, None, p), rtol=1e-12)
        assert np.isfinite(ik.monte_carlo_kernel_fn(net, 3)(x, None, "ntk").mean).all()


@pytest.mark.parametrize("act", [ik.Relu(), ik.Abs(), ik.LeakyRelu(0.1)], ids=repr)
def test_relu_family_at_an_exact_tie(act):
    """Where a pre-activation is exactly 0, φ'(0) = (a + b)/2, what autodiff of
    neural-tangents' min/max form gives: the empirical NTK equals J Jᵀ from
    central differences of apply_fn in the parameters (exact for this network,
    piecewise linear in each parameter; at the kink the average slope)."""
    net = ik.serial(ik.Dense(3, 1.0, None), act, ik.Dense(1, 1.0, None))
    x = np.array([[1.0, 0.0], [0.5, 0.7]])
    _, (p0, _, p2) = net.init_fn(0, x.shape)
    W1 = p0[0].copy()
    W1[0] = 0.0                      # x[0]'s pre-activations are exactly 0
    params = [W1, p2[0].copy()]

    def f(ps):
        return net.apply_fn(((ps[0], None), (), (ps[1], None)), x)[:, 0]
    J = []
    for W in params:
        for i in np.ndindex(W.shape):
            old = W[i]
            W[i] = old + 1e-3
            up = f(params)
            W[i] = old - 1e-3
            down = f(params)
            W[i] = old
            J.append((up - down) / 2e-3)
    J = np.array(J).T
    got = ik.empirical_ntk_fn(net)(x, None, ((W1, None), (), (params[1], None)))
    np.testing.assert_allclose(got, J @ J.T, rtol=1e-9, atol=1e-12)


def test_monte_carlo_standard_errors_at_huge_scales():
    """Sample moments are taken on samples divided by an exact power of two:
    a bias-free ReLU network's Monte Carlo kernel of inputs scaled by 2^500 is
    exactly 2^1000 times that of the inputs (its standard error too; the
    squared deviations overflowed to inf before)."""
    net = ik.serial(ik.Dense(16, 1.0, None), ik.Relu(), ik.Dense(1, 1.0, None))
    x = np.random.default_rng(0).standard_normal((4, 3))
    a = ik.monte_carlo_kernel_fn(net, 6, 0)(x, None, "ntk")
    b = ik.monte_carlo_kernel_fn(net, 6, 0)(x * 2.0 ** 500, None, "ntk")
    np.testing.assert_array_equal(b.mean / 2.0 ** 1000, a.mean)
    np.testing.assert_array_equal(b.stderr / 2.0 ** 1000, a.stderr)


def test_overflowing_finite_networks_are_an_error():
    """Parameters and inputs are checked finite, so a NaN or Inf in a finite
    network's kernels, outputs or gradients is an overflow: a KernelRangeError
    (as ``Network.kernel`` gives), not NaN with RuntimeWarnings."""
    x = np.random.default_rng(0).standard_normal((3, 2))
    huge = ik.serial(ik.Dense(4, 1e100), ik.Relu(), ik.Dense(4, 1e100), ik.Relu(),
                     ik.Dense(1, 1e100))
    net = ik.serial(ik.Dense(4), ik.Relu(), ik.Dense(4), ik.Relu(), ik.Dense(1))
    _, p = net.init_fn(0, (-1, 2))
    big, p10 = (tuple(tuple(None if a is None else a * f for a in layer) for layer in p)
                for f in (1e200, 10.0))
    calls = [lambda: ik.monte_carlo_kernel_fn(huge, 3, 0)(x, None, "ntk"),
             lambda: E.empirical_kernel_fn(net)(x, None, "ntk", big),
             lambda: E.empirical_nngp_fn(net)(x, None, big),
             lambda: E.linearize(net, big)(big, x),
             lambda: E.value_and_grad(net, big, x, lambda f: f),
             lambda: E.empirical_ntk_vp_fn(net, x, None, p10)(np.full((3, 1), 1e308))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # and no RuntimeWarning on the way
        for call in calls:
            with pytest.raises(ik.KernelRangeError, match="overflow float64"):
                call()
