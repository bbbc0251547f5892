"""Argument checks shared by every module: one message format for scalars."""
import math
import os
import sys
import warnings
from collections import namedtuple
from functools import lru_cache

import numpy as np


class KernelRangeError(ValueError):
    """The kernel is not computable at these parameters and inputs: a
    variance overflows float64 (or an expectation diverges), or leaves a
    quadrature's guaranteed range.  Optimisers treat such parameters as
    infeasible (``hyper.fit_hyperparameters``, ``sklearn.NetworkKernel``)."""


def warn(message, category):
    """``warnings.warn`` attributed to the first caller outside this package
    (the user's line), however deep inside it the warning arises."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 2      # stacklevel 2: the caller of warn()
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


#: Largest magnitude of a parameter that the kernels square (a standard
#: deviation, an activation's scale): its square must stay a finite double.
SQUARED_MAX = 1e150


@lru_cache(maxsize=None)
def result_type(typename, fields):
    """The namedtuple class ``typename`` with ``fields`` (a tuple), one per
    field order, as results for a tuple ``get`` (``Kernel('ntk', 'nngp')``,
    predict's ``Gaussians``): picklable although made at run time (joblib,
    multiprocessing), rebuilt through this function."""
    cls = namedtuple(typename, fields)
    cls.__reduce__ = lambda self: (_rebuild_result, (typename, fields, tuple(self)))
    return cls


def _rebuild_result(typename, fields, values):
    return result_type(typename, fields)(*values)


def real(name, value, lower=None, strict=False, squared=False, inf=False):
    """``value`` as a float, or a clear error naming ``name``.

    TypeError unless it is a real number (bool excluded); ValueError unless it
    is finite (or +inf, with ``inf``) and, when ``lower`` is given, >= lower
    (> lower if ``strict``); ``squared``: also |value| <= SQUARED_MAX (the
    kernels square it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)   # compared as a double: no float32 overflow warnings
    below = lower is not None and (v <= lower if strict else v < lower)
    if math.isnan(v) or below or (math.isinf(v) and not (inf and v > 0)):
        bound = "" if lower is None else f" and {'>' if strict else '>='} {lower:g}"
        kind = "a number (inf allowed)" if inf else "finite"
        raise ValueError(f"{name} must be {kind}{bound}, got {value}")
    if squared and abs(v) > SQUARED_MAX:
        raise ValueError(f"{name} must be at most {SQUARED_MAX:g} in magnitude (the kernel "
                         f"squares it), got {value!r}")
    return v


def count(name, value, minimum=1):
    """``value`` as an int, or an error naming ``name``: TypeError unless an
    integer (bool excluded), ValueError below ``minimum`` or beyond int64
    (every count sizes or indexes arrays)."""
    want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {want}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    if value > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must be below 2**63, got an integer of "
                         f"{int(value).bit_length()} bits")
    return int(value)


def no_overflow(what, *arrays):
    """``arrays``, or a KernelRangeError: a finite network's parameters and
    inputs are checked finite, so a NaN or Inf in its results (``what``) is
    an overflow of float64."""
    for a in arrays:
        if a is not None and not np.isfinite(a).all():
            raise KernelRangeError(f"the finite network's {what} overflow float64 at these "
                                   "parameters and inputs: scale them down")
    return arrays


def real_array(name, value, finite=False, what="an array of real numbers", bools=False):
    """``value`` as a float64 array, or a TypeError naming ``name``: no strings
    (NumPy would parse them), booleans (unless ``bools``: 0 / 1 targets),
    complex numbers (cut to their real parts), ragged sequences or namedtuples
    of arrays (a ``Kernel``: NumPy would stack its fields); ``finite``: NaN
    or Inf is a ValueError."""
    if hasattr(value, "_fields"):
        raise TypeError(f"{name} must be {what}, got a {type(value).__name__} with fields "
                        f"{value._fields}: pass one of them (e.g. .{value._fields[-1]})")
    try:
        with warnings.catch_warnings():       # NumPy 1.x: ragged sequences warn
            warnings.simplefilter("error", getattr(np, "exceptions", np).VisibleDeprecationWarning)
            a = np.asarray(value)
    except (TypeError, ValueError, Warning) as exc:    # ragged sequences
        raise TypeError(f"{name} must be {what}: {exc}") from None
    if a.dtype.kind not in ("biuf" if bools else "iuf"):
        raise TypeError(f"{name} must be {what}, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if finite and not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or Inf entries")
    return a


