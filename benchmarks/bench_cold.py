"""First-call (cold-start) time: the numba kernels compiled for the kinds a
network uses against the kernels of all kinds, measured in the same run.

    python benchmarks/bench_cold.py [--cases relu2,relu,tanh,monomial,both] [--nt-python PY]

Each case runs in a fresh process with the on-disk cache off (IK_NOCACHE=1):
import, one symmetric and one cross kernel of a small depth-2 network.  The
baseline forces the kernels of all kinds (``_cpu._diag_pass``/``_gram_tiles``)
for the same network.  Prints seconds and the ratio baseline / routed; with
``--nt-python`` (a neural-tangents 0.6.5 environment) also neural-tangents'
time for the same work in a fresh process (import, two calls of
``kernel_fn``), where it has the activations (no Tanh).
"""
import argparse
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time
    t0 = time.perf_counter()
    import numpy as np
    import infkernel as ik
    from infkernel import _cpu
    acts = {"relu2": [ik.Relu(), ik.Relu()], "relu": [ik.Relu(), ik.Erf()],
            "tanh": [ik.Tanh(), ik.Relu()],
            "monomial": [ik.Monomial(3), ik.Relu()], "both": [ik.Tanh(), ik.Monomial(2)]}
    case, full = sys.argv[1], sys.argv[2] == "full"
    if full:
        _cpu._kernels = lambda program: (_cpu._diag_pass, _cpu._gram_tiles)
    a, b = acts[case]
    net = ik.serial(ik.Dense(64), a, ik.Dense(64), b, ik.Dense(1))
    x = np.random.default_rng(0).standard_normal((40, 5))
    net.kernel(x, None)
    net.kernel(x, x[:7])
    print(time.perf_counter() - t0)
""")

#: the cases whose activations neural-tangents has (no Tanh)
NT_CASES = ("relu2", "relu", "monomial")

NT_SCRIPT = textwrap.dedent("""
    import sys, time
    t0 = time.perf_counter()
    import numpy as np
    from jax import config
    config.update("jax_enable_x64", True)
    from neural_tangents import stax
    acts = {"relu2": [stax.Relu(), stax.Relu()], "relu": [stax.Relu(), stax.Erf()],
            "monomial": [stax.Monomial(3), stax.Relu()]}
    a, b = acts[sys.argv[1]]
    _, _, kernel_fn = stax.serial(stax.Dense(64), a, stax.Dense(64), b, stax.Dense(1))
    x = np.random.default_rng(0).standard_normal((40, 5))
    np.asarray(kernel_fn(x, None, ("nngp", "ntk")).ntk)
    np.asarray(kernel_fn(x, x[:7], ("nngp", "ntk")).ntk)
    print(time.perf_counter() - t0)
""")

LABELS = {"relu2": "ReLU + ReLU", "relu": "ReLU + Erf", "tanh": "Tanh + ReLU (numeric)",
          "monomial": "Monomial(3) + ReLU", "both": "Tanh + Monomial(2)"}


def first_call(case, kernels):
    env = dict(os.environ, IK_NOCACHE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, case, kernels], env=env,
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def nt_first_call(python, case):
    out = subprocess.run([python, "-c", NT_SCRIPT, case], check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="relu2,relu,tanh,monomial,both")
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    args = ap.parse_args()
    print("| network | routed kernels s | all-kinds kernels s | ratio | neural-tangents s |")
    print("|---|---|---|---|---|")
    for case in args.cases.split(","):
        routed = first_call(case, "routed")
        full = first_call(case, "full")
        nt = (f"{nt_first_call(args.nt_python, case):.1f}"
              if args.nt_python and case in NT_CASES else "")
        print(f"| {LABELS[case]} | {routed:.1f} | {full:.1f} | {full / routed:.2f} | {nt} |",
              flush=True)


if __name__ == "__main__":
    main()
