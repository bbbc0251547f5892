"""GPU backend (CuPy raw CUDA kernels built from the sources in ``cuda/``)."""
import functools


@functools.lru_cache(maxsize=None)
def _probe():
    """None when a CUDA device is usable through CuPy, else the reason."""
    try:
        import cupy
    except ImportError:
        return 'CuPy is not installed: pip install "infkernel[gpu]"'
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        return f"no CUDA device is available ({exc})"
    return None if n > 0 else "no CUDA device is available"


def available():
    """True when CuPy and a CUDA device are present."""
    return _probe() is None


def require():
    """Raise a RuntimeError saying why the GPU backend cannot run."""
    reason = _probe()
    if reason is not None:
        raise RuntimeError(f"backend='gpu' was requested but {reason}; "
                           "use backend='cpu' or 'auto' to run on the CPU")


def compute(net, x1, x2, names, single, *, out, dtype, progress, diagonal):
    raise NotImplementedError("the GPU backend is not built yet; use backend='cpu'")
