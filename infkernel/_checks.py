"""Argument checks shared by every module: one message format for scalars."""
import math

import numpy as np


def real(name, value, lower=None, strict=False):
    """``value`` as a float, or a clear error naming ``name``.

    TypeError unless it is a real number (bool excluded); ValueError unless it
    is finite and, when ``lower`` is given, >= lower (> lower if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    below = lower is not None and (value <= lower if strict else value < lower)
    if not math.isfinite(value) or below:
        bound = "" if lower is None else f" and {'>' if strict else '>='} {lower:g}"
        raise ValueError(f"{name} must be finite{bound}, got {value}")
    return float(value)
