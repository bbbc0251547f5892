"""Identities of GP inference and gradient-descent ensembles.

Tolerances: the matrices here have condition numbers below ~1e5 (checked
ridge 1e-3 of the mean diagonal on top of well-separated random points), so
two correct float64 solves agree to ~1e-16 · 1e5 ≈ 1e-11 relative; we allow
1e-8 relative to leave room for the different algorithms (Cholesky vs
eigendecomposition vs CG at tol 1e-12).
"""

import math

import numpy as np
import pytest
import scipy.linalg as sla

import infkernel as ik
from infkernel import predict as P

RTOL = 1e-8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    xtr = rng.standard_normal((40, 4))
    xte = rng.standard_normal((9, 4))
    ytr = rng.standard_normal((40, 3))
    net = ik.serial(ik.Dense(64, 1.5, 0.1), ik.Relu(), ik.Dense(64, 1.5, 0.1), ik.Erf(),
                    ik.Dense(1, 1.2, 0.05))
    return net, xtr, xte, ytr


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


def test_t_infinity_equals_gp_inference(data):
    net, xtr, xte, ytr = data
    pf = P.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg=1e-3)
    ktt, kte, kee = net.kernel(xtr, None), net.kernel(xte, xtr), net.kernel(xte, None)
    gp = P.gp_inference(ktt, ytr, diag_reg=1e-3)(get=("nngp", "ntk"), k_test_train=kte,
                                                  k_test_test=kee)
    for t in (None, np.inf):
        ens = pf(t=t, x_test=xte, compute_cov=True)
        for g in ("nngp", "ntk"):
            close(getattr(ens, g).mean, getattr(gp, g).mean)
            close(getattr(ens, g).covariance, getattr(gp, g).covariance)


def test_t_zero_is_prior(data):
    net, xtr, xte, ytr = data
    pf = P.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg=1e-3)
    out = pf(t=0.0, x_test=xte, compute_cov=True)
    prior = net.kernel(xte, None, "nngp")
    for g in ("nngp", "ntk"):
        assert np.abs(getattr(out, g).mean).max() == 0.0   # exact: (1 - e^0) = 0
        close(getattr(out, g).covariance, prior, 1e-12)


def test_nngp_closed_form_in_eigenbasis(data):
    net, xtr, xte, ytr = data
    lr, reg, t = 0.7, 1e-3, np.array([0.5, 30.0, 800.0])
    pf = P.gradient_descent_mse_ensemble(net, xtr, ytr, learning_rate=lr, diag_reg=reg)
    out = pf(t=t, x_test=xte, get="nngp", compute_cov=True)
    K = net.kernel(xtr, None, "nngp")
    Kr = K + reg * np.trace(K) / len(K) * np.eye(len(K))
    lam, V = np.linalg.eigh(Kr)
    kte, kee = net.kernel(xte, xtr, "nngp"), net.kernel(xte, None, "nngp")
    for i, ti in enumerate(t):
        tau = lr * ti / ytr.size
        f = (1 - np.exp(-lam * tau)) / lam
        f2 = (1 - np.exp(-2 * lam * tau)) / lam
        close(out.mean[i], kte @ V @ np.diag(f) @ V.T @ ytr)
        close(out.covariance[i], kee - kte @ V @ np.diag(f2) @ V.T @ kte.T)


def test_gp_inference_matches_direct_solve(data):
    net, xtr, xte, ytr = data
    k, kt, kee = net.kernel(xtr, None), net.kernel(xte, xtr), net.kernel(xte, None)
    reg = 1e-2
    pf = P.gp_inference(k, ytr, diag_reg=reg, diag_reg_absolute_scale=True)
    out = pf(get=("nngp", "ntk", "ntkgp"), k_test_train=kt, k_test_test=kee)
    S, T = k.nngp + reg * np.eye(40), k.ntk + reg * np.eye(40)
    close(out.nngp.mean, kt.nngp @ np.linalg.solve(S, ytr))
    close(out.nngp.covariance, kee.nngp - kt.nngp @ np.linalg.solve(S, kt.nngp.T))
    close(out.ntkgp.covariance, kee.ntk - kt.ntk @ np.linalg.solve(T, kt.ntk.T))
    B = np.linalg.solve(T, kt.ntk.T)
    term = kt.ntk @ np.linalg.solve(T, kt.nngp.T)
    close(out.ntk.mean, kt.ntk @ np.linalg.solve(T, ytr))
    close(out.ntk.covariance, kee.nngp + B.T @ k.nngp @ B - term - term.T)
    # diagonal-only variances agree with the full covariance
    var = pf(get="nngp", k_test_train=kt, k_test_test=np.diag(kee.nngp)).covariance
    close(var, np.diag(out.nngp.covariance))
    diag = kee._replace(nngp=np.diag(kee.nngp), ntk=np.diag(kee.ntk))
    close(pf(get="ntk", k_test_train=kt, k_test_test=diag).covariance,
          np.diag(out.ntk.covariance))
    # the training set (neural-tangents' k_test_test=True): N(y_train, 0), (N, N)
    train = pf(get=("nngp", "ntk"), k_test_train=None, k_test_test=True)
    for g in train:
        assert np.array_equal(g.mean, ytr) and np.array_equal(g.covariance, np.zeros((40, 40)))


def test_cg_matches_cholesky(data):
    net, xtr, xte, ytr = data
    k, kt = net.kernel(xtr, None, "ntk"), net.kernel(xte, xtr, "ntk")
    a = P.gp_inference(k, ytr, 1e-3)(get="ntk", k_test_train=kt)
    b = P.gp_inference(k, ytr, 1e-3, solver="cg", tol=1e-12)(get="ntk", k_test_train=kt)
    close(b, a, 1e-8)


