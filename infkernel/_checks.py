"""Argument checks shared by every module: one message format for scalars."""
import math

import numpy as np


class KernelRangeError(ValueError):
    """The kernel is not computable at these parameters and inputs: a
    variance overflows float64 (or an expectation diverges), or leaves a
    quadrature's guaranteed range.  Optimisers treat such parameters as
    infeasible (``hyper.fit_hyperparameters``, ``sklearn.NetworkKernel``)."""


#: Largest magnitude of a parameter that the kernels square (a standard
#: deviation, an activation's scale): its square must stay a finite double.
SQUARED_MAX = 1e150


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
    integer (bool excluded), ValueError below ``minimum``."""
    want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {want}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return int(value)


def real_array(name, value, finite=False, what="an array of real numbers", bools=False):
    """``value`` as a float64 array, or a TypeError naming ``name``: no strings
    (NumPy would parse them), booleans (unless ``bools``: 0 / 1 targets),
    complex numbers (cut to their real parts) or ragged sequences; ``finite``:
    NaN or Inf is a ValueError."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as exc:    # ragged sequences
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
