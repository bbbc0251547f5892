"""Latency of small kernel calls: infkernel against neural-tangents' jit-compiled
``kernel_fn`` (warm) and its plain ``kernel_fn``.

    python benchmarks/bench_latency.py [--nt-python /path/to/venv/bin/python]

ReLU depth 3 (Dense(512, W_std=1.5, b_std=0.05) + Relu per hidden layer), d = 100,
NNGP + NTK, float64, N1 = N2 = N for N in 1, 10, 100, 300, cross and symmetric.
Calls of a few points are where per-call overheads (argument checks, the
diagonal pass, thread hand-offs) show; larger calls are in ``bench_gram.py``.
Prints microseconds per call (best of 5 rounds) and the ratio NT jit /
infkernel (> 1: infkernel faster).
"""
import argparse
import json
import subprocess
import textwrap
import time

import numpy as np

SIZES = (1, 10, 100, 300)

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
    for n in json.loads(sys.argv[1]):
        x = np.random.default_rng(0).standard_normal((n, 100))
        for path, x2 in (("cross", x + 0.1), ("sym", None)):
            for name, fn in (("jit", jitted), ("plain", kernel_fn)):
                call = lambda: jax.block_until_ready(fn(x, x2, get=("nngp", "ntk")))
                call()
                reps = 200 if name == "jit" else 5
                best = float("inf")
                for _ in range(5):
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        call()
                    best = min(best, (time.perf_counter() - t0) / reps)
                out[f"{n} {path} {name}"] = best
    print(json.dumps(out))
""")


def infkernel_times():
    import infkernel as ik
    layers = []
    for _ in range(3):
        layers += [ik.Dense(512, 1.5, 0.05), ik.Relu()]
    net = ik.serial(*layers, ik.Dense(1, 1.5, 0.05))
    out = {}
    for n in SIZES:
        x = np.random.default_rng(0).standard_normal((n, 100))
        for path, x2 in (("cross", x + 0.1), ("sym", None)):
            net.kernel(x, x2)
            reps = max(10, 20000 // (n * n))
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    net.kernel(x, x2)
                best = min(best, (time.perf_counter() - t0) / reps)
            out[f"{n} {path}"] = best
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    args = ap.parse_args()
    ours = infkernel_times()
    nt = {}
    if args.nt_python:
        res = subprocess.run([args.nt_python, "-c", NT_SCRIPT, json.dumps(SIZES)],
                             capture_output=True, text=True, check=True)
        nt = json.loads(res.stdout.strip().splitlines()[-1])
    print("| N | path | infkernel µs | NT jit µs | NT jit / ik | NT plain µs |")
    print("|---|---|---|---|---|---|")
    for n in SIZES:
        for path in ("cross", "sym"):
            ik_us = ours[f"{n} {path}"] * 1e6
            row = f"| {n} | {path} | {ik_us:.0f} |"
            if nt:
                jit, plain = nt[f"{n} {path} jit"] * 1e6, nt[f"{n} {path} plain"] * 1e6
                row += f" {jit:.0f} | {jit / ik_us:.2f} | {plain:.0f} |"
            else:
                row += " | | |"
            print(row)


if __name__ == "__main__":
    main()
