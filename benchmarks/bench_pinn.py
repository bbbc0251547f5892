"""PINN NTK blocks of quadrature activations: the moment form of the inner
integral (tanh, logistic, SiLU) against the general per-node evaluation.

    python benchmarks/bench_pinn.py [--n 100,200]

1-D Poisson problem as in ``examples/pinn_poisson.py``: two boundary points
(identity) and n collocation points (second derivative), two hidden layers of
the activation, ``pinn.ntk_blocks`` warm (best of 2).  The baseline forces the
general path (``_tanh_coefficients`` returning no coefficients).  Prints
seconds, the speed-up and the largest difference of the blocks relative to
the largest entry.
"""
import argparse
import time

import numpy as np

import infkernel as ik
from infkernel import pinn


def blocks(act, n):
    net = ik.serial(ik.Dense(512, W_std=1.0, b_std=1.0), act,
                    ik.Dense(512, W_std=1.0, b_std=1.0), act,
                    ik.Dense(1, W_std=1.0, b_std=1.0))
    ops = {"u": (np.array([[0.0], [1.0]]), pinn.identity()),
           "r": (np.linspace(0.0, 1.0, n)[:, None], pinn.partial(0, 2))}
    best, out = float("inf"), None
    for _ in range(2):
        t0 = time.perf_counter()
        out = pinn.ntk_blocks(net, ops).matrix
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100,200")
    args = ap.parse_args()
    moments = pinn._tanh_coefficients
    print("| activation | n | moments s | per-node s | speed-up | max diff |")
    print("|---|---|---|---|---|---|")
    for act in (ik.Tanh(), ik.Sigmoid(), ik.Silu()):
        for n in map(int, args.n.split(",")):
            pinn._tanh_coefficients = moments
            blocks(act, 4)  # compile
            fast, k_fast = blocks(act, n)
            pinn._tanh_coefficients = lambda kind, na: np.zeros((0, 0, 0))
            plain, k_plain = blocks(act, n)
            pinn._tanh_coefficients = moments
            diff = np.abs(k_fast - k_plain).max() / np.abs(k_plain).max()
            print(f"| {act!r} | {n} | {fast:.3f} | {plain:.3f} | {plain / fast:.1f} | "
                  f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
