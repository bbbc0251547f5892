"""NTK blocks of a physics-informed network for the 1-D wave equation.

    u_tt = 4 u_xx on (t, x) ∈ (0, 1)²,   u(t, 0) = u(t, 1) = 0,
    u(0, x) = g(x),  u_t(0, x) = 0

(Wang, Yu & Perdikaris 2020, §5.3).  Three loss terms: "u" (boundary and
initial values), "u_t" (initial velocity) and "r" (residual of
∂_t² − 4∂_x²).  The script computes every block of the infinite-width PINN
NTK, the trace-ratio weights, and plots the blocks' spectra and the spectrum
of Λ^½ K Λ^½ without and with the weights.

    python examples/pinn_wave.py [n] [out_dir]
"""
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import infkernel as ik  # noqa: E402
from infkernel import pinn  # noqa: E402


def main(n=30, out_dir="."):
    net = ik.serial(ik.Dense(512, W_std=1.0, b_std=1.0), ik.Tanh(),
                    ik.Dense(512, W_std=1.0, b_std=1.0), ik.Tanh(),
                    ik.Dense(1, W_std=1.0, b_std=1.0))
    rng = np.random.default_rng(0)
    s = np.linspace(0.0, 1.0, n)
    # points are (t, x)
    x_u = np.concatenate([np.column_stack([s, np.zeros(n)]),       # x = 0
                          np.column_stack([s, np.ones(n)]),        # x = 1
                          np.column_stack([np.zeros(n), s])])      # t = 0
    x_ut = np.column_stack([np.zeros(n), s])
    x_r = rng.uniform(0.0, 1.0, (3 * n, 2))
    wave = pinn.partial(0, 2) - 4.0 * pinn.partial(1, 2)
    blocks = pinn.ntk_blocks(net, {"u": (x_u, pinn.identity()),
                                   "u_t": (x_ut, pinn.partial(0)),
                                   "r": (x_r, wave)})
    spec = pinn.spectra(blocks)
    weights = pinn.trace_weights(blocks)
    cond = pinn.condition_numbers(blocks)
    plain = pinn.weighted_spectrum(blocks, {a: 1.0 for a in blocks.names})
    weighted = pinn.weighted_spectrum(blocks, weights)

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in blocks.names:
        e = spec[name]
        e_pos = e[e > 1e-16 * e[0]]          # below: rounding of eigvalsh
        ax[0].semilogy(np.arange(1, len(e_pos) + 1), e_pos, ".-",
                       label=f"K_{name},{name}  (Tr {e.sum():.3g})")
    ax[0].set(title="block spectra", xlabel="index", ylabel="eigenvalue")
    ax[0].legend(fontsize=8)
    ax[1].bar(list(weights), list(weights.values()))
    ax[1].set(title="trace-ratio weights", yscale="log")
    ax[2].semilogy(plain[plain > 1e-16 * plain[0]], label="Λ = I")
    ax[2].semilogy(weighted[weighted > 1e-16 * weighted[0]], label="trace-ratio Λ")
    ax[2].set(title="spectrum of Λ^½ K Λ^½", xlabel="index")
    ax[2].legend()
    fig.tight_layout()
    path = os.path.join(out_dir, "pinn_wave.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"trace weights: {weights}")
    print("condition numbers: " + ", ".join(f"{k}: {v:.3g}" for k, v in cond.items()))
    print(f"wrote {path}")
    return {"weights": weights, "spectra": spec, "condition": cond, "png": path,
            "blocks": blocks}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30,
         sys.argv[2] if len(sys.argv) > 2 else ".")
