"""Finite-width networks against theory: convergence of the empirical kernels
and of gradient-descent training to their infinite-width limits.

For hidden width n (every ``Dense`` but the last gets ``out_dim = n``):

* kernels: per random network, the relative errors ‖K̂ − K‖_F / ‖K‖_F of
  - the NNGP of the readout, K̂(x, x') = (W_std²/n) φ(x)·φ(x') + b_std², the
    covariance of the output given the last hidden layer (the output NNGP
    f(x)f(x') of one network is rank one and never converges), and
  - the empirical NTK Θ̂ (traced over outputs);
  both fluctuate as O(n^(−1/2)) (Hanin & Nica 2020), so the log-log slope of
  the mean error against width should be ≈ −1/2.  The fluctuations hide a
  wrong analytic kernel of a few per cent, so the mean kernel over the
  networks, m, is tested too: ‖m − K‖_F against its noise level
  ‖s‖_F (s the entries' standard errors: E‖m − E m‖² = ‖s‖²), which differs
  from E m − K only by the finite-width bias O(depth/n) (Yaida 2020).  The
  verdict ``consistent`` asks ‖m − K‖ ≤ 4‖s‖ at the largest width.
* training: the finite network trained by full-batch gradient descent on
  L = ‖F − Y‖²/(2·Y.size) against the linearised (infinite-width) prediction
  from the same initial outputs F₀ (Lee et al. 2019):

      F(t) = Y + (I − η Θ/size)^t (F₀ − Y)               (discrete, default)
      F(t) = Y + exp(−η Θ t/size) (F₀ − Y)                (continuous time)
      F*(t) = F*₀ − Θ*ₓ Θ⁻¹ [I − (I − ηΘ/size)^t] (F₀ − Y)

  with Θ the analytic NTK.  The largest gap over the run shrinks as
  O(n^(−1/2)).  The discrete form is exact for the linearised model under the
  same steps; as η → 0 with ηt fixed both become neural-tangents'
  ``gradient_descent_mse``.
"""
import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from . import empirical as E
from ._checks import KernelRangeError, count, entropy, flag, real, real_array
from .hyper import _map_dense, dense_layers
from .kernel import check_inputs
from .layers import Dense, Network

