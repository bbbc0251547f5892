"""GPU backend: CuPy raw CUDA kernels built from the sources in ``cuda/``.

Data flow for K(X1, X2) (N1 x N2), everything on one device:

1. diagonal pass ``ik_diag`` (one thread per point): q = |x|²/d, the program
   on (x, x), per-point tables 1/|x|, then V, S (the kind's scale, √V for most
   kinds), R = 1/S for every activation op and (1/√q', √qA/√q', √qB/√q') for every
   Dense op (q' = w2 q + b²) and sum of branches (q' = qA + qB)
   (the kernels carry the signed versine, ``_duals.versine``), the
   per-point Mehler features of numeric activations (``_numeric.mehler_point``:
   4·96 + 2 float64 per point and numeric op), and the diagonals K(x, x), Θ(x, x);
2. row blocks of R rows: one cuBLAS GEMM G = X1[rows] X2ᵀ (``cupy.matmul``),
   then one launch of ``ik_cross`` / ``ik_sym`` that runs every layer per entry
   in registers and writes NNGP and NTK once.  Blocks alternate between two
   streams, so the GEMM of one block overlaps the kernel of the previous one.

The symmetric path (x2 None) computes the upper triangle only (block b takes
columns ≥ its first row; GEMM work is halved too), takes the diagonal from the
diagonal pass, and writes each lower entry by a transposition in shared memory.

Where the result lives: CuPy inputs → CuPy results (on the device, written in
place); NumPy inputs → NumPy results, streamed to host memory block by block
(``out=`` may be an ``np.memmap``, so the Gram may exceed device memory).
Device memory in use is bounded by ``TILE_BYTES`` per block plus O(N) tables.

Numeric activations (Tanh, Softplus, ..., ``Elementwise``; kind K_NUMERIC) run
the CPU's method: a Mehler series with per-point coefficients, truncated per
entry where the Cauchy–Schwarz bound certifies 1e-12 of √(E[φ(u)²]E[φ(v)²]),
and the nested graded Gauss–Legendre quadrature for entries it cannot certify
(slow: ~10⁵ table evaluations per entry, in one thread).  The CPU certifies
tiles of 512 columns at once, so the two backends may truncate the same entry
at different terms: they agree to within that certified bound, not to ulps.
These entries compute in float64 for every ``dtype``.

Precision: float64 agrees with the CPU backend to a few ulps (the same
formulas, same operation order, in ``cuda/infkernel_math.cuh``).  float32
(``FLOAT32_MATH = "float32"``, the default) computes in float32 arithmetic
(GEMM included): errors ≲ 1e-6 relative to √(K(x,x) K(x',x')) per layer for
smooth activations; for kinked duals (the ReLU NTK near ρ = ±1) an error δρ
≈ 1e-7 in the correlation moves the result by δρ/√(1-ρ²).  Set
``FLOAT32_MATH = "float64"`` to compute in float64 and round once on store,
like the CPU backend (about as fast as float64, half the bytes written).
CuPy compiles with ``-ftz=true``: in float32 math, values below float32's
smallest normal (1.2e-38) flush to zero.  The float32 GEMM runs in full FP32
unless the environment sets ``CUPY_TF32=1`` (TensorFloat-32: ~1e-3 relative
error in the inner products, which the figures above do not cover).
"""
import functools
import importlib.resources
import math
import re

import numpy as np

from . import _program as P
from ._checks import new_outputs

#: Device-memory bound for one row block (its GEMM block and, when streaming
#: to the host, its output buffers); two blocks are in flight.
TILE_BYTES = 1 << 29

#: Arithmetic of float32 results: "float32" (fast) or "float64" (as the CPU).
FLOAT32_MATH = "float32"

_TILE = 32           # output rows/columns per thread block (cuda/gram.cu)
_BLOCK = (32, 8, 1)  # threads per block
_MAX_DIAG_REGS = 64  # IK_MAX_DIAG_REGS in the header
_INSTALL = 'pip install "infkernel[gpu]"'


