"""Polynomial-type activations (Monomial, RectifiedMonomial, Polynomial,
Hermite after LayerNorm) by degree: infkernel against neural-tangents'
jit-compiled kernel_fn in the same run.

    python benchmarks/bench_polynomial.py [--n 1000] [--nt-python /path/to/venv/bin/python]

Depth 3 (Dense(512, W_std=1, b_std=0.05) + activation per hidden layer), a
cross kernel N x N, d = 100, NNGP + NTK, float64, best of 3 after a warm-up.
Prints M entries/s, "NT / ik" (> 1: infkernel faster) and the largest
difference relative to the largest entry where neural-tangents has the case.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

import infkernel as ik

POLY = {3: [0.1, 1.0, 0.3, 0.2], 5: [0.1, 1.0, 0.3, 0.2, 0.05, 0.01],
        6: [0.1, 1.0, 0.3, 0.2, 0.05, 0.01, 0.02],
        8: [0.1, 1.0, 0.3, 0.2, 0.05, 0.01, 0.02, 0.001, 0.003]}

#: case name -> (activation layers as source text, valid in both libraries' stax)
CASES = {f"Monomial({n})": f"[S.Monomial({n})]" for n in (2, 3, 4, 5)}
CASES.update({f"RectifiedMonomial({n})": f"[S.RectifiedMonomial({n})]" for n in (2, 4)})
CASES.update({f"Polynomial(degree {n})": f"[S.Polynomial({POLY[n]})]" for n in POLY})
CASES.update({f"LayerNorm + Hermite({n})": f"[S.LayerNorm(), S.Hermite({n})]"
              for n in (3, 5, 8)})

NT_SCRIPT = textwrap.dedent("""
    import json, sys, time, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax as S
    cases, n, out_dir = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((n, 100)), rng.standard_normal((n, 100))
    times = {}
    for i, (name, acts) in enumerate(cases.items()):
        layers = []
        for _ in range(3):
            layers += [S.Dense(512, W_std=1.0, b_std=0.05)] + eval(acts)
        kf = jax.jit(S.serial(*layers, S.Dense(1, W_std=1.0, b_std=0.05))[2],
                     static_argnames="get")
        k = kf(x1, x2, ("nngp", "ntk")); k[1].block_until_ready()
        best = 1e9
        for _ in range(3):
            t0 = time.perf_counter(); k = kf(x1, x2, ("nngp", "ntk")); k[1].block_until_ready()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        np.save(f"{out_dir}/{i}.npy", np.stack([np.asarray(k[0]), np.asarray(k[1])]))
    print(json.dumps(times))
""")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((args.n, 100)), rng.standard_normal((args.n, 100))
    with tempfile.TemporaryDirectory() as tmp:
        nt = {}
        if args.nt_python:
            res = subprocess.run([args.nt_python, "-c", NT_SCRIPT, json.dumps(CASES),
                                  str(args.n), tmp], capture_output=True, text=True)
            if res.returncode:
                print("neural-tangents run failed:", res.stderr[-2000:], file=sys.stderr)
            else:
                nt = json.loads(res.stdout.strip().splitlines()[-1])
        header = (f"{'activation':26s} {'ik s':>7s} {'M entries/s':>11s} {'NT jit s':>9s} "
                  f"{'NT / ik':>8s} {'max rel. diff':>13s}")
        print(header)
        print("-" * len(header))
        S = ik.stax  # noqa: F841  (the cases' source text refers to S)
        for i, (name, acts) in enumerate(CASES.items()):
            layers = []
            for _ in range(3):
                layers += [ik.Dense(512, W_std=1.0, b_std=0.05)] + eval(acts)
            net = ik.serial(*layers, ik.Dense(1, W_std=1.0, b_std=0.05))
            k = net.kernel(x1, x2)
            best = 1e9
            for _ in range(3):
                t0 = time.perf_counter()
                k = net.kernel(x1, x2)
                best = min(best, time.perf_counter() - t0)
            row = f"{name:26s} {best:7.3f} {args.n ** 2 / best / 1e6:11.1f}"
            if name in nt:
                ref = np.load(f"{tmp}/{i}.npy")
                diff = max(np.abs(a - r).max() / np.abs(r).max()
                           for a, r in zip((k.nngp, k.ntk), ref))
                row += f" {nt[name]:9.3f} {nt[name] / best:8.2f} {diff:13.1e}"
            print(row)
    print(f"\nmachine: {os.cpu_count()} cores; numpy {np.__version__}")


if __name__ == "__main__":
    main()
