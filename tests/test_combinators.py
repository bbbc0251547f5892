"""Combinators: branch kernels add / average exactly, against kernels of the
separate branches computed by the plain API and against finite-width networks.

Tolerances: the fused program runs the very same per-entry arithmetic on each
branch as the separate networks do, plus one addition (or a weighted average)
per fan-in, so results agree to a few ulps of the largest entry: 1e-13
relative (≈ 500 ulps) is generous yet catches any modelling error.
"""
import math

import numpy as np
import pytest

import infkernel as ik

RTOL = 1e-13


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((7, 3))


@pytest.fixture(scope="module")
def y():
    return np.random.default_rng(1).standard_normal((5, 3))


def branch_a():
    return ik.serial(ik.Dense(64, W_std=1.3, b_std=0.2), ik.Relu(), ik.Dense(16, W_std=0.9))


def branch_b():
    return ik.serial(ik.Dense(64, W_std=0.8, b_std=0.1), ik.Erf(), ik.Dense(16, b_std=0.3))


def test_fan_in_sum_is_sum_of_branch_kernels(x, y):
    net = ik.serial(ik.FanOut(2), ik.parallel(branch_a(), branch_b()), ik.FanInSum())
    for x2 in (None, y):
        k = net.kernel(x, x2)
        ka, kb = branch_a().kernel(x, x2), branch_b().kernel(x, x2)
        close(k.nngp, ka.nngp + kb.nngp)
        close(k.ntk, ka.ntk + kb.ntk)
    d = net.diag(x)
    close(d.ntk, np.diag(branch_a().kernel(x).ntk + branch_b().kernel(x).ntk))


def test_three_branches_and_following_layers(x):
    """Sum of three Dense branches is Gaussian: a Relu may follow."""
    c = ik.serial(ik.Dense(16, W_std=1.1))
    net = ik.serial(ik.FanOut(3), ik.parallel(branch_a(), branch_b(), c), ik.FanInSum(),
                    ik.Relu(), ik.Dense(1, W_std=1.2, b_std=0.1))
    k = net.kernel(x)
    # independent: the pre-activation kernel is the sum; then Relu and Dense by the API
    s = branch_a().kernel(x).nngp + branch_b().kernel(x).nngp + c.kernel(x).nngp
    t = branch_a().kernel(x).ntk + branch_b().kernel(x).ntk + c.kernel(x).ntk
    # arc-cosine kernel of degree 1 (Cho & Saul 2009) for the Relu
    sd = np.sqrt(np.diag(s))
    rho = np.clip(s / np.outer(sd, sd), -1, 1)
    th = np.arccos(rho)
    e_phi = np.outer(sd, sd) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
    e_dphi = (np.pi - th) / (2 * np.pi)
    nngp = 1.44 * e_phi + 0.01
    # the reference's arccos(ρ) is off by up to √eps ≈ 1.5e-8 at ρ → 1 (the diagonal);
    # e_phi is flat in θ there (error O(θ²·1.5e-8)), e_dphi = (π − θ)/2π is not
    close(k.nngp, nngp, 1e-10)
    close(k.ntk, nngp + 1.44 * e_dphi * t, 1e-7)


def test_residual_block_equals_shortcut_plus_block(x, y):
    """z + W₂ relu(z): Σ = Σ_z + Σ_block, Θ likewise (Θ_block includes the
    Dense before the fan-out through both paths)."""
    d0 = ik.Dense(32, W_std=1.2, b_std=0.1)
    block = (ik.Relu(), ik.Dense(32, W_std=1.4, b_std=0.2))
    net = ik.serial(d0, ik.Residual(*block))
    for x2 in (None, y):
        k = net.kernel(x, x2)
        kz = ik.serial(d0).kernel(x, x2)
        kb = ik.serial(d0, *block).kernel(x, x2)
        close(k.nngp, kz.nngp + kb.nngp)
        close(k.ntk, kz.ntk + kb.ntk)


def test_nt_style_residual_spelling(x):
    d0 = ik.Dense(32, b_std=0.1)
    blk = ik.serial(ik.Relu(), ik.Dense(32))
    a = ik.serial(d0, ik.FanOut(2), ik.parallel(ik.Identity(), blk), ik.FanInSum())
    b = ik.serial(d0, ik.Residual(blk))
    close(a.kernel(x).ntk, b.kernel(x).ntk, 0)


