"""The kernel entry point: input checks, ``get``/``out``/``dtype`` handling,
backend choice, and the ``Kernel`` result.

``Kernel`` results are namedtuples whose fields are the requested quantities,
in ``get`` order, as in neural-tangents: ``nngp`` is the NNGP covariance Σ
and ``ntk`` the neural tangent kernel Θ of the network output, each of shape
(N1, N2) (or (N,) from ``Network.diag``).
"""
import math
from collections import namedtuple

import numpy as np

from . import _cpu, gpu
from ._checks import KERNELS as GETS, count, new_outputs, parse_get, result_type

BACKENDS = ("auto", "cpu", "gpu")


def _kernel_type(fields):
    return Kernel if fields == GETS else result_type("Kernel", fields)


class Kernel(namedtuple("Kernel", GETS)):
    """The result type for ``get=None``: ``Kernel(nngp, ntk)``, a namedtuple.
    As on neural-tangents' ``Kernel``, a result of ``net.kernel`` also has
    ``cov1`` and ``cov2``, the NNGP diagonals Σ(x1ᵢ, x1ᵢ) and Σ(x2ⱼ, x2ⱼ)
    (None without x2), computed on first access (O(N·(d + L))); ``shape1``,
    ``shape2`` (N, channels of the output), ``x1_is_x2``, ``is_gaussian`` (the
    output is a Dense layer's, a Gaussian process), the constant layout fields
    of a fully-connected kernel (``batch_axis`` 0, ``channel_axis`` 1,
    ``diagonal_batch`` True, ``diagonal_spatial``, ``is_reversed``,
    ``is_input`` False, ``mask1``, ``mask2`` None) and ``replace(**fields)``."""
    # no __slots__: a result of net.kernel carries how to compute its diagonals
    batch_axis, channel_axis = 0, 1
    diagonal_batch, diagonal_spatial = True, False
    is_reversed = is_input = False
    mask1 = mask2 = None

    @property
    def cov1(self):
        return self._cov(0)

    @property
    def cov2(self):
        return self._cov(1)

    def _cov(self, i):
        covs = self._known("_covs", "cov1 / cov2")
        if callable(covs[i]):
            covs[i] = covs[i]()
        return covs[i]

    def _known(self, key, what):
        value = self.__dict__.get(key)
        if value is None:
            raise AttributeError(f"{what}: known for results of net.kernel(x1, x2) only, "
                                 "not for a Kernel built by hand")
        return value

    def _field(self, name):
        meta = self._known("_meta", name)
        if callable(meta):
            meta = self.__dict__["_meta"] = meta()
        return meta[name]

    shape1 = property(lambda self: self._field("shape1"))
    shape2 = property(lambda self: self._field("shape2"))
    x1_is_x2 = property(lambda self: self._field("x1_is_x2"))
    is_gaussian = property(lambda self: self._field("is_gaussian"))

    def replace(self, **fields):
        """A copy with ``nngp``, ``ntk``, ``cov1`` or ``cov2`` replaced
        (neural-tangents' ``Kernel.replace`` for the fields a fully-connected
        kernel has); the other fields are kept."""
        bad = sorted(set(fields) - set(GETS + COVS))
        if bad:
            raise TypeError(f"Kernel.replace: cannot replace {', '.join(bad)} (only "
                            f"{', '.join(GETS + COVS)})")
        new = self._replace(**{g: fields[g] for g in GETS if g in fields})
        covs = self.__dict__.get("_covs")
        if covs is not None or any(c in fields for c in COVS):
            new.__dict__["_covs"] = [fields[c] if c in fields else
                                     (None if covs is None else self._cov(i))
                                     for i, c in enumerate(COVS)]
        if "_meta" in self.__dict__:
            new.__dict__["_meta"] = self.__dict__["_meta"]
        return new

    def __reduce__(self):          # pickled with its diagonals, computed now
        if self.__dict__.get("_covs") is None:
            return type(self), tuple(self)
        return _restore_kernel, (tuple(self), self.cov1, self.cov2,
                                 {f: self._field(f) for f in _META})


#: the fields of ``_meta``
_META = ("shape1", "shape2", "x1_is_x2", "is_gaussian")


def _restore_kernel(fields, cov1, cov2, meta=None):
    k = Kernel(*fields)
    k.__dict__["_covs"] = [cov1, cov2]
    if meta is not None:
        k.__dict__["_meta"] = meta
    return k


