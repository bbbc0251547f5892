"""NTK of a physics-informed network for the 1-D Poisson equation.

    u_xx = f on (0, 1),  u(0) = u(1) = 0,  exact solution u = sin(aπx),
    f = −(aπ)² sin(aπx),  a = 1, 2, 4.

At infinite width gradient flow on Σ_b ½(u − g)² + Σ_r ½(u_xx − f)² moves the
errors e = [u − g; u_xx − f] by  de/dt = −K Λ e  with the PINN NTK
K = [[K_uu, K_ur], [K_ru, K_rr]] (Wang, Yu & Perdikaris 2020).  The script
plots the spectra of K, K_uu and K_rr, the trace-ratio loss weights, how the
initial error of each target spreads over K's eigenvectors, and the predicted
loss curves without and with the weights.

    python examples/pinn_poisson.py [n_collocation] [out_dir]
"""
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import infkernel as ik  # noqa: E402
from infkernel import pinn  # noqa: E402


def loss_curve(K, lam, e0, times):
    """½ Σ λ_i e_i(t)², e(t) = exp(−KΛ t) e0, via the eigenvectors of Λ^½KΛ^½."""
    r = np.sqrt(lam)
    w, V = np.linalg.eigh(r[:, None] * K * r[None, :])
    c = V.T @ (r * e0)
    return np.array([0.5 * np.sum((np.exp(-np.maximum(w, 0) * t) * c) ** 2) for t in times])


def main(n=100, out_dir="."):
    net = ik.serial(ik.Dense(512, W_std=1.0, b_std=1.0), ik.Tanh(),
                    ik.Dense(512, W_std=1.0, b_std=1.0), ik.Tanh(),
                    ik.Dense(1, W_std=1.0, b_std=1.0))
    xb = np.array([[0.0], [1.0]])
    xr = np.linspace(0.0, 1.0, n)[:, None]
    blocks = pinn.ntk_blocks(net, {"u": (xb, pinn.identity()), "r": (xr, pinn.partial(0, 2))})
    spec = pinn.spectra(blocks)
    weights = pinn.trace_weights(blocks)
    cond = pinn.condition_numbers(blocks)
    K = blocks.matrix
    lam = np.concatenate([np.full(2, weights["u"]), np.full(n, weights["r"])])
    _, V = np.linalg.eigh(K)
    V = V[:, ::-1]                                  # decreasing eigenvalues
    times = np.logspace(-6, 0, 60)

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for name, label in (("K", "K"), ("u", "K_uu"), ("r", "K_rr")):
        e = spec[name]
        e_pos = e[e > 1e-16 * e[0]]          # below: rounding of eigvalsh
        ax[0, 0].semilogy(np.arange(1, len(e_pos) + 1), e_pos, ".-", label=label)
    ax[0, 0].set(title="NTK eigenvalues (infinite width)", xlabel="index", ylabel="eigenvalue")
    ax[0, 0].legend()
    ax[0, 1].bar(list(weights), list(weights.values()))
    ax[0, 1].set(title="trace-ratio weights λ_i = Σ Tr K_jj / Tr K_ii", yscale="log")
    curves = {}
    for a in (1, 2, 4):
        f = -(a * np.pi) ** 2 * np.sin(a * np.pi * xr[:, 0])
        e0 = -np.concatenate([np.zeros(2), f])      # the network starts at u = 0 on average
        proj = np.abs(V.T @ e0) / np.linalg.norm(e0)
        ax[1, 0].semilogy(np.arange(1, len(proj) + 1), np.maximum(proj, 1e-17), ".",
                          label=f"a = {a}")
        plain = loss_curve(K, np.ones_like(lam), e0, times)
        weighted = loss_curve(K, lam, e0, times)
        curves[a] = (plain, weighted)
        ax[1, 1].loglog(times, plain / plain[0], label=f"a = {a}")
        ax[1, 1].loglog(times, weighted / weighted[0], "--", label=f"a = {a}, weighted")
    ax[1, 0].set(title="|⟨v_i, e₀⟩| / |e₀| in K's eigenbasis", xlabel="eigen-index")
    ax[1, 0].legend()
    ax[1, 1].set(title="predicted loss (gradient flow, infinite width)", xlabel="t",
                 ylabel="L(t)/L(0)")
    ax[1, 1].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "pinn_poisson.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"trace weights: {weights}")
    print("condition numbers: " + ", ".join(f"{k}: {v:.3g}" for k, v in cond.items()))
    print(f"wrote {path}")
    return {"weights": weights, "spectra": spec, "condition": cond, "curves": curves,
            "png": path}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100,
         sys.argv[2] if len(sys.argv) > 2 else ".")