def test_deep_residual_reuses_registers(x):
    blocks = [ik.Residual(ik.Relu(), ik.Dense(16, W_std=0.5)) for _ in range(20)]
    net = ik.serial(ik.Dense(16), *blocks, ik.Relu(), ik.Dense(1))
    assert net.program(3).n_regs == 2
    k = net.kernel(x)
    assert np.isfinite(k.ntk).all()
    close(np.diag(k.ntk), net.diag(x).ntk, 1e-12)


@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_fan_in_concat_averages_by_width(x, y, par):
    ga = ik.serial(ik.Dense(40, W_std=1.3, b_std=0.2, parameterization=par), ik.Relu())
    gb = ik.serial(ik.Dense(24, W_std=0.7, parameterization=par), ik.Erf())
    head = ik.Dense(1, W_std=1.5, b_std=0.3, parameterization=par)
    net = ik.serial(ik.FanOut(2), ik.parallel(ga, gb), ik.FanInConcat(), head)
    for x2 in (None, y):
        k = net.kernel(x, x2)
        ka, kb = ga.kernel(x, x2), gb.kernel(x, x2)
        s = (40 * ka.nngp + 24 * kb.nngp) / 64
        t = (40 * ka.ntk + 24 * kb.ntk) / 64
        nngp = 1.5 ** 2 * s + 0.3 ** 2
        ntk = nngp + 1.5 ** 2 * t if par == "ntk" else 64 * s + 1.5 ** 2 * t + 1.0
        close(k.nngp, nngp)
        close(k.ntk, ntk)


def test_concat_of_inputs_is_input(x):
    """Concatenating copies of the input leaves the normalised input kernel."""
    a = ik.serial(ik.FanOut(3), ik.FanInConcat(), ik.Dense(8, b_std=0.1), ik.Relu(), ik.Dense(1))
    b = ik.serial(ik.Dense(8, b_std=0.1), ik.Relu(), ik.Dense(1))
    close(a.kernel(x).ntk, b.kernel(x).ntk)


def test_scale_multiplies_signal(x, y):
    net = ik.serial(ik.Scale(2.5), ik.Dense(8, b_std=0.2), ik.Relu(), ik.Dense(1), ik.Scale(-0.5))
    ref = ik.serial(ik.Dense(8, b_std=0.2), ik.Relu(), ik.Dense(1)).kernel(2.5 * x, 2.5 * y)
    k = net.kernel(x, y)
    close(k.nngp, 0.25 * ref.nngp)
    close(k.ntk, 0.25 * ref.ntk)


def test_nested_branches(x):
    inner = ik.serial(ik.FanOut(2), ik.parallel(branch_a(), branch_b()), ik.FanInSum())
    net = ik.serial(ik.FanOut(2), ik.parallel(inner, ik.Dense(16)), ik.FanInSum())
    ref = branch_a().kernel(x).ntk + branch_b().kernel(x).ntk + ik.serial(ik.Dense(16)).kernel(x).ntk
    close(net.kernel(x).ntk, ref)


# --- finite-width networks: init_fn/apply_fn of the combinators -----------------
def _mc_nngp(net, x, n_samples, seed):
    init_fn, apply_fn, _ = net
    rng = np.random.default_rng(seed)
    acc = np.zeros((x.shape[0], x.shape[0]))
    acc2 = np.zeros_like(acc)
    for _ in range(n_samples):
        _, params = init_fn(rng, x.shape)
        f = apply_fn(params, x)[:, 0]
        ff = np.outer(f, f)
        acc += ff
        acc2 += ff * ff
    mean = acc / n_samples
    se = np.sqrt(np.maximum(acc2 / n_samples - mean ** 2, 0) / n_samples)
    return mean, se


