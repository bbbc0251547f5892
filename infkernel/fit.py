"""The ``infkernel fit`` main job: NNGP / NTK regression on a dataset, a
table of test metrics for a few depths beside an RBF-kernel GP baseline, and
the predictions saved as .npy files.

With no data argument it uses scikit-learn's bundled digits dataset (1,797
8×8 images, 10 classes), classification by one-hot regression (Lee et al.
2018; Arora et al. 2019): targets e_c - 1/C, predicted class = argmax.
"""
import argparse
import glob
import json
import math
import os
import time
import zipfile

import numpy as np

from ._checks import real

__all__ = ["add_fit_arguments", "run_fit", "fit_command", "load_data"]


def add_fit_arguments(p):
    """Add the ``fit`` options to an argparse (sub)parser."""
    p.add_argument("data", nargs="?", default=None,
                   help="features: .npy or .csv (the last column is the target unless "
                        "--target is given) or .npz (arrays x, y); default: scikit-learn's "
                        "digits")
    p.add_argument("--target", default=None,
                   help=".npy or .csv file with the targets (with .npy / .csv features)")
    p.add_argument("--task", choices=("auto", "classification", "regression"),
                   default="auto", help="auto: classification if the targets are "
                   "integers with at most 100 distinct values")
    p.add_argument("--depths", default="1,2,3",
                   help="comma-separated numbers of hidden layers (default 1,2,3)")
    from .cli import activation_option
    p.add_argument("--activation", type=activation_option, default="relu",
                   help="activation of the hidden layers, as in --arch: relu (default), erf, "
                        "gelu, leakyrelu(0.1), monomial(3), ...")
    p.add_argument("--W-std", type=float, default=1.5, dest="W_std")
    p.add_argument("--b-std", type=float, default=0.05, dest="b_std")
    p.add_argument("--diag-reg", type=float, default=1e-3, dest="diag_reg",
                   help="ridge, relative to the mean kernel diagonal (default 1e-3)")
    p.add_argument("--test-size", type=float, default=0.33, dest="test_size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", dest="no_baseline",
                   help="skip the RBF-kernel GP baseline")
    p.add_argument("--out", default="infkernel_fit_out",
                   help="directory for predictions (.npy) and metrics.json")
    p.add_argument("--no-progress", action="store_true", dest="no_progress")
    return p


