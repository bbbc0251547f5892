"""Device check for the GPU backend (< 5 min on an H200 with CuPy).

    pip install --no-deps -e . && python benchmarks/gpu_check.py [--quick]

1. parity: every activation, depth 3, cross and symmetric, GPU vs CPU in
   float64 (bound 1e-12 of the entry scale for closed forms; 1e-11 for the
   numeric activations, whose series truncation each backend certifies to
   1e-12 per layer at possibly different terms) and float32 (bound 1e-5);
2. throughput: ReLU and tanh depth 3 (tanh: Mehler series per entry, the
   quadrature fallback where it cannot certify; issue target ≥ 5 G entries/s
   float64 on an H200), NNGP + NTK, N1 = N2 = 16384 and 32768, d = 100,
   float64 and float32, cross and symmetric, CuPy in / CuPy out: entries/s,
   GB/s written and the fraction of the memory-write roofline (``--roofline``,
   H200: 4800 GB/s).  For tanh the diagonal pass (per-point Mehler features)
   is also timed on its own.

Exits non-zero when a parity check fails.  Timings use CUDA events around
``Network.kernel`` (GEMM, diagonal pass and Gram kernels included; the first,
compiling call is excluded).
"""
import argparse
import sys
import time

import numpy as np

import infkernel as ik
from infkernel import _program as P
from infkernel import gpu


def parity(n1=257, n2=190):
    import cupy as cp
    acts = [ik.Relu(), ik.LeakyRelu(0.1), ik.ABRelu(-0.3, 0.7), ik.Abs(), ik.Erf(1.2, 0.8, 0.3),
            ik.Sigmoid_like(), ik.Gelu(), ik.Sin(0.9, 1.1, 0.4), ik.Cos(), ik.Rbf(0.7),
            ik.Gaussian(1.1, -0.6), ik.Exp(0.8, 0.5), ik.Sign(), ik.Monomial(0),
            ik.Monomial(3), ik.RectifiedMonomial(0), ik.RectifiedMonomial(2),
            ik.Polynomial([0.3, -1.0, 0.5, 0.2]), ik.Hermite(3), ik.Gabor(),
            ik.ExpNormalized(0.7, -0.5),
            ik.serial(ik.LayerNorm(), ik.Hermite(3)),      # layers between the Dense layers
            ik.serial(ik.Relu(), ik.Dropout(0.7)),
            ik.serial(ik.FanOut(2), ik.parallel(ik.Dense(32, W_std=1.1), ik.Dense(32)),
                      ik.FanInProd())]
    numeric = [ik.Tanh(), ik.Softplus(), ik.Sigmoid(), ik.Silu(), ik.Elu(0.7), ik.Selu(),
               ik.Mish(), ik.SReLU(), ik.S2ReLU(),
               ik.Elementwise(lambda x: np.maximum(x, 0.5 * x) + 0.1 * np.sin(x),
                              name="Elementwise(kinked)")]
    acts += numeric
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((n1, 9))
    x1[1], x1[2], x1[3] = x1[0], -x1[0], 0.0
    x2 = rng.standard_normal((n2, 9))
    ok = True
    print(f"{'activation':24s} {'path':5s} {'f64 err':>10s} {'f32 err':>10s}")
    for act in acts:
        net = ik.serial(*[ik.Dense(64, W_std=1.2, b_std=0.1), act] * 3, ik.Dense(1, b_std=0.2))
        for sym in (False, True):
            b = None if sym else x2
            try:
                ref = net.kernel(x1, b, backend="cpu")
                d1 = net.diag(x1, backend="cpu")
                d2 = d1 if sym else net.diag(x2, backend="cpu")
                errs = []
                for dt in (np.float64, np.float32):
                    got = net.kernel(cp.asarray(x1), None if sym else cp.asarray(x2),
                                     dtype=dt, backend="gpu")
                    e = 0.0
                    for g, r, a, c in ((got.nngp, ref.nngp, d1.nngp, d2.nngp),
                                       (got.ntk, ref.ntk, d1.ntk, d2.ntk)):
                        scale = np.outer(np.sqrt(np.abs(a)), np.sqrt(np.abs(c)))
                        g = cp.asnumpy(g).astype(np.float64)
                        fin = np.isfinite(r)
                        if not np.array_equal(fin, np.isfinite(g)):
                            e = np.inf
                        err = np.abs(g - r)[fin] / (np.abs(r) + scale + 1e-300)[fin]
                        e = max(e, float(err.max(initial=0.0)))
                    errs.append(e)
                bound = 1e-11 if getattr(act, "kind", None) == P.K_NUMERIC else 1e-12
                good = errs[0] <= bound and errs[1] <= 1e-5
                ok &= good
                print(f"{act!r:24s} {'sym' if sym else 'cross':5s} {errs[0]:10.2e} "
                      f"{errs[1]:10.2e} {'ok' if good else 'FAIL'}")
            except NotImplementedError as exc:
                print(f"{act!r:24s} {'sym' if sym else 'cross':5s} skipped: {exc}")
    return ok


