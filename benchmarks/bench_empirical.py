"""Empirical (finite-width) NTKs side by side with neural-tangents.

    python benchmarks/bench_empirical.py [--width 512] [--nt-python /path/to/venv/bin/python]

A ReLU network Dense(w)-Relu-…-Dense(k), W_std = 1.5, b_std = 0.05, d = 100
inputs, the same parameters in both libraries.  Cases: the NTK traced over the
k outputs (symmetric K(X) and cross K(X1, X2)), the untraced NTK
(``trace_axes=()``, (N1, N2, k, k)), the empirical NNGP, and a Monte Carlo
estimate over 32 random networks (``monte_carlo_kernel_fn``, NNGP + NTK; the
two libraries draw different networks, so no difference is printed).  neural-tangents
runs ``jax.jit(empirical_ntk_fn(..., vmap_axes=0, implementation=3))`` — its
structured derivatives, the fastest of its three implementations here (the
Jacobian contraction takes ~20 s at N = 200, the NTK-vector products run out
of memory at N = 500).  Prints warm seconds (best of ``--repeats``), the
ratio neural-tangents / infkernel (> 1: infkernel faster), neural-tangents'
first call (tracing + compilation + run) and the largest relative difference.
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

#: (name, n1, n2 or None, kind, trace_axes)
CASES = [
    ("ntk traced, sym", 500, None, "ntk", (-1,)),
    ("ntk traced, cross", 500, 500, "ntk", (-1,)),
    ("ntk traced, sym", 1000, None, "ntk", (-1,)),
    ("ntk traced, cross", 1000, 1000, "ntk", (-1,)),
    ("ntk untraced, sym", 200, None, "ntk", ()),
    ("nngp traced, sym", 1000, None, "nngp", (-1,)),
    ("monte carlo, 32 nets, sym", 300, None, "mc", (-1,)),
]

NT_SCRIPT = textwrap.dedent("""
    import sys, time, json, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax
    z = np.load(sys.argv[1])
    cases, repeats = json.loads(sys.argv[3]), int(sys.argv[4])
    depth, width, k = int(z["depth"]), int(z["width"]), int(z["k"])
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=1.5, b_std=0.05), stax.Relu()]
    init_fn, apply_fn, _ = stax.serial(*layers, stax.Dense(k, W_std=1.5, b_std=0.05))
    params = []
    for i in range(depth + 1):
        params.append((z[f"W{i}"], z[f"b{i}"]))
        if i < depth:
            params.append(())
    x, out, times = z["x"], {}, {}
    for name, n1, n2, kind, trace in cases:
        if kind == "mc":
            mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(0), 32,
                                          implementation=3, vmap_axes=0)
            fn = lambda x1, x2, params: mc(x1, x2, ("nngp", "ntk")).ntk
        else:
            make = nt.empirical_ntk_fn if kind == "ntk" else nt.empirical_nngp_fn
            kw = {"implementation": 3, "vmap_axes": 0} if kind == "ntk" else {}
            fn = jax.jit(make(apply_fn, trace_axes=tuple(trace), **kw))
        x1, x2 = x[:n1], None if n2 is None else x[n1:n1 + n2]
        t0 = time.perf_counter()
        np.asarray(fn(x1, x2, params))
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = np.asarray(fn(x1, x2, params))
            best = min(best, time.perf_counter() - t0)
        key = f"{name}|{n1}"
        times[key] = (best, first)
        out[key] = res
    np.savez(sys.argv[2], **out)
    print(json.dumps(times))
""")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=3, help="hidden layers")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--k", type=int, default=10, help="outputs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    a = ap.parse_args(argv)

    import infkernel as ik
    from infkernel import stax

    layers = []
    for _ in range(a.depth):
        layers += [stax.Dense(a.width, W_std=1.5, b_std=0.05), stax.Relu()]
    init_fn, apply_fn, _ = stax.serial(*layers, stax.Dense(a.k, W_std=1.5, b_std=0.05))
    x = np.random.default_rng(0).standard_normal((2000, 100))
    _, params = init_fn(0, x.shape)

    times, ours = {}, {}
    for name, n1, n2, kind, trace in CASES:
        if kind == "mc":
            mc = ik.monte_carlo_kernel_fn(init_fn, apply_fn, 0, 32)
            fn = lambda x1, x2, params: mc(x1, x2, ("nngp", "ntk")).ntk
        else:
            make = ik.empirical_ntk_fn if kind == "ntk" else ik.empirical_nngp_fn
            fn = make(apply_fn, trace_axes=trace)
        x1, x2 = x[:n1], None if n2 is None else x[n1:n1 + n2]
        fn(x1, x2, params)                                   # warm-up
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            res = fn(x1, x2, params)
            best = min(best, time.perf_counter() - t0)
        times[f"{name}|{n1}"] = best
        ours[f"{name}|{n1}"] = res

    nt = {}
    if a.nt_python:
        dense = [p for p in params if p]
        arrays = {f"W{i}": W for i, (W, _) in enumerate(dense)}
        arrays.update({f"b{i}": b for i, (_, b) in enumerate(dense)})
        with tempfile.TemporaryDirectory() as tmp:
            inp, res = Path(tmp, "in.npz"), Path(tmp, "out.npz")
            np.savez(inp, x=x, depth=a.depth, width=a.width, k=a.k, **arrays)
            run = subprocess.run([a.nt_python, "-W", "ignore", "-c", NT_SCRIPT, str(inp),
                                  str(res), json.dumps(CASES), str(a.repeats)],
                                 capture_output=True, text=True)
            if run.returncode:
                sys.exit(run.stderr)
            nt = json.loads(run.stdout.strip().splitlines()[-1])
            theirs = dict(np.load(res))

    print(f"ReLU depth {a.depth}, width {a.width}, k = {a.k} outputs, d = 100, float64, "
          f"warm, best of {a.repeats}")
    print("| case | N | infkernel s | neural-tangents s | NT / ik | NT 1st s | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for key, t in times.items():
        name, n1 = key.split("|")
        row = f"| {name} | {n1} | {t:.3f} |"
        if key in nt:
            warm, first = nt[key]
            diff = np.abs(ours[key] - theirs[key]).max() / np.abs(theirs[key]).max()
            row += (f" {warm:.3f} | {warm / t:.1f} | {first:.2f} | "
                    + ("(other networks) |" if name.startswith("monte carlo") else f"{diff:.1e} |"))
        else:
            row += " — | — | — | — |"
        print(row)


if __name__ == "__main__":
    main()