def _read(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        from .cli import load_npy
        return load_npy(path)
    if ext == ".csv":
        from .cli import load_csv
        return load_csv(path)
    raise ValueError(f"data file must be .npy, .npz or .csv, got {path!r}")


def load_data(data=None, target=None):
    """(x, y, name) from files, or the digits dataset when ``data`` is None."""
    if data is None:
        from sklearn.datasets import load_digits
        d = load_digits()
        return d.data.astype(np.float64), d.target, "digits"
    if not os.path.exists(data):
        raise ValueError(f"data file {data!r} does not exist")
    if data.lower().endswith(".npz"):
        if target is not None:
            raise ValueError(f"--target is for .npy / .csv features; the .npz {data} holds "
                             "its targets as array 'y'")
        try:
            z = np.load(data, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError):
            raise ValueError(f"{data}: not a valid .npz file (as np.savez writes)") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{data}: not an .npz archive (an .npy array named .npz?)")
        with z:
            # (z.files: NumPy 1.x's `"x" in z` loads the array, pickles included)
            if "x" not in z.files or "y" not in z.files:
                raise ValueError(f"{data}: an .npz must hold arrays 'x' and 'y', got {z.files}")
            try:
                x, y = z["x"], z["y"]
            except ValueError as exc:       # object arrays (pickles)
                raise ValueError(f"{data}: {exc}") from None
    elif target is not None:
        x, y = _read(data), _read(target)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
    else:
        a = _read(data)
        if a.ndim != 2 or a.shape[1] < 2:
            raise ValueError(f"{data}: without --target the last column is the target; "
                             f"need at least 2 columns, got shape {a.shape}")
        x, y = a[:, :-1], a[:, -1]
    if np.ndim(x) == 0 or np.ndim(y) == 0:
        raise ValueError(f"{data}: x and y must be arrays with one row per sample, got "
                         f"shapes {np.shape(x)} and {np.shape(y)}")
    if np.asarray(x).dtype.kind not in "biuf":
        raise ValueError(f"{data}: the features must be real numbers, got dtype "
                         f"{np.asarray(x).dtype}")
    if len(x) == 0 or np.size(x) == 0:
        raise ValueError(f"{data}: no samples (features of shape {np.shape(x)})")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if np.asarray(y).dtype.kind not in "biufUS":
        raise ValueError(f"{data}: the targets must be real numbers or class names, got "
                         f"dtype {np.asarray(y).dtype}")
    return x, np.asarray(y), os.path.basename(data)


def _is_classification(y, task):
    if task != "auto":
        return task == "classification"
    if y.ndim != 1:
        return False
    if y.dtype.kind in "US":   # class names
        return True
    yf = y.astype(np.float64)
    return bool(np.all(yf == np.round(yf)) and len(np.unique(yf)) <= 100)


def run_fit(args):
    """Run the job described by ``args`` (from :func:`add_fit_arguments`);
    prints the table and returns ``{"rows": [...], "out": dir}``."""
    from .sklearn import make_network

    try:
        depths = [int(s) for s in str(args.depths).split(",") if s.strip()]
    except ValueError:
        depths = []
    if not depths or min(depths) < 0 or len(set(depths)) < len(depths):
        raise ValueError(f"--depths must be distinct non-negative integers, got "
                         f"{args.depths!r}")
    if not 0 < args.test_size < 1:
        raise ValueError(f"--test-size must be in (0, 1), got {args.test_size}")
    # the other options too, before the data are read or any kernel computed
    real("--diag-reg", args.diag_reg, lower=0)
    if not 0 <= args.seed < 2 ** 32:
        raise ValueError(f"--seed must be in [0, 2**32), got {args.seed}")
    first = make_network(1, args.activation, args.W_std, args.b_std)   # --activation, stds
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} is a file, not a directory")
    new_out = not os.path.exists(args.out)
    os.makedirs(args.out, exist_ok=True)       # unwritable: an error now, not after the fits
    try:
        if not os.access(args.out, os.W_OK):
            raise ValueError(f"--out {args.out!r} is not writable")
        return _run(args, first, depths)
    except BaseException:
        if new_out and not os.listdir(args.out):   # nothing left behind by a failed run
            os.rmdir(args.out)
        raise


