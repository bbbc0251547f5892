"""First-call (cold-start) time: the numba kernels compiled for the kinds a
network uses against the kernels of all kinds, measured in the same run.

    python benchmarks/bench_cold.py [--cases relu,tanh,monomial,both]

Each case runs in a fresh process with the on-disk cache off (IK_NOCACHE=1):
import, one symmetric and one cross kernel of a small depth-2 network.  The
baseline forces the kernels of all kinds (``_cpu._diag_pass``/``_gram_tiles``)
for the same network.  Prints seconds and the ratio baseline / routed.
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
    acts = {"relu": [ik.Relu(), ik.Erf()], "tanh": [ik.Tanh(), ik.Relu()],
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

LABELS = {"relu": "ReLU + Erf", "tanh": "Tanh + ReLU (numeric)",
          "monomial": "Monomial(3) + ReLU", "both": "Tanh + Monomial(2)"}


def first_call(case, kernels):
    env = dict(os.environ, IK_NOCACHE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, case, kernels], env=env,
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="relu,tanh,monomial,both")
    args = ap.parse_args()
    print("| network | routed kernels s | all-kinds kernels s | ratio |")
    print("|---|---|---|---|")
    for case in args.cases.split(","):
        routed = first_call(case, "routed")
        full = first_call(case, "full")
        print(f"| {LABELS[case]} | {routed:.1f} | {full:.1f} | {full / routed:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
