"""The `infkernel fit` main job on scikit-learn's digits (the README's first
command).  Recorded test accuracies (seed 0, 1203 train / 594 test, ridge 1e-3):
NNGP depth 1: 0.9865, NTK depth 1: 0.9865, RBF GP: 0.9832.  The computation is
deterministic up to float64 rounding, which can flip at most a borderline
argmax or two: margin 0.005 (3 of 594 test points)."""
import argparse
import os

import numpy as np
import pytest

from infkernel.fit import add_fit_arguments, load_data, run_fit

RECORDED = {("NNGP", 1): 0.9865, ("NTK", 1): 0.9865, ("RBF GP", None): 0.9832}
MARGIN = 0.005


def test_digits_main_job(tmp_path, capsys):
    p = add_fit_arguments(argparse.ArgumentParser())
    args = p.parse_args(["--depths", "1", "--out", str(tmp_path), "--no-progress"])
    res = run_fit(args)
    acc = {(r["model"], r["depth"]): r["accuracy"] for r in res["rows"]}
    for key, value in RECORDED.items():
        assert acc[key] >= value - MARGIN, (key, acc[key])
    out = capsys.readouterr().out
    assert "accuracy" in out and "RBF GP" in out
    pred = np.load(os.path.join(tmp_path, "pred_ntk_depth1.npy"))
    assert pred.shape == (594, 10)


def test_csv_regression(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 3))
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1]
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",")
    p = add_fit_arguments(argparse.ArgumentParser())
    res = run_fit(p.parse_args([str(path), "--depths", "1,2", "--out", str(tmp_path / "o"),
                                "--no-progress", "--task", "regression"]))
    assert not res["classification"]
    assert all(r["mse"] < np.var(y) for r in res["rows"])


def test_numeric_activation_by_name(tmp_path):
    """--activation takes the README's numeric activations (tanh, ...) too."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 2))
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([x, np.tanh(x[:, 0])]), delimiter=",")
    p = add_fit_arguments(argparse.ArgumentParser())
    res = run_fit(p.parse_args([str(path), "--depths", "1", "--activation", "tanh",
                                "--out", str(tmp_path / "o"), "--no-progress",
                                "--task", "regression"]))
    assert all(np.isfinite(r["mse"]) for r in res["rows"])


def test_ragged_csv_names_the_line(tmp_path):
    """Data files are read like `infkernel gram` features: a ragged row is an
    error naming its file line, a header line is skipped."""
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,2,3\n4,5\n")
    with pytest.raises(ValueError, match="d.csv, line 3: 2 values, but line 2 has 3"):
        load_data(str(path))
    path.write_text("a,b,y\n1,2,3\n4,5,6\n")
    x, y, _ = load_data(str(path))
    assert np.array_equal(x, [[1, 2], [4, 5]]) and np.array_equal(y, [3, 6])
