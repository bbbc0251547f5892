"""infkernel.spectral: FFT spectra vs eigendecomposition, training dynamics per
mode, and small versions of the example scripts."""
import importlib.util
import math
import os
import warnings

import numpy as np
import pytest
from scipy.linalg import expm

import infkernel as ik
from infkernel import spectral

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def mlp(depth=3):
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(64, W_std=1.4, b_std=0.1), ik.Relu()]
    return ik.serial(*layers, ik.Dense(1, W_std=1.4))


def grid(n):
    return (np.arange(n) / n)[:, None]


@pytest.fixture(scope="module")
def ff_net():
    return ik.serial(ik.FourierFeatures.power_law(24, 1.0), mlp())


def test_fft_spectrum_matches_eigendecomposition(ff_net):
    """Both are backward stable: errors ≲ n·eps·‖K‖ ≈ 1e-14·λ_max for n = 48;
    1e-12·λ_max leaves a factor 100."""
    x = grid(48)
    spec = spectral.stationary_spectrum(ff_net, x)
    lam, V = spectral.gram_eigh(ff_net.kernel(x, None, "ntk"))
    np.testing.assert_allclose(np.sort(spec.eigvals)[::-1], lam, rtol=0, atol=1e-12 * lam[0])
    np.testing.assert_allclose(spec.freqs, np.fft.fftfreq(48, 1 / 48), rtol=0, atol=1e-12)
    # Fourier modes are eigenvectors: their Rayleigh quotients are the FFT eigenvalues
    K = ff_net.kernel(x, None, "ntk")
    resp = spectral.frequency_response(K, x, spec.freqs)
    np.testing.assert_allclose(resp, spec.eigvals, rtol=0, atol=1e-12 * lam[0])
    # nngp too, and eigh reconstructs K
    lam2, V2 = spectral.kernel_eigh(ff_net, x, "nngp")
    K2 = ff_net.kernel(x, None, "nngp")
    np.testing.assert_allclose(V2 @ np.diag(lam2) @ V2.T, K2, rtol=0, atol=1e-12 * lam2[0])


def bandwidth(spec):
    lam = np.clip(spec.eigvals, 0, None)
    return (np.abs(spec.freqs) * lam).sum() / lam.sum()


def test_spectrum_widens_as_p_decreases():
    """Tancik et al. 2020, Fig. 2: a_j = 1/j^p, smaller p -> wider NTK spectrum.
    Both the mean frequency Σ|f|λ/Σλ and the share of eigenvalue mass above
    |f| = 4 increase strictly as p decreases."""
    x = grid(64)
    band, tail = [], []
    for p in (math.inf, 2.0, 1.5, 1.0, 0.5, 0.0):
        spec = spectral.stationary_spectrum(ik.serial(ik.FourierFeatures.power_law(32, p),
                                                      mlp()), x)
        lam = np.clip(spec.eigvals, 0, None)
        band.append(bandwidth(spec))
        tail.append(lam[np.abs(spec.freqs) > 4].sum() / lam.sum())
    assert np.all(np.diff(band) > 0), band
    assert np.all(np.diff(tail) > 0), tail


def test_gradient_flow_and_descent_per_mode(ff_net):
    """Residual norms from the per-mode factors equal the matrix exponential /
    matrix power of the Gram matrix (relative 1e-10: expm's error ~1e-14·‖ηKt‖)."""
    x = grid(16)
    K = ff_net.kernel(x, None, "ntk")
    y = np.random.default_rng(0).standard_normal(16)
    lam, V = spectral.gram_eigh(K)
    lr = 1.0 / lam[0]
    t = np.array([0.0, 1.0, 5.0, 40.0])
    flow = spectral.predicted_residual(lam, V, y, lr, t)
    gd = spectral.predicted_residual(lam, V, y, lr, t, discrete=True)
    for i, ti in enumerate(t):
        r = expm(-lr * ti * K) @ y
        assert abs(np.linalg.norm(flow[i]) - np.linalg.norm(r)) < 1e-10 * np.linalg.norm(y)
        r = np.linalg.matrix_power(np.eye(16) - lr * K, int(ti)) @ y
        assert abs(np.linalg.norm(gd[i]) - np.linalg.norm(r)) < 1e-10 * np.linalg.norm(y)
        # on the periodic grid the FFT gives the same thing per frequency
        spec = spectral.fft_spectrum(K[0], x)
        per_f = spectral.predicted_error_by_frequency(spec.eigvals, y, lr, [ti])[0]
        np.testing.assert_allclose(per_f, np.abs(np.fft.fft(expm(-lr * ti * K) @ y,
                                                            norm="ortho")),
                                   rtol=0, atol=1e-10 * np.linalg.norm(y))
    speed = spectral.learning_speed(lam, lr, t)
    np.testing.assert_allclose(speed, 1 - np.exp(-lr * np.outer(t, lam)), rtol=1e-15)
    assert np.all(np.diff(speed[-1]) <= 0)   # large eigenvalues are learned first


