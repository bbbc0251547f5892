"""Prediction with infinite-width kernels: GP inference and gradient descent.

Semantics follow ``neural_tangents.predict`` (0.6.5) so that code ports by
changing an import:

* ``gp_inference``: the exact posterior of the NNGP (Bayesian inference in an
  infinitely wide network, Lee et al. 2018) and the distribution of an infinite
  ensemble of infinitely wide networks trained to convergence by gradient flow
  on MSE (NTK, Jacot et al. 2018; Lee et al. 2019).
* ``gradient_descent_mse_ensemble``: the same at any training time t.  With
  K = V diag(λ) Vᵀ (training kernel plus regulariser) and n = y_train.size,

      mean(t) = K_td V diag((1 - e^{-λ t/n}) / λ) Vᵀ y,

  NNGP covariance  Σ_tt - Σ_td V diag((1 - e^{-2λt/n})/λ) Vᵀ Σ_dt, and NTK
  covariance  Σ_tt + Bᵀ Σ_dd B - (Θ_td A Σ_dt + transpose), A = V f(λ) Vᵀ,
  B = A Θ_dt  (Lee et al. 2019, "Wide neural networks of any depth evolve as
  linear models under gradient descent", eqs. 15-16).
* ``gradient_descent_mse``: the function-space trajectory of one network
  from given initial outputs.
* ``gradient_descent``: the same trajectory for any loss (cross-entropy, …),
  with or without momentum, by integrating the function-space ODE
  df/dt = -η K ∂loss/∂f (Lee et al. 2019, eq. 8).

Times are continuous and in units of ``learning_rate`` (absolute time
``learning_rate * t``); ``t=None`` means t = ∞ and uses a Cholesky solve
instead of an eigendecomposition.  ``diag_reg`` is relative to the mean
diagonal of the training kernel unless ``diag_reg_absolute_scale=True``.

Linear algebra is always float64.  A training kernel singular to working
precision (a duplicated point) is solved with its pseudo-inverse, the limit
diag_reg → 0, as t = ∞ takes it (``_pinv_factors``; beyond ``_PINV_MAX``
points Cholesky factorisations escalate a diagonal jitter, with a warning
stating it); matrices that are not positive semidefinite beyond rounding are
refused.  For very large training sets, ``solver="cg"`` solves with
conjugate gradients preconditioned by a pivoted partial Cholesky factor
(Gardner et al. 2018; Wang et al. 2019, "Exact Gaussian processes on a million
data points") without a second N×N matrix.
"""
import ctypes
import math
import types
from collections import namedtuple
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import scipy.linalg as sla
from scipy import special
from scipy.integrate import OdeSolver, solve_ivp

from ._checks import KERNELS, count, flag, parse_get, real, real_array, result_type, warn

__all__ = ["gp_inference", "gradient_descent_mse_ensemble", "gradient_descent_mse",
           "gradient_descent", "ODEState", "Gaussian", "JitterWarning", "SingularKernelWarning",
           "max_learning_rate"]

#: A Gaussian: ``mean`` and ``covariance`` (an (M, M) matrix, or (M,)
#: variances for ``compute_cov="diag"``).
Gaussian = namedtuple("Gaussian", ["mean", "covariance"])

#: Test rows processed together when streaming a test set.
CHUNK = 4096


class JitterWarning(UserWarning):
    """A Cholesky factorisation needed a diagonal jitter to succeed."""


class SingularKernelWarning(UserWarning):
    """A training kernel singular to working precision was solved with its
    pseudo-inverse (the limit diag_reg → 0)."""


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------

def _check_y(y, n=None, name="y_train"):
    a = real_array(name, y, bools=True)     # one-hot targets may come as booleans
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, C), got {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows, expected {n} (one per "
                         "training point, as in the training kernel / x_train)")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1))
        raise ValueError(f"{name} has NaN or Inf in row(s) {bad[:5].tolist()}")
    return a


def _check_reg(diag_reg):
    return real("diag_reg", diag_reg, lower=0)


def _check_trace_axes(trace_axes, y):
    """neural-tangents' ``trace_axes``, the output axes that share one kernel:
    here every output channel shares it, so the targets' channel axis, (-1,)
    or (1,) for (N, C) targets, () or (-1,) for (N,) targets."""
    try:
        axes = tuple(trace_axes)
        ok = all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                 for a in axes) and (axes == (-1,) or axes == ((1,) if y.ndim == 2 else ()))
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"trace_axes must be the targets' channel axis (one kernel shared by "
                         f"the output channels): (-1,) or (1,) for (N, C) targets, () or "
                         f"(-1,) for (N,) targets; got {trace_axes!r} for y_train of shape "
                         f"{y.shape}")


def _check_lr(learning_rate):
    return real("learning_rate", learning_rate, lower=0, strict=True)


def _check_t(t):
    """None (t = ∞) or a float64 array of times >= 0 (inf allowed)."""
    if t is None:
        return None
    a = real_array("t", t, what="None or a number / array of numbers")
    if np.isnan(a).any():
        raise ValueError("t must not contain NaN")
    if (a < 0).any():
        raise ValueError(f"t must be >= 0 (training time), got min {a.min()}")
    return a


def _check_square(k, name, n=None, finite=True):
    a = real_array(name, k)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has shape {a.shape}, expected ({n}, {n})")
    if finite:
        _check_finite_blocks(a, name)
    return a


def _check_finite_blocks(a, name, rows=2048):
    """NaN or Inf is an error naming the first bad entry (blocked: no N×N temp)."""
    for r in range(0, a.shape[0], rows):
        bad = ~np.isfinite(a[r:r + rows])
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"{name} contains NaN or Inf ({a[r + i, j]} at row {r + i}, "
                             f"column {j})")


def _check_symmetric(a, name, rows=1024):
    """Relative asymmetry beyond rounding is an error (blocked: no N×N temp)."""
    scale = max(float(np.abs(np.diagonal(a)).max(initial=0.0)), 1e-300)
    n = a.shape[0]
    for r in range(0, n, rows):
        d = np.abs(a[r:r + rows] - a[:, r:r + rows].T).max(initial=0.0)
        if d > 1e-8 * scale:
            raise ValueError(f"{name} is not symmetric: max |K - Kᵀ| = {d:.3g} "
                             f"(relative {d / scale:.3g} of max diagonal, allowed 1e-8)")


def _field(k, g, name):
    """The ``g`` kernel from an array or a namedtuple with nngp/ntk fields."""
    if k is None:
        return None
    if hasattr(k, "_fields") or (hasattr(k, "nngp") or hasattr(k, "ntk")):
        v = getattr(k, g, None)
        if v is None:
            raise ValueError(f"{name} has no {g!r} field; pass a Kernel with "
                             f"{g!r} (e.g. kernel_fn(x1, x2, get=('nngp', 'ntk')))")
        return v
    return k


def _same_points(k, name):
    """The nngp / ntk fields of a Kernel ``k`` ({} for an array), or a
    ValueError when their shapes differ: they must be of the same points."""
    fields = {g: getattr(k, g) for g in KERNELS if getattr(k, g, None) is not None}
    shapes = {g: np.shape(v) for g, v in fields.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{name}'s fields must be kernels of the same points, got shapes "
                         + ", ".join(f"{g} {v}" for g, v in shapes.items()))
    return fields


def _pack(out, names, single):
    if single:
        return out[names[0]]
    return result_type("Gaussians", names)(*(out[g] for g in names))


# ---------------------------------------------------------------------------
# linear algebra
# ---------------------------------------------------------------------------

def _regularizer(k, diag_reg, absolute):
    if absolute or k.shape[0] == 0:
        return diag_reg
    return diag_reg * float(np.trace(k)) / k.shape[0]


#: Largest relative diagonal jitter (of the mean diagonal) tried by
#: ``cho_factor``; also the PSD tolerance of the eigendecomposition path.
_MAX_JITTER = 1e-6


