"""Spectral analysis of kernels: what a network learns quickly.

Under gradient flow on the squared loss, an infinitely wide network's training
residual evolves as r(t) = exp(−η Θ t) r(0) (Jacot et al. 2018), so the
component of the target along an eigenvector v_k of the NTK Gram matrix Θ
(eigenvalue λ_k) is learned as 1 − exp(−η λ_k t); with gradient descent steps
the factor is (1 − η λ_k)^t.  This is the loss ½‖f − y‖² (a sum over the
n training points); ``predict`` and ``NTKRegressor`` follow neural-tangents'
mean ½‖f − y‖²/n, whose time t is t/n here.  For a stationary kernel on a
uniform periodic 1-D grid, Θ is circulant: its eigenvectors are the Fourier
modes and its eigenvalues the discrete Fourier transform of one row (Tancik
et al. 2020, §4).

    spec = spectral.stationary_spectrum(net, x)            # x: uniform grid on [0, 1)
    err = spectral.predicted_error_by_frequency(spec.eigvals, y, lr, steps)
"""
import os
from collections import namedtuple

import numpy as np

from ._checks import flag, one_kernel, real, real_array
from .empirical import _as_network

#: ``freqs`` (cycles per unit length, ``np.fft.fftfreq`` order) and the
#: matching eigenvalues ``eigvals`` of a circulant Gram matrix.
Spectrum = namedtuple("Spectrum", ["freqs", "eigvals"])


def _square(K, name="K"):
    K = real_array(name, K, finite=True)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"{name} must be a square (N, N) matrix, N >= 1, got shape {K.shape}")
    return K


def _symmetric(K, symmetry_tol):
    """``K`` checked square and symmetric to ``symmetry_tol``·max|K|."""
    K = _square(K)
    symmetry_tol = real("symmetry_tol", symmetry_tol, lower=0)
    scale = max(float(np.abs(K).max(initial=0.0)), np.finfo(float).tiny)
    asym = float(np.abs(K - K.T).max(initial=0.0))
    if asym > symmetry_tol * scale:
        raise ValueError(f"K is not symmetric (max |K - K^T| = {asym:.3g}); pass K(x, x)")
    return K


def gram_eigh(K, symmetry_tol=1e-10):
    """Eigendecomposition of a symmetric Gram matrix, eigenvalues descending.

    Returns (eigvals (N,), eigvecs (N, N)) with K = V diag(λ) Vᵀ.  A matrix
    whose asymmetry max|K − Kᵀ| exceeds ``symmetry_tol``·max|K| is refused
    (a cross Gram matrix K(x1, x2) has no such decomposition)."""
    K = _symmetric(K, symmetry_tol)
    w, v = np.linalg.eigh(0.5 * (K + K.T))
    return w[::-1].copy(), v[:, ::-1].copy()


def kernel_eigh(net, x, get="ntk", **kwargs):
    """Eigendecomposition (descending) of ``net``'s Gram matrix on points ``x``."""
    net, get = _as_network(net), one_kernel(get)
    return gram_eigh(net.kernel(x, None, get, **kwargs))


def check_uniform_grid(x, name="x", rtol=1e-9):
    """(x0, h, n) of a uniform 1-D grid x_k = x0 + k h, k < n; x may be (n,)
    or (n, 1).  The grid is read as one period [x0, x0 + n h) of a periodic
    domain (the end point x0 + n h is not part of it).  Spacings that differ
    from their mean by more than ``rtol``·h (rounding of the grid points) give
    a ValueError naming ``name``."""
    rtol = real("rtol", rtol, lower=0)
    a = real_array(name, x, finite=True)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D grid of shape (n,) or (n, 1), got shape "
                         f"{np.shape(x)}")
    if a.size < 2:
        raise ValueError(f"{name} must have at least 2 points, got {a.size}")
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.diff(a)
        h = float(d.mean())
    if not np.isfinite(h):
        raise ValueError(f"{name}: the grid spacing overflows float64 (x from {a[0]:.3g} to "
                         f"{a[-1]:.3g})")
    # grid points are rounded: allow rtol·h plus a few ulps of the coordinates
    slack = rtol * h + 4.0 * np.finfo(float).eps * float(np.abs(a).max())
    if not h > 0 or np.abs(d - h).max() > slack:
        k = int(np.abs(d - h).argmax())
        raise ValueError(f"{name} must be a uniform increasing grid (x_k = x_0 + k h) for the "
                         f"FFT spectrum; spacing {k} is {d[k]:.6g}, the mean spacing is "
                         f"{h:.6g}; use gram_eigh(K) for non-uniform points")
    return float(a[0]), h, a.size