def test_finite_t_ntk_and_train_set(data):
    net, xtr, xte, ytr = data
    pf = P.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg=1e-3)
    Th = net.kernel(xtr, None, "ntk")
    Tr = Th + 1e-3 * np.trace(Th) / 40 * np.eye(40)
    t = 50.0
    E = sla.expm(-Tr * t / ytr.size)
    train = pf(t=t, x_test=None, get="ntk")
    close(train, (np.eye(40) - E) @ ytr)
    test = pf(t=t, x_test=xte, get="ntk")
    kt = net.kernel(xte, xtr, "ntk")
    close(test, kt @ np.linalg.solve(Tr, (np.eye(40) - E) @ ytr))


def test_chunked_test_set_and_shapes(data):
    net, xtr, xte, ytr = data
    big = P.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg=1e-3)
    small = P.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg=1e-3, chunk_size=2)
    for t in (None, [[1.0, 2.0]]):
        a = big(t=t, x_test=xte, get="ntk", compute_cov="diag")
        b = small(t=t, x_test=xte, get="ntk", compute_cov="diag")
        close(b.mean, a.mean, 1e-13)
        close(b.covariance, a.covariance, 1e-13)
    assert big(t=[[1.0, 2.0]], x_test=xte, get="nngp").shape == (1, 2, 9, 3)
    one = P.gradient_descent_mse_ensemble(net, xtr, ytr[:, 0], diag_reg=1e-3)
    assert one(t=3.0, x_test=xte, get="nngp").shape == (9,)


def test_gradient_descent_mse_single_network(data):
    net, xtr, xte, ytr = data
    k, kt = net.kernel(xtr, None, "ntk"), net.kernel(xte, xtr, "ntk")
    rng = np.random.default_rng(3)
    f0, ft0 = rng.standard_normal(ytr.shape), rng.standard_normal((9, 3))
    pf = P.gradient_descent_mse(k, ytr, learning_rate=2.0)
    a, b = pf(0.0, f0, ft0, kt)
    close(a, f0, 1e-12)
    close(b, ft0, 1e-12)
    a, b = pf(None, f0, ft0, kt)
    close(a, ytr, 0)
    close(b, ft0 + kt @ np.linalg.solve(k, ytr - f0), 1e-6)   # unregularised: cond(K) ~1e3
    t = 7.0
    E = sla.expm(-2.0 * k * t / ytr.size)
    a, b = pf(t, f0, ft0, kt)
    close(a, ytr + E @ (f0 - ytr), 1e-7)


def test_bad_input(data):
    net, xtr, xte, ytr = data
    with pytest.raises(ValueError, match="y_train has 39 rows"):
        P.gradient_descent_mse_ensemble(net, xtr, ytr[:39])
    bad = ytr.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        P.gradient_descent_mse_ensemble(net, xtr, bad)
    with pytest.raises(ValueError, match="diag_reg"):
        P.gp_inference(np.eye(3), np.ones(3), diag_reg=-1.0)
    k = np.eye(3)
    k[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"contains NaN or Inf \(inf at row 2, column 1\)"):
        P.gp_inference(k, np.ones(3))(k_test_train=np.ones((1, 3)))
    pf = P.gradient_descent_mse_ensemble(net, xtr, ytr)
    with pytest.raises(ValueError, match="t must be >= 0"):
        pf(t=-1.0, x_test=xte)
    with pytest.raises(ValueError, match="learning_rate"):
        P.gradient_descent_mse(np.eye(3), np.ones(3), learning_rate=0.0)
    with pytest.raises(ValueError, match="3 rows, expected 4"):
        P.gp_inference(np.eye(4), np.ones(3))
    with pytest.raises(ValueError, match="unknown get"):
        P.gp_inference(np.eye(3), np.ones(3))(get="xyz", k_test_train=np.ones((1, 3)))


def test_flags_are_booleans(data):
    """No truthy strings: "False" would switch the absolute ridge on, "no"
    would let the factorisation overwrite the caller's matrix."""
    net, xtr, xte, ytr = data
    k = net.kernel(xtr, None, "ntk")
    with pytest.raises(TypeError, match="diag_reg_absolute_scale must be True or False"):
        P.gp_inference(k, ytr, 0.1, diag_reg_absolute_scale="False")
    with pytest.raises(TypeError, match="overwrite_k_train_train must be True or False"):
        P.gp_inference(k, ytr, overwrite_k_train_train="no")
    with pytest.raises(TypeError, match="diag_reg_absolute_scale must be True or False"):
        P.gradient_descent_mse(k, ytr, diag_reg_absolute_scale=1)
    with pytest.raises(TypeError, match="diag_reg_absolute_scale must be True or False"):
        P.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg_absolute_scale="yes")
    with pytest.raises(TypeError, match="t must be None or a number"):
        P.gradient_descent_mse_ensemble(net, xtr, ytr)(True, xte)


def test_test_kernels_of_a_callable_kernel_fn_are_checked(data):
    """The test-train and test-test kernels of a user's kernel_fn are checked
    like the training kernel: NaN, wrong shapes, a plain array for a tuple get."""
    net, xtr, xte, ytr = data

    def broken(how):
        def kernel_fn(a, b=None, get=None):
            k = net.kernel(a, b, get)
            if b is None and how != "test-test" or (b is not None and how == "test-test"):
                return k
            if how == "nan":
                return type(k)(*[np.full_like(q, np.nan) for q in k])
            if how == "short":
                return type(k)(*[q[:, :-1] for q in k])
            if how == "plain":
                return k.ntk
            return np.full_like(k, np.nan) if isinstance(k, np.ndarray) else k
        return kernel_fn
    cases = (("nan", "the test-train ntk kernel contains NaN"),
             ("short", r"the test-train ntk kernel must have shape \(M, 40\), got \(9, 39\)"),
             ("plain", "must return a namedtuple with a 'ntk' field, got ndarray"))
    for how, message in cases:
        with pytest.raises((TypeError, ValueError), match=message):
            P.gradient_descent_mse_ensemble(broken(how), xtr, ytr)(1.0, xte, "ntk")
    with pytest.raises(ValueError, match="the test nngp kernel contains NaN"):
        P.gradient_descent_mse_ensemble(broken("test-test"), xtr, ytr)(
            1.0, xte, "ntk", compute_cov=True)


