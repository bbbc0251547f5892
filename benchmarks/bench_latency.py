"""Latency of small and thin kernel calls: infkernel against neural-tangents'
jit-compiled ``kernel_fn`` (warm) and its plain ``kernel_fn``.

    python benchmarks/bench_latency.py [--nt-python /path/to/venv/bin/python]

ReLU depth 3 (Dense(512, W_std=1.5, b_std=0.05) + Relu per hidden layer), d = 100,
NNGP + NTK, float64: N1 = N2 = N for N in 1, 10, 100, 300, cross and symmetric, and
thin cross kernels, a few points against 2000 (as in prediction or Bayesian
optimisation, k(x*, X) one test point at a time) and the transpose.  Calls of a
few points are where per-call overheads (argument checks, the diagonal pass,
thread hand-offs) show; larger calls are in ``bench_gram.py``.  Prints
microseconds per call (best of 5 rounds) and the ratio NT jit / infkernel
(> 1: infkernel faster).
"""
import argparse
import json
import subprocess
import textwrap
import time

import numpy as np

#: (N1, N2 or None for the symmetric K(x1)), path
CASES = [(n, m, path) for n in (1, 10, 100, 300) for m, path in ((n, "cross"), (None, "sym"))]
CASES += [(1, 2000, "thin"), (2000, 1, "thin"), (10, 2000, "thin"), (2000, 10, "thin")]

NT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np, jax
    from jax import config
    config.update("jax_enable_x64", True)
    from neural_tangents import stax
    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, 1.5, 0.05), stax.Relu()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, 1.5, 0.05))
    jitted = jax.jit(kernel_fn, static_argnames="get")
    out = {}
    for n1, n2, path in json.loads(sys.argv[1]):
        rng = np.random.default_rng(0)   # the inputs of bench_latency.inputs
        x1 = rng.standard_normal((n1, 100))
        x2 = None if n2 is None else rng.standard_normal((n2, 100)) + 0.1
        for name, fn in (("jit", jitted), ("plain", kernel_fn)):
            call = lambda: jax.block_until_ready(fn(x1, x2, get=("nngp", "ntk")))
            call()
            reps = max(3, 200000 // (n1 * (n2 or n1))) if name == "jit" else 3
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    call()
                best = min(best, (time.perf_counter() - t0) / reps)
            out[f"{n1} {n2} {name}"] = best
    print(json.dumps(out))
""")


def inputs(n1, n2):
    """x1 (n1 × 100) and x2 (None, or n2 × 100 points shifted off x1's)."""
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((n1, 100))
    return x1, None if n2 is None else rng.standard_normal((n2, 100)) + 0.1


def infkernel_times():
    import infkernel as ik
    layers = []
    for _ in range(3):
        layers += [ik.Dense(512, 1.5, 0.05), ik.Relu()]
    net = ik.serial(*layers, ik.Dense(1, 1.5, 0.05))
    out = {}
    for n1, n2, _ in CASES:
        x1, x2 = inputs(n1, n2)
        net.kernel(x1, x2)
        reps = max(10, 200000 // (n1 * (n2 or n1)))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                net.kernel(x1, x2)
            best = min(best, (time.perf_counter() - t0) / reps)
        out[f"{n1} {n2}"] = best
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    args = ap.parse_args()
    ours = infkernel_times()
    nt = {}
    if args.nt_python:
        res = subprocess.run([args.nt_python, "-c", NT_SCRIPT, json.dumps(CASES)],
                             capture_output=True, text=True, check=True)
        nt = json.loads(res.stdout.strip().splitlines()[-1])
    print("| N1 | N2 | path | infkernel µs | NT jit µs | NT jit / ik | NT plain µs |")
    print("|---|---|---|---|---|---|---|")
    for n1, n2, path in CASES:
        ik_us = ours[f"{n1} {n2}"] * 1e6
        row = f"| {n1} | {n2 or n1} | {path} | {ik_us:.0f} |"
        if nt:
            jit, plain = nt[f"{n1} {n2} jit"] * 1e6, nt[f"{n1} {n2} plain"] * 1e6
            row += f" {jit:.0f} | {jit / ik_us:.2f} | {plain:.0f} |"
        else:
            row += " | | |"
        print(row)


if __name__ == "__main__":
    main()