def fft_spectrum(row, x=None, stationarity_tol=1e-8):
    """Eigenvalues of the circulant matrix with first row ``row``:
    λ_k = Σ_j row_j e^{−2πi jk/n} (real: the row is symmetric, row_j = row_{n−j}).

    ``x``: the uniform periodic grid the row was computed on (checked; sets
    the frequency unit), or None for frequencies in cycles per period.  A row
    that is not symmetric to within ``stationarity_tol``·max|row| cannot come
    from a stationary kernel on a periodic grid: ValueError."""
    r = real_array("row", row, finite=True)
    if r.ndim != 1 or r.size < 2:
        raise ValueError(f"row must be a 1-D array of at least 2 values, got shape {r.shape}")
    stationarity_tol = real("stationarity_tol", stationarity_tol, lower=0)
    n = r.size
    h = 1.0 / n
    if x is not None:
        _, h, nx = check_uniform_grid(x, "x")
        if nx != n:
            raise ValueError(f"x has {nx} points but row has {n} values")
    mirror = np.roll(r[::-1], 1)  # row_{n-j}
    scale = max(float(np.abs(r).max()), np.finfo(float).tiny)
    if np.abs(r - mirror).max() > stationarity_tol * scale:
        raise ValueError("row is not symmetric (row_j != row_{n-j}): the kernel is not "
                         "stationary on this periodic grid, so its Gram matrix is not "
                         "circulant; use gram_eigh(K)")
    with np.errstate(over="ignore", invalid="ignore"):
        lam = np.fft.fft(r).real
    if not np.isfinite(lam).all():
        raise ValueError("row: its Fourier transform overflows float64 (entries up to "
                         f"{np.abs(r).max():.3g}); rescale the kernel")
    return Spectrum(np.fft.fftfreq(n, d=h), lam)


