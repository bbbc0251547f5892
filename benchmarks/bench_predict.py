"""Exact NTK regression end to end: kernel, solve, prediction.

Default: N = 20,000 training points, d = 100, 2,000 test points, 10 outputs,
a 3-hidden-layer ReLU network; ``--solver cholesky`` (default: blocked and in
place) or ``cg`` (preconditioned conjugate gradients, no second N×N matrix).
Prints a table of stage times and the peak resident memory in units of one
N×N float64 matrix.

    python benchmarks/bench_predict.py [--n 20000] [--solver cg|cholesky]
"""
import argparse
import resource
import sys
import time

import numpy as np


def peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r * (1 if sys.platform == "darwin" else 1024)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--solver", choices=("cg", "cholesky"), default="cholesky")
    ap.add_argument("--diag-reg", type=float, default=0.0, dest="diag_reg")
    ap.add_argument("--tol", type=float, default=1e-8, help="CG relative residual")
    a = ap.parse_args(argv)

    import infkernel as ik
    from infkernel import predict

    rng = np.random.default_rng(0)
    w = rng.standard_normal((a.d, a.c))
    xtr = rng.standard_normal((a.n, a.d))
    xte = rng.standard_normal((a.m, a.d))
    ytr = np.tanh(xtr @ w / np.sqrt(a.d)) + 0.01 * rng.standard_normal((a.n, a.c))
    yte = np.tanh(xte @ w / np.sqrt(a.d))
    net = ik.serial(ik.Dense(512, 1.5, 0.05), ik.Relu(), ik.Dense(512, 1.5, 0.05), ik.Relu(),
                    ik.Dense(512, 1.5, 0.05), ik.Relu(), ik.Dense(1, 1.5, 0.05))
    net.kernel(xtr[:8], xtr[:8], "ntk")            # compile outside the timing
    base = peak_rss_bytes()

    t0 = time.perf_counter()
    ktt = net.kernel(xtr, None, "ntk")
    t1 = time.perf_counter()
    pf = predict.gp_inference(ktt, ytr, diag_reg=a.diag_reg, solver=a.solver, tol=a.tol,
                              overwrite_k_train_train=True)
    kte = net.kernel(xte, xtr, "ntk")
    t2 = time.perf_counter()
    pred = pf(get="ntk", k_test_train=kte)
    t3 = time.perf_counter()
    peak = peak_rss_bytes()
    nn = 8.0 * a.n * a.n
    mse = float(np.mean((pred - yte) ** 2))
    rows = [("train kernel (N×N, symmetric)", t1 - t0),
            ("test kernel (M×N)", t2 - t1),
            (f"solve ({a.solver}) + predict", t3 - t2),
            ("total", t3 - t0)]
    print(f"exact NTK regression: N={a.n} d={a.d} M={a.m} C={a.c}, 3 ReLU layers, "
          f"solver={a.solver}, diag_reg={a.diag_reg}, tol={a.tol}")
    print(f"{'stage':<34} {'seconds':>8}")
    for name, s in rows:
        print(f"{name:<34} {s:>8.2f}")
    if a.solver == "cg":
        print(f"CG iterations: {predict.pcg_solve.last_iterations}")
    print(f"peak RSS {peak / 2**30:.2f} GiB = {peak / nn:.2f} N×N float64 matrices "
          f"(before the run: {base / 2**30:.2f} GiB)")
    print(f"test MSE {mse:.4g} (variance of targets {float(np.var(yte)):.4g})")


if __name__ == "__main__":
    main()
