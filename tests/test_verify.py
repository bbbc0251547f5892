"""infkernel.verify (module infkernel.verification): convergence table/figure, linearised dynamics, CLI."""
import argparse

import numpy as np
import pytest
from scipy.linalg import expm

import infkernel as ik
from infkernel import verification as V


def _net(act=None, par="ntk"):
    act = act or ik.Relu()
    return ik.serial(ik.Dense(4, W_std=1.5, b_std=0.1, parameterization=par), act,
                     ik.Dense(1, W_std=1.5, b_std=0.1, parameterization=par))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(6, 3))


def test_verify_table_figure_and_rates(x, tmp_path):
    png = tmp_path / "v.png"
    res = V.verify(_net(), x, [32, 128, 512], n_samples=24, steps=30, train_seeds=2,
                   x_test=x[:2] + 0.1, plot=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = res.table()
    assert "NTK rel. err" in table and "slopes" in table and len(table.splitlines()) == 6
    assert res.consistent and table.endswith("consistent")
    # errors fall with width; with 24 networks per width the slope's s.e. is
    # ≈ 0.05, so ±0.25 around -1/2 is > 4 s.e.
    for g in ("nngp", "ntk"):
        assert np.all(np.diff(res.errors[g]) < 0)
        assert -0.75 < res.slopes[g] < -0.25, res.slopes
    assert res.train_gap[-1] < res.train_gap[0]
    assert res.loss_network.shape == res.loss_theory.shape == (3, res.steps.size)
    # the network starts where the theory starts
    np.testing.assert_allclose(res.loss_network[:, 0], res.loss_theory[:, 0], rtol=1e-12)


@pytest.mark.parametrize("continuous", [False, True])
def test_linearised_prediction_is_exact(continuous):
    """The closed form equals stepping the linearised dynamics (discrete) or
    the matrix exponential (continuous) to rounding."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 5))
    th = A @ A.T + 0.1 * np.eye(5)
    B = rng.normal(size=(3, 5))
    th_test = B @ A.T
    f0, f0t, y = rng.normal(size=(5, 2)), rng.normal(size=(3, 2)), rng.normal(size=(5, 2))
    eta, steps = 0.3 * y.size / np.linalg.eigvalsh(th)[-1], [0, 1, 7, 40]
    ftr, fte = V._linearised(th, th_test, f0, f0t, y, eta, steps, continuous)
    a = eta / y.size
    for i, t in enumerate(steps):
        if continuous:
            E = expm(-a * th * t)
            ref = y + E @ (f0 - y)
            ref_t = f0t - th_test @ np.linalg.solve(th, (np.eye(5) - E) @ (f0 - y))
        else:
            F, Ft = f0.copy(), f0t.copy()
            for _ in range(t):
                F, Ft = F - a * th @ (F - y), Ft - a * th_test @ (F - y)
            ref, ref_t = F, Ft
        np.testing.assert_allclose(ftr[i], ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fte[i], ref_t, rtol=0, atol=1e-12)


def test_bad_input(x, tmp_path):
    net = _net()
    for widths in ([0, 8], [-3], [4.5]):
        with pytest.raises((ValueError, TypeError), match="widths"):
            V.verify(net, x, widths, 4)
    with pytest.raises(ValueError, match="n_samples"):
        V.verify(net, x, [8], 1)
    with pytest.raises(ValueError, match="hidden Dense"):
        V.verify(ik.serial(ik.Dense(1)), x, [8], 4)
    with pytest.raises(ValueError, match=r"end with its output Dense layer.* Erf\(1, 1, 0\) follows"):
        V.verify(ik.serial(*net.layers, ik.Erf()), x, [8], 4)
    with pytest.raises(ValueError, match="y must be"):
        V.verify(net, x, [8], 4, y=np.ones((5, 1)))
    with pytest.raises(ValueError, match="folder"):
        V.verify(net, x, [8], 4, plot=str(tmp_path / "nope" / "v.png"))
    with pytest.raises(ValueError, match="x has NaN"):
        V.verify(net, np.full((3, 3), np.nan), [8], 4)
    with pytest.raises(ValueError, match="verify: seed must be >= 0, got -1"):
        V.verify(net, x, [8], 4, seed=-1)
    with pytest.raises(TypeError, match="verify: seed must be a non-negative int"):
        V.verify(net, x, [8], 4, seed="a")
    with pytest.raises(TypeError, match="verify: continuous must be True or False, got 'no'"):
        V.verify(net, x, [8], 4, continuous="no")
    # checked before any work
    with pytest.raises(TypeError, match="widths must be a positive integer or a sequence"):
        V.verify(net, x, None, 4)
    with pytest.raises(ValueError, match="train_widths must not be empty"):
        V.verify(net, x, [8], 4, train_widths=[])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        V.verify(net, x, [8], 4, batch_size=0)
    with pytest.raises(ValueError, match="x has no points"):
        V.verify(net, np.zeros((0, 3)), [8], 4)
    for y in (np.array(["1"] * len(x)), np.ones(len(x)) * 1j):
        with pytest.raises(TypeError, match="y must be an array of real numbers"):
            V.verify(net, x, [8], 4, y=y)
    with pytest.raises(ValueError, match="NTK at width 8 is zero"):    # no default step
        V.verify(ik.serial(ik.Dense(8, 0.0, 0.0), ik.Relu(), ik.Dense(1, 0.0, 0.0)), x, [8], 4)


@pytest.mark.parametrize("widths", [[16], [16, 16]])
def test_one_width_has_no_slopes(x, widths):
    res = V.verify(_net(), x, widths, 4, steps=5, train_seeds=1)
    assert all(np.isnan(v) for v in res.slopes.values())
    assert res.table().splitlines()[-2] == ("fitted log-log slopes: none (they need two or "
                                            "more distinct widths)")


def test_input_maps_go_first(x):
    """A Fourier-feature network: its finite networks share the parameter-free
    map, so verify runs on the mapped inputs and the network's body."""
    B = np.random.default_rng(1).normal(size=(3, x.shape[1]))
    net = ik.serial(ik.FourierFeatures(B), ik.Dense(64), ik.Erf(), ik.Dense(1))
    res = V.verify(net, x, [16, 64], 8, steps=2, train_seeds=1)
    assert np.isfinite(res.slopes["ntk"])


def test_seed_as_prng_key(x):
    """A PRNG key's values seed the networks: the same key, the same result."""
    key = np.array([0, 5], dtype=np.uint32)
    a, b = (V.verify(_net(), x, [8], 2, seed=key, steps=2, train_seeds=1) for _ in range(2))
    np.testing.assert_array_equal(a.errors["ntk"], b.errors["ntk"])
    np.testing.assert_array_equal(a.train_gap, b.train_gap)


def test_command_line(tmp_path, capsys):
    parser = V.add_verify_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--activation", "leakyrelu(0.1)", "--depth", "1", "--widths",
                              "16,64", "--n-samples", "4", "--n-points", "5", "--dim", "3",
                              "--steps", "5", "--out", str(tmp_path / "v.png")])
    assert V.run_verify(args) == 0
    out = capsys.readouterr().out
    assert "NNGP rel. err" in out and "figure written" in out
    assert (tmp_path / "v.png").exists()
    with pytest.raises(SystemExit):
        parser.parse_args(["--widths", "0,16"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--activation", "tanhh"])
    assert parser.parse_args(["--activation", "leakyrelu:0.1"]).activation.params[0] == 0.1
    np.savetxt(tmp_path / "x.csv", np.random.default_rng(0).normal(size=(5, 3)), delimiter=",")
    args = parser.parse_args(["--data", str(tmp_path / "x.csv"), "--widths", "8", "--n-samples",
                              "3", "--steps", "0", "--out", ""])
    assert V.run_verify(args) in (0, 1) and "NNGP rel. err" in capsys.readouterr().out


def test_mean_kernels_detect_a_wrong_analytic_kernel(x, monkeypatch):
    """The mean kernel of the networks sits within its noise level of the
    analytic kernel (ratio ~1 at every width, depth 3), and a kernel 20 %
    too large is flagged, which the per-network errors and slopes do not
    show clearly (their fluctuations are O(n^-1/2))."""
    net = ik.serial(ik.Dense(8, 1.5, 0.05), ik.Relu(), ik.Dense(8, 1.5, 0.05), ik.Erf(),
                    ik.Dense(8, 1.5, 0.05), ik.Relu(), ik.Dense(1, 1.5, 0.05))
    res = V.verify(net, x, [64, 256, 1024], 32, steps=0)
    for g in ("nngp", "ntk"):
        ratio = res.mean_errors[g] / res.mean_noise[g]
        assert np.all(ratio < 3), (g, ratio)
    assert res.consistent
    kernel = ik.Network.kernel
    monkeypatch.setattr(ik.Network, "kernel", lambda self, *a, **k: type(
        r := kernel(self, *a, **k))(*(1.2 * v for v in r)))
    wrong = V.verify(net, x, [64, 256, 1024], 32, steps=0)
    assert not wrong.consistent and "NOT consistent" in wrong.table()


def test_branched_networks_plot_paths_and_train_widths(x, tmp_path):
    """Dense layers inside parallel branches get the width too (a residual
    block's widths must match); a plot path without an extension gets .png
    and the result names the file written; widths trained but not in
    ``widths`` have table rows."""
    net = ik.serial(ik.Dense(4, 1.5, 0.1), ik.Relu(),
                    ik.Residual(ik.serial(ik.Dense(4, 1.5, 0.1), ik.Relu(),
                                          ik.Dense(4, 1.5, 0.1))), ik.Dense(1, 1.5, 0.1))
    res = V.verify(net, x, [16, 64], 8, steps=3, train_widths=[16, 32], train_seeds=1,
                   plot=str(tmp_path / "fig"))
    assert res.figure == str(tmp_path / "fig.png") and (tmp_path / "fig.png").exists()
    rows = [line.split()[0] for line in res.table().splitlines()[1:4]]
    assert rows == ["16", "32", "64"]
    with pytest.raises(ValueError, match="plot must be a file path"):
        V.verify(net, x, [8], 2, steps=0, plot=str(tmp_path))
    with pytest.raises(ValueError, match="training diverged at learning rate 1e\\+08"):
        V.verify(_net(), x, [8], 2, steps=20, learning_rate=1e8, train_seeds=1)