#: neural-tangents' diagonals of the NNGP: Σ(x1_i, x1_i) and Σ(x2_j, x2_j)
#: (None without x2), valid in ``get`` of the analytic kernel.
COVS = ("cov1", "cov2")


def check_inputs(x, name, d=None, like="x1"):
    """Inputs as a C-contiguous float64 (N, d) array, or a clear error
    (``d``: the required feature count, that of the input named ``like``)."""
    x = host_array(x)
    if isinstance(x, str):
        raise TypeError(f"{name} must be an array, got the string {x!r}"
                        + (f" (get is the third argument: kernel(x1, None, {x!r}))"
                           if name == "x2" else ""))
    if hasattr(x, "_fields"):      # a Kernel: NumPy would stack its fields
        raise TypeError(f"{name} must be an array of points, got a {type(x).__name__} with "
                        f"fields {x._fields}")
    if hasattr(x, "toarray") and hasattr(x, "nnz"):      # scipy.sparse
        raise TypeError(f"{name} is a sparse matrix: the kernels need dense inputs "
                        f"({name}.toarray())")
    if np.ma.isMaskedArray(x) and np.ma.is_masked(x):
        raise ValueError(f"{name} is a masked array with masked entries: the kernels "
                         f"have no missing values; fill them ({name}.filled(value)) or "
                         "drop those rows")
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a 2-D numeric array: {exc}") from None
    if a.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got dtype {a.dtype}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        hint = (" (use x.reshape(-1, 1) for 1-D features)" if a.ndim == 1 else
                " (start the network with Flatten() for (N, ...) inputs)" if a.ndim > 2 else "")
        raise ValueError(f"{name} must be 2-D (N, d), got shape {a.shape}{hint}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {a.shape}")
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{name} has {a.shape[1]} features, expected {d} "
                         f"(the same as {like})")
    given = a
    if a.dtype != np.float64:
        with np.errstate(over="ignore"):     # reported below
            a = a.astype(np.float64)
    a = np.ascontiguousarray(a)
    if not (a.flags.writeable and a.flags.aligned):
        a = a.copy()   # numba types read-only and unaligned arrays apart: another compilation
    if math.isfinite(_cpu.squared_norm_sum(a)):   # no NaN/Inf entry, no overflow
        return a
    sq = _cpu.row_norms(a)       # (a sum of finite norms that overflows: told apart here)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        what = ("values beyond float64's range (±1.8e308)" if np.isfinite(given[rows]).all()
                else "NaN or Inf")     # (finite long doubles can overflow float64)
        raise ValueError(f"{name} has {what} in row(s) {rows[:5].tolist()}"
                         + (" ..." if len(rows) > 5 else ""))
    bad = ~np.isfinite(sq)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise norm_overflow(name, rows, a[rows[0]])
    return a


def host_array(x):
    """A CuPy array or a torch tensor (any device; requires_grad or not) as a
    NumPy array; anything else as it is."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):     # torch
        x = x.detach().cpu()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):   # CuPy
        return x.get()
    return x


def norm_overflow(name, rows, first):
    """The error for rows whose squared norm overflows (``first``: the first
    such row, a NumPy array)."""
    big = np.abs(first).max()
    norm = big * np.sqrt(((first / big) ** 2).sum())
    return ValueError(f"{name}: the squared norm of row(s) {[int(r) for r in rows[:5]]}"
                      + (" ..." if len(rows) > 5 else "") + f" exceeds the largest "
                      f"double (|x| = {norm:.3g} in row {rows[0]}); rescale the inputs")


def output_dtype(dtype, out):
    """The results' dtype: ``dtype`` when given, else that of ``out`` (a first
    array), else float64 (as neural-tangents with x64 enabled, whatever the
    inputs' precision)."""
    if dtype is None and out is not None:
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        return check_dtype(getattr(first, "dtype", np.float64), "out's dtype")
    return check_dtype(np.float64 if dtype is None else dtype)


def check_dtype(dtype, name="dtype"):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be float64 or float32, got {dtype!r}") from None
    if dt not in (np.float64, np.float32):
        raise ValueError(f"{name} must be float64 or float32, got {dt}")
    return dt


def _check_out(out, names, single, shape, dtype, inputs=()):
    """The ``out`` arrays in ``names`` order, or a clear error; they must not
    overlap each other or the ``inputs`` (read while the outputs are written)."""
    if out is None:
        return [None] * len(names)
    outs = [out] if single else list(out) if isinstance(out, (tuple, list)) else None
    if outs is None or len(outs) != len(names):
        raise ValueError(f"out must be {'one array' if single else f'a tuple of {len(names)} arrays'}"
                         f" for get={names if not single else names[0]!r}")
    for g, a in zip(names, outs):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"out for {g!r} must be a numpy array, got {type(a).__name__}")
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"out for {g!r} must have shape {shape} and dtype {dtype}, "
                             f"got shape {a.shape} and dtype {a.dtype}")
        if not a.flags.writeable:
            raise ValueError(f"out for {g!r} is read-only")
    for i, (g, a) in enumerate(zip(names, outs)):
        for other, b in [(repr(h), c) for h, c in zip(names[:i], outs)] + list(inputs):
            if b is not None and np.may_share_memory(a, b) and np.shares_memory(a, b):
                raise ValueError(f"out for {g!r} overlaps {other}: each output needs "
                                 "memory of its own")
    return outs