@pytest.mark.parametrize("which", ["sum", "concat"])
def test_finite_width_monte_carlo(x, which):
    """For one hidden layer, E[f(x) f(x')] over the initialisation equals the
    NNGP at any width (the pre-activations are exactly Gaussian); the Monte
    Carlo mean must be within 5 standard errors (two-sided p ≈ 6e-7 per entry)."""
    if which == "sum":
        net = ik.serial(ik.FanOut(2), ik.parallel(
            ik.serial(ik.Dense(20, b_std=0.2), ik.Relu(), ik.Dense(1, W_std=1.3)),
            ik.Dense(1, W_std=0.7)), ik.FanInSum())
    else:
        net = ik.serial(ik.FanOut(2), ik.parallel(
            ik.serial(ik.Scale(2.0), ik.Dense(12, b_std=0.2), ik.Relu()),
            ik.serial(ik.Dense(6), ik.Erf())), ik.FanInConcat(), ik.Dense(1, b_std=0.1))
    xs = x[:4]
    mean, se = _mc_nngp(net, xs, 3000, seed=5)
    exact = net.kernel(xs, None, "nngp")
    z = np.abs(mean - exact) / np.maximum(se, 1e-12)
    assert z.max() < 5.0, z.max()
    out_shape, _ = net.init_fn(0, (-1, 3))
    assert out_shape == (-1, 1)


# --- bad input -------------------------------------------------------------------
def test_sum_of_correlated_branches_is_refused():
    net = ik.serial(ik.Dense(8), ik.FanOut(2), ik.parallel(ik.Identity(), ik.Identity()),
                    ik.FanInSum())
    with pytest.raises(ValueError, match="FanInSum: branches \\[0, 1\\]"):
        net.program(2)
    act = ik.serial(ik.Dense(8), ik.FanOut(2), ik.parallel(ik.Relu(), ik.Erf()), ik.FanInSum())
    with pytest.raises(ValueError, match="correlated"):
        act.program(2)
    # independent branches, but each ends in an activation: not mean-zero, so
    # E[relu(a) relu(b')] = E[relu(a)] E[relu(b')] != 0 is missing from a sum
    fresh = ik.serial(ik.FanOut(2), ik.parallel(ik.serial(ik.Dense(8), ik.Relu()),
                                                ik.serial(ik.Dense(8), ik.Tanh())),
                      ik.FanInSum(), ik.Dense(1))
    with pytest.raises(ValueError, match="FanInSum: branches \\[0, 1\\]"):
        fresh.program(2)


def test_structural_errors():
    with pytest.raises(ValueError, match="receives 2 parallel branches"):
        ik.serial(ik.FanOut(2), ik.Dense(4)).program(2)
    with pytest.raises(ValueError, match="ends with 2 parallel branches"):
        ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(3))).program(2)
    with pytest.raises(ValueError, match="has 3 branches but receives 2"):
        ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(3), ik.Dense(3))).program(2)
    with pytest.raises(ValueError, match="expects parallel branches"):
        ik.serial(ik.Dense(3), ik.FanInSum()).program(2)
    with pytest.raises(ValueError, match="different widths"):
        ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(4)), ik.FanInSum()).program(2)
    with pytest.raises(ValueError, match="Relu.*applied to the output of FanInConcat"):
        ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(4)), ik.FanInConcat(),
                  ik.Relu()).program(2)
    with pytest.raises(ValueError, match="applied to the output of FanInSum with a non-Gaus"):
        ik.serial(ik.Dense(2), ik.FanOut(2), ik.parallel(ik.Relu(), ik.Dense(2)), ik.FanInSum(),
                  ik.Erf()).program(2)
    # a Dense after the concatenation makes it Gaussian again
    ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(4)), ik.FanInConcat(),
              ik.Dense(3), ik.Relu()).program(2)
    with pytest.raises(ValueError, match="num must be a positive integer"):
        ik.FanOut(0)
    with pytest.raises(ValueError, match="axis must be the channel axis -1 \\(or 1\\)"):
        ik.FanInConcat(axis=0)
    with pytest.raises(TypeError, match="Scale: a must be a real number"):
        ik.Scale("2")
    with pytest.raises(ValueError, match="Scale: a must be finite"):
        ik.Scale(math.inf)
    with pytest.raises(ValueError, match="Scale: a must be at most 1e\\+150 in magnitude"):
        ik.Scale(-1e200)      # a² would overflow, as Dense's W_std
    with pytest.raises(TypeError, match="parallel: argument 1"):
        ik.parallel(ik.Dense(2), 3)