# ----------------------------------------------------------------------------
# Availability
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _probe():
    """None when a CUDA device is usable through CuPy, else the reason."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed or cannot be imported ({exc}): {_INSTALL}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        return (f"CuPy found no CUDA device ({exc}); run on a machine with an "
                "NVIDIA GPU and driver")
    if n <= 0:
        return "CuPy found no CUDA device"
    try:
        # The plain cupy-cuda13x wheel ships neither NVRTC (RawModule) nor
        # cuBLAS (cupy.matmul): they come from a CUDA Toolkit or the [ctk] extra.
        cupy.cuda.nvrtc.getVersion()
        cupy.cuda.cublas  # noqa: B018 (lazy import; raises when libcublas is missing)
    except Exception as exc:
        return (f"CuPy cannot load NVRTC or cuBLAS ({exc}); install the CUDA Toolkit 13 "
                "or pip install 'cupy-cuda13x[ctk]'")
    return None


def available():
    """True when CuPy and a CUDA device are present."""
    return _probe() is None


def require():
    """Raise a RuntimeError saying why the GPU backend cannot run."""
    reason = _probe()
    if reason is not None:
        raise RuntimeError(f"backend='gpu' was requested but {reason}; "
                           "use backend='cpu' or 'auto' to run on the CPU")


# ----------------------------------------------------------------------------
# Sources and compilation
# ----------------------------------------------------------------------------

def read_source(name):
    """Text of ``cuda/<name>`` as installed in the package."""
    return importlib.resources.files("infkernel.cuda").joinpath(name).read_text()


def _array(values):
    return "{" + ", ".join(repr(float(v)) for v in values) + "}"


def defines():
    """``#define`` lines the header needs, from the Python sources (one source of
    truth): ``IK_OP_* / IK_K_*`` from ``_program``; ``IK_VERSINE_DIRECT`` from
    ``_cpu``; ``IK_GELU_ANTIPODAL_Z`` from ``_duals``; ``IK_NUM_*`` (table
    geometry, Mehler terms, tolerance, quadrature nodes) from ``_numeric``.
    Floats are written by ``repr``, which round-trips every double exactly."""
    from . import _numeric as N
    from ._cpu import VERSINE_DIRECT
    from ._duals import GELU_ANTIPODAL_Z
    names = sorted(n for n in dir(P) if n.startswith(("OP_", "K_")))
    out = "".join(f"#define IK_{n} {getattr(P, n)}\n" for n in names)
    out += f"#define IK_VERSINE_DIRECT {VERSINE_DIRECT!r}\n"
    out += f"#define IK_GELU_ANTIPODAL_Z {GELU_ANTIPODAL_Z!r}\n"
    ints = {"NM": N.NM, "P": N.P, "NC": N.NC, "HDR": N.HDR, "HDR_QMAX": N.HDR_QMAX,
            "HDR_TAILS": N.HDR_TAILS, "HDR_PARITY": N.HDR_PARITY, "HDR_WCAP": N.HDR_WCAP,
            "HDR_LCAP": N.HDR_LCAP, "HDR_RCAP": N.HDR_RCAP, "NG": N.NG, "NGH": N.NGH,
            "GH_RULES": len(N.GH_SIGS), "MAX_BREAKS": N.MAX_BREAKS, "J": N.J}
    floats = {"U": N.U, "INV_H": 1.0 / N.H, "X_GRADED": N.X_GRADED, "X_ZERO": N.X_ZERO,
              "TOL": N.TOL, "ZC": N.ZC, "ZF": N.ZF,
              "DMAX": N.DMAX, "GH_SIG": N.GH_SIG,
              "INV_SQRT_2PI": 1.0 / math.sqrt(2.0 * math.pi)}
    out += "".join(f"#define IK_NUM_{k} {int(v)}\n" for k, v in ints.items())
    out += "".join(f"#define IK_NUM_{k} {float(v)!r}\n" for k, v in floats.items())
    # the Hermite recurrence h_n = z h_{n-1} / sqrt(n) - sqrt((n-1)/n) h_{n-2}
    # as _numeric.mehler_point computes its coefficients (n < 2 unused)
    a1 = [0.0, 0.0] + [1.0 / math.sqrt(n) for n in range(2, N.NM)]
    a0 = [0.0, 0.0] + [math.sqrt((n - 1.0) / n) for n in range(2, N.NM)]
    arrays = {"GLX12": N._GLX12, "GLW12": N._GLW12, "GLX16": N._GLX16, "GLW16": N._GLW16,
              "GHX": N._GHX, "GHW": N._GHW, "GH_SIGS": N._GH_SIGS, "GH_CLEARS": N._GH_CLEARS,
              "HERM_A1": a1, "HERM_A0": a0}
    out += "".join(f"#define IK_NUM_{k} {_array(v)}\n" for k, v in arrays.items())
    return out


def source(variant=None):
    """The complete code string: defines, the header inlined (so editing it
    changes CuPy's cache key), then ``gram.cu``.  ``variant``: (name, T,
    OutT, NR, numeric) to instantiate one kernel pair, with the numeric
    activations compiled in or out (``numeric``); None instantiates all, with
    the numeric activations."""
    head = defines()
    if variant is not None:
        name, t, out, nr, numeric = variant
        head += (f"#define IK_VARIANT_NAME {name}\n#define IK_VARIANT_T {t}\n"
                 f"#define IK_VARIANT_OUT {out}\n#define IK_VARIANT_NR {nr}\n"
                 f"#define IK_NUMERIC {int(bool(numeric))}\n")
    gram = read_source("gram.cu")
    include = '#include "infkernel_math.cuh"'
    if include not in gram:
        raise RuntimeError("cuda/gram.cu must include infkernel_math.cuh")
    return head + gram.replace(include, read_source("infkernel_math.cuh"))


@functools.lru_cache(maxsize=None)
def supported_kinds():
    """Activation kinds with a case in the header's dispatcher."""
    cases = set(re.findall(r"case IK_K_(\w+):", read_source("infkernel_math.cuh")))
    return {getattr(P, "K_" + c) for c in cases if hasattr(P, "K_" + c)}


