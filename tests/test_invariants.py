"""Hypothesis invariants over random architectures and inputs."""
import numpy as np
from hypothesis import given, settings, strategies as st

import infkernel as ik
from activation_list import CLOSED_FORMS

# Activations whose kernels stay moderate for the parameter ranges drawn below.
ACTS = [a for a in CLOSED_FORMS if a.name not in ("Exp", "Monomial", "RectifiedMonomial")] \
    + [ik.Monomial(2), ik.RectifiedMonomial(2)]


@st.composite
def networks(draw):
    par = draw(st.sampled_from(["ntk", "standard"]))
    layers = []
    for _ in range(draw(st.integers(0, 3))):
        w = draw(st.floats(0.3, 1.6))
        b = draw(st.one_of(st.none(), st.floats(0.0, 0.5)))
        layers.append(ik.Dense(draw(st.integers(1, 64)), w, b, par))
        if draw(st.integers(0, 3)) == 0:     # sometimes normalised before the activation
            layers.append(ik.LayerNorm(eps=draw(st.sampled_from([1e-12, 0.2]))))
        layers.append(draw(st.sampled_from(ACTS)))
    layers.append(ik.Dense(1, draw(st.floats(0.3, 1.6)), None, par))
    return ik.serial(*layers)


@st.composite
def inputs(draw):
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    x = np.random.default_rng(seed).standard_normal((n, d))
    if n > 2 and draw(st.booleans()):
        x[1] = x[0]          # an identical pair
        x[2] = -x[0]         # and an antipodal one
    return x


@settings(max_examples=60, deadline=None)
@given(networks(), inputs())
def test_invariants(net, x):
    k = net.kernel(x)
    kc = net.kernel(x, x.copy())
    kd = net.diag(x)
    perm = np.random.default_rng(0).permutation(len(x))
    kp = net.kernel(x[perm])
    for f in ("nngp", "ntk"):
        a = getattr(k, f)
        scale = np.abs(a).max() + 1e-300
        assert np.array_equal(a, a.T)                               # symmetry
        assert np.array_equal(np.diag(a), getattr(kd, f))           # diag(K) = diag
        # K(X) = K(X, X) to rounding: identical points stay at ρ = 1 exactly
        # through every kind (the versine's first value included), so the
        # kinked duals' √(1 - ρ) sensitivity never meets a rounded ρ
        assert np.abs(a - getattr(kc, f)).max() <= 1e-12 * scale
        # permutation equivariance (same pairs, same arithmetic up to rounding)
        assert np.abs(getattr(kp, f) - a[np.ix_(perm, perm)]).max() <= 1e-12 * scale
        # positive semi-definite up to rounding: eigvalsh is backward stable
        # (~n ε ‖K‖), and the entries themselves carry up to ~1e-8 relative
        # error at ρ ≈ ±1 for kinked duals (√(1-ρ) sensitivity), hence 1e-9·n
        assert np.linalg.eigvalsh(a).min() >= -1e-9 * scale * len(x)


def test_many_row_groups_and_blocks():
    """N = 2100 on any thread count: several groups of rows per thread (up to
    256 rows, a partial last group), more than one block of rows per call, the
    mirrored writes of the symmetric path, a strided out= view.  K(X) must
    equal K(X, X) and the row-by-row kernel of single points, entry by entry."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2100, 3))
    x[7] = x[2000]  # identical points in different groups and blocks
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Relu(), ik.Dense(8, 1.1, 0.1), ik.Erf(),
                    ik.Dense(1))
    k = net.kernel(x)
    out = np.full((2100, 4200), np.nan)[:, ::2]
    kc = net.kernel(x, x.copy(), get="ntk", out=out)
    assert np.array_equal(k.ntk, k.ntk.T)
    assert np.abs(k.ntk - kc).max() <= 1e-6 * np.abs(k.ntk).max()  # √ε at ρ ≈ 1 (ReLU)
    rows = [0, 7, 255, 256, 1999, 2047, 2048, 2099]
    # each row against the kernel of that single point: the GEMMs of a 1-row
    # and of a 256-row group round x·x' differently (an ulp or two of d = 3
    # products), which three layers amplify to well under 1e-12
    for i in rows:
        ref = net.kernel(x[i:i + 1], x)
        np.testing.assert_allclose(k.nngp[i], ref.nngp[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(kc[i], ref.ntk[0], rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(networks(), st.integers(2, 60), st.integers(1, 31), st.integers(0, 2 ** 32 - 1))
def test_thin_cross_kernels(net, n1, n2, seed):
    """A cross kernel with fewer than 32 columns runs transposed (its few
    points as the rows): K(x1, x2) is exactly K(x2, x1)ᵀ when n1 ≠ n2 (one
    of the two calls is transposed, so both take the same rows; with
    n1 = n2 neither is, and the duals, which form products such as q12·r1·r2
    in one order, agree to rounding), and agrees with the same columns
    computed the usual way (inside a wider x2), both up to the √ε
    sensitivity of kinked duals at ρ ≈ ±1 (see test_invariants)."""
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1, 3))
    x2 = np.concatenate([x1[:1], rng.standard_normal((n2 - 1, 3))])  # a shared point
    wide = np.concatenate([x2, rng.standard_normal((40, 3))])
    k, kt, kw = net.kernel(x1, x2), net.kernel(x2, x1), net.kernel(x1, wide)
    for f in ("nngp", "ntk"):
        a = getattr(k, f)
        scale = np.abs(a).max() + 1e-300
        if n1 != n2:
            assert np.array_equal(a, getattr(kt, f).T)
        else:
            assert np.abs(a - getattr(kt, f).T).max() <= 1e-6 * scale
        assert np.abs(a - getattr(kw, f)[:, :n2]).max() <= 1e-6 * scale


def test_diagonal_pass_over_many_tiles():
    """The diagonal pass runs TILE points at a time, op by op: 1100 points
    (a partial last tile) through ReLU, Erf, LayerNorm, a monomial, branches
    and dropout give each point's own diagonal, computed alone."""
    x = np.random.default_rng(3).standard_normal((1100, 4)) * np.linspace(0.1, 3, 1100)[:, None]
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Relu(), ik.Dense(8, 1.1, 0.1), ik.LayerNorm(),
                    ik.FanOut(2), ik.parallel(ik.serial(ik.Erf(), ik.Dense(8)),
                                              ik.serial(ik.Monomial(2), ik.Dense(8))),
                    ik.FanInSum(), ik.Gelu(), ik.Dense(8), ik.Dropout(0.8), ik.Dense(1))
    kd = net.diag(x)
    rows = [0, 1, 511, 512, 1023, 1024, 1099]
    for f in ("nngp", "ntk"):
        alone = np.array([getattr(net.diag(x[i:i + 1]), f)[0] for i in rows])
        assert np.array_equal(getattr(kd, f)[rows], alone)
        assert np.array_equal(np.diag(getattr(net.kernel(x[:600]), f)), getattr(kd, f)[:600])