def throughput(sizes, roofline, budget_s):
    import cupy as cp
    second = ik.Tanh()
    if second.kind not in gpu.supported_kinds():
        raise RuntimeError("this build of the GPU backend has no numeric activations")
    rng = np.random.default_rng(1)
    t_start = time.time()
    print(f"\n{'act':6s} {'N':>6s} {'dtype':8s} {'path':5s} {'time ms':>9s} {'G entries/s':>12s} "
          f"{'GB/s':>8s} {'roofline':>9s}")
    for act in (ik.Relu(), second):
        name = "relu" if act.name == "ABRelu" else act.name.lower()
        net = ik.serial(*[ik.Dense(512, W_std=1.4, b_std=0.1), act] * 3, ik.Dense(1))
        for n in sizes:
            x = cp.asarray(rng.standard_normal((n, 100)))
            if act.kind == P.K_NUMERIC:
                net.diag(x[:256], backend="gpu")
                e0, e1 = cp.cuda.Event(), cp.cuda.Event()
                e0.record()
                net.diag(x, backend="gpu")
                e1.record()
                e1.synchronize()
                print(f"{name:6s} {n:6d} diagonal pass (features) "
                      f"{cp.cuda.get_elapsed_time(e0, e1):9.2f} ms", flush=True)
            for dt in (np.float64, np.float32):
                for sym in (False, True):
                    if time.time() - t_start > budget_s:
                        print("time budget reached; remaining configurations skipped")
                        return
                    # a distinct array: x2 *is* x1 takes the symmetric path
                    x2 = None if sym else x.copy()
                    net.kernel(x[:256], None if sym else x[:256], dtype=dt, backend="gpu")
                    out = (cp.empty((n, n), dt), cp.empty((n, n), dt))
                    best = np.inf
                    for _ in range(2):
                        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
                        e0.record()
                        net.kernel(x, x2, out=out, dtype=dt, backend="gpu")
                        e1.record()
                        e1.synchronize()
                        best = min(best, cp.cuda.get_elapsed_time(e0, e1) / 1e3)
                    entries = n * n
                    gbs = entries * 2 * np.dtype(dt).itemsize / best / 1e9
                    print(f"{name:6s} {n:6d} {np.dtype(dt).name:8s} {'sym' if sym else 'cross':5s} "
                          f"{best * 1e3:9.2f} {entries / best / 1e9:12.1f} {gbs:8.0f} "
                          f"{gbs / roofline:9.2f}", flush=True)
                    del out
                    cp.get_default_memory_pool().free_all_blocks()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 16384 only")
    ap.add_argument("--roofline", type=float, default=4800.0, help="write bandwidth, GB/s")
    ap.add_argument("--budget", type=float, default=200.0, help="seconds for the timings")
    args = ap.parse_args()
    if not gpu.available():
        print(f"no GPU: {gpu._probe()}")
        return 2
    import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    print(f"device: {props['name'].decode()}  CuPy {cp.__version__}")
    t = time.time()
    ok = parity()
    print(f"parity {'PASSED' if ok else 'FAILED'} in {time.time() - t:.0f} s")
    throughput([16384] if args.quick else [16384, 32768], args.roofline, args.budget)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