def stationary_spectrum(net, x, get="ntk", stationarity_tol=1e-8, **kwargs):
    """FFT spectrum of ``net``'s kernel on the uniform periodic grid ``x``
    (one row K(x_0, ·), O(N) kernel entries instead of O(N²) and an O(N³)
    eigendecomposition).  Exact when the kernel is stationary and periodic
    with the grid's period (e.g. integer-frequency Fourier features on [0, 1)).

    Stationarity is checked on four more rows: K(x_i, ·) must be K(x_0, ·)
    shifted by i (to ``stationarity_tol``·max|K|), else a ValueError (a plain
    MLP is not stationary: use :func:`kernel_eigh`)."""
    net, get = _as_network(net), one_kernel(get)
    stationarity_tol = real("stationarity_tol", stationarity_tol, lower=0)
    _, _, n = check_uniform_grid(x, "x")
    pts = real_array("x", x).reshape(-1, 1)
    rows = sorted({0, 1, n // 3, n // 2, (2 * n) // 3})
    K = net.kernel(pts[rows], pts, get, **kwargs)
    scale = max(float(np.abs(K).max()), np.finfo(float).tiny)
    for r, k in zip(rows, K):
        gap = float(np.abs(k - np.roll(K[0], r)).max())
        if gap > stationarity_tol * scale:
            raise ValueError(
                f"the kernel is not stationary on this periodic grid: K(x_{r}, ·) differs from "
                f"K(x_0, ·) shifted by {r} by up to {gap:.3g} (max |K| = {scale:.3g}), so its "
                "Gram matrix is not circulant; use kernel_eigh(net, x)")
    return fft_spectrum(K[0], pts, stationarity_tol)


def _times(t):
    t = np.atleast_1d(real_array("t", t))
    if t.ndim != 1 or not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("t must be a non-negative time or 1-D array of times")
    return t


def _lr(lr):
    return real("lr", lr, lower=0, strict=True)


def _eigvals(eigvals):
    lam = real_array("eigvals", eigvals)
    if lam.ndim != 1:
        raise ValueError(f"eigvals must be a 1-D array (one eigenvalue per mode), got shape "
                         f"{lam.shape}")
    if not np.isfinite(lam).all():
        raise ValueError("eigvals has NaN or Inf entries")
    return lam


def _targets(y, n):
    y = real_array("y", y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one value per point), got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("y has NaN or Inf entries")
    return y


def decay(eigvals, lr, t, discrete=False):
    """Per-mode residual factor: exp(−η λ_k t) (gradient flow) or
    (1 − η λ_k)^t (``discrete``: t gradient-descent steps).  Shape (len(t), n)."""
    lam = _eigvals(eigvals)
    lr, t = _lr(lr), _times(t)
    if flag("discrete", discrete):
        base = 1.0 - lr * lam
        if (base < 0).any() and (t != np.round(t)).any():
            raise ValueError(f"discrete=True: t counts gradient-descent steps and must be "
                             f"integers where lr·λ > 1 (here up to {lr * lam.max():.3g}: the "
                             "factor 1 − lr·λ is negative), got non-integer t")
        with np.errstate(over="ignore"):   # lr·λ > 2: the mode diverges (to inf)
            return base[None, :] ** t[:, None]
    with np.errstate(over="ignore"):
        out = np.exp(-lr * np.outer(t, lam))
    if not np.isfinite(out).all():
        raise ValueError("eigvals: exp(-lr·λ·t) overflows float64 for the negative eigenvalue "
                         f"{lam.min():.3g} (a Gram matrix's eigenvalues are >= 0 up to "
                         "rounding)")
    return out


def learning_speed(eigvals, lr, t):
    """Fraction of each mode learned by time t: 1 − exp(−η λ_k t); (len(t), n)."""
    return 1.0 - decay(eigvals, lr, t)


def predicted_residual(eigvals, eigvecs, y, lr, t, discrete=False):
    """Training residual per eigenmode, |v_kᵀ y| · factor_k(t): (len(t), n).
    The squared entries of a row sum to ‖f_t − y‖² (f_0 = 0: the mean of the
    infinite ensemble).  eigvals (n,), eigvecs (n, n) (columns), y (n,)."""
    lam = _eigvals(eigvals)
    n = lam.size
    V = real_array("eigvecs", eigvecs)
    if V.shape != (n, n):
        raise ValueError(f"eigvecs must have shape ({n}, {n}) (one column per eigenvalue), "
                         f"got {V.shape}")
    if not np.isfinite(V).all():
        raise ValueError("eigvecs has NaN or Inf entries")
    coef = V.T @ _targets(y, n)
    return np.abs(coef)[None, :] * np.abs(decay(lam, lr, t, discrete))


def predicted_error_by_frequency(eigvals, y, lr, t, discrete=False):
    """Training error per frequency on a periodic grid: |ŷ_k| · factor_k(t),
    with ŷ the unitary DFT of the target (Σ_k |ŷ_k|² = ‖y‖²) and ``eigvals``
    from :func:`fft_spectrum` (same FFT order); (len(t), n)."""
    lam = _eigvals(eigvals)
    y = _targets(y, lam.size)
    yhat = np.fft.fft(y, norm="ortho")
    return np.abs(yhat)[None, :] * np.abs(decay(lam, lr, t, discrete))


def frequency_response(K, x, freqs, symmetry_tol=1e-10):
    """Rayleigh quotients uᴴ K u / uᴴ u of the modes u = exp(2πi f x) (f in
    ``freqs``): how strongly a (not necessarily stationary) kernel on points
    x ⊂ ℝ, shape (n,) or (n, 1), weighs frequency f; for a circulant K on
    its grid these are its eigenvalues.  K = K(x, x) must be symmetric (to
    ``symmetry_tol``·max|K|, as in :func:`gram_eigh`)."""
    K = _symmetric(K, symmetry_tol)
    pts = real_array("x", x, finite=True)
    if pts.ndim == 2 and pts.shape[1] == 1:
        pts = pts[:, 0]
    if pts.ndim != 1:
        raise ValueError(f"x must be 1-D points of shape (n,) or (n, 1), got shape {pts.shape}")
    if pts.size != K.shape[0]:
        raise ValueError(f"x has {pts.size} points but K is {K.shape}")
    f = np.atleast_1d(real_array("freqs", freqs, finite=True))
    if f.ndim != 1:
        raise ValueError(f"freqs must be a number or a 1-D array, got shape {f.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        phase = 2 * np.pi * np.outer(pts, f)
    if not np.isfinite(phase).all():
        raise ValueError("x · freqs overflows float64: rescale x or freqs")
    U = np.exp(1j * phase)
    return np.real(np.einsum("ik,ij,jk->k", U.conj(), K, U)) / pts.size


def plot_spectra(path, curves, xlabel="frequency", ylabel="eigenvalue", title=None,
                 logy=True):
    """Write a PNG of spectra to ``path`` (a file name or a binary file
    object): ``curves`` maps a label to (freqs, values); negative frequencies
    are dropped."""
    if not (isinstance(path, (str, os.PathLike)) or hasattr(path, "write")):
        raise TypeError("path must be a file name (str or os.PathLike) or a binary file "
                        f"object, got {type(path).__name__}")
    logy = flag("logy", logy)
    if not isinstance(curves, dict) or not all(
            isinstance(c, (tuple, list)) and len(c) == 2 for c in curves.values()):
        raise TypeError("curves must map each label to a pair (freqs, values)")
    checked = {}
    for label, (f, v) in curves.items():
        f, v = real_array(f"curves[{label!r}] freqs", f), real_array(f"curves[{label!r}] values", v)
        if f.ndim != 1 or f.shape != v.shape:
            raise ValueError(f"curves[{label!r}]: freqs and values must be 1-D of one length, "
                             f"got shapes {f.shape} and {v.shape}")
        checked[label] = f, v
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (f, v) in checked.items():
        keep = f >= 0
        order = np.argsort(f[keep])
        vals = np.abs(v[keep][order]) if logy else v[keep][order]
        ax.plot(f[keep][order], vals, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["Spectrum", "gram_eigh", "kernel_eigh", "check_uniform_grid", "fft_spectrum",
           "stationary_spectrum", "decay", "learning_speed", "predicted_residual",
           "predicted_error_by_frequency", "frequency_response", "plot_spectra"]
