"""Argument checks shared by every module: one message format for scalars."""
import math

import numpy as np


#: Largest magnitude of a parameter that the kernels square (a standard
#: deviation, an activation's scale): its square must stay a finite double.
SQUARED_MAX = 1e150


def real(name, value, lower=None, strict=False, squared=False):
    """``value`` as a float, or a clear error naming ``name``.

    TypeError unless it is a real number (bool excluded); ValueError unless it
    is finite and, when ``lower`` is given, >= lower (> lower if ``strict``);
    ``squared``: also |value| <= SQUARED_MAX (the kernels square it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    below = lower is not None and (value <= lower if strict else value < lower)
    if not math.isfinite(value) or below:
        bound = "" if lower is None else f" and {'>' if strict else '>='} {lower:g}"
        raise ValueError(f"{name} must be finite{bound}, got {value}")
    if squared and abs(value) > SQUARED_MAX:
        raise ValueError(f"{name} must be at most {SQUARED_MAX:g} in magnitude (the kernel "
                         f"squares it), got {value!r}")
    return float(value)