@pytest.mark.parametrize("A", [np.diag([1.0, 1.0, -0.5]), np.array([[1.0, 2.0], [2.0, 1.0]]),
                               np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [2.0, 0.0, 1.0]])])
def test_not_psd_is_an_error(A):
    """Also when the failed factorisation has overwritten part of the matrix
    (the off-diagonal indefinite cases)."""
    n = len(A)
    with pytest.raises(ValueError, match="not positive semidefinite"):
        P.gp_inference(A, np.ones(n))(get="nngp", k_test_train=np.ones((1, n)))


@pytest.mark.parametrize("n", [8, 40])
def test_singular_kernel_is_solved_with_its_pseudo_inverse(n):
    """A singular training kernel (rank 3): mean and covariance from the
    pseudo-inverse, the limit diag_reg → 0 (numpy's SVD-based pinv as the
    reference), stated in a SingularKernelWarning at the caller's line; t =
    None agrees with t = ∞ (eigendecomposition) to rounding."""
    rng = np.random.default_rng(1)
    B = rng.standard_normal((n, 3))
    k = B @ B.T                                    # PSD of rank 3: singular
    y = B @ rng.standard_normal(3) + 0.1 * rng.standard_normal(n)
    kt = rng.standard_normal((2, 3)) @ B.T         # test points' kernel: in k's range
    ktt = kt @ np.linalg.pinv(k) @ kt.T + np.eye(2)
    with pytest.warns(P.SingularKernelWarning, match="numerical rank 3 of") as rec:
        out = P.gp_inference(k, y)(get="nngp", k_test_train=kt, k_test_test=ktt)
    assert rec[0].filename == __file__
    pinv = np.linalg.pinv(k, rcond=1e-10)
    scale = np.abs(kt @ pinv @ y).max()
    # both sides round at ~cond · ε of the rank-3 part (cond ~ 10 here): 1e-10 is
    # far below the 1e-5 that the old jitter left and far above rounding
    np.testing.assert_allclose(out.mean, kt @ pinv @ y, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(out.covariance, ktt - kt @ pinv @ kt.T, rtol=0, atol=1e-10)
    flow = P.gradient_descent_mse(k, y)
    with pytest.warns(P.SingularKernelWarning):
        at_none = flow(None, 0.0, np.zeros(2), kt)[1]
    np.testing.assert_allclose(at_none, flow(np.inf, 0.0, np.zeros(2), kt)[1],
                               rtol=0, atol=1e-10 * scale)


def test_singular_kernel_beyond_the_pseudo_inverse_size_gets_jitter(monkeypatch):
    """Beyond ``_PINV_MAX`` points a stated jitter: the jittered solve equals a
    direct solve of K + (stated jitter) I (the retry factors the original
    matrix, not what the failed attempt left)."""
    monkeypatch.setattr(P, "_PINV_MAX", 4)
    rng = np.random.default_rng(1)
    n = 8
    B = rng.standard_normal((n, 3))
    k = B @ B.T
    y = B @ rng.standard_normal(3) + 0.1 * rng.standard_normal(n)
    with pytest.warns(P.JitterWarning, match="added jitter") as rec:
        out = P.gp_inference(k, y)(get="nngp", k_test_train=k[:2] + 0.5)
    assert rec[0].filename == __file__
    eps = float(str(rec[0].message).split("added jitter ")[1].split(" ")[0])
    ref = (k[:2] + 0.5) @ np.linalg.solve(k + eps * np.eye(n), y)
    # cond(K + eps I) ~ |K| / eps ~ 1e12: agreement to ~1e-4 of the scale
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_indefinite_kernel_is_refused_by_the_pseudo_inverse_path():
    """A singular matrix that is not PSD (a remainder beyond rounding after
    the pivoted factorisation) is refused, not solved."""
    k = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="not positive semidefinite beyond rounding: "
                                         "smallest eigenvalue -1"):
        P.gp_inference(k, np.ones(3))(get="nngp", k_test_train=np.ones((1, 3)))


def test_blocked_cholesky_matches_lapack_and_keeps_upper(monkeypatch):
    """The blocked in-place factorisation used for large matrices equals
    LAPACK's to rounding (backward-stable both: ~n ε relative) and leaves the
    strict upper triangle (the jitter retry restores from it) untouched."""
    import scipy.linalg as sla
    from infkernel import predict
    monkeypatch.setattr(predict, "_PANEL", 64)
    monkeypatch.setattr(predict, "_CHUNK", 96)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((500, 520))
    A = np.asfortranarray(a @ a.T / 520 + 0.01 * np.eye(500))
    upper = np.triu(A, 1).copy()
    ref = sla.cholesky(A, lower=True)
    c = predict._potrf_lower(A)
    assert c is A
    assert np.abs(np.tril(c) - ref).max() <= 1e-12 * np.abs(ref).max()
    assert np.array_equal(np.triu(A, 1), upper)


def test_gp_inference_in_place_factorisation_matches_copying():
    """overwrite_k_train_train=True gives the same posterior mean (same
    arithmetic on the same matrix) and reuses the kernel's memory."""
    from infkernel import predict
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 3))
    net = ik.serial(ik.Dense(8, 1.3, 0.1), ik.Erf(), ik.Dense(1))
    k = net.kernel(x, None, "ntk")
    kt = net.kernel(x[:7] + 0.1, x, "ntk")
    y = rng.standard_normal((60, 2))
    ref = predict.gp_inference(k.copy(), y, diag_reg=1e-3)(get="ntk", k_test_train=kt)
    pf = predict.gp_inference(k, y, diag_reg=1e-3, overwrite_k_train_train=True)
    np.testing.assert_array_equal(pf(get="ntk", k_test_train=kt), ref)
    assert not np.array_equal(k, k.T)  # the lower triangle now holds the factor
    np.testing.assert_array_equal(pf(get="ntk", k_test_train=kt), ref)  # factor cached


