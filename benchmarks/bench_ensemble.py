"""Prediction side by side with neural-tangents on the same kernel matrices.

    python benchmarks/bench_ensemble.py [--n 2000] [--m 500] [--nt-python /path/to/venv/bin/python]

Both libraries get a ``kernel_fn`` that looks the precomputed NNGP/NTK
matrices up by point index, so only the prediction itself is timed: GP
inference (means, covariances), the gradient-descent ensemble at t = ∞ and at
finite times (test and training set, with covariances), and one network's
softmax cross-entropy flow with momentum 0.9 (``gradient_descent``, an ODE:
neural-tangents' ``odeint`` at its tolerance 1.4e-8, infkernel's DOP853 at its
default 1e-10), warm, best of
``--repeats``.  Prints seconds per case, the ratio neural-tangents / infkernel
(> 1: infkernel faster) and the largest relative difference of the results.
Without ``--nt-python`` only infkernel's times are printed.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

#: name -> (function, args) in terms of a module ``predict`` and the data
CASES = textwrap.dedent("""
    def cases(predict, kernel_fn, xd, xt, y, k_dd, k_td, k_tt):
        ens = predict.gradient_descent_mse_ensemble(kernel_fn, xd, y, diag_reg=1e-4)
        ens(t=1.0, x_test=xt[:2], compute_cov=True)      # eigendecompositions, cached
        ens(t=None, x_test=xt[:2], compute_cov=True)     # Cholesky factors, cached
        gp = predict.gp_inference(k_dd, y, diag_reg=1e-4)
        onehot = (y == y.max(axis=1, keepdims=True)).astype(float)
        if predict.__name__.startswith("neural_tangents"):
            import jax
            loss = lambda fx, yh: -jax.numpy.mean(jax.nn.log_softmax(fx) * yh)
        else:
            loss = "cross_entropy"
        gd = predict.gradient_descent(loss, k_dd.ntk, onehot, 1.0, 0.9)
        return {
            "gp_inference mean": lambda: gp("ntk", k_td),
            "gp_inference nngp+ntk cov": lambda: gp(("nngp", "ntk"), k_td, k_tt),
            "ensemble t=inf cov": lambda: ens(t=None, x_test=xt, compute_cov=True),
            "ensemble 1 t cov": lambda: ens(t=10.0, x_test=xt, compute_cov=True),
            "ensemble 10 t mean": lambda: ens(t=np.logspace(0, 3, 10), x_test=xt),
            "ensemble 10 t cov": lambda: ens(t=np.logspace(0, 3, 10), x_test=xt,
                                             compute_cov=True),
            "train set 3 t cov": lambda: ens(t=[1.0, 10.0, 100.0], x_test=None,
                                             compute_cov=True),
            "gradient_descent CE momentum 3 t": lambda: gd(np.array([1.0, 10.0, 50.0]), 0.0,
                                                           np.zeros((len(xt), y.shape[1])),
                                                           k_td.ntk),
        }

    def flat(res):
        if not isinstance(res, tuple):
            return [np.asarray(res)]
        return [a for f in res for a in flat(f)]

    def run(predict, kernel_fn, data, repeats):
        out, times = {}, {}
        for name, fn in cases(predict, kernel_fn, *data).items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = fn()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            for i, a in enumerate(flat(res)):
                out[f"{name}|{i}"] = np.asarray(a, dtype=np.float64)
        return times, out

    def lookup(K):
        \"\"\"kernel_fn of precomputed matrices: points are (index,) rows.\"\"\"
        def kernel_fn(x1, x2=None, get=None, **kw):
            i = np.asarray(x1)[:, 0].astype(int)
            j = i if x2 is None else np.asarray(x2)[:, 0].astype(int)
            names = ("nngp", "ntk") if get is None else (get,) if isinstance(get, str) else get
            vals = [K[g][np.ix_(i, j)] for g in names]
            return vals[0] if isinstance(get, str) else Kernel(*vals) if len(vals) == 2 \\
                else namedtuple("K", names)(*vals)
        return kernel_fn
""")

NT_SCRIPT = textwrap.dedent("""
    import sys, time, json, numpy as np, jax
    from collections import namedtuple
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import predict
    Kernel = namedtuple("Kernel", ("nngp", "ntk"))
""") + CASES + textwrap.dedent("""
    z = np.load(sys.argv[1])
    K = {"nngp": z["nngp"], "ntk": z["ntk"]}
    n, m = int(z["n"]), int(z["m"])
    xd, xt = np.arange(n)[:, None], np.arange(n, n + m)[:, None]
    kf = lookup(K)
    k_dd, k_td, k_tt = kf(xd, None, ("nngp", "ntk")), kf(xt, xd, ("nngp", "ntk")), kf(xt, None, ("nngp", "ntk"))
    times, out = run(predict, kf, (xd, xt, z["y"], k_dd, k_td, k_tt), int(sys.argv[3]))
    np.savez(sys.argv[2], **out)
    print(json.dumps(times))
""")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="training points")
    ap.add_argument("--m", type=int, default=500, help="test points")
    ap.add_argument("--c", type=int, default=10, help="outputs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    a = ap.parse_args(argv)

    import infkernel as ik
    from infkernel import predict
    from infkernel.kernel import Kernel
    from collections import namedtuple
    ns = {"np": np, "time": time, "Kernel": Kernel, "namedtuple": namedtuple}
    exec(CASES, ns)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n + a.m, 50))
    net = ik.serial(ik.Dense(512, 1.5, 0.05), ik.Relu(), ik.Dense(512, 1.5, 0.05), ik.Relu(),
                    ik.Dense(1, 1.5, 0.05))
    K = net.kernel(x)
    y = np.sin(x[:a.n, :a.c])
    xd, xt = np.arange(a.n)[:, None], np.arange(a.n, a.n + a.m)[:, None]
    kf = ns["lookup"]({"nngp": K.nngp, "ntk": K.ntk})
    data = (xd, xt, y, kf(xd, None, None), kf(xt, xd, None), kf(xt, None, None))
    times, ours = ns["run"](predict, kf, data, a.repeats)

    nt_times, theirs = {}, {}
    if a.nt_python:
        with tempfile.TemporaryDirectory() as tmp:
            inp, res = Path(tmp, "in.npz"), Path(tmp, "out.npz")
            np.savez(inp, nngp=K.nngp, ntk=K.ntk, y=y, n=a.n, m=a.m)
            run = subprocess.run([a.nt_python, "-W", "ignore", "-c", NT_SCRIPT, str(inp),
                                  str(res), str(a.repeats)], capture_output=True, text=True)
            if run.returncode:
                sys.exit(run.stderr)
            nt_times = json.loads(run.stdout.strip().splitlines()[-1])
            theirs = dict(np.load(res))

    print(f"N = {a.n} train, M = {a.m} test, C = {a.c} outputs, float64, warm, "
          f"best of {a.repeats}")
    print("| case | infkernel s | neural-tangents s | NT / ik | max rel. diff |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        row = f"| {name} | {t:.3f} |"
        if name in nt_times:
            diffs = [np.abs(ours[k] - theirs[k]).max() / max(np.abs(theirs[k]).max(), 1e-300)
                     for k in ours if k.startswith(name + "|") and k in theirs]
            row += f" {nt_times[name]:.3f} | {nt_times[name] / t:.2f} | {max(diffs):.1e} |"
        else:
            row += " — | — | — |"
        print(row)


if __name__ == "__main__":
    main()
