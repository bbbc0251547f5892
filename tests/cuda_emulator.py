"""A stand-in for CuPy that runs ``cuda/gram.cu`` on the CPU, for testing the
GPU driver (``infkernel/gpu.py``) and its kernels on machines without a GPU.

"Device" arrays are host arrays (an ``ndarray`` subclass with CuPy's
``.get()``, ``.data.ptr`` and ``__cuda_array_interface__``).  ``RawModule``
compiles the code string with g++ after a prelude that maps CUDA's built-ins
to C++: each launch runs the blocks one after another and the threads of a
block as OS threads, so ``__syncthreads()`` (a C++20 barrier; exited threads
drop out, as on the device) and ``__shared__`` memory (``static``, one block
at a time) behave as on a GPU.  Kernel arguments are checked against the
kernel's parameter list the way the device would misread them: a pointer
where a pointer is expected, an array whose dtype is the pointee type, and a
scalar of exactly the parameter's C type and size (CuPy passes NumPy scalars
by their own size, so an int64 where the kernel takes ``int`` is a bug).

What it cannot show: speed, and races that need true warp concurrency.
"""
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import types
from pathlib import Path

import numpy as np

PRELUDE = r"""
#include <barrier>
#include <thread>
#include <vector>
struct uint3 { unsigned x, y, z; };
typedef uint3 dim3;
thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;
namespace ik_emu { thread_local std::barrier<>* block_barrier; }
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() ik_emu::block_barrier->arrive_and_wait()
"""

LAUNCHER = r"""
namespace ik_emu {
template <class F>
void launch(const unsigned* d, F kernel) {
  const unsigned nt = d[3] * d[4] * d[5];
  for (unsigned gz = 0; gz < d[2]; ++gz)
    for (unsigned gy = 0; gy < d[1]; ++gy)
      for (unsigned gx = 0; gx < d[0]; ++gx) {
        std::barrier<> bar(nt);
        std::vector<std::thread> threads;
        threads.reserve(nt);
        for (unsigned tz = 0; tz < d[5]; ++tz)
          for (unsigned ty = 0; ty < d[4]; ++ty)
            for (unsigned tx = 0; tx < d[3]; ++tx)
              threads.emplace_back([&, tx, ty, tz] {
                threadIdx = {tx, ty, tz};
                blockIdx = {gx, gy, gz};
                blockDim = {d[3], d[4], d[5]};
                gridDim = {d[0], d[1], d[2]};
                block_barrier = &bar;
                kernel();
                bar.arrive_and_drop();
              });
        for (auto& t : threads) t.join();
      }
}
}  // namespace ik_emu
"""

_SCALARS = {"int": np.int32, "unsigned": np.uint32, "unsigned int": np.uint32,
            "long long": np.int64, "unsigned long long": np.uint64,
            "double": np.float64, "float": np.float32}
_POINTEES = {"double": np.float64, "float": np.float32, "int": np.int32,
             "long long": np.int64}


def compiler():
    """Path of g++ when it can build the emulator (C++20), else None."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        return None
    probe = subprocess.run([cxx, "-std=c++20", "-x", "c++", "-fsyntax-only", "-"],
                           input="#include <barrier>\nint main(){std::barrier<> b(1);}\n",
                           capture_output=True, text=True)
    return cxx if probe.returncode == 0 else None


# ----------------------------------------------------------------------------
# arrays and memory
# ----------------------------------------------------------------------------

class ndarray(np.ndarray):
    """A host array standing for device memory."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def __cuda_array_interface__(self):
        return self.__array_interface__

    def get(self, stream=None):
        return np.array(self, copy=True).view(np.ndarray)

    def argmax(self, *args, **kwargs):
        return _dev(np.asarray(np.ndarray.argmax(self, *args, **kwargs)))

    def max(self, *args, **kwargs):
        return _dev(np.asarray(np.ndarray.max(self, *args, **kwargs)))


def _dev(a):
    return np.asarray(a).view(ndarray)


def asarray(a, dtype=None):
    if isinstance(a, ndarray) and (dtype is None or a.dtype == dtype):
        return a
    return _dev(np.array(a, dtype=dtype, copy=True))


def ascontiguousarray(a, dtype=None):
    return _dev(np.ascontiguousarray(a, dtype=dtype))


def empty(shape, dtype=np.float64):
    return _dev(np.empty(shape, dtype))


def zeros(shape, dtype=np.float64):
    return _dev(np.zeros(shape, dtype))


def ones(shape, dtype=np.float64):
    return _dev(np.ones(shape, dtype))


def isfinite(a):
    return _dev(np.isfinite(a))


def flatnonzero(a):
    return _dev(np.flatnonzero(a))


def matmul(a, b, out=None):
    if out is not None:
        np.matmul(a, b, out=out)
        return out
    return _dev(np.matmul(a, b))


float64, float32 = np.float64, np.float32


class _Pool:
    def free_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_POOL = _Pool()


def get_default_memory_pool():
    return _POOL


# ----------------------------------------------------------------------------
# cupy.cuda
# ----------------------------------------------------------------------------

class _Event:
    pass


class Stream:
    def __init__(self, non_blocking=False):
        self.ptr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def record(self):
        return _Event()

    def wait_event(self, event):
        pass


class Event:
    def __init__(self):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        pass


def get_elapsed_time(start, end):
    """Milliseconds between two recorded events."""
    return (end.time - start.time) * 1e3


