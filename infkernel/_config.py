"""Numba compilation flags and tiling constants, in one place.

``error_model="numpy"`` makes float division by zero return inf/nan instead of
raising, which keeps the per-entry loops free of checks so that LLVM can
vectorise them.  ``fastmath`` is limited to contraction (FMA), which changes
results by at most an ulp per operation and never touches inf/nan handling.
"""

import hashlib
from pathlib import Path


def _drop_stale_numba_cache():
    """numba keys a cached function on its own file only, not on the functions
    it inlines from other modules: when any source of the package changes,
    drop the package's cached machine code so nothing stale is loaded."""
    pkg = Path(__file__).parent
    try:
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(pkg.glob("*.py"))))
        stamp = pkg / "__pycache__" / "numba-sources.sha1"
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return
        for f in list(stamp.parent.glob("*.nbi")) + list(stamp.parent.glob("*.nbc")):
            f.unlink()
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # read-only installation: numba falls back to its own cache dir
        pass


_drop_stale_numba_cache()

JIT = dict(nogil=True, cache=not __import__("os").environ.get("IK_NOCACHE"), error_model="numpy",
           fastmath={"contract"})

#: Columns processed together by one thread: the per-layer registers of a tile
#: (2 x registers x TILE doubles) stay in L1/L2 cache.
TILE = 512

#: Rows processed together by one thread (at most; fewer for small inputs, so
#: that every thread gets several groups): their inner products with a column
#: tile come from one small GEMM (ROWS x TILE doubles, L2-resident), and the
#: column points are read once per group, which matters for long inputs
#: (d = 3072: 1.2 s with 256 rows, 2.0 s with 32 at N = 4000).
ROWS = 256

#: A cross kernel with fewer columns than this (and more rows) is computed
#: transposed, K(x1, x2) = K(x2, x1)ᵀ, its few points as rows: a row costs
#: ~0.5 µs per tile beyond its entries, which a tile of a few columns does not
#: amortise (ReLU depth 3, 4000 × 1: 2.4 → 0.34 ms; equal at ~32 columns).
THIN = 32

#: Entries per call of the tile kernel (progress is reported between calls).
BLOCK_ENTRIES = 1 << 22

#: Rows per call at most when a cross kernel has numeric activations: their
#: per-point Mehler features (3 KB per point and activation) are computed per
#: call, so a tall x1 against a short x2 holds at most this many rows' worth.
FEATURE_ROWS = 4096

#: Scalar functions called inside per-entry loops: inlined at numba-IR level so
#: that LLVM sees the whole loop body and vectorises it.
INLINE = dict(JIT, inline="always")

#: Work (entries × ops) below which a kernel call runs on the calling thread
#: alone: handing shares to other threads costs about 60 µs, the time of
#: ~30,000 entry-ops (``_cpu.in_parallel``).
SERIAL_WORK = 100_000