def test_finite_t_ntk_covariance_against_matrix_exponentials(data):
    """Lee et al. 2019, eq. 16 at finite t with A_t = Θ⁻¹(I - e^{-Θt}) from
    scipy's expm, test set (full and diagonal) and training set
    (cov = e^{-Θt} Σ e^{-Θt})."""
    net, xtr, xte, ytr = data
    reg = 1e-3
    pf = P.gradient_descent_mse_ensemble(net, xtr, ytr, learning_rate=0.8, diag_reg=reg)
    k, kt, kee = net.kernel(xtr, None), net.kernel(xte, xtr), net.kernel(xte, None)
    Tr = k.ntk + reg * np.trace(k.ntk) / 40 * np.eye(40)
    ts = np.array([3.0, 60.0])
    full = pf(t=ts, x_test=xte, get="ntk", compute_cov=np.True_)     # NumPy bools are bools
    diag = pf(t=ts, x_test=xte, get="NTK", compute_cov="diag")     # get: any case, as NT
    train = pf(t=ts, x_test=None, get="ntk", compute_cov=True)
    for bad in (1, 1.0, "full", None):
        with pytest.raises(ValueError, match="compute_cov must be False, True or 'diag'"):
            pf(t=ts, x_test=xte, get="ntk", compute_cov=bad)
    train_diag = pf(t=ts, x_test=None, get="ntk", compute_cov="diag")
    for i, t in enumerate(ts):
        E = sla.expm(-Tr * 0.8 * t / ytr.size)
        A = np.linalg.solve(Tr, np.eye(40) - E)
        B = A @ kt.ntk.T
        term = kt.ntk @ A @ kt.nngp.T
        cov = kee.nngp + B.T @ k.nngp @ B - term - term.T
        close(full.mean[i], kt.ntk @ A @ ytr)
        close(full.covariance[i], cov)
        close(diag.covariance[i], np.diag(cov))
        close(train.covariance[i], E @ k.nngp @ E)
        close(train_diag.covariance[i], np.diag(E @ k.nngp @ E))