__all__ = ["verify", "VerifyResult", "add_verify_arguments", "run_verify"]


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`.  Errors are means over networks, ``*_se``
    their standard errors; ``slopes`` are least-squares slopes of log(error)
    against log(width) (NaN with fewer than two distinct widths)."""
    widths: List[int]
    errors: Dict[str, np.ndarray]          # "nngp", "ntk": (len(widths),)
    errors_se: Dict[str, np.ndarray]
    slopes: Dict[str, float]               # "nngp", "ntk", "train_gap"
    #: ‖m − K‖_F / ‖K‖_F of the mean kernel m over the networks, and its noise
    #: level ‖s‖_F / ‖K‖_F (s: the entries' standard errors), per width
    mean_errors: Dict[str, np.ndarray] = field(default_factory=dict)
    mean_noise: Dict[str, np.ndarray] = field(default_factory=dict)
    #: the mean kernels at the largest width within 4 noise levels of K
    consistent: Optional[bool] = None
    train_widths: List[int] = field(default_factory=list)
    train_gap: Optional[np.ndarray] = None      # (len(train_widths),)
    train_gap_se: Optional[np.ndarray] = None
    steps: Optional[np.ndarray] = None          # recorded steps
    loss_network: Optional[np.ndarray] = None   # (len(train_widths), len(steps)), seed 0
    loss_theory: Optional[np.ndarray] = None
    learning_rate: Optional[float] = None
    figure: Optional[str] = None

    def table(self):
        """The results as a fixed-width text table."""
        lines = [f"{'width':>7}  {'NNGP rel. err':>20}  {'NTK rel. err':>20}  "
                 f"{'mean NNGP (noise)':>19}  {'mean NTK (noise)':>19}  {'train gap':>20}"]
        gaps = dict(zip(self.train_widths, zip(
            self.train_gap if self.train_gap is not None else [],
            self.train_gap_se if self.train_gap_se is not None else [])))
        rows = dict((w, i) for i, w in enumerate(self.widths))
        for w in sorted(set(self.widths) | set(gaps)):
            i, g = rows.get(w), gaps.get(w)
            cells = []
            for name in ("nngp", "ntk"):
                cells.append("-" if i is None else
                             f"{self.errors[name][i]:.3e} ± {self.errors_se[name][i]:.1e}")
            for name in ("nngp", "ntk"):
                cells.append("-" if i is None or name not in self.mean_errors else
                             f"{self.mean_errors[name][i]:.2e} ({self.mean_noise[name][i]:.1e})")
            cells.append(f"{g[0]:.3e} ± {g[1]:.1e}" if g else "-")
            lines.append(f"{w:>7}  {cells[0]:>20}  {cells[1]:>20}  {cells[2]:>19}  "
                         f"{cells[3]:>19}  {cells[4]:>20}")
        slopes = ", ".join(f"{k} {v:+.3f}" for k, v in self.slopes.items() if np.isfinite(v))
        lines.append(f"fitted log-log slopes (expected ≈ -0.5): {slopes}" if slopes else
                     "fitted log-log slopes: none (they need two or more distinct widths)")
        if self.consistent is not None:
            lines.append(f"mean kernels at width {max(self.widths)}: "
                         + ("within 4 noise levels of the analytic kernels: consistent"
                            if self.consistent else "beyond 4 noise levels of the analytic "
                            "kernels: NOT consistent"))
        return "\n".join(lines)


def with_width(net, width):
    """``net`` with every ``Dense`` but the output one (the last, outside any
    ``parallel`` branch) given ``out_dim=width``, those in branches included."""
    paths = dense_layers(net)
    if not paths or not isinstance(paths[-1], (int, np.integer)):
        raise ValueError("verify: the network must end with a Dense layer outside any "
                         "parallel branch (its output layer)")
    if paths[-1] != len(net.layers) - 1:
        after = ", ".join(repr(layer) for layer in net.layers[paths[-1] + 1:])
        raise ValueError("verify: the network must end with its output Dense layer, whose "
                         f"outputs the finite networks' kernels are measured on; {after} "
                         "follows it")
    if len(paths) < 2:
        raise ValueError("verify: the network needs at least one hidden Dense layer "
                         "(a Dense before the output Dense) whose width can vary")
    left = iter(range(len(paths) - 1, -1, -1))     # Dense layers after this one
    return net.with_layers(_map_dense(net.layers, lambda layer: dataclasses.replace(
        layer, out_dim=width) if next(left) else layer))


def _slope(widths, values):
    w, v = np.asarray(widths, float), np.asarray(values, float)
    ok = v > 0
    if len(np.unique(w[ok])) < 2:       # a slope needs two distinct widths
        return float("nan")
    return float(np.polyfit(np.log(w[ok]), np.log(v[ok]), 1)[0])


def _kernel_errors(net, x, n_samples, seed, batch_size):
    """Per-network relative errors of the readout NNGP and of the NTK."""
    layers = net.layers
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, Dense))
    out = net.layers[last]
    ana = net.kernel(x, x, backend="cpu")
    norms = {g: np.linalg.norm(getattr(ana, g)) for g in ("nngp", "ntk")}
    errs = {"nngp": [], "ntk": []}
    sums = {g: [0.0, 0.0] for g in errs}          # Σ (K̂ − K), Σ (K̂ − K)² entrywise
    if batch_size is None:
        batch_size = E._auto_batch(net, x.shape[0], x.shape[0], x.shape[1])
    for params in E.param_batches(net, x.shape[1], n_samples, seed, batch_size):
        f, inputs = E._forward(layers, params, x[None])
        h = inputs[last]
        nngp = (out.W_std ** 2 / h.shape[-1]) * E._gram(h, h)
        if out.b_std is not None:
            nngp = nngp + out.b_std ** 2
        ntk = E._ntk(layers, params, f.shape[-1], inputs)
        for g, k in (("nngp", nngp), ("ntk", ntk)):
            d = k - getattr(ana, g)
            errs[g].extend(np.sqrt((d * d).sum(axis=(1, 2))) / max(norms[g], 1e-300))
            sums[g][0] = sums[g][0] + d.sum(axis=0)
            sums[g][1] = sums[g][1] + (d * d).sum(axis=0)
    mean, noise = {}, {}
    for g, (s1, s2) in sums.items():
        m = s1 / n_samples
        var = np.maximum(s2 - n_samples * m * m, 0.0) / (n_samples - 1)
        scale = max(norms[g], 1e-300)
        mean[g] = np.linalg.norm(m) / scale
        noise[g] = np.sqrt(var.sum() / n_samples) / scale
    return {g: np.asarray(v) for g, v in errs.items()}, mean, noise


def _linearised(theta, theta_test, f0, f0_test, y, eta, steps, continuous):
    """Analytic outputs at ``steps`` on train (and test) points (module docstring)."""
    size = y.size
    lam, V = np.linalg.eigh(theta)
    lam = np.maximum(lam, 0.0)
    a = eta / size
    t = np.asarray(steps, float)[:, None]
    if continuous:
        decay = np.exp(-a * lam * t)                                   # (T, N)
        # (1 - decay)/λ, → a t as λ → 0
        inv = np.where(lam > 0, -np.expm1(-a * lam * t) / np.where(lam > 0, lam, 1), a * t)
    else:
        base = 1.0 - a * lam
        decay = np.sign(base) ** t * np.abs(base) ** t
        inv = np.where(lam > 0, (1.0 - decay) / np.where(lam > 0, lam, 1), a * t)
    r0 = V.T @ (f0 - y)                                                # (N, k)
    f_train = y[None] + np.einsum("nm,tm,mk->tnk", V, decay, r0)
    f_test = None
    if theta_test is not None:
        f_test = f0_test[None] - np.einsum("sn,nm,tm,mk->tsk", theta_test, V, inv, r0)
    return f_train, f_test


def _step(p, g, eta):
    """p − η g over params nested as ``init_fn`` makes them (tuples of arrays,
    None for a missing bias, () for layers without parameters)."""
    if isinstance(p, tuple):
        return tuple(_step(a, b, eta) for a, b in zip(p, g))
    return None if p is None else p - eta * g


def _train(net, params, x, y, x_test, eta, steps):
    """Full-batch gradient descent on ‖F − Y‖²/(2·size); outputs at ``steps``."""
    params = tuple(params)
    record = set(int(s) for s in steps)
    f_tr, f_te = [], []
    size = y.size
    diverged = ValueError(f"verify: training diverged at learning rate {eta:.3g}; pass a "
                          "smaller learning_rate")
    for step in range(int(max(steps)) + 1):
        try:
            f, grads = E.value_and_grad(net, params, x, lambda F: (F - y) / size)
        except KernelRangeError:
            raise diverged from None
        if step in record:
            f_tr.append(f)
            if x_test is not None:
                f_te.append(net.apply_fn(params, x_test))
        with np.errstate(over="ignore", invalid="ignore"):
            params = _step(params, tuple(grads), eta)
        if not all(np.isfinite(a).all() for a in E._leaves(params)):
            raise diverged
    return np.array(f_tr), (np.array(f_te) if x_test is not None else None)


def _widths(name, widths):
    """Hidden widths as a non-empty list of positive ints (an int: one)."""
    if isinstance(widths, (int, np.integer)) and not isinstance(widths, bool):
        widths = [widths]
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"verify: {name} must be a positive integer or a sequence of them, "
                        f"got {widths!r}")
    widths = [count(f"{name} entry", w, 1) for w in widths]
    if not widths:
        raise ValueError(f"verify: {name} must not be empty")
    return widths


def _default_targets(x, k, seed):
    rng = np.random.default_rng(np.random.SeedSequence((*seed, 7)))
    u = rng.standard_normal((x.shape[1], k))
    u /= np.linalg.norm(u, axis=0)
    proj = x @ u / max(np.sqrt(np.mean(np.sum(x * x, axis=1))), 1e-300)
    return np.sin(2.0 * proj)


def verify(net, x, widths, n_samples=32, *, seed=0, y=None, x_test=None, steps=200,
           learning_rate=None, train_widths=None, train_seeds=2, continuous=False,
           plot=None, batch_size=None):
    """Compare finite networks of several widths with the analytic kernels.

    Args:
      net: an ``ik.serial`` network with at least one hidden ``Dense``; its
        hidden widths are replaced by each entry of ``widths``.
      x: (N, d) inputs (training inputs for the dynamics).
      widths: hidden widths, positive integers.
      n_samples: random networks per width for the kernel errors (>= 2).
      seed: a non-negative int (or a PRNG key) for the networks and default y.
      y: (N, k) training targets (default sin(2·x·u/‖x‖_rms) along random
        unit directions u).  x_test: optional (M, d) points also tracked.
      steps: gradient-descent steps (0 to skip the dynamics).
      learning_rate: η; default 0.5·size/λ_max(Θ) (half the linearised
        stability limit 2·size/λ_max, of the analytic NTK at each width).
      train_widths: widths trained (default ``widths``); train_seeds networks
        each.  continuous: compare with the continuous-time prediction.
      plot: path of the figure to write (PNG unless its extension says
        otherwise; ".png" is added to a path without one; None: no figure).

    Returns:
      a :class:`VerifyResult`; ``print(result.table())`` for the table.
    """
    if not isinstance(net, Network):
        raise TypeError(f"verify: net must be an ik.serial(...) network, got {type(net).__name__}")
    widths = _widths("widths", widths)
    n_samples = count("n_samples", n_samples, 2)
    # a tuple of non-negative ints: (seed,) or a PRNG key's values
    key = entropy("verify: seed", seed)
    seed = tuple(key) if isinstance(key, list) else (key,)
    continuous = flag("verify: continuous", continuous)
    steps = count("steps", steps, 0)
    train_seeds = count("train_seeds", train_seeds, 1)
    train_widths = widths if train_widths is None else _widths("train_widths", train_widths)
    batch_size = None if batch_size is None else count("batch_size", batch_size, 1)
    x = check_inputs(x, "x")
    if len(x) == 0:
        raise ValueError("verify: x has no points")
    x_test = None if x_test is None else check_inputs(x_test, "x_test", x.shape[1])
    if net.input_maps:   # parameter-free: the finite networks share them
        x = net.map_inputs(x)
        x_test = None if x_test is None else net.map_inputs(x_test, "x_test")
        net = net.body
    nets = {w: with_width(net, w) for w in sorted(set(widths) | set(train_widths))}
    for w in nets.values():
        E._check_layers(w)
    k_out = [L for L in net.layers if isinstance(L, Dense)][-1].width
    if y is None:
        y = _default_targets(x, k_out, seed)
    y = real_array("verify: y", y, finite=True)
    if y.ndim == 1:
        y = y[:, None]
    if y.shape != (x.shape[0], k_out):
        raise ValueError(f"verify: y must be a ({x.shape[0]}, {k_out}) array, "
                         f"got shape {y.shape}")
    if learning_rate is not None:
        learning_rate = real("verify: learning_rate", learning_rate, lower=0, strict=True)
    if plot is not None:
        if not isinstance(plot, (str, os.PathLike)) or os.path.isdir(plot):
            raise ValueError(f"verify: plot must be a file path, got {plot!r}")
        plot = os.fspath(plot)
        if not os.path.splitext(plot)[1]:
            plot += ".png"
        d = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(d):
            raise ValueError(f"verify: folder of plot={plot!r} does not exist")

    # the analytic NTKs of the trained widths, and the default step sizes
    ths, etas = {}, {}
    for w in train_widths if steps > 0 else ():
        ths[w] = nets[w].kernel(x, x, get="ntk", backend="cpu")
        lam_max = np.linalg.eigvalsh(ths[w])[-1]
        if learning_rate is None and not lam_max > 0:
            raise ValueError(f"verify: the NTK at width {w} is zero (largest eigenvalue "
                             f"{lam_max:.3g}): the network does not train; give it nonzero "
                             "weights or inputs")
        etas[w] = learning_rate if learning_rate is not None else 0.5 * y.size / lam_max

    # --- kernels ------------------------------------------------------------
    errs, errs_se, means, noises = ({"nngp": [], "ntk": []} for _ in range(4))
    for i, w in enumerate(widths):
        e, mean, noise = _kernel_errors(nets[w], x, n_samples, (*seed, 1, w), batch_size)
        for g in errs:
            errs[g].append(e[g].mean())
            errs_se[g].append(e[g].std(ddof=1) / np.sqrt(e[g].size))
            means[g].append(mean[g])
            noises[g].append(noise[g])
    top = int(np.argmax(widths))
    res = VerifyResult(widths=list(widths),
                       errors={g: np.array(v) for g, v in errs.items()},
                       errors_se={g: np.array(v) for g, v in errs_se.items()},
                       slopes={g: _slope(widths, v) for g, v in errs.items()},
                       mean_errors={g: np.array(v) for g, v in means.items()},
                       mean_noise={g: np.array(v) for g, v in noises.items()},
                       consistent=all(means[g][top] <= 4 * noises[g][top] for g in means))

    # --- training dynamics ---------------------------------------------------
    if steps > 0:
        rec = np.unique(np.round(np.geomspace(1, steps, 60)).astype(int))
        rec = np.concatenate([[0], rec])
        gaps, gaps_se, loss_nn, loss_th = [], [], [], []
        scale = np.sqrt(np.mean(y * y)) or 1.0
        for w in train_widths:
            nw, th, eta = nets[w], ths[w], etas[w]
            th_test = None if x_test is None else nw.kernel(x_test, x, get="ntk", backend="cpu")
            g_w = []
            for r in range(train_seeds):
                rng = np.random.default_rng(np.random.SeedSequence((*seed, 2, w, r)))
                _, params = nw.init_fn(rng, (-1, x.shape[1]))
                f_nn, f_nn_test = _train(nw, params, x, y, x_test, eta, rec)
                f_th, f_th_test = _linearised(th, th_test, f_nn[0],
                                              None if x_test is None else f_nn_test[0],
                                              y, eta, rec, continuous)
                diff = (f_nn - f_th).reshape(len(rec), -1)
                if x_test is not None:
                    diff = np.concatenate([diff, (f_nn_test - f_th_test).reshape(len(rec), -1)], 1)
                g_w.append(np.sqrt(np.mean(diff * diff, axis=1)).max() / scale)
                if r == 0:
                    loss_nn.append(0.5 * np.mean((f_nn - y) ** 2, axis=(1, 2)))
                    loss_th.append(0.5 * np.mean((f_th - y) ** 2, axis=(1, 2)))
            gaps.append(np.mean(g_w))
            gaps_se.append(np.std(g_w, ddof=1) / np.sqrt(len(g_w)) if len(g_w) > 1 else np.nan)
        res.train_widths = list(train_widths)
        res.train_gap, res.train_gap_se = np.array(gaps), np.array(gaps_se)
        res.slopes["train_gap"] = _slope(train_widths, gaps)
        res.steps, res.loss_network, res.loss_theory = rec, np.array(loss_nn), np.array(loss_th)
        res.learning_rate = float(etas[train_widths[-1]])

    if plot is not None:
        _plot(res, plot)
        res.figure = plot
    return res


def _plot(res, path):
    # Agg canvas directly: no pyplot state, the user's backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 3 if res.train_gap is not None else 1
    fig = Figure(figsize=(5.2 * panels, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    w = np.asarray(res.widths, float)
    for g, c, label in (("nngp", "C0", "NNGP (readout)"), ("ntk", "C1", "NTK")):
        ax.errorbar(w, res.errors[g], yerr=res.errors_se[g], fmt="o", color=c,
                    label=f"{label}: slope {res.slopes[g]:+.2f}")
        if np.isfinite(res.slopes[g]) and len(w) > 1:
            ok = res.errors[g] > 0
            p = np.polyfit(np.log(w[ok]), np.log(res.errors[g][ok]), 1)
            ax.plot(w, np.exp(np.polyval(p, np.log(w))), "-", color=c, lw=1)
    if len(w) > 1:
        ref = res.errors["ntk"][0] * (w / w[0]) ** -0.5
        ax.plot(w, ref, ":", color="gray", label="width$^{-1/2}$")
    ax.set(xscale="log", yscale="log", xlabel="hidden width",
           ylabel="relative error $\\|\\hat K - K\\|_F / \\|K\\|_F$",
           title="empirical vs analytic kernels")
    ax.legend(fontsize=8)
    if panels == 3:
        ax = axes[1]
        t = np.maximum(res.steps, 0.5)
        for i, tw in enumerate(res.train_widths):
            c = f"C{i % 10}"
            ax.plot(t, res.loss_network[i], "-", color=c, label=f"width {tw}")
            ax.plot(t, res.loss_theory[i], "--", color=c, lw=1)
        ax.plot([], [], "--", color="gray", label="linearised (analytic NTK)")
        ax.set(xscale="log", yscale="log", xlabel="gradient-descent step",
               ylabel="training loss", title="training dynamics (seed 0)")
        ax.legend(fontsize=8)
        ax = axes[2]
        tw = np.asarray(res.train_widths, float)
        ax.errorbar(tw, res.train_gap, yerr=res.train_gap_se, fmt="o", color="C3",
                    label=f"slope {res.slopes['train_gap']:+.2f}")
        if len(tw) > 1:
            ax.plot(tw, res.train_gap[0] * (tw / tw[0]) ** -0.5, ":", color="gray",
                    label="width$^{-1/2}$")
        ax.set(xscale="log", yscale="log", xlabel="hidden width",
               ylabel="max$_t$ RMS(f$_{net}$ - f$_{theory}$) / RMS(y)",
               title="trained network vs theory")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------
# command line
def _positive_ints(text):
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return vals


def add_verify_arguments(parser):
    """Options of ``infkernel verify`` on an argparse (sub)parser."""
    from .cli import activation_option
    parser.add_argument("--activation", type=activation_option, default="relu",
                        help="activation, as in --arch: relu, erf, gelu, leakyrelu(0.1), "
                             "monomial(3), ...")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers (default 2)")
    parser.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    parser.add_argument("--b-std", dest="b_std", type=float, default=0.05)
    parser.add_argument("--parameterization", choices=("ntk", "standard"), default="ntk")
    parser.add_argument("--widths", type=_positive_ints, default=[64, 128, 256, 512, 1024],
                        help="comma-separated hidden widths (default 64,128,256,512,1024)")
    parser.add_argument("--n-samples", type=int, default=32,
                        help="random networks per width for the kernel errors (>= 2)")
    parser.add_argument("--data", help=".npy or .csv file of (N, d) inputs (default: random points)")
    parser.add_argument("--n-points", type=int, default=16, help="random inputs (default 16)")
    parser.add_argument("--dim", type=int, default=8, help="input dimension of random inputs")
    parser.add_argument("--steps", type=int, default=200, help="gradient-descent steps (0: skip)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default 0.5 * N / lambda_max(analytic NTK)")
    parser.add_argument("--train-seeds", type=int, default=2)
    parser.add_argument("--continuous", action="store_true",
                        help="compare with the continuous-time prediction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="verify.png", help="PNG path ('' for none)")
    return parser


def run_verify(args):
    """``infkernel verify``: prints the table, writes the figure; returns 0,
    or 1 when the mean kernels are not consistent with the analytic ones."""
    from .layers import serial
    if args.depth < 1:
        raise ValueError(f"--depth must be >= 1, got {args.depth}")
    if args.data:
        from .cli import load_features
        x = load_features(args.data)
    else:
        if args.n_points < 2 or args.dim < 1:
            raise ValueError("--n-points must be >= 2 and --dim >= 1")
        x = np.random.default_rng(entropy("--seed", args.seed)).standard_normal(
            (args.n_points, args.dim))
    layers = []
    for _ in range(args.depth):
        layers += [Dense(args.widths[0], W_std=args.W_std, b_std=args.b_std,
                         parameterization=args.parameterization), args.activation]
    layers.append(Dense(1, W_std=args.W_std, b_std=args.b_std,
                        parameterization=args.parameterization))
    res = verify(serial(*layers), x, args.widths, args.n_samples, seed=args.seed,
                 steps=args.steps, learning_rate=args.learning_rate,
                 train_seeds=args.train_seeds, continuous=args.continuous,
                 plot=args.out or None)
    print(res.table())
    if res.figure:
        print(f"figure written to {res.figure}")
    return 0 if res.consistent else 1
