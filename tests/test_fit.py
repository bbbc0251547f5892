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


def _args(*argv):
    return add_fit_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_zero_dimensional_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "d0.npz"
    np.savez(path, x=np.array(1.0), y=np.array(2.0))
    with pytest.raises(ValueError, match=r"x and y must be arrays with one row per sample, "
                                         r"got shapes \(\) and \(\)"):
        load_data(str(path))


def test_string_labels_are_classes(tmp_path):
    """With --task auto, string labels are class names (they used to fail in
    float conversion); regression on them is a clear error."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 2))
    path = tmp_path / "dstr.npz"
    np.savez(path, x=x, y=np.where(x[:, 0] > 0, "pos", "neg"))
    res = run_fit(_args(str(path), "--depths", "1", "--no-baseline", "--no-progress",
                        "--out", str(tmp_path / "o")))
    assert res["classification"] and "accuracy" in res["rows"][0]
    with pytest.raises(ValueError, match="regression needs numeric targets, got <U3"):
        run_fit(_args(str(path), "--task", "regression", "--no-progress",
                      "--out", str(tmp_path / "o")))


@pytest.mark.parametrize("option, value, words", [
    ("--diag-reg", "-1", "--diag-reg must be finite and >= 0, got -1.0"),
    ("--diag-reg", "nan", "--diag-reg must be finite and >= 0, got nan"),
    ("--seed", "-1", r"--seed must be in \[0, 2\*\*32\), got -1"),
    ("--W-std", "-1", "W_std must be finite and >= 0"),
    ("--depths", "1,1", "--depths must be distinct non-negative integers, got '1,1'"),
])
def test_options_checked_before_data_and_kernels(tmp_path, monkeypatch, option, value, words):
    """Bad numeric options are refused before the data are read (a missing
    file here) and before any kernel is computed (--diag-reg used to be
    checked only after the first depth's Gram matrices)."""
    import infkernel as ik

    def kernel(*args, **kwargs):
        raise AssertionError("a kernel was computed")
    monkeypatch.setattr(ik.Network, "kernel", kernel)
    with pytest.raises(ValueError, match=words):
        run_fit(_args(str(tmp_path / "missing.csv"), option, value, "--no-progress",
                      "--out", str(tmp_path / "o")))


def test_bad_data_and_output_are_refused_before_any_kernel(tmp_path, monkeypatch):
    """Complex features, empty data, NaN targets (also as class labels) and an
    --out that is a file are errors before any kernel is computed."""
    import infkernel as ik

    def kernel(*args, **kwargs):
        raise AssertionError("a kernel was computed")
    monkeypatch.setattr(ik.Network, "kernel", kernel)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 2))
    cases = {"complex.npz": (dict(x=x + 1j, y=np.arange(20) % 2), "must be real numbers"),
             "empty.npz": (dict(x=np.zeros((0, 2)), y=np.zeros(0)), "no samples"),
             "nan.npz": (dict(x=x, y=np.where(x[:, 0] > 0, 1.0, np.nan)),
                         "targets contain NaN")}
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / name, **arrays)
        for task in ("auto", "classification"):
            with pytest.raises(ValueError, match=words):
                run_fit(_args(str(tmp_path / name), "--task", task, "--no-progress",
                              "--out", str(tmp_path / "o")))
    np.savez(tmp_path / "two.npz", x=x[:2], y=np.arange(2.0))
    with pytest.raises(ValueError, match="the data has 2 rows: with --test-size 0.33 that "
                                         "leaves 1 for training and 1 for testing"):
        run_fit(_args(str(tmp_path / "two.npz"), "--no-progress", "--out", str(tmp_path / "o")))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        run_fit(_args("--no-progress", "--out", str(tmp_path / "file")))


def test_huge_features_are_standardised(tmp_path):
    """Features near 1e200 are standardised as x / max|x| (StandardScaler's
    variance overflowed, reported as NaN inputs): the same table as at scale 1."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 3))
    y = np.sin(x[:, 0])
    rows = []
    for scale in (1.0, 1e200):
        np.savez(tmp_path / "d.npz", x=scale * x, y=y)
        rows.append(run_fit(_args(str(tmp_path / "d.npz"), "--depths", "1", "--no-baseline",
                                  "--no-progress", "--out", str(tmp_path / "o")))["rows"])
    for a, b in zip(*rows):
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-10)


def test_outputs_of_one_run_only_and_class_labels(tmp_path):
    """A second run into the same folder leaves no predictions of the first
    behind; classification saves the class labels of the one-hot columns
    (here 3, 5, 7), so argmax maps back to them; a failed run leaves no empty
    folder; parametrised activations are written as in --arch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    y = np.array([3, 5, 7])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "o"
    run_fit(_args(str(tmp_path / "d.npz"), "--depths", "1,2", "--out", str(out),
                  "--no-progress"))
    res = run_fit(_args(str(tmp_path / "d.npz"), "--depths", "1", "--no-baseline",
                        "--activation", "LeakyRelu(0.2)", "--out", str(out), "--no-progress"))
    assert sorted(os.listdir(out)) == ["classes.npy", "metrics.json", "pred_nngp_depth1.npy",
                                       "pred_ntk_depth1.npy", "y_test.npy"]
    classes = np.load(out / "classes.npy")
    np.testing.assert_array_equal(classes, [3, 5, 7])
    pred = np.load(out / "pred_ntk_depth1.npy")
    truth = classes[np.load(out / "y_test.npy").argmax(1)]
    acc = np.mean(classes[pred.argmax(1)] == truth)
    assert acc == pytest.approx(res["rows"][1]["accuracy"])
    with pytest.raises(ValueError, match="does not exist"):
        run_fit(_args(str(tmp_path / "missing.csv"), "--out", str(tmp_path / "new"),
                      "--no-progress"))
    assert not (tmp_path / "new").exists()


def test_bad_archives_and_target_options(tmp_path):
    """A corrupt .npz, an .npy named .npz and --target beside an .npz are
    clear errors (a corrupt .npz gave zipfile's traceback, --target was
    silently ignored)."""
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    np.save(tmp_path / "arr.npy", np.ones((4, 3)))
    (tmp_path / "arr.npz").write_bytes((tmp_path / "arr.npy").read_bytes())
    np.savez(tmp_path / "ok.npz", x=np.ones((4, 3)), y=np.ones(4))
    np.savez(tmp_path / "complex.npz", x=np.ones((4, 3)), y=np.ones(4) * 1j)
    np.savez(tmp_path / "object.npz", x=np.ones((4, 3)), y=np.array([1, "a", None, 2], object))
    for argv, words in (([str(tmp_path / "bad.npz")], "not a valid .npz file"),
                        ([str(tmp_path / "complex.npz")], "complex.npz: the targets must be "
                         "real numbers or class names, got dtype complex128"),
                        ([str(tmp_path / "object.npz")], "object.npz: Object arrays cannot"),
                        ([str(tmp_path / "arr.npz")], "not an .npz archive"),
                        ([str(tmp_path / "ok.npz"), "--target", str(tmp_path / "arr.npy")],
                         "--target is for .npy / .csv features"),
                        ([str(tmp_path / "bad.npz").replace(".npz", ".npy")], "does not exist")):
        with pytest.raises(ValueError, match=words):
            run_fit(_args(*argv, "--no-progress", "--out", str(tmp_path / "o")))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a .npy file"):
        run_fit(_args(str(tmp_path / "bad.npy"), "--no-progress", "--out", str(tmp_path / "o")))
