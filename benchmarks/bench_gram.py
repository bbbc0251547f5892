"""Gram-matrix throughput: infkernel vs a plain NumPy layer-by-layer recursion
(and neural-tangents when its interpreter is given), measured in one run.

    python benchmarks/bench_gram.py [--quick] [--nt-python /path/to/venv/bin/python]

Prints entries/s (NNGP + NTK together, float64) per case, the ratio to the
NumPy baseline, the ratio to neural-tangents (jit-compiled, warm; and its first
call), the fraction of the ~120 M entries/s roofline of a 2-core machine for
depth 3, and the peak memory of a symmetric N = 8000 build against its output.
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

import infkernel as ik

ROOFLINE_DEPTH3 = 120e6  # entries/s, 2-core estimate (one GEMM + vectorised layers)


def network(act, depth):
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(512, W_std=1.5, b_std=0.05), act()]
    return ik.serial(*layers, ik.Dense(1, W_std=1.5, b_std=0.05))


def numpy_relu_baseline(x1, x2, depth, w=1.5, b=0.05):
    """Straightforward NumPy: full N1 x N2 temporaries per layer."""
    d = x1.shape[1]
    w2, b2 = w * w, b * b
    q = w2 * (x1 @ x2.T) / d + b2
    q1 = w2 * (x1 * x1).sum(1) / d + b2
    q2 = w2 * (x2 * x2).sum(1) / d + b2
    t = q.copy()
    for _ in range(depth):
        s = np.outer(np.sqrt(q1), np.sqrt(q2))
        cos = np.clip(q / s, -1, 1)
        theta = np.arccos(cos)
        k = s * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
        kdot = (np.pi - theta) / (2 * np.pi)
        q = w2 * k + b2
        t = q + w2 * kdot * t
        q1, q2 = w2 * q1 / 2 + b2, w2 * q2 / 2 + b2
    return q, t


def best_time(fn, repeats):
    fn()  # warm-up (compilation, page faults of the first allocation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


NT_SCRIPT = textwrap.dedent("""
    import json, sys, time, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax
    cases = json.loads(sys.argv[1]); out = {}
    acts = {"relu": stax.Relu, "erf": stax.Erf}
    for key, (act, depth, n, sym) in cases.items():
        layers = []
        for _ in range(depth):
            layers += [stax.Dense(512, W_std=1.5, b_std=0.05), acts[act]()]
        _, _, kf = stax.serial(*layers, stax.Dense(1, W_std=1.5, b_std=0.05))
        rng = np.random.default_rng(0)
        x1 = rng.standard_normal((n, 100)); x2 = None if sym else rng.standard_normal((n, 100))
        t0 = time.perf_counter(); kf(x1, x2, ("nngp", "ntk"))[1].block_until_ready()
        first = time.perf_counter() - t0
        jf = jax.jit(kf, static_argnames="get")
        jf(x1, x2, ("nngp", "ntk"))[1].block_until_ready()
        t0 = time.perf_counter(); jf(x1, x2, ("nngp", "ntk"))[1].block_until_ready()
        out[key] = (first, time.perf_counter() - t0)
    print(json.dumps(out))
""")


def run_nt(python, cases):
    res = subprocess.run([python, "-c", NT_SCRIPT, json.dumps(cases)], capture_output=True,
                         text=True, timeout=1800)
    if res.returncode != 0:
        print("neural-tangents run failed:", res.stderr[-2000:], file=sys.stderr)
        return {}
    return json.loads(res.stdout.strip().splitlines()[-1])


PEAK_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, infkernel as ik
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    n = int(sys.argv[1])
    net = ik.serial(*([ik.Dense(512, 1.5, 0.05), ik.Relu()] * 3), ik.Dense(1, 1.5, 0.05))
    x = np.random.default_rng(0).standard_normal((n, 100))
    net.kernel(x[:4])                      # compile / load the cache first
    open("/proc/self/clear_refs", "w").write("5")   # reset the peak (VmHWM)
    base = status("VmRSS:")
    net.kernel(x)
    print(base, status("VmHWM:"))
""")


def peak_memory(n):
    """Peak resident memory of one symmetric NNGP+NTK build above the
    process's resident memory before it, and the size of the outputs."""
    res = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n)], capture_output=True,
                         text=True, check=True)
    base, peak = map(int, res.stdout.split())
    return peak - base, 2 * n * n * 8


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sizes = [1000, 2000] if args.quick else [1000, 4000]
    acts = {"relu": ik.Relu, "erf": ik.Erf, "gelu": ik.Gelu}
    cases = []
    for n in sizes:
        for depth in (1, 3, 10):
            cases.append(("relu", depth, n, False))
        cases.append(("relu", 3, n, True))
        cases.append(("erf", 3, n, False))
        cases.append(("gelu", 3, n, False))
    nt = {}
    if args.nt_python:
        nt_cases = {f"{a}-{L}-{n}-{s}": (a, L, n, s) for a, L, n, s in cases
                    if a in ("relu", "erf") and L == 3}
        nt = run_nt(args.nt_python, nt_cases)
    rng = np.random.default_rng(0)
    header = (f"{'act':5s} {'depth':>5s} {'N':>6s} {'path':>5s} {'time s':>8s} {'M entries/s':>12s}"
              f" {'x numpy':>8s} {'x NT jit':>9s} {'x NT 1st':>9s} {'roofline':>8s}")
    print(header)
    print("-" * len(header))
    for act, depth, n, sym in cases:
        net = network(acts[act], depth)
        x1 = rng.standard_normal((n, 100))
        x2 = None if sym else rng.standard_normal((n, 100))
        t = best_time(lambda: net.kernel(x1, x2), args.repeats)
        rate = n * n / t
        base = ""
        if act == "relu":
            tb = best_time(lambda: numpy_relu_baseline(x1, x1 if sym else x2, depth), 1)
            base = f"{tb / t:8.1f}"
        key = f"{act}-{depth}-{n}-{sym}"
        ntj = f"{nt[key][1] / t:9.1f}" if key in nt else ""
        nt1 = f"{nt[key][0] / t:9.1f}" if key in nt else ""
        roof = f"{rate / ROOFLINE_DEPTH3:8.0%}" if (act == "relu" and depth == 3) else ""
        print(f"{act:5s} {depth:5d} {n:6d} {'sym' if sym else 'cross':>5s} {t:8.3f} "
              f"{rate / 1e6:12.1f} {base:>8s} {ntj:>9s} {nt1:>9s} {roof:>8s}")
    if not args.quick:
        extra, out_bytes = peak_memory(8000)
        print(f"\npeak memory, symmetric N=8000 NNGP+NTK: +{extra / 2**20:.0f} MiB for "
              f"{out_bytes / 2**20:.0f} MiB of output ({extra / out_bytes:.2f}x)")
    print(f"\nmachine: {os.cpu_count()} cores; numpy {np.__version__}")


if __name__ == "__main__":
    main()
