"""PINN NTK blocks: closed forms by per-entry jets against the array path, and
quadrature activations by the moment form of the inner integral (tanh,
logistic, SiLU) against the general per-node evaluation.

    python benchmarks/bench_pinn.py [--n 100,200] [--nt-python PY]

Closed forms (first table): the symmetric Laplacian–Laplacian block (NNGP and
NTK) of N = 2n points for a 2-D network with two hidden layers,
``pinn.kernel`` warm (best of 2), against the same block from
``_jet_kernel``, the NumPy recursion on arrays of jets that networks with
quadrature activations use (row chunks of the upper triangle, one thread).

With ``--nt-python`` (a neural-tangents 0.6.5 environment) a middle table:
the blocks of a 2-D Poisson problem (boundary values, Laplacian residuals) for
closed-form activations (Erf, Gelu, Sin), against JAX autodiff of
neural-tangents' ``kernel_fn`` (nested Hessians, vmapped, jit-compiled; warm
best of 2 and the first call with its compilation).

Quadrature activations (last table): 1-D Poisson problem as in
``examples/pinn_poisson.py``: two boundary points (identity) and n collocation
points (second derivative), two hidden layers of the activation,
``pinn.ntk_blocks`` warm (best of 2).  The baseline forces the general path
(``_tanh_coefficients`` returning no coefficients).

Finite width (last table): the empirical PINN NTK K_rr of one tanh network
(2-D, Dense(512)-Tanh-Dense(512)-Tanh-Dense(1), Laplacian residuals at n
points), ``pinn.empirical_kernel`` warm (best of 2), against the same kernel
with φ's derivatives from Cauchy integrals (the general path, which the
built-in tanh, logistic, softplus and SiLU used before), and with
``--nt-python`` against JAX (that environment's jax): the Jacobian of the
Laplacian of the network output with respect to all parameters
(``vmap(grad(trace(hessian)))``), then J Jᵀ, jit-compiled, the same
parameters.

Each table prints seconds, the speed-up and the largest difference of the
blocks relative to the largest entry.
"""
import argparse
import os
import subprocess
import tempfile
import textwrap
import time

import numpy as np

import infkernel as ik
from infkernel import pinn


def network(act):
    """The benchmarks' network: Dense(512)-φ-Dense(512)-φ-Dense(1), W_std = b_std = 1."""
    return ik.serial(ik.Dense(512, W_std=1.0, b_std=1.0), act,
                     ik.Dense(512, W_std=1.0, b_std=1.0), act,
                     ik.Dense(1, W_std=1.0, b_std=1.0))


def blocks(act, n):
    net = network(act)
    ops = {"u": (np.array([[0.0], [1.0]]), pinn.identity()),
           "r": (np.linspace(0.0, 1.0, n)[:, None], pinn.partial(0, 2))}
    best, out = float("inf"), None
    for _ in range(2):
        t0 = time.perf_counter()
        out = pinn.ntk_blocks(net, ops).matrix
        best = min(best, time.perf_counter() - t0)
    return best, out


NT_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np, jax, jax.numpy as jnp
    from jax import config
    config.update("jax_enable_x64", True)
    from neural_tangents import stax
    data = np.load(sys.argv[1])
    act = {"Erf": stax.Erf(), "Gelu": stax.Gelu(), "Sin": stax.Sin()}[sys.argv[2]]
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.0, 1.0), act, stax.Dense(512, 1.0, 1.0),
                                  act, stax.Dense(1, 1.0, 1.0))
    k = lambda a, b: kernel_fn(a[None], b[None], "ntk")[0, 0]
    lap1 = lambda a, b: jnp.trace(jax.hessian(k, 0)(a, b))
    lap2 = lambda a, b: jnp.trace(jax.hessian(k, 1)(a, b))
    lap12 = lambda a, b: jnp.trace(jax.hessian(lap1, 1)(a, b))
    grid = lambda f: jax.jit(jax.vmap(jax.vmap(f, (None, 0)), (0, None)))
    uu, ur, rr = grid(k), grid(lap2), grid(lap12)
    xb, xr = data["xb"], data["xr"]
    def blocks():
        a, b, c = (np.asarray(uu(xb, xb)), np.asarray(ur(xb, xr)), np.asarray(rr(xr, xr)))
        return np.block([[a, b], [b.T, c]])
    t0 = time.perf_counter(); blocks(); first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter(); out = blocks(); best = min(best, time.perf_counter() - t0)
    np.save(sys.argv[3], out)
    print(best, first)
