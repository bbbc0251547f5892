"""Numba compilation flags and tiling constants, in one place.

``error_model="numpy"`` makes float division by zero return inf/nan instead of
raising, which keeps the per-entry loops free of checks so that LLVM can
vectorise them.  ``fastmath`` is limited to contraction (FMA), which changes
results by at most an ulp per operation and never touches inf/nan handling.
"""

JIT = dict(nogil=True, cache=not __import__("os").environ.get("IK_NOCACHE"), error_model="numpy",
           fastmath={"contract"})

#: Columns processed together by one thread: the per-layer registers of a tile
#: (2 x registers x TILE doubles) stay in L1/L2 cache.
TILE = 512

#: Upper bound on the entries of the input-GEMM block held in memory at once
#: (doubles).  The only temporary whose size grows with N; 2**22 doubles = 32 MiB.
BLOCK_ENTRIES = 1 << 22

#: Scalar functions called inside per-entry loops: inlined at numba-IR level so
#: that LLVM sees the whole loop body and vectorises it.
INLINE = dict(JIT, inline="always")