def _not_psd(name, lam, scale, why=""):
    """The ValueError for a matrix whose smallest eigenvalue ``lam`` is below
    its PSD tolerance (``scale``: its mean diagonal)."""
    return ValueError(f"{name} is not positive semidefinite beyond rounding: smallest "
                      f"eigenvalue {lam:.3g} (relative {lam / scale:.3g} of the mean diagonal)"
                      f"{why}. Check the kernel or increase diag_reg.")


def cho_factor(a, name="k_train_train", overwrite=False, max_jitter=_MAX_JITTER,
               jitter=True):
    """Lower Cholesky factor of a symmetric PSD matrix, in scipy's
    ``(c, lower=True)`` convention (the strict upper triangle of ``c`` is not
    referenced).  ``overwrite=True`` factors a float64 F-ordered ``a`` in place.

    On failure a jitter ε·mean(diag) is added, ε = 1e-12, 1e-11, ...,
    ``max_jitter``, with a ``JitterWarning`` that states the jitter used.  If
    that is not enough, the smallest eigenvalue is computed and a ValueError
    says by how much the matrix fails to be PSD.  ``jitter=False``: a
    matrix singular to working precision raises ``np.linalg.LinAlgError``
    instead, ``a`` intact (restored when factored in place).
    """
    n = a.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    d0 = np.diagonal(a).astype(np.float64)
    scale = float(d0.mean())
    if not scale > 0.0:
        raise ValueError(f"{name} has mean diagonal {scale:.3g}: a kernel matrix needs a "
                         "positive diagonal (a zero kernel can be regularised with "
                         "diag_reg > 0 and diag_reg_absolute_scale=True)")
    if overwrite and a.dtype == np.float64 and a.flags.f_contiguous:
        work = a
    else:
        work = np.array(a, dtype=np.float64, order="F")
    eps = 0.0
    # a pivot (the part of a point's variance the earlier points leave
    # unexplained) below the factorisation's rounding level ~n·ε·K_ii is
    # indistinguishable from zero: singular to working precision (e.g. a
    # duplicated point), even when LAPACK's dpotrf succeeds
    tiny = 4.0 * n * np.finfo(np.float64).eps
    while True:
        try:
            # reads and writes only the lower triangle
            c = _potrf_lower(work)
            if np.any(np.diagonal(c) ** 2 < tiny * (d0 + eps * scale)):
                raise np.linalg.LinAlgError("pivot at the rounding level")
            break
        except (np.linalg.LinAlgError, sla.LinAlgError):
            eps = 1e-12 if eps == 0.0 else eps * 10.0
            _restore_lower(work, d0)
            if not jitter:
                raise np.linalg.LinAlgError(f"{name} is singular to working precision") from None
            if eps > max_jitter * (1 + 1e-9):
                lam = sla.eigvalsh(work, lower=False, subset_by_index=[0, 0])[0]
                raise _not_psd(name, lam, scale, f"; a jitter up to {max_jitter:g} x "
                               "mean(diag) did not help") from None
            work[np.diag_indices(n)] = d0 + eps * scale
    if eps > 0.0:
        warn(f"{name} is singular to working precision: added jitter "
             f"{eps * scale:.3g} (= {eps:g} x mean diagonal {scale:.3g}) to its "
             "diagonal for the Cholesky factorisation; consider diag_reg > 0", JitterWarning)
    return c


#: Panel width and row-chunk height of the blocked Cholesky; matrices up to
#: ``_PANEL`` go to LAPACK directly.  OpenBLAS's threaded dpotrf and dsyrk crash
#: on large matrices on some machines (seen for n >= 16,500), so no BLAS call
#: below sees a dimension above ``_CHUNK`` except NumPy's matmul, which is safe.
_PANEL = 1024
_CHUNK = 2048


def _potrf_lower(a):
    """In-place lower Cholesky of an F-ordered float64 matrix.

    Right-looking and blocked: dpotrf on each diagonal panel, dtrsm for the
    rows below it, and the trailing update A22 -= A21 A21ᵀ by row chunks
    (matmul strictly left of the chunk's diagonal block, dsyrk on the block),
    all on views of ``a`` (leading dimension n): only the lower triangle is
    read or written (also on failure, so the caller can restore it from the
    upper one), and the one temporary is a chunk of the update."""
    n = a.shape[0]
    f = _fortran()
    base = a.ctypes.data
    lda = ctypes.byref(ctypes.c_int(n))
    one, minus_one = ctypes.byref(ctypes.c_double(1.0)), ctypes.byref(ctypes.c_double(-1.0))

    def at(i, j):
        return ctypes.c_void_p(base + 8 * (i + j * n))

    def dim(v):
        return ctypes.byref(ctypes.c_int(v))

    for k0 in range(0, n, _PANEL):
        k1 = min(n, k0 + _PANEL)
        info = ctypes.c_int(0)
        f.dpotrf(b"L", dim(k1 - k0), at(k0, k0), lda, ctypes.byref(info))
        if info.value != 0:
            raise np.linalg.LinAlgError(
                f"leading minor of order {k0 + info.value} is not positive definite")
        for r0 in range(k1, n, _CHUNK):
            r1 = min(n, r0 + _CHUNK)
            f.dtrsm(b"R", b"L", b"T", b"N", dim(r1 - r0), dim(k1 - k0), one, at(k0, k0),
                    lda, at(r0, k0), lda)
        for r0 in range(k1, n, _CHUNK):
            r1 = min(n, r0 + _CHUNK)
            if r0 > k1:
                a[r0:r1, k1:r0] -= a[r0:r1, k0:k1] @ a[k1:r0, k0:k1].T
            f.dsyrk(b"L", b"N", dim(r1 - r0), dim(k1 - k0), minus_one, at(r0, k0), lda,
                    one, at(r0, r0), lda)
    return a


@lru_cache(maxsize=None)
def _fortran():
    """dpotrf, dtrsm, dsyrk from SciPy's Cython LAPACK/BLAS (Fortran calling
    convention: every argument by reference)."""
    from scipy.linalg import cython_blas, cython_lapack
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]

    def fn(module, name, nargs):
        capsule = module.__pyx_capi__[name]
        return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * nargs)(
            get_ptr(capsule, get_name(capsule)))

    return types.SimpleNamespace(dpotrf=fn(cython_lapack, "dpotrf", 5),
                                 dtrsm=fn(cython_blas, "dtrsm", 11),
                                 dsyrk=fn(cython_blas, "dsyrk", 10),
                                 dgemm=fn(cython_blas, "dgemm", 13))


def _restore_lower(work, d0, rows=1024):
    """Lower triangle := transpose of the (untouched) strict upper triangle."""
    n = work.shape[0]
    for r in range(0, n, rows):
        s = slice(r, min(n, r + rows))
        work[s, :r] = work[:r, s].T
        blk = work[s, s]
        il = np.tril_indices(blk.shape[0], -1)
        blk[il] = blk.T[il]
    work[np.diag_indices(n)] = d0


def _cho_solve(c, b):
    return sla.cho_solve((c, True), b, check_finite=False)


def _pivoted_cholesky(diag, column, rank, tol=1e-12):
    """Rank-``rank`` pivoted partial Cholesky K ≈ L Lᵀ (Harbrecht et al. 2012).

    ``column(i)`` returns K[:, i].  Returns L (N, r) and the residual diagonal.
    """
    n = diag.shape[0]
    rank = min(rank, n)
    L = np.zeros((n, rank))
    d = diag.copy()
    total = d.sum()
    r = 0
    for r in range(rank):
        i = int(np.argmax(d))
        if d[i] <= tol * max(total, 1e-300):
            break
        col = column(i) - L[:, :r] @ L[i, :r]
        L[:, r] = col / math.sqrt(d[i])
        d -= L[:, r] ** 2
        d[i] = 0.0
        np.maximum(d, 0.0, out=d)
    else:
        r = rank
    return L[:, :r], d