class Device:
    def __init__(self, device_id=0):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _memcpy2d(dst, dpitch, src, spitch, width, height, kind, stream):
    for r in range(height):
        ctypes.memmove(dst + r * dpitch, src + r * spitch, width)


runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda device_id: {"name": b"CUDA emulator (g++, CPU threads)"},
    memGetInfo=lambda: (64 << 30, 80 << 30),
    memcpyDeviceToHost=2,
    memcpy2DAsync=_memcpy2d,
)
cuda = types.SimpleNamespace(Device=Device, Stream=Stream, Event=Event, runtime=runtime,
                             get_current_stream=lambda: Stream(),
                             get_elapsed_time=get_elapsed_time,
                             nvrtc=types.SimpleNamespace(getVersion=lambda: (13, 0)),
                             cublas=types.SimpleNamespace())
__version__ = "emulator"


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


# ----------------------------------------------------------------------------
# RawModule: compile with g++, launch with argument checks
# ----------------------------------------------------------------------------

_KERNEL = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{')


def _parse_params(text):
    """[(C type, name)] of one parameter list."""
    params = []
    for p in text.split(","):
        p = " ".join(p.replace("__restrict__", " ").replace("*", " * ").split())
        ctype, name = p.rsplit(" ", 1)
        params.append((ctype.replace("const ", "").strip(), name))
    return params


class RawKernel:
    def __init__(self, lib, name, params):
        self.name = name
        self.params = params
        self._fn = getattr(lib, "ik_emu_launch_" + name)
        self._fn.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p)]
        self._fn.restype = None

    def _marshal(self, i, ctype, value):
        where = f"{self.name}: argument {i} ({ctype} {self.params[i][1]})"
        pointer = ctype.endswith("*")
        if isinstance(value, ndarray):
            pointee = _POINTEES.get(ctype[:-1].strip()) if pointer else None
            if pointee is None or value.dtype != pointee:
                raise TypeError(f"{where}: got an array of dtype {value.dtype}")
            if not value.flags.c_contiguous:
                raise TypeError(f"{where}: array is not C-contiguous")
            return ctypes.c_uint64(value.ctypes.data)
        if pointer:
            if not isinstance(value, np.uint64):
                raise TypeError(f"{where}: a pointer must be passed as an array or "
                                f"np.uint64, got {type(value).__name__}")
            return ctypes.c_uint64(int(value))
        expected = _SCALARS[ctype]
        if not isinstance(value, np.generic) or value.dtype != expected:
            raise TypeError(f"{where}: expected a {np.dtype(expected)} scalar, got "
                            f"{type(value).__name__} {getattr(value, 'dtype', '')}")
        return np.ctypeslib.as_ctypes_type(expected)(value)

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, "
                            f"got {len(args)}")
        dims = [int(v) for v in tuple(grid) + (1,) * (3 - len(grid))]
        dims += [int(v) for v in tuple(block) + (1,) * (3 - len(block))]
        if any(v < 1 for v in dims) or dims[3] * dims[4] * dims[5] > 1024:
            raise ValueError(f"{self.name}: invalid launch grid {grid} block {block}")
        holders = [self._marshal(i, ctype, v) for i, ((ctype, _), v)
                   in enumerate(zip(self.params, args))]
        ptrs = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        self._fn((ctypes.c_uint * 6)(*dims), ptrs)


def _cache_dir():
    d = Path(os.environ.get("IK_EMU_CACHE", Path(tempfile.gettempdir()) / "infkernel-cuda-emu"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@functools.lru_cache(maxsize=None)
def _build(code):
    """(shared library, {kernel: params}) for one code string (cached on disk)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("the CUDA emulator needs g++ with C++20")
    key = hashlib.sha1((PRELUDE + LAUNCHER + code).encode()).hexdigest()[:20]
    d = _cache_dir()
    src = d / f"{key}.cpp"
    so = d / f"{key}.so"
    pre = subprocess.run([cxx, "-std=c++20", "-E", "-P", "-x", "c++", "-"],
                         input=PRELUDE + code, capture_output=True, text=True)
    if pre.returncode:
        raise RuntimeError(f"preprocessing failed:\n{pre.stderr[-3000:]}")
    kernels = {m.group(1): _parse_params(m.group(2)) for m in _KERNEL.finditer(pre.stdout)}
    if not so.exists():
        launchers = []
        for name, params in kernels.items():
            call = ", ".join(f"*({t}*)a[{i}]" for i, (t, _) in enumerate(params))
            launchers.append(f'extern "C" void ik_emu_launch_{name}(const unsigned* d, '
                             f'void** a) {{ ik_emu::launch(d, [=] {{ {name}({call}); }}); }}')
        src.write_text(PRELUDE + code + LAUNCHER + "\n".join(launchers) + "\n")
        tmp = d / f"{key}.{os.getpid()}.so"
        proc = subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                               "-w", str(src), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"g++ failed on the CUDA sources:\n{proc.stderr[-3000:]}")
        tmp.replace(so)
    return ctypes.CDLL(str(so)), kernels


class RawModule:
    def __init__(self, code, options=()):
        self._lib, self._kernels = _build(code)

    def get_function(self, name):
        if name not in self._kernels:
            raise KeyError(f"no kernel {name!r} in the module")
        return RawKernel(self._lib, name, self._kernels[name])