def test_t_infinity_on_a_singular_kernel_is_the_pseudo_inverse_limit():
    """Duplicate training points and no regulariser: the flow converges to
    the minimum-norm interpolant; t = ∞ is finite and equals a very late t."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 3))
    x[5] = x[4]
    y = rng.standard_normal(12)
    y[5] = y[4]
    net = ik.serial(ik.Dense(16, 1.4, 0.1), ik.Erf(), ik.Dense(1))
    xt = rng.standard_normal((4, 3))
    pf = P.gradient_descent_mse_ensemble(net, x, y)
    inf = pf(t=np.inf, x_test=xt, get="ntk")
    assert np.isfinite(inf).all() and np.isfinite(pf(t=np.inf, get="ntk")).all()
    K, kt = net.kernel(x, None, "ntk"), net.kernel(xt, x, "ntk")
    close(inf, kt @ np.linalg.pinv(K, rcond=1e-13) @ y, 1e-6)   # cond of the range ~1e5
    one = P.gradient_descent_mse(K, y)
    assert np.isfinite(one(np.inf, fx_train_0=0.0)).all()


def test_gradient_descent_mse_test_outputs_only():
    """fx_train_0=None (as in neural-tangents) returns fx_test alone, with
    the training outputs starting from 0."""
    rng = np.random.default_rng(6)
    k = rng.standard_normal((8, 10))
    k = k @ k.T / 10 + 0.1 * np.eye(8)
    kt = rng.standard_normal((3, 8))
    y = rng.standard_normal((8, 2))
    pf = P.gradient_descent_mse(k, y)
    both = pf(2.0, 0.0, np.zeros((3, 2)), kt)
    close(pf(2.0, None, np.zeros((3, 2)), kt), both[1], 0)
    with pytest.raises(ValueError, match="both None"):
        pf(2.0, None, None)
    with pytest.raises(ValueError, match="fx_test_0 contains NaN"):
        pf(2.0, 0.0, np.full((3, 2), np.nan), kt)
    with pytest.raises(ValueError, match="fx_test_0 must broadcast to shape \\(3, 2\\)"):
        pf(2.0, 0.0, np.zeros((4, 2)), kt)


def test_duplicated_training_point_is_singular_even_when_cholesky_succeeds(data):
    """A duplicated training input with a different target: dpotrf succeeds on
    the rounding-level pivot, which would solve to garbage; the pivot check
    treats it as singular and solves with the pseudo-inverse, the limit
    diag_reg → 0, which averages the two targets (without the check the
    answer is off by O(1): -0.75 where the limit is -0.18; a jitter of 1e-12
    of the scale was off by ~1e-4)."""
    net, xtr, xte, ytr = data
    x = np.vstack([xtr[:20], xtr[:1]])
    y = np.vstack([ytr[:20], ytr[:1] + 1.0])
    k, kt = net.kernel(x, None, "nngp"), net.kernel(xte, x, "nngp")
    with pytest.warns(P.SingularKernelWarning, match="singular to working precision"):
        got = P.gp_inference(k, y)("nngp", kt)
    ref = kt @ np.linalg.pinv(k, rcond=1e-10) @ y
    # the smallest kept eigenvalues are ~1e-8 of the scale: rounding ~cond · ε ~ 1e-8
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7 * np.abs(ref).max())


def test_boolean_targets_are_zero_one():
    """One-hot targets as booleans are the 0 / 1 targets (kernels are not)."""
    k = np.eye(3) * 2 + 0.5
    y = np.array([[True, False], [False, True], [True, True]])
    np.testing.assert_array_equal(P.gradient_descent_mse(k, y)(1.0, 0.0),
                                  P.gradient_descent_mse(k, y.astype(float))(1.0, 0.0))
    with pytest.raises(TypeError, match="k_train_train must be an array of real"):
        P.gradient_descent_mse(k > 1, y)


def test_strings_and_complex_numbers_are_refused():
    """NumPy would parse "1" and drop imaginary parts; the predictors refuse."""
    k = np.eye(2)
    with pytest.raises(TypeError, match="y_train must be an array of real numbers"):
        P.gp_inference(k, np.ones(2) + 1j)
    with pytest.raises(TypeError, match="k_train_train must be an array of real"):
        P.gradient_descent_mse(k.astype(complex), np.ones(2))
    with pytest.raises(TypeError, match="t must be None or a number"):
        P.gradient_descent_mse(k, np.ones(2))(t="1")
    with pytest.raises(TypeError, match="k_test_train must be an array of real"):
        P.gp_inference(k, np.ones(2))("nngp", np.array([["1", "2"]]))


def test_max_learning_rate_follows_neural_tangents_and_checks_the_kernel():
    """2(1 + momentum) n / (λ_max + eps) under neural-tangents' argument
    names; a kernel without a positive eigenvalue or an asymmetric one is an
    error, not a negative or astronomically large rate."""
    k = np.array([[2.0, 1.0], [1.0, 2.0]])                 # λ_max = 3
    # λ_max from LAPACK: exact up to a few ulps
    assert P.max_learning_rate(ntk_train_train=k, momentum=0.5, eps=1.0) == \
        pytest.approx(2 * 1.5 * 2 / 4.0, rel=1e-14)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        P.max_learning_rate(-k)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        P.max_learning_rate(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not symmetric"):
        P.max_learning_rate(np.array([[1.0, 0.0], [1.0, 1.0]]))


def test_finite_t_refuses_non_psd_and_validates_arguments():
    A = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="not positive semidefinite"):
        P.gradient_descent_mse(A, np.ones(2))(t=1.0)
    with pytest.raises(ValueError, match="tol"):
        P.gp_inference(np.eye(2), np.ones(2), solver="cg", tol=float("nan"))
    with pytest.raises(ValueError, match="trace_axes"):
        P.gp_inference(np.eye(2), np.ones(2), 0.0, False, (0,))
    P.gp_inference(np.eye(2), np.ones(2), 0.0, False, (-1,))      # NT's default, accepted
    with pytest.raises(ValueError, match="k_test_test contains NaN"):
        P.gp_inference(np.eye(2), np.ones(2))("nngp", np.ones((1, 2)), np.full((1, 1), np.nan))
    with pytest.raises(ValueError, match="y_train_size"):
        P.max_learning_rate(np.eye(2), y_train_size=-3)
    with pytest.raises(ValueError, match="repeated"):
        P.gp_inference(np.eye(2), np.ones(2))(("nngp", "nngp"), np.ones((1, 2)))


def test_overwrite_keeps_the_nngp_kernel_the_ntk_covariance_reads(data):
    net, xtr, xte, ytr = data
    k, kt, kee = net.kernel(xtr, None), net.kernel(xte, xtr), net.kernel(xte, None)
    ref = P.gp_inference(k, ytr, 1e-3)(None, kt, kee)
    k2 = net.kernel(xtr, None)
    out = P.gp_inference(k2, ytr, 1e-3, overwrite_k_train_train=True)(None, kt, kee)
    for g in ("nngp", "ntk"):
        close(getattr(out, g).covariance, getattr(ref, g).covariance, 1e-12)


# ---------------------------------------------------------------------------
# gradient_descent: any loss, optional momentum (ODE solution)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flow():
    """A well-conditioned NTK pair, one-hot targets and small initial outputs."""
    rng = np.random.default_rng(3)
    net = ik.serial(ik.Dense(64, 1.5, 0.1), ik.Relu(), ik.Dense(1))
    x, xt = rng.standard_normal((25, 4)), rng.standard_normal((6, 4))
    k, ktd = net.kernel(x, None, "ntk"), net.kernel(xt, x, "ntk")
    y = np.eye(3)[rng.integers(0, 3, 25)]
    return k, ktd, y, 0.1 * rng.standard_normal(y.shape), 0.1 * rng.standard_normal((6, 3))


def _linear_flow(k, ktd, y, f0, ft0, lr, momentum, t):
    """MSE flow as one linear ODE z' = A z + c on (f_train, f_test[, velocities]),
    solved by a matrix exponential of the augmented system (independent of the
    eigenbasis and ODE-solver paths)."""
    n, m = k.shape[0], ktd.shape[0]
    G = np.vstack([k, ktd]) / y.size                  # f' = -[K; K_td] (f_train - y) / y.size
    N = n + m
    if momentum is None:
        A = np.zeros((N + 1, N + 1))
        A[:N, :n] = -G * lr
        outs = []                                     # constant term: z = (f, 1)
        for col in range(y.shape[1]):
            A[:N, N] = G @ y[:, col] * lr
            z0 = np.concatenate([f0[:, col], ft0[:, col], [1.0]])
            outs.append(sla.expm(A * t) @ z0)
        z = np.stack(outs, axis=-1)
        return z[:n], z[n:N]
    s = math.sqrt(lr)
    fr = (momentum - 1) / s
    A = np.zeros((2 * N + 1, 2 * N + 1))
    A[:N, N:2 * N] = np.eye(N)                        # f' = q
    A[N:2 * N, :n] = -G                               # q' = -G (f - y) + fr q
    A[N:2 * N, N:2 * N] = fr * np.eye(N)
    outs = []
    for col in range(y.shape[1]):
        A[N:2 * N, 2 * N] = G @ y[:, col]
        z0 = np.concatenate([f0[:, col], ft0[:, col], np.zeros(N), [1.0]])
        outs.append(sla.expm(A * t * s) @ z0)
    z = np.stack(outs, axis=-1)
    return z[:n], z[n:N]


@pytest.mark.parametrize("momentum", [None, 0.0, 0.9, 1.0])
def test_gradient_descent_mse_loss_is_the_linear_flow(flow, momentum):
    k, ktd, y, f0, ft0 = flow
    ts = np.array([[0.0, 0.3], [2.0, 15.0]])
    got = P.gradient_descent("mse", k, y, 0.7, momentum)(ts, f0, ft0, ktd)
    assert got[0].shape == (2, 2) + y.shape and got[1].shape == (2, 2) + ft0.shape
    for idx in np.ndindex(ts.shape):
        ref = _linear_flow(k, ktd, y, f0, ft0, 0.7, momentum, ts[idx])
        close(got[0][idx], ref[0], 1e-8)
        close(got[1][idx], ref[1], 1e-8)
    if momentum is None:   # and the closed form of gradient_descent_mse
        mse = P.gradient_descent_mse(k, y, 0.7)(ts, f0, ft0, ktd)
        close(got[0], mse[0], 1e-9)
        close(got[1], mse[1], 1e-9)


def test_gradient_descent_cross_entropy_against_rk4(flow):
    """Softmax cross-entropy, with and without momentum, against classical
    RK4 with 4000 fixed steps integrating train and test outputs together
    (h = 2.5e-3 and 3.5e-3 in ODE time, λ_max(K)/n ≈ 0.5: h λ ~ 1e-3, global
    error ~1e-12)."""
    k, ktd, y, f0, ft0 = flow
    n = y.size

    def grad(f):
        p = np.exp(f - f.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True) - y) / n

    for momentum in (None, 0.8):
        lr, T = 0.5, 20.0
        s = math.sqrt(lr) if momentum is not None else lr
        fr = 0.0 if momentum is None else (momentum - 1) / s

        def rhs(z):
            f, ft, q, qt = z
            g = grad(f)
            if momentum is None:
                return np.array([-k @ g, -ktd @ g, 0 * q, 0 * qt], dtype=object)
            return np.array([q, qt, -k @ g + fr * q, -ktd @ g + fr * qt], dtype=object)

        z = np.array([f0.copy(), ft0.copy(), np.zeros_like(f0), np.zeros_like(ft0)],
                     dtype=object)
        steps = 4000
        h = T * s / steps
        for _ in range(steps):
            a = rhs(z)
            b = rhs(z + h / 2 * a)
            c = rhs(z + h / 2 * b)
            d = rhs(z + h * c)
            z = z + h / 6 * (a + 2 * b + 2 * c + d)
        got = P.gradient_descent("cross_entropy", k, y, lr, momentum)(T, f0, ft0, ktd)
        close(got[0], z[0], 1e-8)
        close(got[1], z[1], 1e-8)
        ce = lambda f, yy: -np.mean(np.log(np.exp(f) / np.exp(f).sum(1, keepdims=True)) * yy)
        own = P.gradient_descent(ce, k, y, lr, momentum,
                                 loss_grad=lambda f, yy: grad(f))(T, f0, ft0, ktd)
        close(own[0], got[0], 1e-12)


def test_gradient_descent_stiff_flows_take_few_steps(flow):
    """Large learning rates and long times (lr·t·λ_max ~ 1e12: an explicit
    method would need that many steps) against the closed form; "auto"
    takes LSODA there, which turns to BDF steps as the flow becomes stiff."""
    k, ktd, y, f0, ft0 = flow
    for lr, t in ((1e12, 1.0), (1.0, 1e12), (1e3, np.array([0.0, 1e-4, 2.0]))):
        got = P.gradient_descent("mse", k, y, lr)(t, f0, ft0, ktd)
        ref = P.gradient_descent_mse(k, y, lr)(t, f0, ft0, ktd)
        close(got[0], ref[0], 1e-8)
        close(got[1], ref[1], 1e-8)


def test_gradient_descent_method_follows_the_stiffness(flow):
    """"auto": DOP853 for short flows, LSODA for stiff ones of small states;
    an explicit method asked for a stiff flow warns of its step count."""
    k, _, y, f0, _ = flow
    grad = lambda f: (f - y) / y.size     # noqa: E731   MSE: curvature 1/size
    assert P._ode_method("auto", 1.0, k, grad, f0, False, 2 * y.size) == "DOP853"
    assert P._ode_method("auto", 1e8, k, grad, f0, False, 2 * y.size) == "LSODA"
    with pytest.warns(RuntimeWarning, match=r"a stiff flow \(lr·t·λ_max·∂²loss ≈ "):
        assert P._ode_method("auto", 1e8, k, grad, f0, False, 10 ** 5) == "DOP853"
    with pytest.warns(RuntimeWarning, match=r"RK45, an explicit method, needs about"):
        assert P._ode_method("RK45", 1e10, k, grad, f0, True, 2 * y.size) == "RK45"


def test_gradient_descent_state_resumes(flow):
    """An ODEState out at t1, fed back in, continues the same trajectory."""
    k, ktd, y, f0, ft0 = flow
    pf = P.gradient_descent("cross_entropy", k, y, 0.5, 0.9)
    mid = pf(1.5, P.ODEState(f0, ft0), None, ktd)
    assert isinstance(mid, P.ODEState) and mid.qx_train.shape == y.shape
    end = pf(2.5, mid, None, ktd)
    direct = pf(4.0, P.ODEState(f0, ft0), None, ktd)
    for a, b in ((end.fx_train, direct.fx_train), (end.fx_test, direct.fx_test),
                 (end.qx_train, direct.qx_train), (end.qx_test, direct.qx_test)):
        close(a, b, 1e-8)
    only_test = pf(4.0, None, ft0, ktd)        # training outputs start at 0
    close(only_test, pf(4.0, P.ODEState(0 * f0, ft0), None, ktd).fx_test, 1e-12)
    one_d = P.gradient_descent("mse", k, y[:, 0], 0.5)(np.array([1.0, 2.0]), f0[:, 0])
    assert one_d.shape == (2, y.shape[0])
    none = pf(np.zeros((0, 2)), P.ODEState(f0, ft0), None, ktd)   # no times: empty results
    assert none.fx_train.shape == (0, 2) + y.shape and none.fx_test.shape == (0, 2) + ft0.shape


def test_trace_axes_as_in_neural_tangents():
    """Every spelling of "the targets' channel axis" is accepted, and gives the
    same predictions: (-1,) or (1,) for (N, C) targets, () or (-1,) for (N,)
    targets; other axes are refused by every predictor."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 3))
    k = x @ x.T / 3 + 0.5 * np.eye(12)
    y = rng.standard_normal((12, 2))
    for yy, axes in ((y, ((-1,), (1,), [1])), (y[:, 0], ((-1,), ()))):
        means = [P.gp_inference(k, yy, 1e-3, False, a)("nngp", k[:4]) for a in axes]
        flows = [P.gradient_descent_mse(k, yy, 1.0, 0.0, False, a)(2.0) for a in axes]
        gd = [P.gradient_descent("mse", k, yy, 1.0, None, a)(2.0) for a in axes]
        for a, b, c in zip(means, flows, gd):
            np.testing.assert_array_equal(a, means[0])
            np.testing.assert_array_equal(b, flows[0])
            np.testing.assert_array_equal(c, gd[0])
        for bad in ((0,), (2,), (-1, 1), (True,), "x", 1) + (((),) if yy.ndim == 2 else ((1,),)):
            for call in (lambda: P.gp_inference(k, yy, 0.0, False, bad),
                         lambda: P.gradient_descent_mse(k, yy, 1.0, 0.0, False, bad),
                         lambda: P.gradient_descent("mse", k, yy, 1.0, None, bad),
                         lambda: P.gradient_descent_mse_ensemble(ik.serial(ik.Dense(1)), x, yy,
                                                                 trace_axes=bad)):
                with pytest.raises(ValueError, match="trace_axes must be the targets' channel"):
                    call()
    assert P.max_learning_rate(k, 24.0) == P.max_learning_rate(k, 24)   # a float size