def pcg_solve(k, b, reg=0.0, tol=1e-10, maxiter=1000, rank=None, name="k_train_train"):
    """Solve (K + reg·I) X = B by conjugate gradients, one CG recursion per
    column of B, preconditioned by P = L Lᵀ + D + reg·I with L a pivoted
    partial Cholesky factor and D the residual diagonal diag(K − L Lᵀ), at
    least its mean (it is 0 at the pivots, where P⁻¹ applied by Woodbury
    would cancel catastrophically).  Memory: K plus O(N·(rank + C)).

    Stops when every column's true residual ‖B − (K + reg I) X‖ is at most
    tol·‖B‖ (the recursive residual that CG updates drifts from it on
    ill-conditioned K: it is recomputed, and CG restarted from it, up to 3
    times); otherwise, after ``maxiter`` iterations, returns for each column
    the iterate with the smallest residual (X = 0 at worst) and warns with the
    residual reached.
    """
    tol = real("tol", tol, lower=0, strict=True)
    reg = real("reg", reg, lower=0)
    maxiter = count("maxiter", maxiter)
    rank = None if rank is None else count("rank", rank)
    k = _check_square(k, name, finite=False)   # (the predictors check K's entries once)
    n = k.shape[0]
    b = real_array("b", b)
    if b.shape[:1] != (n,) or b.ndim > 2:
        raise ValueError(f"b must have shape ({n},) or ({n}, C), as {name} is {k.shape}, "
                         f"got {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("b contains NaN or Inf")
    b2 = b.reshape(n, -1)
    rank = min(n, rank if rank is not None else max(64, min(1024, int(4 * math.sqrt(n)))))
    diag = np.ascontiguousarray(np.diagonal(k), dtype=np.float64)
    # K is symmetric: row i (contiguous) is column i
    L, dres = _pivoted_cholesky(diag, lambda i: np.asarray(k[i], dtype=np.float64), rank)
    D = np.maximum(dres, dres.mean()) + reg + 1e-14 * max(diag.mean(), 1e-300)
    DiL = L / D[:, None]
    inner = np.eye(L.shape[1]) + L.T @ DiL
    ci = sla.cho_factor(inner, lower=True, check_finite=False)

    def prec(r):
        return r / D[:, None] - DiL @ sla.cho_solve(ci, DiL.T @ r, check_finite=False)

    def matvec(v):
        out = k @ v
        if reg:
            out += reg * v
        return out

    bnorm = np.linalg.norm(b2, axis=0)
    bnorm[bnorm == 0] = 1.0
    x = np.zeros_like(b2)
    best, best_res = x.copy(), np.ones(b2.shape[1])    # X = 0: residual ‖B‖
    it = 0
    for _ in range(4):                   # the first run and up to 3 restarts
        r = b2 - matvec(x) if it else b2.copy()
        res = np.linalg.norm(r, axis=0) / bnorm
        z = prec(r)
        p = z.copy()
        rz = np.einsum("ij,ij->j", r, z)
        while it < maxiter and (res > tol).any():
            q = matvec(p)
            pq = np.einsum("ij,ij->j", p, q)
            alpha = np.where(pq > 0, rz / np.where(pq > 0, pq, 1.0), 0.0)
            x += p * alpha
            r -= q * alpha
            res = np.linalg.norm(r, axis=0) / bnorm
            better = res < best_res
            if better.any():
                best[:, better], best_res[better] = x[:, better], res[better]
            z = prec(r)
            rz_new = np.einsum("ij,ij->j", r, z)
            beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            p = z + p * beta
            rz = rz_new
            it += 1
        true_res = np.linalg.norm(b2 - matvec(best), axis=0) / bnorm
        if (true_res <= tol).all() or it >= maxiter:
            break
        x = best.copy()
    if (true_res > tol).any():
        warn(f"{name}: conjugate gradients stopped after {it} iterations at "
             f"relative residual {true_res.max():.3g} (asked for {tol:g}); "
             "increase diag_reg or maxiter, or use solver='cholesky'", RuntimeWarning)
    pcg_solve.last_iterations = it
    return best.reshape(b.shape)


pcg_solve.last_iterations = 0


class _Solver:
    """(K + reg I)⁻¹ for one training kernel: Cholesky (cached), conjugate
    gradients, or an eigendecomposition (cached) for functions of K."""

    def __init__(self, k, diag_reg, absolute, name, solver="cholesky", tol=1e-10,
                 overwrite=False):
        if solver not in ("cholesky", "cg"):
            raise ValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}")
        self.k = k
        self.overwrite = overwrite
        self.reg = _regularizer(k, diag_reg, absolute)
        self.name = name
        self.solver = solver
        self.tol = tol
        self._chol = None
        self._eig = None
        self._rotated = None

    def solve(self, b):
        if self.solver == "cg":
            return pcg_solve(self.k, b, self.reg, tol=self.tol, name=self.name)
        f = self._factor()
        if isinstance(f, tuple):           # the pseudo-inverse F G⁻² Fᵀ
            F, R = f
            return F @ _cho_solve(R, _cho_solve(R, F.T @ b))
        return _cho_solve(f, b)

    def whiten(self, b):
        """W b with Wᵀ W = (K + reg I)⁻¹ (None for "cg"), so that
        bᵀ (K + reg I)⁻¹ b = (W b)ᵀ (W b): W = L⁻¹ for the Cholesky factor
        K + reg I = L Lᵀ (one triangular solve), G⁻¹ Fᵀ for the pseudo-inverse."""
        if self.solver == "cg":
            return None
        f = self._factor()
        if isinstance(f, tuple):
            F, R = f
            return _cho_solve(R, F.T @ b)
        return sla.solve_triangular(f, b, lower=True, check_finite=False)

    def _factor(self):
        """The Cholesky factor of K + reg I; where that is singular to working
        precision (a duplicated training point) and n <= ``_PINV_MAX``, the
        factors (F, R) of its pseudo-inverse (``_pinv_factors``) instead."""
        if self._chol is None:
            a = self.k.T if self.k.flags.c_contiguous else self.k  # symmetric
            if not (self.overwrite and a.dtype == np.float64 and a.flags.f_contiguous
                    and a.flags.writeable):
                a = np.array(self.k, dtype=np.float64, order="F")
            a[np.diag_indices_from(a)] += self.reg
            try:
                self._chol = cho_factor(a, self.name, overwrite=True,
                                        jitter=len(a) > _PINV_MAX)
            except np.linalg.LinAlgError:  # singular; a is intact
                self._chol = _pinv_factors(a, self.name)
            if self.overwrite:
                self.k = None  # its memory now holds the factor
            del a
        return self._chol

    def eig(self):
        """(λ, V) of K + reg·I, cached.  Eigenvalues within n·ε·λ_max of 0
        (rounding) are set to 0 exactly, so that t = ∞ takes the
        pseudo-inverse; a PSD violation beyond the Cholesky path's largest
        jitter is an error, as there."""
        if self.k is None:
            raise RuntimeError(f"{self.name} was factored in place "
                               "(overwrite_k_train_train=True); pass a copy to use it again")
        if self._eig is None:
            a = np.array(self.k, dtype=np.float64)
            a[np.diag_indices_from(a)] += self.reg
            scale = float(np.diagonal(a).mean()) if len(a) else 0.0
            # (SciPy < 1.13's "evd" driver asks too little workspace at n = 1)
            lam, vecs = sla.eigh(a, overwrite_a=True, check_finite=False,
                                 driver="evd" if len(a) > 1 else "ev")
            if len(lam) and lam[0] < -_MAX_JITTER * abs(scale):
                raise _not_psd(self.name, lam[0], scale)
            tol = len(lam) * np.finfo(np.float64).eps * (abs(lam).max() if len(lam) else 0.0)
            self._eig = (np.where(lam > tol, lam, 0.0), vecs)
        return self._eig

    def rotated(self, a):
        """Vᵀ a V in the eigenbasis of K (cached for the last ``a``)."""
        if self._rotated is None or self._rotated[0] is not a:
            vecs = self.eig()[1]
            self._rotated = (a, vecs.T @ a @ vecs)
        return self._rotated[1]


#: Largest training kernel that, singular to working precision, is solved with
#: its pseudo-inverse (``_pinv_factors``: LAPACK's pivoted Cholesky, which the
#: blocked ``_potrf_lower`` does not replace); larger ones get a stated jitter.
_PINV_MAX = 8192