def _run(args, first, depths):
    """``run_fit`` once the options are checked and ``args.out`` exists."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from . import predict
    from .sklearn import make_network

    x, y, name = load_data(args.data, args.target)
    if not np.isfinite(x).all():
        raise ValueError("the features contain NaN or Inf")
    if y.dtype.kind in "biufc" and not np.isfinite(y).all():
        raise ValueError("the targets contain NaN or Inf")
    clf = _is_classification(y, args.task)
    if clf:
        if y.ndim != 1:
            raise ValueError(f"classification needs one label per sample (1-D targets), got "
                             f"shape {y.shape}")
        classes, yi = np.unique(y, return_inverse=True)
        Y = np.eye(len(classes))[yi] - 1.0 / len(classes)
    else:
        if y.dtype.kind not in "biuf":
            raise ValueError(f"regression needs numeric targets, got {y.dtype} values; for "
                             "class labels use --task classification")
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    n_test = math.ceil(args.test_size * len(x))
    if len(x) - n_test < 2 or n_test < 1:
        raise ValueError(f"the data has {len(x)} rows: with --test-size {args.test_size:g} that "
                         f"leaves {len(x) - n_test} for training and {n_test} for testing; "
                         "fitting needs at least 2 and testing at least 1")
    strat = yi if clf and np.bincount(yi).min() >= 2 else None
    xtr, xte, ytr, yte = train_test_split(x, Y, test_size=args.test_size,
                                          random_state=args.seed, stratify=strat)
    # standardised on x / max|x| per column (the same result; StandardScaler's
    # variance overflows for features beyond ~1e154)
    top = np.abs(xtr).max(axis=0)
    top = np.where(top > 0, top, 1.0)
    sc = StandardScaler().fit(xtr / top)
    xtr, xte = sc.transform(xtr / top), sc.transform(xte / top)
    ymean = ytr.mean(axis=0)

    n_jobs = len(depths) + (0 if args.no_baseline else 1)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_jobs, desc=f"infkernel fit ({name})", unit="model", leave=False)
    rows, preds = [], {}
    # compile (or load the cached) kernels outside the timings
    first.kernel(xtr[:2], xtr[:3])
    try:
        for d in depths:
            t0 = time.perf_counter()
            net = make_network(d, args.activation, args.W_std, args.b_std)
            ktt = net.kernel(xtr, None)
            kte = net.kernel(xte, xtr)
            t_kernel = time.perf_counter() - t0
            pf = predict.gp_inference(ktt, ytr - ymean, diag_reg=args.diag_reg)
            for g in ("nngp", "ntk"):
                t1 = time.perf_counter()
                p = pf(get=g, k_test_train=kte) + ymean
                preds[f"{g}_depth{d}"] = p
                rows.append(_metrics(f"{g.upper()}", d, p, yte, clf,
                                     t_kernel + time.perf_counter() - t1))
            if bar is not None:
                bar.update(1)
        if not args.no_baseline:
            t0 = time.perf_counter()
            p = _rbf_baseline(xtr, ytr - ymean, xte, args.diag_reg) + ymean
            preds["rbf_gp"] = p
            rows.append(_metrics("RBF GP", None, p, yte, clf, time.perf_counter() - t0))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    written = {os.path.join(args.out, f"pred_{k}.npy") for k in preds}
    for stale in set(glob.glob(os.path.join(args.out, "pred_*.npy"))) - written:
        os.remove(stale)                         # an earlier run's predictions
    for k, v in preds.items():
        np.save(os.path.join(args.out, f"pred_{k}.npy"), v)
    np.save(os.path.join(args.out, "y_test.npy"), yte)
    classes_path = os.path.join(args.out, "classes.npy")
    if clf:     # row c of the one-hot targets and predictions is class classes[c]
        np.save(classes_path, classes)
    elif os.path.exists(classes_path):
        os.remove(classes_path)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"dataset": name, "n_train": len(xtr), "n_test": len(xte),
                   "classification": clf, "rows": rows}, f, indent=2)
    _print_table(name, len(xtr), len(xte), clf, rows, args.out)
    return {"rows": rows, "out": args.out, "classification": clf}


def _metrics(model, depth, pred, yte, clf, seconds):
    row = {"model": model, "depth": depth,
           "mse": float(np.mean((pred - yte) ** 2)), "seconds": round(seconds, 3)}
    if clf:
        row["accuracy"] = float(np.mean(pred.argmax(1) == yte.argmax(1)))
    return row


def _rbf_baseline(xtr, ytr, xte, diag_reg):
    """Exact GP regression with the RBF kernel exp(-|x - x'|² / (2ℓ²)), ℓ by
    the median heuristic (Garreau, Jitkrittum & Kanagawa 2017), with the same
    relative ridge as the network kernels."""
    from scipy.spatial.distance import cdist

    from .predict import gp_inference
    sub = xtr[:1000]
    ell = float(np.median(cdist(sub, sub)[np.triu_indices(len(sub), 1)]))
    ell = ell if ell > 0 else 1.0

    def rbf(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * ell * ell))

    return gp_inference(rbf(xtr, xtr), ytr, diag_reg=diag_reg)(
        get="nngp", k_test_train=rbf(xte, xtr))


def _print_table(name, ntr, nte, clf, rows, out):
    print(f"dataset: {name}  train {ntr}  test {nte}  "
          f"({'classification by one-hot regression' if clf else 'regression'})")
    head = f"{'model':<8} {'depth':>5} " + (f"{'accuracy':>9} " if clf else "") + \
        f"{'test MSE':>10} {'seconds':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        dep = "-" if r["depth"] is None else str(r["depth"])
        acc = f"{r['accuracy']:>9.4f} " if clf else ""
        print(f"{r['model']:<8} {dep:>5} {acc}{r['mse']:>10.5f} {r['seconds']:>8.2f}")
    print(f"predictions saved in {out}/ (pred_*.npy, y_test.npy, "
          f"{'classes.npy, ' if clf else ''}metrics.json)")


def fit_command(args):
    """Entry point for the ``infkernel fit`` subcommand: exit status 0."""
    run_fit(args)
    return 0


def main(argv=None):
    p = add_fit_arguments(argparse.ArgumentParser(prog="infkernel fit",
                                                  description=__doc__.split("\n")[0]))
    run_fit(p.parse_args(argv))


if __name__ == "__main__":
    main()