def test_plot_spectra_writes_png(tmp_path, ff_net):
    spec = spectral.stationary_spectrum(ff_net, grid(16))
    path = spectral.plot_spectra(tmp_path / "s.png", {"p = 1": spec})
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --- bad input ---------------------------------------------------------------------------
def test_non_uniform_grid_is_refused(ff_net):
    x = grid(16)
    x[5] += 1e-3
    with pytest.raises(ValueError, match="x must be a uniform increasing grid"):
        spectral.stationary_spectrum(ff_net, x)
    with pytest.raises(ValueError, match="x must be a uniform increasing grid"):
        spectral.fft_spectrum(np.ones(16), x[:, 0])
    with pytest.raises(ValueError, match="x must be a uniform increasing grid"):
        spectral.check_uniform_grid(grid(8)[::-1])
    with pytest.raises(ValueError, match=r"x must be a 1-D grid of shape \(n,\)"):
        spectral.check_uniform_grid(np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2 points"):
        spectral.check_uniform_grid([0.0])
    with pytest.raises(ValueError, match="x has 8 points but row has 16"):
        spectral.fft_spectrum(np.ones(16), grid(8))
    # linspace-rounded grids are accepted
    spectral.check_uniform_grid(np.linspace(0.3, 7.1, 1001, endpoint=False))


def test_non_stationary_row_is_refused():
    x = grid(16)
    with pytest.raises(ValueError, match="not stationary"):
        spectral.stationary_spectrum(mlp(), x)
    # a grid from 0 and no bias: K(x_0, ·) = 0 is a symmetric row, but the
    # kernel is not stationary (the other rows are not its shifts)
    flat = ik.serial(ik.Dense(64, W_std=2 ** 0.5), ik.Relu(), ik.Dense(1))
    assert not spectral.fft_spectrum(flat.kernel(x[:1], x, "ntk")[0]).eigvals.any()
    with pytest.raises(ValueError, match=r"K\(x_1, ·\) differs from K\(x_0, ·\) shifted"):
        spectral.stationary_spectrum(flat, x)


def test_matrix_and_argument_checks():
    with pytest.raises(ValueError, match="not symmetric"):
        spectral.gram_eigh(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        spectral.gram_eigh(np.ones((2, 3)))
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        spectral.decay([1.0], 0.0, 1.0)
    with pytest.raises(ValueError, match="t must be a non-negative"):
        spectral.decay([1.0], 1.0, -1.0)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        spectral.predicted_error_by_frequency(np.ones(4), np.ones(3), 1.0, 1.0)
    with pytest.raises(ValueError, match="get must be"):
        spectral.stationary_spectrum(mlp(), grid(4), get="both")
    np.testing.assert_array_equal(spectral.kernel_eigh(mlp(), grid(4), "NNGP")[0],
                                  spectral.kernel_eigh(mlp(), grid(4), "nngp")[0])
    # complex, string and ragged arrays are refused by name, not cut or parsed
    for call, name in ((lambda: spectral.gram_eigh(np.eye(2) + 1j), "K"),
                       (lambda: spectral.gram_eigh(np.array([["1", "0"], ["0", "1"]])), "K"),
                       (lambda: spectral.fft_spectrum(np.ones(4) + 1j), "row"),
                       (lambda: spectral.check_uniform_grid(grid(4) + 1j), "x"),
                       (lambda: spectral.frequency_response(np.eye(2), [0, 1], ["1"]), "freqs"),
                       (lambda: spectral.frequency_response(np.eye(2), [[0], [1, 2]], [1]), "x")):
        with warnings.catch_warnings():   # (NumPy 1.x warned on ragged sequences first)
            warnings.simplefilter("error")
            with pytest.raises(TypeError, match=f"^{name} must be an array of real numbers"):
                call()
    for tol in (np.nan, -1.0):
        with pytest.raises(ValueError, match="symmetry_tol must be finite and >= 0"):
            spectral.gram_eigh(np.array([[1.0, 0.5], [0.0, 1.0]]), symmetry_tol=tol)
        with pytest.raises(ValueError, match="stationarity_tol must be finite and >= 0"):
            spectral.fft_spectrum(np.arange(4.0), stationarity_tol=tol)
    with pytest.raises(ValueError, match="x has NaN or Inf"):
        spectral.frequency_response(np.eye(2), [0.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="overflows"):
        spectral.frequency_response(np.eye(2), [0.0, 1e308], [10.0])
    with pytest.raises(ValueError, match="overflows"):
        spectral.fft_spectrum(np.full(4, 1e308))
    with pytest.raises(ValueError, match="spacing overflows"):
        spectral.check_uniform_grid([-1e308, 0.0, 1e308])
    with pytest.raises(ValueError, match="square"):
        spectral.gram_eigh(np.zeros((0, 0)))
    with pytest.raises(ValueError, match="freqs and values must be 1-D of one length"):
        spectral.plot_spectra("unused.png", {"a": ([0, 1, 2], [1, 2])})
    # the network, the path and logy are checked by name (were AttributeErrors, "no" true)
    for call in (lambda: spectral.kernel_eigh(None, grid(4)),
                 lambda: spectral.stationary_spectrum("relu", grid(4))):
        with pytest.raises(TypeError, match="^net must be an infkernel network .*got"):
            call()
    curves = {"a": ([0, 1], [1, 2])}
    with pytest.raises(TypeError, match="^path must be a file name .*got NoneType"):
        spectral.plot_spectra(None, curves)
    with pytest.raises(TypeError, match="^logy must be True or False, got 'no'"):
        spectral.plot_spectra("unused.png", curves, logy="no")


# --- the example scripts, small --------------------------------------------------------------
def _example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_example_tancik_fig2(tmp_path):
    mod = _example("tancik_fig2")
    s = mod.main(str(tmp_path), small=True)
    assert _is_png(s["png"])
    assert s["shift_violation_basic"] < 1e-12     # rounding of the mapped features
    assert s["shift_violation_plain"] > 1e-3
    bands = [s["bandwidth"][p] for p in sorted(mod.P_VALUES, reverse=True)]
    assert np.all(np.diff(bands) > 0), bands
    widths = [s["half_width"][p] for p in sorted(mod.P_VALUES, reverse=True)]
    assert np.all(np.diff(widths) <= 0), widths


def test_example_learning_speed(tmp_path):
    s = _example("learning_speed").main(str(tmp_path), small=True)
    assert _is_png(s["png"])
    plain, ff = s["steps_to_10pct_plain"], s["steps_to_10pct_fourier"]
    assert plain == sorted(plain) and ff == sorted(ff)   # low frequencies first
    assert ff[-1] < plain[-1]                              # features speed up the highest


def test_example_multiscale_spectrum(tmp_path):
    s = _example("multiscale_spectrum").main(str(tmp_path), small=True)
    assert _is_png(s["png"])
    lam = s["eigval_at_n_over_4"]
    assert lam["MscaleDNN-2"] > lam["single scale"]
    assert lam["MscaleDNN-1"] > lam["single scale"]


def test_discrete_decay_needs_integer_steps_past_the_stable_rate():
    """(1 − ηλ)^t for ηλ > 1 has a negative base: defined for whole steps
    only (the sign alternates), an error otherwise rather than NaN."""
    lam = np.array([0.5, 3.0])
    got = spectral.decay(lam, 1.0, [0, 1, 2], discrete=True)
    np.testing.assert_array_equal(got, [[1, 1], [0.5, -2.0], [0.25, 4.0]])
    with pytest.raises(ValueError, match="must be integers where lr·λ > 1"):
        spectral.decay(lam, 1.0, [0.5], discrete=True)
    spectral.decay(lam[:1], 1.0, [0.5], discrete=True)     # 1 − ηλ > 0: any t


def test_frequency_response_arguments_are_checked():
    """x of shape (n,) or (n, 1) only (a (2, 2) array was read as 4 points),
    K symmetric (the real part of a non-symmetric quotient was returned)."""
    x = np.arange(4) / 4.0
    K = np.eye(4)
    with pytest.raises(ValueError, match=r"x must be 1-D points of shape \(n,\) or \(n, 1\)"):
        spectral.frequency_response(K, x.reshape(2, 2), [1.0])
    with pytest.raises(ValueError, match="K is not symmetric"):
        spectral.frequency_response([[1.0, 5.0], [0.0, 1.0]], x[:2], [1.0])
    np.testing.assert_allclose(spectral.frequency_response(K, x[:, None], [0.0, 1.0]), [1, 1])


def test_negative_eigenvalue_overflow_is_an_error():
    """exp(-lr·λ·t) of a negative eigenvalue overflowed to inf with only
    NumPy's warning; divergent discrete steps (lr·λ > 2) are inf, as training."""
    with pytest.raises(ValueError, match="negative eigenvalue -1"):
        spectral.decay([-1.0], 1.0, [1000.0])
    with np.errstate(all="raise"):
        got = spectral.decay([3.0], 1.0, [2000.0], discrete=True)
    assert np.isposinf(got).all()


def test_mode_arguments_are_checked():
    """eigvals (n,) finite, eigvecs (n, n), y (n,); lr and t numbers, not
    strings (2-D eigvals were flattened, NaN passed through, mismatched shapes
    gave numpy's broadcasting errors)."""
    lam, V, y = np.array([2.0, 1.0, 0.5]), np.eye(3), np.ones(3)
    for call, error, words in [
        (lambda: spectral.decay(np.ones((2, 2)), 0.1, 1.0), ValueError,
         r"eigvals must be a 1-D array .*got shape \(2, 2\)"),
        (lambda: spectral.decay([1.0, np.nan], 0.1, 1.0), ValueError, "eigvals has NaN"),
        (lambda: spectral.learning_speed(["1"], 0.1, 1.0), TypeError,
         "eigvals must be an array of real numbers"),
        (lambda: spectral.decay(lam, "0.1", 1.0), TypeError, "lr must be a real number, got str"),
        (lambda: spectral.learning_speed(lam, 0.1, "1"), TypeError,
         "t must be an array of real numbers"),
        (lambda: spectral.predicted_residual(lam, V, np.ones(4), 0.1, 1.0), ValueError,
         r"y must have shape \(3,\) \(one value per point\), got \(4,\)"),
        (lambda: spectral.predicted_residual(lam[:2], V, y, 0.1, 1.0), ValueError,
         r"eigvecs must have shape \(2, 2\) .*got \(3, 3\)"),
        (lambda: spectral.predicted_residual(lam, V, np.full(3, np.nan), 0.1, 1.0), ValueError,
         "y has NaN"),
        (lambda: spectral.predicted_residual(lam, V * np.nan, y, 0.1, 1.0), ValueError,
         "eigvecs has NaN"),
        (lambda: spectral.predicted_error_by_frequency(lam, ["1", "2", "3"], 0.1, 1.0),
         TypeError, "y must be an array of real numbers"),
    ]:
        with pytest.raises(error, match=words):
            call()
    got = spectral.predicted_residual(lam, V, y, 0.5, [0.0, 2.0])
    np.testing.assert_allclose(got, [[1, 1, 1], np.exp(-0.5 * lam * 2.0)], rtol=1e-15)