""")


def laplacian_block(act, n):
    """(per-entry jets s, array path s, max diff) for the 2-D Laplacian block."""
    net = network(act)
    x = np.random.default_rng(0).uniform(-0.7, 0.7, (n, 2))
    L = pinn.laplacian(2)
    pinn.kernel(net, x[:3], None, L, L)    # compile
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        ours = pinn.kernel(net, x, None, L, L, get=None)
        best = min(best, time.perf_counter() - t0)
    g = L.directional(2)
    t0 = time.perf_counter()
    ref = np.zeros((2, n, n))
    for lo in range(0, n, 25):
        part = pinn._jet_kernel(net, x[lo:lo + 25], x[lo:], g, g, 2, 2, ("nngp", "ntk"), {})
        ref[0, lo:lo + 25, lo:], ref[1, lo:lo + 25, lo:] = part["nngp"], part["ntk"]
    array = time.perf_counter() - t0
    diff = max(np.abs(np.triu(a) - np.triu(b)).max() / np.abs(b).max()
               for a, b in zip(ours, ref))
    return best, array, diff


def poisson_2d(act, n, nt_python):
    """(infkernel s, neural-tangents warm s, first s, max diff) for the 2-D
    Poisson blocks with n boundary and n residual points."""
    net = network(act)
    rng = np.random.default_rng(0)
    t = rng.uniform(0.0, 2.0 * np.pi, n)
    xb, xr = np.column_stack([np.cos(t), np.sin(t)]), rng.uniform(-0.7, 0.7, (n, 2))
    ops = {"u": (xb, pinn.identity()), "r": (xr, pinn.laplacian(2))}
    pinn.ntk_blocks(net, {"u": (xb[:3], pinn.identity()), "r": (xr[:3], pinn.laplacian(2))})
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        ours = pinn.ntk_blocks(net, ops).matrix
        best = min(best, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "x.npz"), xb=xb, xr=xr)
        res = subprocess.run([nt_python, "-c", NT_SCRIPT, os.path.join(tmp, "x.npz"),
                              act.name, os.path.join(tmp, "k.npy")],
                             capture_output=True, text=True, check=True)
        nt_warm, nt_first = map(float, res.stdout.split()[-2:])
        theirs = np.load(os.path.join(tmp, "k.npy"))
    return best, nt_warm, nt_first, np.abs(ours - theirs).max() / np.abs(theirs).max()


JAX_EMPIRICAL = textwrap.dedent("""
    import sys, time, numpy as np, jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    d = np.load(sys.argv[1])
    p = [(jnp.asarray(d[f"W{i}"]), jnp.asarray(d[f"b{i}"])) for i in range(3)]
    def f(p, z):
        h = z
        for i, (W, b) in enumerate(p):
            h = h @ W / jnp.sqrt(W.shape[0]) + b       # W_std = b_std = 1, NTK parameterization
            h = jnp.tanh(h) if i < len(p) - 1 else h
        return h[0]
    lap = lambda p, z: jnp.trace(jax.hessian(f, 1)(p, z))
    @jax.jit
    def K(p, xs):
        J = jax.vmap(jax.grad(lap), (None, 0))(p, xs)
        J = jnp.concatenate([a.reshape(xs.shape[0], -1) for a in jax.tree_util.tree_leaves(J)], 1)
        return J @ J.T
    t0 = time.perf_counter(); np.asarray(K(p, d["x"])); first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter(); k = np.asarray(K(p, d["x"])); best = min(best, time.perf_counter() - t0)
    np.save(sys.argv[2], k)
    print(best, first)