def _pinv_factors(a, name):
    """(F, R) with a⁺ = F G⁻² Fᵀ, G = FᵀF = R Rᵀ, for a PSD matrix ``a``
    singular to working precision (e.g. with a duplicated training point).

    A rank-revealing pivoted Cholesky a = F Fᵀ (LAPACK dpstrf; it stops at
    pivots below n·ε·max diag) gives F of full column rank r, and then the
    Moore–Penrose inverse of F Fᵀ is F (FᵀF)⁻² Fᵀ: the limit of (a + εI)⁻¹
    on the range of a as ε → 0, where a jittered Cholesky is off by the
    jitter and its rounding, amplified ~1/ε, and the pseudo-inverse that
    t = ∞ takes too.  A remainder a − F Fᵀ beyond the Cholesky path's PSD
    tolerance is an error, as there.  Cost: that of one Cholesky and FᵀF."""
    n = len(a)
    c, piv, r, info = sla.lapack.dpstrf(a, lower=1)     # on a copy: a stays as it is
    if info < 0:
        raise np.linalg.LinAlgError(f"dpstrf: argument {-info} is invalid")
    F = np.zeros((n, r))
    F[piv - 1] = np.tril(c[:, :r])
    rest = piv[r:] - 1                    # the points that F explains
    scale = float(np.diagonal(a).mean())
    if rest.size and np.abs(a[np.ix_(rest, rest)] - F[rest] @ F[rest].T).max() > (
            _MAX_JITTER * scale):
        raise _not_psd(name, sla.eigvalsh(a, subset_by_index=[0, 0])[0], scale)
    warn(f"{name} is singular to working precision (numerical rank {r} of {n}, e.g. a "
         "duplicated point): solved with its pseudo-inverse, the limit diag_reg -> 0; "
         "consider diag_reg > 0", SingularKernelWarning)
    return F, sla.cholesky(F.T @ F, lower=True, check_finite=False)