def _progress_callback(progress):
    """(callback(done, total), close) for a ``progress`` argument."""
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(unit="entry", unit_scale=True, leave=False)

        def update(done, total):
            bar.total = total
            bar.update(done - bar.n)
        return update, bar.close
    if callable(progress):
        return progress, lambda: None
    if progress not in (False, None):
        raise TypeError(f"progress must be a bool or a callable(done, total), got {progress!r}")
    return None, lambda: None


def resolve_backend(backend, *arrays):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu":
        return "cpu"
    on_gpu = any(hasattr(a, "__cuda_array_interface__") for a in arrays if a is not None)
    if backend == "gpu":
        gpu.require()
        return "gpu"
    return "gpu" if (on_gpu or gpu.available()) else "cpu"


def _equal(x1, x2):
    """x1 and x2 hold the same values (host or device arrays)."""
    def host(a):
        return a.get() if hasattr(a, "__cuda_array_interface__") else np.asarray(a)
    try:
        a, b = host(x1), host(x2)
    except Exception:  # ragged input: check_inputs reports it
        return False
    return a.shape == b.shape and np.array_equal(a, b)


def compute(net, x1, x2, get, *, out, dtype, backend, progress, diagonal):
    """Shared implementation of ``Network.kernel`` and ``Network.diag``."""
    names, single = parse_get(get, GETS if diagonal else GETS + COVS)
    dt = output_dtype(dtype, out)
    if any(g in COVS for g in names):
        if out is not None:
            raise ValueError("out= holds Gram matrices only: request 'cov1'/'cov2' "
                             "without out (they are (N,) diagonals)")
        grams = tuple(g for g in names if g in GETS)
        if not grams and x2 is None and "cov1" not in names:
            check_inputs(x1, "x1")             # checked even when only None comes back
        res = dict(zip(grams, compute(net, x1, x2, grams, out=None, dtype=dt, backend=backend,
                                      progress=progress, diagonal=False))) if grams else {}
        for g, x in (("cov1", x1), ("cov2", x2)):
            if g in names:
                res[g] = None if x is None else compute(
                    net, x, None, "nngp", out=None, dtype=dt, backend=backend,
                    progress=False, diagonal=True)
        return res[names[0]] if single else _kernel_type(names)(*(res[g] for g in names))
    covs = None
    if get is None and not diagonal:     # Kernel(nngp, ntk) with neural-tangents' cov1, cov2
        def cov(x):
            return lambda: compute(net, x, None, "nngp", out=None, dtype=dt,
                                   backend=backend, progress=False, diagonal=True)
        covs = [cov(x1), None if x2 is None else cov(x2)]
    if x2 is not None and x2 is not x1 and not diagonal and net.drops_out and _equal(x1, x2):
        x2 = x1   # neural-tangents' x1_is_x2: dropout's diagonal applies to K(x, x.copy())
    if net.input_maps:
        # deterministic input maps (Fourier features): the kernel of the rest
        # of the network at the mapped points, exactly
        same = x2 is None or x2 is x1
        x1 = check_inputs(x1, "x1")
        x2 = None if x2 is None else x1 if same else check_inputs(x2, "x2", x1.shape[1])
        x1 = net.map_inputs(x1, "x1")
        x2 = None if x2 is None else x1 if same else net.map_inputs(x2, "x2")
        net = net.body
    which = resolve_backend(backend, x1, x2)
    if which == "gpu" and backend == "auto":
        d = np.shape(x1)[-1] if np.ndim(x1) == 2 else None
        if d and not gpu.supports(net.program(d)):
            which = "cpu"  # a program the GPU kernels cannot run (too many registers)
    if which == "gpu":
        return _with_covs(gpu.compute(net, x1, x2, names, single, out=out, dtype=dt,
                                      progress=progress, diagonal=diagonal), covs,
                          _meta(net, x1, x2))
    a1 = check_inputs(x1, "x" if diagonal else "x1")
    # K(x, x) for the very same array takes the symmetric path: half the work,
    # and identical points get a correlation of exactly 1.
    a2 = None if (x2 is None or x2 is x1) else check_inputs(x2, "x2", a1.shape[1])
    prog = net.program(a1.shape[1])
    if diagonal:
        _, k, t = _cpu.point_tables(prog, a1, features=False)
        if dt != np.float64:
            _cpu.check_range(dt, k if "nngp" in names else None, t if "ntk" in names else None,
                             "x")
        res = {"nngp": k, "ntk": t}
        arrays = [res[g].astype(dt, copy=False) for g in names]
    else:
        shape = (a1.shape[0], a1.shape[0] if a2 is None else a2.shape[0])
        outs = _check_out(out, names, single, shape, dt, [("x1", a1), ("x2", a2)])
        fresh = iter(new_outputs(shape, dt, sum(o is None for o in outs)))
        arrays = [next(fresh) if o is None else o for o in outs]
        res = dict(zip(names, arrays))
        callback, close = _progress_callback(progress)
        try:
            _cpu.gram(prog, a1, a2, res.get("nngp"), res.get("ntk"), progress=callback)
        finally:
            close()
    return _with_covs(arrays[0] if single else _kernel_type(names)(*arrays), covs,
                      _meta(net, a1, a2))