def flag(name, value):
    """``value`` as a bool, or a TypeError naming ``name`` (no truthy strings)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def entropy(name, key):
    """``np.random.SeedSequence`` entropy from a non-negative int seed or a
    PRNG key's value (neural-tangents passes ``jax.random.PRNGKey(k)``, an
    array of non-negative integers)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if key < 0:
            raise ValueError(f"{name} must be >= 0, got {key}")
        return int(key)
    try:
        a = np.asarray(key)
    except Exception:
        a = np.zeros(0)
    if a.ndim == 1 and a.size and a.dtype.kind in "ui" and np.all(a >= 0):
        return [int(v) for v in a]
    raise TypeError(f"{name} must be a non-negative int or a PRNG key (a 1-D array of "
                    f"non-negative integers), got {key!r}")


#: the kernels a ``get`` names
KERNELS = ("nngp", "ntk")


def parse_get(get, valid=KERNELS):
    """(names, single) for a ``get`` argument: a name, a tuple of names (in
    ``valid``; case-insensitive, as neural-tangents) or None (the kernels)."""
    if get is None:
        return KERNELS, False
    if isinstance(get, str):
        names, single = (get.lower(),), True
    elif isinstance(get, (tuple, list)) and get and all(isinstance(g, str) for g in get):
        names, single = tuple(g.lower() for g in get), False
    else:
        got = f"an array of shape {get.shape}" if hasattr(get, "shape") else repr(get)
        raise TypeError(f"get must be 'nngp', 'ntk', a tuple of them or None, got {got}")
    for g in names:
        if g not in valid:
            raise ValueError(f"unknown get={g!r}: valid values are {valid}")
    if len(set(names)) != len(names):
        raise ValueError(f"get has repeated entries: {names}")
    return names, single


def one_kernel(get):
    """'nngp' or 'ntk' from a single ``get`` (case-insensitive)."""
    if not isinstance(get, str) or get.lower() not in KERNELS:
        raise ValueError(f"get must be 'nngp' or 'ntk', got {get!r}")
    return get.lower()


def available_memory():
    """Bytes of memory available to a new allocation without swapping
    (Linux's MemAvailable, and below a cgroup v2 limit, as in containers,
    the limit less the group's usage), or None where unknown."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                left = int(limit) - int(f.read())
            free = left if free is None else min(free, left)
    except (OSError, ValueError, IndexError):
        pass
    return free


def new_outputs(shape, dtype, n):
    """``n`` new arrays of ``shape`` and ``dtype`` for results, or a
    MemoryError before any work where they would not fit in the memory
    available (overcommitted allocations succeed and fail later, mid-run)."""
    dtype = np.dtype(dtype)
    need = math.prod(shape) * dtype.itemsize * n
    free = available_memory() if need > 2 ** 30 else None    # small ones: no file read
    if free is not None and need > free:
        raise MemoryError(
            f"the result needs {need / 2 ** 30:.1f} GiB ({n} array(s) of shape {shape}, "
            f"{dtype.name}) and {free / 2 ** 30:.1f} GiB of memory is available: ask for one "
            "kernel (get='nngp' or 'ntk'), dtype=np.float32, or pass out= arrays on disk "
            "(np.lib.format.open_memmap), which the kernels fill tile by tile")
    return [np.empty(shape, dtype) for _ in range(n)]