def _decay(lam, tn):
    """(1 - exp(-λ t/n)) / λ for λ >= 0 (``_Solver.eig``), with the limits t/n
    at λ = 0 and, at t = ∞, 1/λ and 0 (the pseudo-inverse)."""
    pos = lam > 0
    inv = 1.0 / np.where(pos, lam, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.where(pos, -np.expm1(-lam * tn) * inv, tn)
    return np.where(np.isinf(tn), np.where(pos, inv, 0.0), finite)


def _relaxed(lam, tn):
    """1 - exp(-λ t/n) for λ >= 0, with the limit 1 or 0 (λ = 0) at t = ∞."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(tn), (lam > 0).astype(np.float64),
                        -np.expm1(-lam * np.where(np.isinf(tn), 0.0, tn)))


def _prep_y(y):
    """(y as (N, C), restore function to the original trailing shape)."""
    if y.ndim == 1:
        return y[:, None], (lambda a: a[..., 0])
    return y, (lambda a: a)


# ---------------------------------------------------------------------------
# gp_inference
# ---------------------------------------------------------------------------

def gp_inference(k_train_train, y_train, diag_reg=0., diag_reg_absolute_scale=False,
                 trace_axes=(-1,), *, solver="cholesky", tol=1e-10,
                 overwrite_k_train_train=False):
    """Posterior of the NNGP, of the NTK ensemble at t = ∞, or of the NTKGP.

    Args:
      k_train_train: (N, N) array, or a ``Kernel`` with ``nngp``/``ntk``.
      y_train: (N,) or (N, C) targets.
      diag_reg: regulariser; K + diag_reg·mean(diag K)·I (or diag_reg·I when
        ``diag_reg_absolute_scale``).
      trace_axes: neural-tangents' argument: the targets' channel axis, (-1,)
        or (1,) ((N,) targets: () or (-1,)); one kernel is shared by the output
        channels.
      solver: "cholesky" (default) or "cg" (preconditioned conjugate gradients
        to relative residual ``tol``; no copy of K).
      overwrite_k_train_train: let the Cholesky factorisation overwrite the
        (float64, contiguous) training kernel instead of copying it: one N×N
        matrix less; its contents are destroyed.  Of a Kernel with both
        fields only the NTK's is overwritten (the NTK covariance reads the
        NNGP's).

    Returns ``predict_fn(get=None, k_test_train=None, k_test_test=None)``:
    the mean (no ``k_test_test``) or a ``Gaussian(mean, covariance)``, per
    ``get`` ("nngp", "ntk", "ntkgp" or a tuple).  ``k_test_test`` may be the
    (M, M) test kernel or its (M,) diagonal (variances returned).  With
    ``k_test_train=None`` the training-set outputs N(y_train, 0) are returned
    (the covariance (N, N) zeros for ``k_test_test=True``, as neural-tangents).

    NNGP: mean Σ_td K⁻¹y, cov Σ_tt - Σ_td K⁻¹ Σ_dt (Rasmussen & Williams 2006,
    eq. 2.19).  NTK: mean Θ_td Θ⁻¹y, cov Σ_tt + Θ_td Θ⁻¹ Σ Θ⁻¹ Θ_dt -
    (Θ_td Θ⁻¹ Σ_dt + h.c.) (Lee et al. 2019, eq. 16).  NTKGP (He et al. 2020):
    the GP with covariance Θ.
    """
    diag_reg = _check_reg(diag_reg)
    diag_reg_absolute_scale = flag("diag_reg_absolute_scale", diag_reg_absolute_scale)
    overwrite_k_train_train = flag("overwrite_k_train_train", overwrite_k_train_train)
    fields = _same_points(k_train_train, "k_train_train")
    first = np.asarray(next(iter(fields.values()), k_train_train))
    if first.ndim != 2 or first.shape[0] != first.shape[1]:
        raise ValueError(f"k_train_train must be a square (N, N) matrix, got shape {first.shape}")
    n = first.shape[0]
    y = _check_y(y_train, n)
    _check_trace_axes(trace_axes, y)
    y2, restore = _prep_y(y)
    if solver not in ("cholesky", "cg"):
        raise ValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}")
    tol = real("tol", tol, lower=0, strict=True)

    @lru_cache(2)
    def solver_for(g):
        k = _check_square(_field(k_train_train, g, "k_train_train"), f"k_train_train.{g}"
                          if g != "_" else "k_train_train", n)
        _check_symmetric(k, "k_train_train")
        # the NTK covariance reads the NNGP training kernel: keep it intact
        keep = g == "nngp" and getattr(k_train_train, "ntk", None) is not None
        return _Solver(k, diag_reg, diag_reg_absolute_scale, f"k_train_train ({g})",
                       solver, tol, overwrite_k_train_train and not keep)

    @lru_cache(2)
    def k_inv_y(g):
        return solver_for(g).solve(y2)

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names, single = parse_get(get, KERNELS + ("ntkgp",))
        _same_points(k_test_train, "k_test_train")
        _same_points(k_test_test, "k_test_test")
        out = {}
        for g in names:
            kg = "ntk" if g == "ntkgp" else g
            k_td = (None if k_test_train is None else
                    _as_cross(_field(k_test_train, kg, "k_test_train"), n, "k_test_train"))
            k_tt = None
            if k_td is None and isinstance(k_test_test, (bool, np.bool_)):
                k_tt = np.zeros((n, n))    # neural-tangents' k_test_test=True: (N, N) zeros
            elif k_test_test is not None:
                g_init = "ntk" if g == "ntkgp" else "nngp"
                k_tt = real_array("k_test_test", _field(k_test_test, g_init, "k_test_test"))
                _check_tt(k_tt, n if k_td is None else k_td.shape[0])
            if k_td is None:               # at the training points: y, surely
                mean = y.copy()
                out[g] = mean if k_tt is None else Gaussian(mean, np.zeros(k_tt.shape))
                continue
            mean = restore(k_td @ k_inv_y(kg))
            if k_tt is None:
                out[g] = mean
                continue
            if g in ("nngp", "ntkgp"):
                cov = _nngp_cov(k_tt, k_td, solver_for(kg))
            else:
                if (getattr(k_test_train, "nngp", None) is None
                        or getattr(k_train_train, "nngp", None) is None):
                    raise ValueError("the NTK posterior covariance needs both 'nngp' and 'ntk' "
                                     "in k_train_train and k_test_train (pass Kernel namedtuples)")
                s_dd = _check_square(k_train_train.nngp, "k_train_train.nngp", n)
                _check_symmetric(s_dd, "k_train_train.nngp")
                cov = _ntk_cov(k_tt, k_td, _as_cross(k_test_train.nngp, n, "k_test_train.nngp"),
                               s_dd, solver_for("ntk").solve)
            out[g] = Gaussian(mean, cov)
        return _pack(out, names, single)

    return predict_fn


def _as_cross(k, n, name):
    a = real_array(name, k)
    if a.ndim != 2 or a.shape[1] != n:
        raise ValueError(f"{name} must have shape (M, {n}), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def _check_tt(k_tt, m, name="k_test_test"):
    if k_tt.shape not in ((m, m), (m,)):
        raise ValueError(f"{name} must have shape ({m}, {m}) or ({m},), got {k_tt.shape}")
    if not np.isfinite(k_tt).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if k_tt.ndim == 2:
        _check_symmetric(k_tt, name)


def _nngp_cov(k_tt, s_td, solver):
    """Σ_tt - Σ_td A Σ_dt (full or diagonal), A = (K + reg I)⁻¹: with the
    Cholesky factor as Σ_tt - WᵀW, W = L⁻¹Σ_dt (one triangular solve)."""
    w = solver.whiten(s_td.T)                     # (N, M)
    if w is None:
        w, v = solver.solve(s_td.T), s_td.T
    else:
        v = w
    if k_tt.ndim == 1:
        return k_tt - np.einsum("ji,ji->i", v, w)
    c = k_tt - v.T @ w
    return 0.5 * (c + c.T)


def _ntk_cov(k_tt, t_td, s_td, s_dd, apply_inv):
    """Σ_tt + Bᵀ Σ_dd B - (Bᵀ Σ_dt + h.c.),  B = A Θ_dt (A symmetric, so
    Θ_td A Σ_dt = Bᵀ Σ_dt: one solve); the symmetric part of
    Bᵀ (Σ_dd B - 2 Σ_dt) is the same sum in one product."""
    b = apply_inv(t_td.T)                         # (N, M)
    r = s_dd @ b - 2.0 * s_td.T
    if k_tt.ndim == 1:
        return k_tt + np.einsum("ji,ji->i", b, r)
    c = k_tt + b.T @ r
    return 0.5 * (c + c.T)


# ---------------------------------------------------------------------------
# gradient_descent_mse_ensemble
# ---------------------------------------------------------------------------

def _kernel_callable(kernel_fn):
    """``kfn(x1, x2, get, **kw)`` giving kernels; a Monte Carlo estimate
    (``ik.monte_carlo_kernel_fn(net, n)``) contributes its mean."""
    from .empirical import MonteCarloKernel
    from .layers import Network
    if isinstance(kernel_fn, Network):
        return kernel_fn.kernel
    if callable(kernel_fn):
        def kfn(*args, **kwargs):
            k = kernel_fn(*args, **kwargs)
            return k.mean if isinstance(k, MonteCarloKernel) else k
        return kfn
    raise TypeError("kernel_fn must be an infkernel Network or a callable "
                    f"kernel_fn(x1, x2, get), got {type(kernel_fn).__name__}")


def gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=1.,
                                  diag_reg=0., diag_reg_absolute_scale=False,
                                  trace_axes=(-1,), *,
                                  solver="cholesky", chunk_size=CHUNK, progress=False,
                                  **kernel_kwargs):
    """Mean and covariance of an infinite ensemble of infinitely wide networks
    trained by gradient flow on MSE, at any time t (Lee et al. 2019).

    Args:
      kernel_fn: a Network or ``kernel_fn(x1, x2, get, **kernel_kwargs)``.
      x_train: (N, d); y_train: (N,) or (N, C).
      learning_rate: time is ``learning_rate * t``; the loss is the mean over
        ``y_train.size`` entries, as in neural-tangents.
      diag_reg, diag_reg_absolute_scale, trace_axes: as in :func:`gp_inference`.
      solver: "cholesky" or "cg" for t = ∞ (finite t uses one cached
        symmetric eigendecomposition per kernel, reused for every t).
      chunk_size: test rows per kernel block when only means / variances are
        asked for, so that x_test may be large.

    Returns ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)``;
    ``t`` may be an array (results get its leading shape), ``x_test=None``
    gives the training-set predictions (I − e^{−η(K + reg)t/n}) y of the flow
    on the regularised kernel, as neural-tangents does, ``compute_cov`` is False,
    True (full (M, M) covariance) or "diag" (variances, streamed).
    """
    kfn = _kernel_callable(kernel_fn)
    diag_reg = _check_reg(diag_reg)
    diag_reg_absolute_scale = flag("diag_reg_absolute_scale", diag_reg_absolute_scale)
    lr = _check_lr(learning_rate)
    from .kernel import check_inputs
    xd = check_inputs(x_train, "x_train")
    y = _check_y(y_train, None)
    _check_trace_axes(trace_axes, y)
    if y.shape[0] != xd.shape[0]:
        raise ValueError(f"y_train has {y.shape[0]} rows but x_train has {xd.shape[0]}: "
                         "expected one target row per training input")
    n = xd.shape[0]
    y2, restore = _prep_y(y)
    norm = float(max(y.size, 1))   # MSE over the training outputs (none: nothing decays)
    chunk_size = count("chunk_size", chunk_size)
    if progress not in (False, None) and not callable(progress):
        raise TypeError(f"progress must be a callable(done, total) or False, got {progress!r}")
    cache = {}
    solvers = {}

    def k_dd(g):
        if g not in cache:
            k = np.asarray(kfn(xd, None, g, **kernel_kwargs), dtype=np.float64)
            if k.shape != (n, n):
                raise ValueError(f"kernel_fn returned shape {k.shape} for the training "
                                 f"kernel, expected ({n}, {n})")
            _check_finite_blocks(k, f"training {g} kernel")
            _check_symmetric(k, f"training {g} kernel")
            cache[g] = k
        return cache[g]

    def solver_for(g):
        if g not in solvers:
            solvers[g] = _Solver(k_dd(g), diag_reg, diag_reg_absolute_scale,
                                 f"training {g} kernel", solver)
        return solvers[g]

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, **test_kwargs):
        names, single = parse_get(get)
        if not (compute_cov == "diag" if isinstance(compute_cov, str)
                else isinstance(compute_cov, (bool, np.bool_))):
            raise ValueError(f"compute_cov must be False, True or 'diag', got {compute_cov!r}")
        compute_cov = compute_cov if isinstance(compute_cov, str) else bool(compute_cov)
        ts = _check_t(t)
        tn = None if ts is None else ts * lr / norm
        xt = None if x_test is None else check_inputs(x_test, "x_test", xd.shape[1], "x_train")
        kw = dict(kernel_kwargs, **test_kwargs)
        need = set(names) | ({"nngp"} if compute_cov else set())
        out = {}
        if xt is None:
            for g in names:
                out[g] = _train_prediction(g, tn, y, y2, restore, solver_for,
                                           k_dd, compute_cov)
            return _pack(out, names, single)

        m = xt.shape[0]
        full = compute_cov is True
        step = max(m, 1) if full else chunk_size
        pieces = {g: ([], []) for g in names}
        for r0 in range(0, max(m, 1), step):
            xc = xt[r0:r0 + step]
            kg = tuple(g for g in KERNELS if g in need)
            ktd = _test_kernels(kfn(xc, xd, kg, **kw), kg, len(xc), n)
            ktt = None
            if compute_cov:
                ktt = (real_array("the test nngp kernel", kfn(xc, None, "nngp", **kw)) if full
                       else _diag_nngp(kernel_fn, kfn, xc, kw))
                _check_tt(ktt, len(xc), "the test nngp kernel")
            for g in names:
                mean, cov = _test_prediction(g, tn, y2, restore, solver_for, k_dd,
                                             ktd, ktt)
                pieces[g][0].append(mean)
                if cov is not None:
                    pieces[g][1].append(cov)
            if progress:
                progress(min(m, r0 + step), m)
        lead = 0 if ts is None else ts.ndim
        for g in names:
            mean = np.concatenate(pieces[g][0], axis=lead) if m else _empty_mean(ts, y)
            if compute_cov:
                cov = (pieces[g][1][0] if full else
                       np.concatenate(pieces[g][1], axis=lead))
                out[g] = Gaussian(mean, cov)
            else:
                out[g] = mean
        return _pack(out, names, single)

    predict_fn.k_train_train = k_dd
    return predict_fn


def _test_kernels(k, names, m, n):
    """{g: (m, n) array} from ``kernel_fn(x_test, x_train, names)``, checked."""
    out = {}
    for g in names:
        if getattr(k, g, None) is None:
            raise TypeError(f"kernel_fn(x_test, x_train, get={names}) must return a namedtuple "
                            f"with a {g!r} field, got {type(k).__name__}")
        a = _as_cross(getattr(k, g), n, f"the test-train {g} kernel")
        if a.shape[0] != m:
            raise ValueError(f"the test-train {g} kernel has {a.shape[0]} rows, expected {m} "
                             "(one per test point)")
        out[g] = a
    return out


def _empty_mean(ts, y):
    shape = (() if ts is None else ts.shape) + (0,) + y.shape[1:]
    return np.zeros(shape)


def _diag_nngp(kernel_fn, kfn, xc, kw):
    from .layers import Network
    if isinstance(kernel_fn, Network) and not kw:
        return np.asarray(kernel_fn.diag(xc, "nngp"), dtype=np.float64)
    return np.diagonal(np.asarray(kfn(xc, None, "nngp", **kw))).copy()


def _train_prediction(g, tn, y, y2, restore, solver_for, k_dd, compute_cov):
    n = y.shape[0]
    if tn is None:
        mean = y.copy()
        if compute_cov:
            return Gaussian(mean, np.zeros((n, n)) if compute_cov is True else np.zeros(n))
        return mean
    lam, vecs = solver_for(g).eig()
    tt = tn.reshape(-1, 1)
    proj = vecs.T @ y2
    mean = np.einsum("ij,tj,jk->tik", vecs, _relaxed(lam[None], tt), proj, optimize=True)
    mean = restore(mean.reshape(tn.shape + y2.shape))
    if not compute_cov:
        return mean
    with np.errstate(invalid="ignore"):
        left = np.exp(-lam[None] * np.where(np.isinf(tt), 0.0, tt))   # e^{-λt}
    left = np.where(np.isinf(tt), (lam[None] == 0).astype(np.float64), left)
    if g == "nngp":   # V diag(λ e^{-2λt}) Vᵀ
        f = lam[None] * left * left
        if compute_cov == "diag":
            cov = np.einsum("ij,tj,ij->ti", vecs, f, vecs, optimize=True)
        else:
            cov = np.einsum("ij,tj,kj->tik", vecs, f, vecs, optimize=True)
    else:             # e^{-Θt} Σ e^{-Θt} = V D (Vᵀ Σ V) D Vᵀ, D = diag(e^{-λt})
        s = solver_for(g).rotated(k_dd("nngp"))
        covs = []
        for row in left:
            vd = vecs * row
            if compute_cov == "diag":
                covs.append(np.einsum("ij,ij->i", vd @ s, vd))
            else:
                c = (vd @ s) @ vd.T
                covs.append(0.5 * (c + c.T))
        cov = np.stack(covs)
    return Gaussian(mean, cov.reshape(tn.shape + cov.shape[1:]))


def _test_prediction(g, tn, y2, restore, solver_for, k_dd, ktd, ktt):
    """(mean, cov) for one chunk of test points; leading time axes if tn.

    Finite t (Lee et al. 2019, eqs. 15-16) with A_t = V diag(f(λ)) Vᵀ: the
    mean is K_td (A_t y), formed through V (f ⊙ Vᵀy) without an M×N×N
    product; covariances use P = K_td V once per chunk (and Vᵀ Σ_dd V once
    per predictor), then per time only products with the diagonal f."""
    sv = solver_for(g)
    k_td = ktd[g]
    if tn is None:
        mean = restore(k_td @ sv.solve(y2))
        if ktt is None:
            return mean, None
        if g == "nngp":
            return mean, _nngp_cov(ktt, k_td, sv)
        return mean, _ntk_cov(ktt, k_td, ktd["nngp"], k_dd("nngp"), sv.solve)
    tshape = tn.shape
    lam, vecs = sv.eig()
    tt = tn.reshape(-1, 1)
    f = _decay(lam[None], tt)                                     # (T, N)
    w = np.einsum("ij,tj,jc->tic", vecs, f, vecs.T @ y2, optimize=True)   # A_t y
    mean = restore((k_td @ w).reshape(tshape + (k_td.shape[0],) + y2.shape[1:]))
    if ktt is None:
        return mean, None
    p = k_td @ vecs                                               # (M, N)
    diag = ktt.ndim == 1
    covs = []
    if g == "nngp":   # Σ_tt - Σ_td A_2t Σ_dt
        for f2 in _decay(lam[None], 2.0 * tt):
            if diag:
                covs.append(ktt - np.einsum("ij,j,ij->i", p, f2, p))
            else:
                c = ktt - (p * f2) @ p.T
                covs.append(0.5 * (c + c.T))
    else:             # Σ_tt + Bᵀ Σ_dd B - (Θ_td A_t Σ_dt + h.c.),  B = A_t Θ_dt
        q = ktd["nngp"] @ vecs                                    # Σ_td V
        s_rot = sv.rotated(k_dd("nngp"))                          # Vᵀ Σ_dd V
        for fi in f:
            pf = p * fi                                           # Θ_td V diag(f) = Bᵀ V
            r = pf @ s_rot - 2.0 * q                              # as in _ntk_cov
            if diag:
                covs.append(ktt + np.einsum("ij,ij->i", pf, r))
            else:
                c = ktt + pf @ r.T
                covs.append(0.5 * (c + c.T))
    cov = np.stack(covs)
    return mean, cov.reshape(tshape + cov.shape[1:])


# ---------------------------------------------------------------------------
# gradient_descent_mse (one network)
# ---------------------------------------------------------------------------

def gradient_descent_mse(k_train_train, y_train, learning_rate=1., diag_reg=0.,
                         diag_reg_absolute_scale=False, trace_axes=(-1,)):
    """Function-space gradient flow on MSE of one (linearised) network:

        f_train(t) = y + e^{-η K t / n} (f_train(0) - y)
        f_test(t)  = f_test(0) - K_td K⁻¹ (I - e^{-η K t/n}) (f_train(0) - y)

    (Jacot et al. 2018; Lee et al. 2019, eqs. 10-11), n = y_train.size;
    ``diag_reg``, ``trace_axes`` as in :func:`gp_inference`.

    Returns ``predict_fn(t=None, fx_train_0=0., fx_test_0=None,
    k_test_train=None)`` → ``fx_train_t``, ``(fx_train_t, fx_test_t)``, or
    ``fx_test_t`` alone when ``fx_train_0=None`` (taken as 0), as in
    neural-tangents; ``t`` may be an array (leading axes), ``t=None`` means ∞
    (Cholesky solve), ``t=np.inf`` the pseudo-inverse limit of the flow.
    """
    diag_reg = _check_reg(diag_reg)
    diag_reg_absolute_scale = flag("diag_reg_absolute_scale", diag_reg_absolute_scale)
    lr = _check_lr(learning_rate)
    k = _check_square(k_train_train, "k_train_train")
    _check_symmetric(k, "k_train_train")
    n = k.shape[0]
    y = _check_y(y_train, n)
    _check_trace_axes(trace_axes, y)
    y2, restore = _prep_y(y)
    norm = float(max(y.size, 1))   # MSE over the training outputs (none: nothing decays)
    sv = _Solver(k, diag_reg, diag_reg_absolute_scale, "k_train_train")

    def predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None):
        ts = _check_t(t)
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        f0 = _check_outputs(0.0 if fx_train_0 is None else fx_train_0, y.shape, "fx_train_0")
        f02 = f0.reshape(y2.shape)
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("fx_test_0 is given but k_test_train is None: pass the "
                             "(M, N) test-train kernel to predict test outputs")
        k_td = None if k_test_train is None else _as_cross(k_test_train, n, "k_test_train")
        ft0 = None if fx_test_0 is None else _check_outputs(
            fx_test_0, (k_td.shape[0],) + y.shape[1:], "fx_test_0")
        if ts is None:
            fx_train = y.copy()
            fx_test = None if ft0 is None else ft0 + restore(k_td @ sv.solve(y2 - f02))
        else:
            lam, vecs = sv.eig()
            tt = (ts * lr / norm).reshape(-1, 1)
            proj = vecs.T @ (f02 - y2)
            d_train = np.einsum("ij,tj,jc->tic", vecs, -_relaxed(lam[None], tt), proj,
                                optimize=True)
            fx_train = restore((f02[None] + d_train).reshape(ts.shape + y2.shape))
            fx_test = None
            if ft0 is not None:   # f_test(0) - K_td A_t (f_train(0) - y)
                w = np.einsum("ij,tj,jc->tic", vecs, _decay(lam[None], tt), proj,
                              optimize=True)
                fx_test = ft0.reshape(k_td.shape[0], -1)[None] - k_td @ w
                fx_test = restore(fx_test.reshape(ts.shape + (k_td.shape[0],)
                                                  + y2.shape[1:]))
        if fx_test is None:
            return fx_train
        return fx_test if fx_train_0 is None else (fx_train, fx_test)

    return predict_fn


# ---------------------------------------------------------------------------
# gradient_descent (any loss, optional momentum)
# ---------------------------------------------------------------------------

@dataclass
class ODEState:
    """State of :func:`gradient_descent`'s flow (neural-tangents' ``ODEState``):
    outputs on the training and test sets and, with momentum, their
    velocities ``qx_train``, ``qx_test`` (None: zero)."""
    fx_train: Optional[np.ndarray] = None
    fx_test: Optional[np.ndarray] = None
    qx_train: Optional[np.ndarray] = None
    qx_test: Optional[np.ndarray] = None


def _mse_grad(f, y):
    return (f - y) / max(f.size, 1)


def _cross_entropy_grad(f, y):
    return (special.softmax(f, axis=-1) * y.sum(axis=-1, keepdims=True) - y) / max(f.size, 1)


#: Built-in losses (as neural-tangents writes them): name -> (loss, ∂loss/∂f).
LOSSES = {
    "mse": (lambda f, y: 0.5 * np.mean((f - y) ** 2), _mse_grad),
    "cross_entropy": (lambda f, y: -np.mean(special.log_softmax(f, axis=-1) * y),
                      _cross_entropy_grad),
}


def _resolve_loss(loss, loss_grad, y):
    """(loss, ∂loss/∂f, built in?) for :func:`gradient_descent`'s arguments."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable "
                             f"loss(fx, y_train), got {loss!r}")
        if loss_grad is not None:
            raise ValueError(f"loss={loss!r} has its own gradient: pass loss_grad only "
                             "with a loss function of your own")
        if loss == "cross_entropy" and y.ndim != 2:
            raise ValueError(f"loss='cross_entropy' needs y_train of shape (N, C) (softmax "
                             f"over the C outputs), got {y.shape}")
        return LOSSES[loss] + (True,)
    if not callable(loss):
        raise TypeError(f"loss must be a callable loss(fx, y_train) or a name, got "
                        f"{type(loss).__name__}")
    if loss_grad is None:
        raise TypeError("gradient_descent needs ∂loss/∂fx of a loss function of your own: "
                        "pass loss_grad(fx, y_train) (e.g. jax.grad(loss)), or use "
                        f"loss={sorted(LOSSES)}")
    if not callable(loss_grad):
        raise TypeError(f"loss_grad must be callable, got {type(loss_grad).__name__}")
    return loss, loss_grad, False