""")


def empirical(n, nt_python):
    """(s, Cauchy-derivative s, JAX warm s, JAX first s, max diffs) for the
    finite-width tanh K_rr at n points."""
    net = network(ik.Tanh())
    _, params = net.init_fn(0, (-1, 2))
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (n, 2))
    L = pinn.laplacian(2)

    def timed():
        pinn.empirical_kernel(net, params, x[:3], None, L, L)
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            k = pinn.empirical_kernel(net, params, x, None, L, L)
            best = min(best, time.perf_counter() - t0)
        return best, k
    ours, k = timed()
    exact = pinn._act_derivs      # the baseline: every derivative by Cauchy integrals
    pinn._act_derivs = lambda act, z, higher, nmax=3: pinn._cauchy(
        pinn._complex_fn(act)[0], z, nmax)
    try:
        cauchy, k_cauchy = timed()
    finally:
        pinn._act_derivs = exact
    diffs = [np.abs(k - k_cauchy).max() / np.abs(k).max()]
    jax_warm = jax_first = None
    if nt_python:
        with tempfile.TemporaryDirectory() as tmp:
            dense = [p for p in params if p]
            np.savez(os.path.join(tmp, "p.npz"), x=x,
                     **{f"W{i}": W for i, (W, _) in enumerate(dense)},
                     **{f"b{i}": b for i, (_, b) in enumerate(dense)})
            res = subprocess.run([nt_python, "-c", JAX_EMPIRICAL, os.path.join(tmp, "p.npz"),
                                  os.path.join(tmp, "k.npy")],
                                 capture_output=True, text=True, check=True)
            jax_warm, jax_first = map(float, res.stdout.split()[-2:])
            theirs = np.load(os.path.join(tmp, "k.npy"))
        diffs.append(np.abs(k - theirs).max() / np.abs(theirs).max())
    return ours, cauchy, jax_warm, jax_first, diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100,200")
    ap.add_argument("--nt-python", help="python of a neural-tangents 0.6.5 environment")
    args = ap.parse_args()
    sizes = [2 * int(n) for n in args.n.split(",")]
    print("| activation | N | entries/s | jets s | array path s | speed-up | max diff |")
    print("|---|---|---|---|---|---|---|")
    for act in (ik.Erf(), ik.Gelu(), ik.Sin(), ik.Gaussian(), ik.Gabor()):
        for n in sizes:
            ours, array, diff = laplacian_block(act, n)
            print(f"| {act!r} | {n} | {n * (n + 1) / 2 / ours:.3g} | {ours:.3f} | {array:.3f} | "
                  f"{array / ours:.1f} | {diff:.1e} |", flush=True)
    print()
    if args.nt_python:
        print("| activation | n + n | infkernel s | NT jit s | NT / ik | NT 1st s | max diff |")
        print("|---|---|---|---|---|---|---|")
        for act in (ik.Erf(), ik.Gelu(), ik.Sin()):
            for n in map(int, args.n.split(",")):
                ours, warm, first, diff = poisson_2d(act, n, args.nt_python)
                print(f"| {act.name} | {n} + {n} | {ours:.3f} | {warm:.3f} | {warm / ours:.1f} | "
                      f"{first:.1f} | {diff:.1e} |", flush=True)
        print()
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
    print()
    print("| n | empirical s | Cauchy derivatives s | speed-up | JAX jit s | JAX / ik "
          "| JAX 1st s | max diff (Cauchy, JAX) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (2 * int(n) for n in args.n.split(",")):
        ours, cauchy, jw, jf, diffs = empirical(n, args.nt_python)
        jax_cols = "— | — | —" if jw is None else f"{jw:.3f} | {jw / ours:.1f} | {jf:.1f}"
        print(f"| {n} | {ours:.3f} | {cauchy:.3f} | {cauchy / ours:.1f} | {jax_cols} | "
              + ", ".join(f"{d:.1e}" for d in diffs) + " |", flush=True)


if __name__ == "__main__":
    main()
