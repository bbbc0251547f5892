"""Numeric activations: time and accuracy of the NNGP+NTK of a depth-3 tanh
network, side by side with a plain fixed-grid Gauss–Hermite recursion and
(optionally) neural-tangents' ``ElementwiseNumerical(tanh, deg)``.

    python benchmarks/bench_numeric.py [--n 1000] [--d 100]
        [--nt-python /work/ntenv/bin/python]

Errors are max |K - K_ref| / max |K_ref| over the full matrices, where K_ref
is the same recursion on a 40-point subset with every expectation by the
nested graded Gauss–Legendre quadrature alone (no Mehler series).  neural-tangents runs in a
subprocess of the given interpreter and is never imported here.  A second table times
``net.diag`` on 20,000 points and the peak memory of a tall 20,000 x 100 cross kernel; a
third the same network on unnormalised inputs (x times 10 … 10⁴: first-layer variances
to ~2e8, where tanh's table continues as its constant tails), against the inputs as drawn,
for d = 100 and d = 10 (larger correlations: more entries need the quadrature fallback);
a fourth 1-D inputs, where nearly every entry needs it.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

import infkernel as ik
from infkernel import _cpu

W_STD, B_STD, DEPTH = 1.5, 0.05, 3
# Every timed call first drops the diagonal passes that earlier calls kept
# (``_cpu._numeric_run``), so that it pays for its own: _cpu._numeric_runs.clear().


def network():
    layers = []
    for _ in range(DEPTH):
        layers += [ik.Dense(512, W_STD, B_STD), ik.Tanh()]
    return ik.serial(*layers, ik.Dense(1, W_STD, B_STD))


def fixed_grid(x, deg, block=50):
    """NNGP/NTK by the recursion with a fixed deg×deg Gauss–Hermite product rule
    (what neural-tangents' ElementwiseNumerical does), NumPy, blocked."""
    z, w = np.polynomial.hermite_e.hermegauss(deg)
    w = w / w.sum()
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    W = np.outer(w, w).ravel()
    Z1, Z2 = Z1.ravel(), Z2.ravel()
    q = W_STD ** 2 * x @ x.T / x.shape[1] + B_STD ** 2
    th = q.copy()
    for _ in range(DEPTH):
        d = np.sqrt(np.diag(q))
        k = np.empty_like(q)
        kd = np.empty_like(q)
        for r0 in range(0, q.shape[0], block):
            rho = np.clip(q[r0:r0 + block] / np.outer(d[r0:r0 + block], d), -1, 1)[..., None]
            u = d[r0:r0 + block, None, None] * Z1
            v = d[None, :, None] * (rho * Z1 + np.sqrt(1 - rho ** 2) * Z2)
            k[r0:r0 + block] = (np.tanh(u) * np.tanh(v)) @ W
            kd[r0:r0 + block] = ((1 - np.tanh(u) ** 2) * (1 - np.tanh(v) ** 2)) @ W
        q = W_STD ** 2 * k + B_STD ** 2
        th = q + W_STD ** 2 * kd * th
    return q, th


def reference(x):
    """The recursion with every expectation by the nested graded Gauss–Legendre
    quadrature alone (``_numeric.pair_quadrature``, validated against adaptive
    scipy quadrature in the tests), bypassing the Mehler series."""
    from infkernel._numeric import duals_quadrature
    tab = ik.Tanh().tables[0]
    q = W_STD ** 2 * x @ x.T / x.shape[1] + B_STD ** 2
    th = q.copy()
    n = len(x)
    for _ in range(DEPTH):
        d = np.sqrt(np.diag(q))
        k, kd = np.empty_like(q), np.empty_like(q)
        for i in range(n):
            for j in range(i, n):
                rho = 1.0 if i == j else q[i, j] / (d[i] * d[j])
                k[i, j], kd[i, j] = duals_quadrature(tab, d[i], d[j], rho)
                k[j, i], kd[j, i] = k[i, j], kd[i, j]
        q = W_STD ** 2 * k + B_STD ** 2
        th = q + W_STD ** 2 * kd * th
    return q, th


_NT_SCRIPT = r"""
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from neural_tangents import stax
W, B, depth, deg = {W}, {B}, {depth}, {deg}
layers = []
for _ in range(depth):
    layers += [stax.Dense(512, W, B), stax.ElementwiseNumerical(jnp.tanh, deg=deg)]
_, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W, B))
x = np.load(sys.argv[1])
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
k = kernel_fn(x[:8], None, ("nngp", "ntk")); jax.block_until_ready(k)   # compile
t = time.perf_counter()
k = kernel_fn(x, None, ("nngp", "ntk")); jax.block_until_ready(k)
t = time.perf_counter() - t
np.save(sys.argv[2], np.stack([np.asarray(k.nngp), np.asarray(k.ntk)]))
print(json.dumps(dict(time=t)))
"""


def run_nt(python, x, deg):
    with tempfile.TemporaryDirectory() as tmp:
        xin, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npy")
        np.save(xin, x)
        script = _NT_SCRIPT.format(W=W_STD, B=B_STD, depth=DEPTH, deg=deg)
        res = subprocess.run([python, "-c", script, xin, out], capture_output=True,
                             text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        t = json.loads(res.stdout.strip().splitlines()[-1])["time"]
        k = np.load(out)
    return t, k[0], k[1]


def err(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--nt-python", default=None)
    ap.add_argument("--nt-deg", type=int, nargs="*", default=[25, 50])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((a.n, a.d))
    net = network()
    net.kernel(x[:16])  # compile
    ts = []
    for _ in range(a.repeat):
        _cpu._numeric_runs.clear()
        t = time.perf_counter()
        k = net.kernel(x)
        ts.append(time.perf_counter() - t)
    t_ik = min(ts)
    m = min(a.n, 40)       # reference on a 40-point subset
    kref, tref = reference(x[:m])
    rows = [(f"infkernel, N={a.n}", t_ik, err(k.nngp[:m, :m], kref),
             err(k.ntk[:m, :m], tref))]
    if a.nt_python:
        for deg in a.nt_deg:
            t, kn, tn = run_nt(a.nt_python, x, deg)
            rows.append((f"neural-tangents ElementwiseNumerical deg={deg}, N={a.n}", t,
                         err(kn[:m, :m], kref), err(tn[:m, :m], tref)))
    ms = min(a.n, 200)     # the NumPy fixed grid is slow: timed on a subset
    t = time.perf_counter()
    net.kernel(x[:ms])
    t_sub = time.perf_counter() - t
    rows.append((f"infkernel, N={ms}", t_sub, err(k.nngp[:m, :m], kref),
                 err(k.ntk[:m, :m], tref)))
    for deg in (25, 50):
        t = time.perf_counter()
        kg, tg = fixed_grid(x[:ms], deg)
        t = time.perf_counter() - t
        rows.append((f"fixed-grid Gauss-Hermite deg={deg} (NumPy), N={ms}", t,
                     err(kg[:m, :m], kref), err(tg[:m, :m], tref)))
    print(f"depth-{DEPTH} tanh, W_std={W_STD}, b_std={B_STD}, N1=N2={a.n}, d={a.d}, "
          f"NNGP+NTK, float64; errors on a {m}x{m} block vs nested quadrature;"
          " speed-up relative to the infkernel row of the same N")
    print(f"{'method':58s} {'time [s]':>9s} {'speed-up':>9s} {'NNGP err':>9s} {'NTK err':>9s}")
    for name, t, e1, e2 in rows:
        base = t_sub if name.endswith(f"N={ms}") else t_ik
        print(f"{name:58s} {t:9.3f} {t / base:8.0f}x {e1:9.1e} {e2:9.1e}")
    return a


def unnormalised(n=300, d=100, m=30, nt_python=None):
    """Raw-scale inputs: time against scale 1 (same run), errors on an m-point
    block against ``reference`` and, with ``nt_python``, neural-tangents'
    ``ElementwiseNumerical(tanh, deg=25)`` on the same block."""
    x = np.random.default_rng(2).standard_normal((n, d))
    net = network()
    rows = []
    for scale in (1.0, 10.0, 100.0, 1e4):
        xs = x * scale
        ts = []
        for _ in range(2):
            _cpu._numeric_runs.clear()
            t = time.perf_counter()
            k = net.kernel(xs)
            ts.append(time.perf_counter() - t)
        kref, tref = reference(xs[:m])
        nt = (run_nt(nt_python, xs[:m], 25)[1:] if nt_python else None)
        rows.append((scale, min(ts), err(k.nngp[:m, :m], kref), err(k.ntk[:m, :m], tref),
                     nt and (err(nt[0], kref), err(nt[1], tref))))
    print(f"\ndepth-{DEPTH} tanh, N = {n}, d = {d}, inputs times a scale (first-layer variance "
          f"{W_STD}^2 scale^2); errors on a {m}x{m} block vs nested quadrature")
    print(f"{'scale':>7s} {'time [s]':>9s} {'vs 1':>6s} {'NNGP err':>9s} {'NTK err':>9s}"
          f" {'NT-25 NNGP':>11s} {'NT-25 NTK':>10s}")
    for scale, t, e1, e2, nt in rows:
        ntc = f" {nt[0]:11.1e} {nt[1]:10.1e}" if nt else ""
        print(f"{scale:7g} {t:9.3f} {t / rows[0][1]:5.1f}x {e1:9.1e} {e2:9.1e}{ntc}")


def low_dimensional(n=300, m=30, nt_python=None):
    """1-D inputs on [-3, 3] (correlations near 1: most entries need the
    nested quadrature, with its Gauss–Hermite inner rules): time and errors on
    an m-point block against ``reference``, and neural-tangents' deg-25 grid
    on the same N if ``nt_python``."""
    x = np.linspace(-3.0, 3.0, n)[:, None]
    net = network()
    net.kernel(x[::max(1, n // 20)])
    t = time.perf_counter()
    k = net.kernel(x)
    t_ik = time.perf_counter() - t
    block = np.ix_(*2 * [np.arange(0, n, n // m)[:m]])   # every (n // m)-th point
    kref, tref = reference(x[block[0][:, 0]])
    rows = [("infkernel", t_ik, err(k.nngp[block], kref), err(k.ntk[block], tref))]
    if nt_python:
        t, kn, tn = run_nt(nt_python, x, 25)
        rows.append(("neural-tangents ElementwiseNumerical deg=25", t,
                     err(kn[block], kref), err(tn[block], tref)))
    print(f"\ndepth-{DEPTH} tanh, N = {n} points on [-3, 3] (d = 1); errors on a {m}x{m} "
          "block vs nested quadrature")
    print(f"{'method':46s} {'time [s]':>9s} {'NNGP err':>9s} {'NTK err':>9s}")
    for name, t, e1, e2 in rows:
        print(f"{name:46s} {t:9.3f} {e1:9.1e} {e2:9.1e}")


def diagonal_and_tall(n=20000, d=100, short=100):
    """``net.diag`` alone against the Gram's diagonal pass (which also forms
    the per-point Mehler features), and the peak memory of a tall cross
    kernel (n x short) in units of its output, measured in this run."""
    import tracemalloc
    x = np.random.default_rng(1).standard_normal((n, d))
    net = network()
    prog = net.program(d)
    net.diag(x[:8])
    _cpu.point_tables(prog, x[:8])

    def best(fn):
        ts = []
        for _ in range(3):
            _cpu._numeric_runs.clear()
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)
    t_diag = best(lambda: net.diag(x))
    t_pass = best(lambda: _cpu.point_tables(prog, x))
    net.kernel(x[:8], x[:short])
    _cpu._numeric_runs.clear()
    tracemalloc.start()
    t = time.perf_counter()
    k = net.kernel(x, x[:short])
    t_tall = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = k.nngp.nbytes + k.ntk.nbytes
    print(f"\ndepth-{DEPTH} tanh, N = {n}, d = {d}")
    print(f"{'case':44s} {'time [s]':>9s}  note")
    print(f"{'net.diag(x)':44s} {t_diag:9.3f}  {t_pass / t_diag:.1f}x faster than the "
          f"Gram's diagonal pass ({t_pass:.3f} s, with Mehler features)")
    print(f"{f'kernel(x, x[:{short}]), NNGP + NTK':44s} {t_tall:9.3f}  peak traced memory "
          f"{peak / out:.2f}x the output ({out / 2**20:.0f} MiB)")


_NT_THIN = r"""
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from neural_tangents import stax
W, B, depth = {W}, {B}, {depth}
layers = []
for _ in range(depth):
    layers += [stax.Dense(512, W, B), stax.ElementwiseNumerical(jnp.tanh, deg=25)]
kernel_fn = jax.jit(stax.serial(*layers, stax.Dense(1, W, B))[2], static_argnames="get")
X, xs = np.load(sys.argv[1]), np.load(sys.argv[2])
ts = []
for i in range(len(xs)):
    t = time.perf_counter()
    jax.block_until_ready(kernel_fn(xs[i:i + 1], X, ("nngp", "ntk")))
    ts.append(time.perf_counter() - t)
print(json.dumps(dict(first=ts[0], rest=min(ts[1:]))))
"""


def thin_repeated(n=2000, d=100, calls=10, nt_python=None):
    """k(x*, X) one test point at a time against a fixed set X (prediction,
    Bayesian optimisation): the first call runs the diagonal pass of X, later
    calls reuse it (``_cpu._numeric_run``)."""
    rng = np.random.default_rng(2)
    X, xs = rng.standard_normal((n, d)), rng.standard_normal((calls, d))
    net = network()
    net.kernel(xs[:1], X[:8])
    _cpu._numeric_runs.clear()
    ts = []
    for i in range(calls):
        t = time.perf_counter()
        net.kernel(xs[i:i + 1], X)
        ts.append(time.perf_counter() - t)
    print(f"\ndepth-{DEPTH} tanh, k(x*, X) for {calls} test points x* one at a time, "
          f"X of {n} points, d = {d}")
    print(f"{'method':58s} {'1st [s]':>9s} {'later [s]':>9s}")
    print(f"{'infkernel':58s} {ts[0]:9.4f} {min(ts[1:]):9.4f}")
    if nt_python:
        with tempfile.TemporaryDirectory() as tmp:
            paths = [os.path.join(tmp, f) for f in ("X.npy", "xs.npy")]
            np.save(paths[0], X)
            np.save(paths[1], xs)
            res = subprocess.run([nt_python, "-c", _NT_THIN.format(W=W_STD, B=B_STD,
                                                                   depth=DEPTH), *paths],
                                 capture_output=True, text=True,
                                 env=dict(os.environ, JAX_PLATFORMS="cpu"))
            if res.returncode:
                raise RuntimeError(res.stderr[-2000:])
            nt = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{'neural-tangents ElementwiseNumerical deg=25 (jit)':58s} "
              f"{nt['first']:9.4f} {nt['rest']:9.4f}   later calls: "
              f"{nt['rest'] / min(ts[1:]):.0f}x infkernel's")


if __name__ == "__main__":
    args = main()
    thin_repeated(nt_python=args.nt_python)
    diagonal_and_tall()
    for d in (100, 10):
        unnormalised(d=d, nt_python=args.nt_python)
    low_dimensional(nt_python=args.nt_python)