def _check_gradient(loss, grad, builtin, f0, y):
    """``grad`` at ``f0``: the shape of y, finite, and (for a user's gradient)
    the derivative of ``loss`` along a random direction to central-difference
    accuracy."""
    g = grad(f0)
    if g.shape != y.shape or not np.isfinite(g).all():
        raise ValueError(f"loss_grad(fx, y_train) must return a finite array of shape "
                         f"{y.shape} (that of y_train), got shape {g.shape}"
                         + ("" if g.shape != y.shape else " with NaN or Inf"))
    if y.size and not builtin:
        d = np.random.default_rng(0).standard_normal(y.shape)
        h = 1e-4 * max(1.0, float(np.abs(f0).max()))
        num = (float(loss(f0 + h * d, y)) - float(loss(f0 - h * d, y))) / (2 * h)
        ana = float(np.sum(g * d))
        scale = float(np.linalg.norm(g) * np.linalg.norm(d)) + abs(num)
        if not abs(num - ana) <= 1e-5 * scale + 1e-300:
            raise ValueError(f"loss_grad does not match loss: along a random direction "
                             f"at fx_train_0 the loss changes at rate {num:.6g}, loss_grad "
                             f"gives {ana:.6g}")


def _state_part(value, shape, name):
    return np.zeros(shape) if value is None else _check_outputs(value, shape, name)


