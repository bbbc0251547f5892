"""Peak memory and time of large problems, each in a fresh process, side by side
with neural-tangents.

    python benchmarks/bench_memory.py [--nt-python /path/to/venv/bin/python] [--quick]

ReLU (or Erf) depth 3, Dense(512, W_std=1.5, b_std=0.05) per hidden layer,
d = 100, float64, NNGP + NTK.  Every case runs in a new Python process (both
libraries imported, inputs drawn), once to compile and once measured; the
peak resident memory of the measured call is taken above the process's
resident memory just before it (Linux: ``/proc/self/clear_refs`` resets the
high-water mark ``VmHWM``).  "output MiB" is the size of the arrays returned.
neural-tangents runs ``jax.jit(kernel_fn)``; its ``predict`` gets kernels
computed beforehand, as infkernel's does (only the prediction is measured).
"""
import argparse
import json
import subprocess
import sys
import textwrap

#: name -> (operation, N1, N2 or None); operations are defined in CHILD
CASES = {
    "Gram ReLU, symmetric": ("kernel", 10000, None),
    "Gram ReLU, cross": ("kernel", 8000, 8000),
    "Gram Erf, symmetric": ("erf", 8000, None),
    "gp_inference, NNGP + NTK covariances": ("gp", 6000, 2000),
    "ensemble t = inf, NTK covariance": ("ensemble", 6000, 1000),
    "empirical NTK, width 512, symmetric": ("empirical", 2000, None),
}
QUICK = {name: (op, n1 // 2, n2 and n2 // 2) for name, (op, n1, n2) in CASES.items()}

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    lib, op, n1, n2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    if lib == "nt":
        import jax
        jax.config.update("jax_enable_x64", True)
        import neural_tangents as lib_
        from neural_tangents import stax
        ready = jax.block_until_ready
    else:
        import infkernel as lib_
        from infkernel import stax
        ready = lambda a: a
    act = stax.Erf() if op == "erf" else stax.Relu()
    outputs = 10 if op == "empirical" else 1
    init_fn, apply_fn, kernel_fn = stax.serial(*[stax.Dense(512, 1.5, 0.05), act] * 3,
                                               stax.Dense(outputs, 1.5, 0.05))
    if lib == "nt":
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((n1, 100))
    x2 = None if n2 is None else rng.standard_normal((n2, 100))
    if op in ("kernel", "erf"):
        call = lambda: ready(kernel_fn(x1, x2, ("nngp", "ntk")))
    elif op in ("gp", "ensemble"):
        y = rng.standard_normal((n1, 10))
        k_dd = ready(kernel_fn(x1, None, ("nngp", "ntk")))
        k_td = ready(kernel_fn(x2, x1, ("nngp", "ntk")))
        k_tt = ready(kernel_fn(x2, None, ("nngp", "ntk")))
        if op == "gp":
            call = lambda: ready(lib_.predict.gp_inference(k_dd, y, diag_reg=1e-4)(
                ("nngp", "ntk"), k_td, k_tt))
        else:    # the ensemble's kernel_fn hands out the precomputed kernels
            table = {(n1, None): k_dd, (n2, n1): k_td, (n2, None): k_tt}
            def lookup(a, b=None, get=None, **kw):
                k = table[(len(a), None if b is None else len(b))]
                return getattr(k, get) if isinstance(get, str) else k
            call = lambda: ready(lib_.predict.gradient_descent_mse_ensemble(
                lookup, x1, y, diag_reg=1e-4)(None, x2, "ntk", compute_cov=True))
    else:   # the finite network's empirical NTK
        if lib == "nt":
            _, params = init_fn(jax.random.PRNGKey(0), x1.shape)
            ntk = jax.jit(lib_.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=3))
        else:
            _, params = init_fn(0, x1.shape)
            ntk = lib_.empirical_ntk_fn(apply_fn)
        call = lambda: ready(ntk(x1, None, params))

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
    def nbytes(o):     # results are arrays or (nested) namedtuples of arrays
        return sum(map(nbytes, o)) if isinstance(o, tuple) else np.asarray(o).nbytes
    out = call()                                   # compile / warm up
    size = nbytes(out)
    del out
    before = status()["VmRSS"]
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak": status()["VmHWM"] - before,
                      "output": size / 2 ** 20}))
""")


def run(python, lib, op, n1, n2):
    """{seconds, peak, output} of one case in a fresh process, or None."""
    proc = subprocess.run([python, "-c", CHILD, lib, op, str(n1), json.dumps(n2)],
                          capture_output=True, text=True)
    if proc.returncode:
        print(f"{lib} {op} {n1} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    ap.add_argument("--quick", action="store_true", help="half the sizes")
    args = ap.parse_args(argv)
    print("| case | N1 | N2 | output MiB | infkernel s | NT jit s | infkernel peak MiB "
          "| NT peak MiB | NT / ik peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (op, n1, n2) in (QUICK if args.quick else CASES).items():
        ik = run(sys.executable, "ik", op, n1, n2)
        nt = run(args.nt_python, "nt", op, n1, n2) if args.nt_python else None
        if ik is None:
            continue
        cells = [name, n1, n2 or "", f"{ik['output']:.0f}", f"{ik['seconds']:.2f}",
                 f"{nt['seconds']:.2f}" if nt else "", f"{ik['peak']:.0f}",
                 f"{nt['peak']:.0f}" if nt else "",
                 f"{nt['peak'] / max(ik['peak'], 1):.1f}" if nt else ""]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