@pytest.mark.parametrize("call, exc, words", [
    (lambda k, y: P.gradient_descent("hinge", k, y), ValueError, "loss must be one of"),
    (lambda k, y: P.gradient_descent(lambda f, yy: 0.0, k, y), TypeError, "loss_grad"),
    (lambda k, y: P.gradient_descent(lambda f, yy: np.sum((f - yy) ** 2), k, y,
                                     loss_grad=lambda f, yy: f - yy)(1.0),
     ValueError, "loss_grad does not match loss"),
    (lambda k, y: P.gradient_descent("mse", k, y, loss_grad=lambda f, yy: f),
     ValueError, "has its own gradient"),
    (lambda k, y: P.gradient_descent("cross_entropy", k, y[:, 0]), ValueError, "(N, C)"),
    (lambda k, y: P.gradient_descent(lambda f, yy: 0.0, k, y, loss_grad=lambda f, yy: f[0])(1.0),
     ValueError, "must return a finite array of shape (25, 3)"),
    (lambda k, y: P.gradient_descent("mse", k, y)(None), ValueError, "t must be finite"),
    (lambda k, y: P.gradient_descent("mse", k, y)(np.inf), ValueError, "t must be finite"),
    (lambda k, y: P.gradient_descent("mse", k, y, momentum=1.5), ValueError, "momentum"),
    (lambda k, y: P.max_learning_rate(k, momentum=1.5), ValueError,
     "momentum must be in [0, 1], got 1.5"),
    (lambda k, y: P.gradient_descent("mse", k, y)(1.0, "0.5"), TypeError,
     "fx_train_0 must be an array of real numbers, got dtype <U3"),
    (lambda k, y: P.gradient_descent("mse", k, y)(1.0, 0.5j), TypeError,
     "fx_train_0 must be an array of real numbers, got dtype complex128"),
    (lambda k, y: P.gradient_descent("mse", k, y, momentum=0.5)(
        1.0, P.ODEState(np.zeros(y.shape), qx_train=np.full(y.shape, True))), TypeError,
     "qx_train must be an array of real numbers, got dtype bool"),
    (lambda k, y: P.gradient_descent("mse", k, y)(1.0, 0.0, np.zeros((6, 3))), ValueError,
     "k_test_train is None"),
    (lambda k, y: P.gradient_descent("mse", k, y)(1.0, P.ODEState(qx_train=np.zeros(y.shape))),
     ValueError, "momentum is None"),
    (lambda k, y: P.gradient_descent("mse", k, y[:-1]), ValueError, "y_train has 24 rows"),
    (lambda k, y: P.gradient_descent("mse", k, y, loss_grad=None, rtol=0), ValueError, "rtol"),
    (lambda k, y: P.gradient_descent("mse", k, y)(1.0, 0.0, np.zeros((2, 3)), k[:1]),
     ValueError, "fx_test_0 must broadcast to shape (1, 3)"),
    (lambda k, y: P.gradient_descent("mse", k, y)(1.0, 0.0, np.zeros((1, 3)),
                                                 ik.Kernel(k[:1], k[:1])),
     TypeError, "k_test_train must be an array of real numbers, got a Kernel"),
    (lambda k, y: P.gradient_descent_mse(k, y)(1.0, 0.0, np.zeros((1, 3)),
                                               ik.Kernel(k[:1], k[:1])),
     TypeError, "k_test_train must be an array of real numbers, got a Kernel"),
    (lambda k, y: P.gradient_descent("mse", k, y, 0.5, 0.8)(
        1.0, P.ODEState(np.zeros(y.shape)), np.zeros((1, 3)), k[:1]),
     ValueError, "fx_test_0 must be None when an ODEState is passed"),
    (lambda k, y: P.gradient_descent("mse", k, y, method="foo"), ValueError,
     "method must be one of auto, RK23, RK45, DOP853, Radau, BDF, LSODA or a scipy.integrate."
     "OdeSolver subclass, got 'foo'"),
    (lambda k, y: P.gp_inference(k, y)("nngp", None, np.ones((7, 7))), ValueError,
     "k_test_test must have shape (25, 25) or (25,), got (7, 7)"),
])
def test_gradient_descent_bad_input(flow, call, exc, words):
    k, _, y, _, _ = flow
    with pytest.raises(exc) as info:
        call(k, y)
    assert words in str(info.value)