def test_empirical_kernels_of_branches(x):
    """Branches are supported (test_empirical checks the numbers); a random
    layer inside a branch is named by its path."""
    net = ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(3)), ik.FanInSum())
    _, params = net.init_fn(0, x.shape)
    assert ik.empirical_ntk_fn(net)(x, None, params).shape == (len(x), len(x))
    drop = ik.serial(ik.FanOut(2), ik.parallel(ik.serial(ik.Dense(3), ik.Dropout(0.5)),
                                               ik.Dense(3)), ik.FanInSum())
    with pytest.raises(TypeError, match="layer 1 branch 0: layer 1 is Dropout"):
        ik.empirical_ntk_fn(drop)


@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_fan_in_prod_is_product_of_branch_kernels(x, y, par):
    """Σ = Σ_a Σ_b and Θ = Θ_a Σ_b + Σ_a Θ_b (product rule, neural-tangents'
    ``FanInProd``), against the separate branches; then through a Dense layer."""
    a = ik.serial(ik.Dense(64, W_std=1.3, b_std=0.2, parameterization=par), ik.Relu(),
                  ik.Dense(16, W_std=0.9, parameterization=par))
    b = ik.serial(ik.Dense(16, W_std=0.8, b_std=0.1, parameterization=par))
    net = ik.serial(ik.FanOut(2), ik.parallel(a, b), ik.FanInProd())
    for x2 in (y, None):
        ka, kb, k = a.kernel(x, x2), b.kernel(x, x2), net.kernel(x, x2)
        close(k.nngp, ka.nngp * kb.nngp)
        close(k.ntk, ka.ntk * kb.nngp + ka.nngp * kb.ntk)
    after = ik.serial(net, ik.Dense(8, W_std=1.1, b_std=0.3, parameterization=par), ik.Erf(),
                      ik.Dense(1, parameterization=par))
    k = after.kernel(x)
    close(np.diag(k.ntk), after.diag(x).ntk)
    close(k.nngp, after.kernel(x, x.copy()).nngp)


PRODUCTS = {
    # a Dense branch of the raw input (exactly Gaussian) and a one-hidden-layer one
    "dense_and_hidden": (ik.Dense(10, W_std=1.2, b_std=0.3),
                         ik.serial(ik.Dense(12, b_std=0.2), ik.Relu(), ik.Dense(10, W_std=1.3))),
    # Dense layers of their own followed by activations: independent, not mean-zero
    "activated": (ik.serial(ik.Dense(10, W_std=1.2, b_std=0.3), ik.Relu()),
                  ik.serial(ik.Dense(10, b_std=0.5), ik.Erf())),
}


@pytest.mark.parametrize("branches", sorted(PRODUCTS))
def test_fan_in_prod_monte_carlo(x, branches):
    """Products of independent branches on the raw input: E[f(x) f(x')]
    equals the NNGP (the product of the branches' kernels) at any width; the
    Monte Carlo mean is within 5 standard errors."""
    net = ik.serial(ik.FanOut(2), ik.parallel(*PRODUCTS[branches]), ik.FanInProd(),
                    ik.Dense(1, W_std=0.9, b_std=0.1))
    xs = x[:4]
    mean, se = _mc_nngp(net, xs, 3000, seed=8)
    ref = net.kernel(xs).nngp
    assert np.all(np.abs(mean - ref) <= 5 * se + 1e-12), np.max(np.abs(mean - ref) / se)


def test_fan_in_concat_channel_axis_one(x):
    """Signals are (N, channels): axis=1 names the channel axis too."""
    branches = (ik.FanOut(2), ik.parallel(ik.Dense(3, b_std=0.1), ik.serial(ik.Dense(5),
                                                                             ik.Relu())))
    a = ik.serial(*branches, ik.FanInConcat(axis=1), ik.Dense(2))
    b = ik.serial(*branches, ik.FanInConcat(), ik.Dense(2))
    np.testing.assert_array_equal(a.kernel(x).ntk, b.kernel(x).ntk)


def test_fan_in_prod_refusals():
    with pytest.raises(ValueError, match="FanInProd: branches \\[0, 1\\]"):
        ik.serial(ik.Dense(4), ik.FanOut(2), ik.parallel(ik.Identity(), ik.Identity()),
                  ik.FanInProd()).program(2)
    with pytest.raises(ValueError, match="applied to the output of FanInProd"):
        ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(3)), ik.FanInProd(),
                  ik.Relu()).program(2)
    with pytest.raises(ValueError, match="FanInProd: the branches have different widths"):
        ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(3), ik.Dense(4)), ik.FanInProd()).program(2)