def _with_covs(result, covs, meta):
    """``result`` (a Kernel for get=None: ``covs`` not None) knowing how to
    compute its cov1, cov2 and neural-tangents' shape1, shape2, x1_is_x2,
    is_gaussian (``meta``, ``_meta``'s lazy fields)."""
    if covs is not None:
        result.__dict__["_covs"] = covs
        result.__dict__["_meta"] = meta
    return result


def _meta(net, x1, x2):
    """The ``Kernel`` fields neural-tangents derives from the inputs and the
    network's output, computed on first access (x1_is_x2 as neural-tangents
    has it: x2 None or equal to x1)."""
    def fields():   # (np.shape: the GPU path's inputs may be CuPy arrays or lists)
        (n1, d), n2 = np.shape(x1), np.shape(x1 if x2 is None else x2)[0]
        width, gaussian = net.output_signal(d)
        return {"shape1": (n1, width), "shape2": (n2, width),
                "x1_is_x2": x2 is None or x2 is x1 or _equal(x1, x2),
                "is_gaussian": gaussian}
    return fields


def batch(kernel_fn, batch_size=0, device_count=-1, store_on_device=True):
    """neural-tangents' ``nt.batch``, for porting: the kernels here are already
    computed in cache-sized tiles (and GPU tiles that stream to host memory),
    so batching changes nothing and ``kernel_fn`` is called as it is.

    ``batch_size`` (>= 0) and ``device_count`` (>= -1) are checked and
    otherwise unused; with ``store_on_device=False`` CuPy results are brought
    back to host memory (NumPy), as neural-tangents brings them to CPU RAM.
    Unlike neural-tangents, no input size needs to divide by ``batch_size``."""
    if not callable(kernel_fn):
        raise TypeError(f"batch: kernel_fn must be callable, got {type(kernel_fn).__name__}")
    count("batch: batch_size", batch_size, 0)
    count("batch: device_count", device_count, -1)
    if not isinstance(store_on_device, (bool, np.bool_)):
        raise TypeError(f"batch: store_on_device must be True or False, got {store_on_device!r}")
    if store_on_device:
        return kernel_fn

    def to_host(a):
        return a.get() if hasattr(a, "__cuda_array_interface__") else a

    def batched_kernel_fn(*args, **kwargs):
        out = kernel_fn(*args, **kwargs)
        if isinstance(out, tuple) and hasattr(out, "_fields"):
            return type(out)(*map(to_host, out))
        return to_host(out)
    return batched_kernel_fn