def test_pcg_solve_checks_its_arguments():
    """pcg_solve (gp_inference's "cg" solver) refuses NaN right-hand sides,
    wrong lengths, negative regularisers and ranks by name (NaN b gave zeros)."""
    K = 2.0 * np.eye(4)
    np.testing.assert_allclose(P.pcg_solve(K, np.ones(4)), 0.5 * np.ones(4))
    for kwargs, words in ((dict(b=np.array([np.nan, 0, 0, 0])), "b contains NaN"),
                          (dict(b=np.ones(3)), r"b must have shape \(4,\) or \(4, C\)"),
                          (dict(b=np.ones(4), reg=-1.0), "reg must be finite and >= 0"),
                          (dict(b=np.ones(4), rank=-1), "rank must be a positive integer, got -1"),
                          (dict(b=np.ones(4), maxiter=0), "maxiter must be a positive integer, got 0")):
        with pytest.raises(ValueError, match=words):
            P.pcg_solve(K, **kwargs)


def test_pcg_solve_on_ill_conditioned_kernels():
    """An Erf NTK of 300 points in 3-D (condition number 1.4e8) without a
    regulariser: CG once ended at 27× the initial residual (the
    preconditioner's diagonal was 1e-14 at the pivots, which the Woodbury
    formula cancelled into an indefinite P⁻¹).  Now the true residual is below
    1e-3 and stated in the warning; with diag_reg 1e-4 (condition 9e5) it
    converges to the tolerance and agrees with a direct solve to the
    conditioning's bound; the returned iterate is never worse than X = 0."""
    rng = np.random.RandomState(0)
    x = rng.randn(300, 3)
    K = ik.serial(ik.Dense(64, 1.5, 0.1), ik.Erf(), ik.Dense(1)).kernel(x, None, "ntk")
    b = rng.randn(300, 2)
    with pytest.warns(RuntimeWarning, match="relative residual") as record:
        X = P.pcg_solve(K, b, maxiter=1000)
    res = np.linalg.norm(K @ X - b) / np.linalg.norm(b)
    assert res < 1e-3
    stated = float(str(record[0].message).split("relative residual ")[1].split()[0])
    true = (np.linalg.norm(K @ X - b, axis=0) / np.linalg.norm(b, axis=0)).max()
    assert stated == pytest.approx(true, rel=5e-3)      # printed with 3 digits
    reg = 1e-4 * np.trace(K) / 300
    A = K + reg * np.eye(300)
    X = P.pcg_solve(K, b, reg, tol=1e-10)
    assert np.linalg.norm(A @ X - b, axis=0).max() <= 1e-10 * np.linalg.norm(b, axis=0).max()
    direct = np.linalg.solve(A, b)
    assert np.abs(X - direct).max() <= 1e-10 * np.linalg.cond(A) * np.abs(direct).max()
    # a numerically singular kernel (Gelu NNGP, 2-D points, no regulariser)
    x = rng.randn(400, 2)
    K = ik.serial(ik.Dense(1, 1.0, 0.1), ik.Gelu(), ik.Dense(1)).kernel(x, None, "nngp")
    rhs = b[:1].repeat(400, 0)[:, 0] + rng.randn(400)
    with pytest.warns(RuntimeWarning, match="relative residual"):
        X = P.pcg_solve(K, rhs, maxiter=200)
    assert np.isfinite(X).all() and np.linalg.norm(K @ X - rhs) <= np.linalg.norm(rhs)