def _kind_name(kind):
    for n in dir(P):
        if n.startswith("K_") and getattr(P, n) == kind:
            return n[2:].lower()
    return str(kind)


@functools.lru_cache(maxsize=None)
def _kernels(device_id, variant):
    """(ik_diag, ik_cross, ik_sym) of one variant, compiled for one device and
    memoised (CuPy also caches the binary on disk, keyed by the code string;
    RawModule compiles lazily, at the first get_function)."""
    import cupy
    suffix = f"{variant[0]}_{variant[3]}"
    with cupy.cuda.Device(device_id):
        mod = cupy.RawModule(code=source(variant), options=("-std=c++14",))
        return (mod.get_function("ik_diag"), mod.get_function("ik_cross_" + suffix),
                mod.get_function("ik_sym_" + suffix))


@functools.lru_cache(maxsize=None)
def _streams(device_id):
    """The two non-blocking streams the row blocks alternate between, one
    pair per device for the whole process (CuPy's memory pool keeps an arena
    per stream)."""
    import cupy
    with cupy.cuda.Device(device_id):
        return cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)


_TYPE_NAMES = {np.dtype(np.float64): ("f64", "double"),
               np.dtype(np.float32): ("f32", "float")}


def _variant(compute_dt, out_dt, n_regs, numeric=False):
    """Kernel variant: the numeric activations (quadrature, large code) are
    compiled only into the modules of programs that use them, so closed-form
    programs keep their register allocation."""
    nr = 1 if n_regs <= 1 else 4 if n_regs <= 4 else 32
    (tn, t), (on, o) = _TYPE_NAMES[compute_dt], _TYPE_NAMES[out_dt]
    return (f"{tn}_{on}", t, o, nr, bool(numeric))


# ----------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------

#: the ops with a slot of per-point table rows (``ik_diag_point``)
SLOT_OPS = (P.OP_DENSE, P.OP_ACT, P.OP_AXPY)

def _ptr(a, offset_elems=0):
    """Device address of a CuPy array plus an element offset, as a kernel argument."""
    return np.uint64(a.data.ptr + offset_elems * a.itemsize)


_NULL = np.uint64(0)


def _device_input(cp, x, name, d=None):
    """A C-contiguous float64 CuPy copy of ``x`` (validated as the CPU path does)."""
    from .kernel import check_inputs
    if not hasattr(x, "__cuda_array_interface__"):
        return cp.asarray(check_inputs(x, name, d))
    a = cp.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        hint = " (use x.reshape(-1, 1) for 1-D features)" if a.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (N, d), got shape {a.shape}{hint}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {a.shape}")
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{name} has {a.shape[1]} features, expected {d} (the same as x1)")
    a = cp.ascontiguousarray(a, dtype=cp.float64)
    bad = ~cp.isfinite(a).all(axis=1)
    if bool(bad.any()):
        rows = cp.flatnonzero(bad)[:6].get().tolist()
        raise ValueError(f"{name} has NaN or Inf in row(s) {rows[:5]}"
                         + (" ..." if len(rows) > 5 else ""))
    with np.errstate(over="ignore"):   # (NumPy stand-ins warn; CuPy does not)
        bad = ~cp.isfinite((a * a).sum(axis=1))
    if bool(bad.any()):
        from .kernel import norm_overflow
        rows = cp.flatnonzero(bad)[:6].get().tolist()
        raise norm_overflow(name, rows, a[rows[0]].get())
    return a


