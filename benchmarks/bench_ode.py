"""Function-space gradient descent on any loss (``predict.gradient_descent``):
seconds per call for the default ``method="auto"`` against Dormand–Prince
8(5,3) (``method="DOP853"``, the explicit baseline) and neural-tangents'
``predict.gradient_descent`` (JAX ``odeint``, jit-warm) on the same NTK.

An explicit method needs ~lr·t·λ_max(K)·∂²loss steps, so long trainings
(stiff flows) of small training sets are where "auto" turns to LSODA; all
are checked against the closed form of ``gradient_descent_mse`` (MSE loss).

    python benchmarks/bench_ode.py [--nt-python PATH/bin/python]
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

NT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    out = {}
    for key, t in json.loads(sys.argv[2]):
        d = np.load(sys.argv[1] + key + ".npz")
        k, y, f0 = d["k"], d["y"], d["f0"]
        loss = lambda fx, yy: 0.5 * jnp.mean((fx - yy) ** 2)
        pf = nt.predict.gradient_descent(loss, k, y, learning_rate=1.0)
        np.asarray(pf(t, f0))                       # compile
        t0 = time.perf_counter()
        f = np.asarray(pf(t, f0))
        out[key + str(t)] = [time.perf_counter() - t0, f.tolist()]
    print(json.dumps(out))
""")


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


#: (training points, training time): ordinary, long, and stiff small problems
CASES = [(200, 10.0), (200, 1e3), (200, 1e5), (30, 1e5), (30, 1e6)]


def problem(n):
    import infkernel as ik
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 10))
    y = np.eye(3)[rng.integers(0, 3, n)]
    f0 = 0.1 * rng.standard_normal(y.shape)
    net = ik.serial(ik.Dense(512, 1.5, 0.05), ik.Relu(), ik.Dense(512, 1.5, 0.05), ik.Relu(),
                    ik.Dense(1))
    return net.kernel(x, None, "ntk"), y, f0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nt-python", default=None)
    args = ap.parse_args(argv)
    from infkernel import predict

    problems = {str(n): problem(n) for n in sorted({n for n, _ in CASES})}
    nt = {}
    if args.nt_python:
        with tempfile.TemporaryDirectory() as tmp:
            for key, (k, y, f0) in problems.items():
                np.savez(os.path.join(tmp, key + ".npz"), k=k, y=y, f0=f0)
            cases = [(str(n), t) for n, t in CASES]
            run = subprocess.run([args.nt_python, "-c", NT_SCRIPT, tmp + os.sep,
                                  json.dumps(cases)], capture_output=True, text=True)
            if run.returncode:
                sys.exit(f"neural-tangents failed:\n{run.stderr}")
            nt = json.loads(run.stdout.strip().splitlines()[-1])
    print("MSE flow, 3 outputs, ReLU depth-2 NTK, learning rate 1; error: max |f - closed "
          "form|\n")
    print("| N | t | auto s | error | DOP853 s | error | x DOP853 | NT s | error | x NT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, t in CASES:
        k, y, f0 = problems[str(n)]
        exact = predict.gradient_descent_mse(k, y, 1.0)(t, f0)
        row = [str(n), f"{t:g}"]
        base = None
        for method in ("auto", "DOP853"):
            pf = predict.gradient_descent("mse", k, y, 1.0, method=method)
            sec, f = best(lambda: pf(t, f0), 1 if t > 1e4 else 3)
            row += [f"{sec:.3f}", f"{np.abs(f - exact).max():.1e}"]
            if base is None:
                base = sec
            else:
                row.append(f"{sec / base:.1f}")
        if nt:
            sec, f = nt[str(n) + str(t)]
            row += [f"{sec:.3f}", f"{np.abs(np.asarray(f) - exact).max():.1e}",
                    f"{sec / base:.1f}"]
        else:
            row += ["", "", ""]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