def test_kernel_fields_and_symmetry_are_checked():
    """gp_inference names inconsistent nngp / ntk fields (it blamed y_train);
    gradient_descent_mse_ensemble refuses an asymmetric training kernel from
    kernel_fn, as the other predictors do (it read one triangle)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 1))
    net = ik.serial(ik.Dense(1, 1.5, 0.1), ik.Relu(), ik.Dense(1))
    k = net.kernel(x, None, None)
    with pytest.raises(ValueError, match=r"same points, got shapes nngp \(5, 5\), "
                                         r"ntk \(6, 6\)"):
        P.gp_inference(type(k)(k.nngp[:5, :5], k.ntk), y)
    # the test-side Kernels too, before any solve: their fields were used unchecked
    xt = rng.standard_normal((4, 2))
    ktd, ktt = net.kernel(xt, x, None), net.kernel(xt, None, None)
    predict = P.gp_inference(k, y)
    with pytest.raises(ValueError, match=r"k_test_train's fields must be kernels of the same "
                                         r"points, got shapes nngp \(4, 6\), ntk \(3, 6\)"):
        predict(None, type(k)(ktd.nngp, ktd.ntk[:3]))
    with pytest.raises(ValueError, match="k_test_test's fields must be kernels of the same"):
        predict("ntk", ktd, type(k)(ktt.nngp, ktt.ntk[:3, :3]))
    with pytest.raises(ValueError, match="k_test_train.nngp contains NaN or Inf"):
        predict("ntk", type(k)(np.full_like(ktd.nngp, np.nan), ktd.ntk), ktt)
    with pytest.raises(ValueError, match="k_train_train.nngp is not symmetric"):
        P.gp_inference(type(k)(k.nngp + np.triu(np.ones((6, 6)), 1), k.ntk), y)("ntk", ktd, ktt)

    def skewed(x1, x2=None, get=None, **kw):
        out = net.kernel(x1, x2, get)
        return out + np.triu(np.ones_like(out), 1) if x2 is None else out
    pe = P.gradient_descent_mse_ensemble(skewed, x, y)
    with pytest.raises(ValueError, match="training ntk kernel is not symmetric"):
        pe(None, x[:2], "ntk")