#: scipy.integrate.solve_ivp's methods
_ODE_METHODS = ("auto", "RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")
#: "auto" takes LSODA beyond this many explicit steps' worth of stiffness
#: (t λ_max(K) ∂²loss), and beyond STIFF_PER_STATE per number of the state
#: (each of its dense Jacobians costs as many evaluations of the flow), for
#: states of at most STIFF_STATE numbers; else DOP853
STIFF_STEPS, STIFF_PER_STATE, STIFF_STATE = 1e4, 100, 4096


def gradient_descent(loss, k_train_train, y_train, learning_rate=1., momentum=None,
                     trace_axes=(-1,), *, loss_grad=None, method="auto", rtol=1e-10,
                     atol=1e-12):
    """Function-space gradient descent of one (linearised) network on any
    loss, as neural-tangents' ``predict.gradient_descent``:

        df_train/dt = -K ∂loss/∂f_train,   df_test/dt = -K_td ∂loss/∂f_train

    in units of ``learning_rate`` (Lee et al. 2019, eq. 8); with ``momentum``
    μ (heavy ball, continuous time in units of √η):
    d²f/dt² = (μ - 1)/√η · df/dt - K ∂loss/∂f.

    ``loss`` is "mse" (½ mean (f - y)², as :func:`gradient_descent_mse`),
    "cross_entropy" (-mean(log_softmax(f) · y), softmax over the last axis)
    or a function ``loss(fx, y_train)`` with its gradient ``loss_grad(fx,
    y_train)`` (e.g. ``jax.grad(loss)``; checked against ``loss`` at the
    start).  The ODE is solved by ``scipy.integrate.solve_ivp`` (``method``,
    ``rtol``, ``atol``).  An explicit method such as "DOP853" needs ~S =
    lr·t·λ_max(K)·∂²loss steps (λ_max bounded by K's largest absolute row
    sum, the loss's curvature measured at the start); ``method="auto"`` takes
    DOP853, or LSODA (implicit steps once the flow is stiff, their number
    growing slowly with t) where S > 1e4 and S > 100 n for a state of n ≤
    4096 numbers (its dense Jacobians cost n evaluations each).  A warning
    says when an explicit method faces S > 1e7.  Test outputs are not
    integrated: they are linear
    in the training gradients' history, f_test(t) = f_test(0) - K_td ∫g dt
    (with momentum through two more integrals), so any number of test points
    costs one product per time.

    Returns ``predict_fn(t, fx_train_or_state_0=0., fx_test_0=None,
    k_test_train=None)`` → ``fx_train_t``, ``(fx_train_t, fx_test_t)`` or
    ``fx_test_t`` alone (``fx_train_or_state_0=None``), with ``t``'s shape as
    leading axes; an :class:`ODEState` in gives an ``ODEState`` out.  ``t``
    must be finite (a general loss's flow need not converge).
    """
    lr = _check_lr(learning_rate)
    if not (isinstance(method, str) and method in _ODE_METHODS
            or isinstance(method, type) and issubclass(method, OdeSolver)):
        raise ValueError(f"method must be one of {', '.join(_ODE_METHODS)} or a "
                         f"scipy.integrate.OdeSolver subclass, got {method!r}")
    if momentum is not None:
        momentum = _momentum(momentum)
    rtol, atol = real("rtol", rtol, lower=0, strict=True), real("atol", atol, lower=0)
    k = _check_square(k_train_train, "k_train_train")
    _check_symmetric(k, "k_train_train")
    n = k.shape[0]
    y = _check_y(y_train, n)
    _check_trace_axes(trace_axes, y)
    loss, loss_grad, builtin = _resolve_loss(loss, loss_grad, y)

    def grad(f):
        return np.asarray(loss_grad(f, y), dtype=np.float64)
    y2, restore = _prep_y(y)          # (N, C) inside
    size = y2.size
    scale = math.sqrt(lr) if momentum is not None else lr   # time unit
    friction = None if momentum is None else (momentum - 1.0) / scale

    def predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None):
        ts = _check_t(t)
        if ts is None or np.isinf(ts).any():
            raise ValueError("t must be finite: the flow of a general loss need not converge "
                             "(use gradient_descent_mse for t = ∞ under MSE)")
        state = fx_train_or_state_0 if isinstance(fx_train_or_state_0, ODEState) else None
        if state is not None:
            if fx_test_0 is not None:
                raise ValueError("fx_test_0 must be None when an ODEState is passed: the "
                                 "state's fx_test holds the initial test outputs")
            f_in, ft_in, q_in, qt_in = (state.fx_train, state.fx_test, state.qx_train,
                                        state.qx_test)
            if momentum is None and (q_in is not None or qt_in is not None):
                raise ValueError("the ODEState has velocities (qx_train / qx_test) but "
                                 "momentum is None")
        else:
            f_in, ft_in, q_in, qt_in = fx_train_or_state_0, fx_test_0, None, None
        if f_in is None and ft_in is None:
            raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        if ft_in is not None and k_test_train is None:
            raise ValueError("fx_test_0 is given but k_test_train is None: pass the "
                             "(M, N) test-train kernel to predict test outputs")
        f0 = _state_part(f_in, y.shape, "fx_train_0")
        q0 = _state_part(q_in, y.shape, "qx_train")
        if ft_in is not None:
            k_td = _as_cross(k_test_train, n, "k_test_train")
            m = k_td.shape[0]
            ft0 = _check_outputs(ft_in, (m,) + y.shape[1:], "fx_test_0").reshape(m, -1)
            qt0 = _state_part(qt_in, (m,) + y.shape[1:], "qx_test").reshape(m, -1)
        _check_gradient(loss, grad, builtin, f0, y)

        def rhs(_, s):   # state: f, ∫g  |  f, q, u, v  (u' = g + friction u, v' = u)
            f = s[:size].reshape(y.shape)
            g = grad(f).reshape(y2.shape)
            kg = -(k @ g).ravel()
            if momentum is None:
                return np.concatenate([kg, g.ravel()])
            q, u = s[size:2 * size], s[2 * size:3 * size]
            return np.concatenate([q, kg + friction * q, g.ravel() + friction * u, u])

        start = [f0] if momentum is None else [f0, q0, np.zeros(y.shape)]
        s0 = np.concatenate([a.ravel() for a in start] + [np.zeros(size)])
        times = ts.ravel() * scale
        grid, where = np.unique(times, return_inverse=True)
        if size == 0 or grid.size == 0 or grid[-1] == 0.0:
            path = np.broadcast_to(s0, (len(grid), s0.size))
        else:
            how = _ode_method(method, grid[-1], k, grad, f0, momentum is not None, s0.size)
            sol = solve_ivp(rhs, (0.0, grid[-1]), s0, method=how, t_eval=grid,
                            rtol=rtol, atol=atol)
            if sol.status != 0:
                raise RuntimeError(f"gradient_descent: the ODE solver failed ({sol.message})")
            path = sol.y.T
        path = path[where].reshape((len(times), len(start) + 1) + y2.shape)   # (T, parts, N, C)

        def shaped(a):    # (T, N, C) -> t's shape + the outputs' shape
            return restore(a).reshape(ts.shape + restore(a).shape[1:])
        out = {"fx_train": shaped(path[:, 0])}
        if momentum is not None:
            out["qx_train"] = shaped(path[:, 1])
        if ft_in is not None:
            kv = k_td @ path[:, -1]        # K_td ∫g  |  K_td v
            if momentum is None:
                out["fx_test"] = shaped(ft0 - kv)
            else:
                tt = times[:, None, None]
                drift = tt if friction == 0 else np.expm1(friction * tt) / friction
                out["fx_test"] = shaped(ft0 + qt0 * drift - kv)
                out["qx_test"] = shaped(qt0 * np.exp(friction * tt) - k_td @ path[:, 2])
        if state is not None:
            return ODEState(**out)
        if ft_in is None:
            return out["fx_train"]
        return out["fx_test"] if f_in is None else (out["fx_train"], out["fx_test"])

    return predict_fn