def supports(prog):
    """True when every op of the program has a GPU implementation."""
    return prog.n_regs <= _MAX_DIAG_REGS and prog.act_kinds <= supported_kinds()


def _check_program(prog):
    if prog.n_regs > _MAX_DIAG_REGS:
        raise ValueError(f"the network needs {prog.n_regs} kernel registers (parallel "
                         f"branches); the GPU backend supports up to {_MAX_DIAG_REGS}: "
                         "use backend='cpu'")
    missing = sorted(prog.act_kinds - supported_kinds())
    if missing:
        names = ", ".join(_kind_name(k) for k in missing)
        raise NotImplementedError(f"activation kind(s) {names} have no GPU implementation "
                                  "yet: use backend='cpu'")


def _free_bytes(cp):
    free, _total = cp.cuda.runtime.memGetInfo()
    return free + cp.get_default_memory_pool().free_bytes()


def _mib(b):
    return f"{b / 2**20:.0f} MiB"


class _Program:
    """A program uploaded to the device, with its diagonal pass."""

    def __init__(self, cp, prog):
        self.cp = cp
        self.prog = prog
        _check_program(prog)
        self.ops = cp.asarray(prog.ops.astype(np.int32))
        self.params = cp.asarray(prog.params)
        self.aux = cp.asarray(prog.aux)
        #: the ops with per-point table rows (Dense, activations, sums), in order:
        #: table rows 1 + 3 slot .. 3 + 3 slot (row 0: 1/|x|; ik_diag_point)
        self.slot_ops = np.flatnonzero(np.isin(prog.ops[:, 0], SLOT_OPS))
        #: the table row of each activation's input variance, by op
        self.v_rows = {int(k): 1 + 3 * a for a, k in enumerate(self.slot_ops)
                       if prog.ops[k, 0] == P.OP_ACT}
        #: (op index, table row of its input variance) of the numeric activations
        self.numeric = [(k, row) for k, row in self.v_rows.items()
                        if prog.ops[k, 3] == P.K_NUMERIC]
        slots = [int(prog.ops[k, 5]) for k, _ in self.numeric]
        if slots != list(range(len(slots))):
            raise RuntimeError(f"numeric activation slots {slots} are not 0, 1, ... in "
                               "program order (a layer emitted them inconsistently)")

    def diag(self, diag_kernel, x, features=True, name="x"):
        """(tables (1 + 3·slots, N) float64, features (rows, N) float64, K(x,x),
        Θ(x,x)) of device points x (the user's array ``name``);
        ``features=False``: only what the diagonal needs.  Raises the CPU
        backend's ValueErrors when a variance overflows or a numeric
        activation's input variance leaves its guaranteed range."""
        cp = self.cp
        n = x.shape[0]
        tab = cp.zeros((1 + 3 * len(self.slot_ops), max(n, 1)))
        from ._numeric import NM
        fr = 4 * NM + 2 if features else 2   # IK_NUM_FR, or E[φ²], E[φ'²] alone
        rows = len(self.numeric) * fr
        need = rows * max(n, 1) * 8
        if need and need > 0.9 * _free_bytes(cp):
            raise RuntimeError(
                f"too little free GPU memory for the per-point tables of the numeric "
                f"activations: {_mib(need)} needed ({rows} float64 per point), "
                f"{_mib(_free_bytes(cp))} free; compute the kernel in blocks of points, "
                "free device memory, or use backend='cpu'")
        feat = cp.zeros((max(rows, 1), max(n, 1)))
        kd = cp.empty(n)
        td = cp.empty(n)
        if n:
            threads = 64 if rows else 128  # numeric: large per-thread local arrays
            diag_kernel(((n + threads - 1) // threads,), (threads,),
                        (x, np.int64(n), np.int32(x.shape[1]), np.float64(1.0 / self.prog.d_in),
                         self.ops, self.params, self.aux, np.int32(self.prog.n_ops),
                         tab, feat, np.int32(fr), kd, td))
            self._check_finite(tab, kd, td, name)
            self._check_range(tab, name)
        return tab, feat, kd, td

    def _check_finite(self, tab, kd, td, name):
        """``_cpu.check_finite_variances`` on the device tables (the first
        offending point is brought to the host to name its layer)."""
        cp = self.cp
        bad = ~(cp.isfinite(tab[1::3]).all(axis=0) & cp.isfinite(kd) & cp.isfinite(td))
        if not bool(bad.any()):
            return
        from . import _cpu
        i = int(bad.argmax())
        V = np.zeros((self.prog.n_ops, 1))
        col = tab[:, i].get()
        for k, row in self.v_rows.items():
            V[k, 0] = col[row]
        _cpu.check_finite_variances(self.prog, V, kd[i:i + 1].get(), td[i:i + 1].get(), i,
                                    name)

    def _check_range(self, tab, name):
        """The variance-range check of ``_cpu.point_tables`` on the device tables."""
        from ._cpu import quadrature_range_error, variance_limit
        if not self.numeric:
            return
        idx = [row for _, row in self.numeric]
        vmax = tab[idx].max(axis=1).get()
        for (op, row), v in zip(self.numeric, vmax):
            if v > variance_limit(self.prog, op):
                i = int(tab[row].argmax().get())
                raise quadrature_range_error(self.prog, op, v, f"{name} row {i}")


def compute(net, x1, x2, names, single, *, out, dtype, progress, diagonal):
    """The GPU path of ``Network.kernel`` / ``Network.diag`` (see kernel.compute)."""
    require()
    import cupy as cp
    from .kernel import _check_out, _kernel_type, _progress_callback

    on_device = any(hasattr(a, "__cuda_array_interface__") for a in (x1, x2) if a is not None)
    a1 = _device_input(cp, x1, "x1")
    # the very same array: the symmetric path, as on the CPU
    a2 = None if (x2 is None or x2 is x1) else _device_input(cp, x2, "x2", a1.shape[1])
    prog = net.program(a1.shape[1])
    dev = _Program(cp, prog)
    dt = np.dtype(dtype)
    compute_dt = np.dtype(np.float64) if (dt == np.float64 or FLOAT32_MATH == "float64") \
        else np.dtype(np.float32)
    variant = _variant(compute_dt, dt, prog.n_regs, bool(dev.numeric))
    k_diag, k_cross, k_sym = _kernels(cp.cuda.Device().id, variant)

    def in_range(kd, td, name, other=None):
        """``_cpu.check_range`` (float32 results); returns the host diagonals (k, t)."""
        if dt == np.float64:
            return None
        from ._cpu import check_range
        k, t = kd.get() if "nngp" in names else None, td.get() if "ntk" in names else None
        check_range(dt, k, t, name, other=other)
        return k, t

    if diagonal:
        tab1, feat1, kd1, td1 = dev.diag(k_diag, a1, features=False)
        in_range(kd1, td1, "x")
        res = {"nngp": kd1, "ntk": td1}
        arrays = [res[g].astype(dt, copy=False) for g in names]
        if not on_device:
            arrays = [a.get() for a in arrays]
        return arrays[0] if single else _kernel_type(names)(*arrays)

    sym = a2 is None
    n1 = a1.shape[0]
    n2 = n1 if sym else a2.shape[0]
    shape = (n1, n2)
    outs, to_host = _outputs(cp, out, names, single, shape, dt, on_device, _check_out,
                             [("x1", a1), ("x2", a2)])
    tab1, feat1, kd1, td1 = dev.diag(k_diag, a1, name="x1")
    from ._cpu import OTHER_UNKNOWN
    diag1 = in_range(kd1, td1, "x1", other=None if sym else OTHER_UNKNOWN)
    res = dict(zip(names, outs))
    callback, close = _progress_callback(progress)
    try:
        if n1 and n2:
            if sym:
                tab2, feat2 = tab1, feat1
            else:
                tab2, feat2, kd2, td2 = dev.diag(k_diag, a2, name="x2")
                in_range(kd2, td2, "x2", other=diag1)
            _gram(cp, dev, k_cross, k_sym, a1, a2, tab1, tab2, feat1, feat2, kd1, td1,
                  res.get("nngp"), res.get("ntk"), compute_dt, dt, to_host, callback)
    finally:
        close()
    return outs[0] if single else _kernel_type(names)(*outs)


def _overlap(a, b):
    """Whether two CuPy arrays' memory spans overlap."""
    return a.data.ptr < b.data.ptr + b.nbytes and b.data.ptr < a.data.ptr + a.nbytes


def _outputs(cp, out, names, single, shape, dt, on_device, check_out, inputs):
    """(output arrays in ``names`` order, whether they are host arrays); CuPy
    ``out`` arrays must not overlap each other or the device ``inputs``
    (read while the outputs are written; host inputs were copied)."""
    n_out = len(names)
    if out is None:
        if not on_device:
            return new_outputs(shape, dt, n_out), True
        need = shape[0] * shape[1] * dt.itemsize * n_out
        free = _free_bytes(cp)
        if need > 0.9 * free:
            raise RuntimeError(
                f"too little free GPU memory for the {shape} result(s): {_mib(need)} needed, "
                f"{_mib(free)} free; pass NumPy inputs or out= NumPy arrays (np.memmap "
                "works) to stream the result to host memory, free device memory, or use "
                "backend='cpu'")
        return [cp.empty(shape, dt) for _ in names], False
    outs = [out] if single else list(out) if isinstance(out, (tuple, list)) else None
    if outs is None or len(outs) != n_out:
        raise ValueError(f"out must be {'one array' if single else f'a tuple of {n_out} arrays'}"
                         f" for get={names if not single else names[0]!r}")
    on_gpu = [hasattr(a, "__cuda_array_interface__") for a in outs]
    if all(on_gpu):
        for g, a in zip(names, outs):
            if not isinstance(a, cp.ndarray):
                raise TypeError(f"out for {g!r} must be a CuPy or NumPy array, "
                                f"got {type(a).__name__}")
            if a.shape != shape or a.dtype != dt:
                raise ValueError(f"out for {g!r} must have shape {shape} and dtype {dt}, "
                                 f"got shape {a.shape} and dtype {a.dtype}")
            if not a.flags.c_contiguous:
                raise ValueError(f"out for {g!r} must be a C-contiguous CuPy array")
        if n_out == 2 and _overlap(*outs):
            raise ValueError("the out arrays for 'nngp' and 'ntk' share memory: pass two "
                             "distinct arrays")
        for g, a in zip(names, outs):
            for name, x in inputs:
                if x is not None and _overlap(a, x):
                    raise ValueError(f"out for {g!r} overlaps {name}: each output needs "
                                     "memory of its own")
        return outs, False
    if any(on_gpu):
        raise TypeError("out arrays must be all NumPy or all CuPy arrays")
    return check_out(out, names, single, shape, dt), True


def _copy_to_host(cp, buf, rows, cols, host, r0, c0, stream):
    """host[r0:r0+rows, c0:c0+cols] = buf (rows x cols, C-contiguous device)."""
    dst = host[r0:r0 + rows, c0:c0 + cols]
    if rows == 0 or cols == 0:
        return
    isz = host.itemsize
    if host.strides[1] == isz and host.strides[0] >= cols * isz:
        cp.cuda.runtime.memcpy2DAsync(dst.ctypes.data, host.strides[0], buf.data.ptr,
                                      cols * isz, cols * isz, rows,
                                      cp.cuda.runtime.memcpyDeviceToHost, stream.ptr)
        stream.synchronize()
    else:  # an arbitrary strided view: go through a contiguous host copy
        with stream:
            dst[...] = buf[:rows * cols].reshape(rows, cols).get(stream=stream)
        stream.synchronize()


def _gram(cp, dev, k_cross, k_sym, a1, a2, tab1, tab2, feat1, feat2, kd1, td1, K, T,
          compute_dt, out_dt, to_host, callback):
    """Fill K and/or T (None if not requested) block of rows by block of rows."""
    sym = a2 is None
    n1 = a1.shape[0]
    n2 = n1 if sym else a2.shape[0]
    ct = compute_dt
    outs = [A for A in (K, T) if A is not None]
    host = [np.asarray(A) for A in outs] if to_host else None  # memmap -> plain view
    # Operands in the compute type.
    xa = a1.astype(ct, copy=False)
    xb = xa if sym else a2.astype(ct, copy=False)
    t1 = tab1.astype(ct, copy=False)
    t2 = t1 if sym else tab2.astype(ct, copy=False)
    kdc = kd1.astype(ct, copy=False)
    tdc = td1.astype(ct, copy=False)
    inv_d = ct.type(1.0 / dev.prog.d_in)

    # Rows per block: the GEMM block (and output buffers when streaming), two in
    # flight, within TILE_BYTES and 40 % of free memory; at least one tile of rows.
    per_row = n2 * (ct.itemsize + (len(outs) * out_dt.itemsize if to_host else 0))
    free = _free_bytes(cp)
    if 2 * min(n1, _TILE) * per_row > 0.9 * free:
        raise RuntimeError(
            f"too little free GPU memory: a block of {_TILE} rows needs "
            f"{_mib(2 * _TILE * per_row)}, {_mib(free)} free; free device "
            "memory (e.g. cupy.get_default_memory_pool().free_all_blocks()) or use "
            "backend='cpu'")
    rows_fit = min(TILE_BYTES, int(0.4 * free)) // (2 * per_row)
    R = n1 if rows_fit >= n1 else max(_TILE, rows_fit // _TILE * _TILE)
    R = min(R, 65535 * _TILE)
    streams = _streams(cp.cuda.Device().id)
    gbuf = [None, None]
    obuf = [None, None]
    total = n1 * (n1 - 1) // 2 if sym else n1 * n2
    done = 0
    pending = None  # (block index, r0, r1, c0) whose output awaits copying to host
    start = cp.cuda.get_current_stream()
    ev = start.record()  # inputs/tables were made on the current stream
    for s in streams:
        s.wait_event(ev)

    def finish(blk):
        nonlocal done
        b, r0, r1, c0 = blk
        s = streams[b % 2]
        if to_host:
            for A, buf in zip(host, obuf[b % 2]):
                _copy_to_host(cp, buf, r1 - r0, n2 - c0, A, r0, c0, s)
        if callback is not None:
            s.synchronize()
            done += ((r1 - r0) * (2 * n1 - r0 - r1 - 1) // 2 if sym else (r1 - r0) * n2)
            callback(done, total)

    try:
        for b, r0 in enumerate(range(0, n1, R)):
            r1 = min(n1, r0 + R)
            rows = r1 - r0
            c0 = r0 if sym else 0
            cols = n2 - c0
            s = streams[b % 2]
            with s:
                if gbuf[b % 2] is None:
                    gbuf[b % 2] = cp.empty(R * n2, ct)
                    if to_host:
                        obuf[b % 2] = [cp.empty(R * n2, out_dt) for _ in outs]
                G = gbuf[b % 2][:rows * cols].reshape(rows, cols)
                cp.matmul(xa[r0:r1], xb[c0:].T, out=G)
                if to_host:
                    ok = [_ptr(buf) for buf in obuf[b % 2]]
                    ldo = cols
                else:
                    ok = [_ptr(A, r0 * n2 + c0) for A in outs]
                    ldo = n2
                it = iter(ok)
                kp = next(it) if K is not None else _NULL
                tp = next(it) if T is not None else _NULL
                grid = ((cols + _TILE - 1) // _TILE, (rows + _TILE - 1) // _TILE)
                d = xa.shape[1]
                common = (G, np.int64(cols), np.int32(rows), np.int32(cols), inv_d,
                          _ptr(t1, r0), np.int64(t1.shape[1]), _ptr(t2, c0), np.int64(t2.shape[1]),
                          _ptr(feat1, r0), _ptr(feat2, c0), dev.ops, dev.params, dev.aux,
                          np.int32(dev.prog.n_ops), _ptr(xa, r0 * d), _ptr(xb, c0 * d),
                          np.int32(d))
                if sym:
                    k_sym(grid, _BLOCK, common + (_ptr(kdc, r0), _ptr(tdc, r0), kp, tp,
                                                  np.int64(ldo), np.int32(0 if to_host else 1)))
                else:
                    k_cross(grid, _BLOCK, common + (kp, tp, np.int64(ldo)))
            if pending is not None:
                finish(pending)
            pending = (b, r0, r1, c0)
        if pending is not None:
            finish(pending)
    finally:
        # also on an exception (e.g. KeyboardInterrupt in the progress callback):
        # no kernel may still write into buffers that return to CuPy's pool
        for s in streams:
            s.synchronize()
    if sym and to_host:
        from ._cpu import _mirror
        for A in host:
            _mirror(A, 64)