def _ode_method(method, T, k, grad, f0, momentum, size):
    """The solve_ivp method for ``method`` ("auto" chosen from the flow's
    stiffness, see :func:`gradient_descent`); warns where an explicit method
    faces a stiff flow."""
    d = np.random.default_rng(0).standard_normal(f0.shape)
    h = 1e-6 * max(1.0, float(np.abs(f0).max()))
    curv = float(np.linalg.norm(grad(f0 + h * d) - grad(f0))) / (h * float(np.linalg.norm(d)))
    rate = float(np.abs(k).sum(axis=1).max()) * curv if k.size else 0.0
    steps = T * (math.sqrt(rate) if momentum else rate)
    if method == "auto":
        stiff = steps > max(STIFF_STEPS, STIFF_PER_STATE * size) and size <= STIFF_STATE
        method = "LSODA" if stiff else "DOP853"
    if method in ("RK23", "RK45", "DOP853") and steps > 1e7:
        warn(f"gradient_descent: a stiff flow (lr·t·λ_max·∂²loss ≈ {steps:.1e}): "
             f"{method}, an explicit method, needs about that many steps; "
             "method='LSODA' takes implicit ones (a dense Jacobian of the "
             f"{size} state numbers)", RuntimeWarning)
    return method


def _momentum(value):
    """The momentum mass as a float in [0, 1], or a clear error."""
    momentum = real("momentum", value, lower=0)
    if momentum > 1:
        raise ValueError(f"momentum must be in [0, 1], got {value}")
    return momentum


def _check_outputs(f, shape, name):
    """Initial network outputs broadcast to ``shape``, or a clear error."""
    a = real_array(name, f)
    try:
        a = np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{name} must broadcast to shape {shape}, got "
                         f"{np.shape(f)}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0., eps=1e-12):
    """Largest stable learning rate of discrete gradient descent on MSE,
    2(1 + momentum) n / (λ_max(K) + eps) (neural-tangents' ``max_learning_rate``),
    n = ``y_train_size`` (default: the number of training points)."""
    k = _check_square(ntk_train_train, "ntk_train_train")
    if k.shape[0] == 0:
        raise ValueError("ntk_train_train is empty (0 training points)")
    n = k.shape[0] if y_train_size is None else real("y_train_size", y_train_size, lower=0,
                                                     strict=True)
    _check_symmetric(k, "ntk_train_train")
    momentum = _momentum(momentum)
    eps = real("eps", eps, lower=0)
    lam = sla.eigvalsh(k, subset_by_index=[k.shape[0] - 1, k.shape[0] - 1])[0]
    if not lam > 0.0:
        raise ValueError(f"ntk_train_train has no positive eigenvalue (largest {lam:.3g}): "
                         "gradient descent on it does not train; pass an NTK Gram matrix")
    return 2.0 * (1.0 + momentum) * n / (lam + eps)
