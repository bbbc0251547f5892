"""The GPU tests (test_gpu.py) on the CPU: the driver ``infkernel/gpu.py`` and
the kernels of ``cuda/gram.cu`` run against ``cuda_emulator``, a CuPy stand-in
that compiles the CUDA sources with g++ and runs every thread of a launch.

This checks what a device run would: launch geometry, argument types and
sizes, pointer offsets, row blocks on two streams, streaming to host memory,
the symmetric kernel's shared-memory transposition, and the numbers against
the CPU backend.  Speed is measured only on a device (benchmarks/gpu_check.py).
"""
import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import cuda_emulator
import infkernel as ik
from infkernel import gpu

if cuda_emulator.compiler() is None:
    pytest.skip("no g++ with C++20 on PATH: cannot emulate the CUDA kernels",
                allow_module_level=True)


@contextlib.contextmanager
def emulated_cupy():
    """``import cupy`` gives the emulator inside the block (and only there)."""
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = cuda_emulator
    for f in (gpu._probe, gpu._kernels, gpu._streams):
        f.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
        for f in (gpu._probe, gpu._kernels, gpu._streams):
            f.cache_clear()


# The device tests, imported as a separate module while the emulator stands in
# for CuPy: their module-level ``cp`` is the emulator.
with emulated_cupy():
    _spec = importlib.util.spec_from_file_location(
        "_gpu_tests_emulated", Path(__file__).with_name("test_gpu.py"))
    _cases = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_cases)
globals().update({k: v for k, v in vars(_cases).items() if k.startswith("test_")})


@pytest.fixture(autouse=True)
def _emulator():
    with emulated_cupy():
        yield


def test_emulator_checks_argument_types():
    """The emulator refuses what a device would misread (guards the tests above)."""
    cp = cuda_emulator
    k_diag = gpu._kernels(0, gpu._variant(np.dtype(np.float64), np.dtype(np.float64), 1))[0]
    x = cp.zeros((4, 3))
    good = (x, np.int64(4), np.int32(3), np.float64(1 / 3), cp.zeros((1, 6), np.int32),
            cp.zeros((1, 6)), cp.zeros(1), np.int32(0), cp.zeros((3, 4)), cp.zeros((1, 4)),
            np.int32(2), cp.empty(4), cp.empty(4))
    k_diag((1,), (4,), good)
    with pytest.raises(TypeError, match=r"argument 2 \(int d\).*int64"):
        k_diag((1,), (4,), good[:2] + (np.int64(3),) + good[3:])
    with pytest.raises(TypeError, match="argument 0 .*float32"):
        k_diag((1,), (4,), (x.astype(np.float32),) + good[1:])
    with pytest.raises(TypeError, match="takes 13 arguments"):
        k_diag((1,), (4,), good[:-1])


def test_same_array_takes_the_symmetric_path():
    """K(x, x) of the very same (host or device) array, and with dropout also
    K(x, x.copy()), is K(x): dropout's 1/rate on the diagonal, as on the CPU."""
    net = ik.serial(ik.Dense(8, 1.2, 0.1), ik.Relu(), ik.Dropout(0.7), ik.Dense(1))
    x = np.random.default_rng(0).standard_normal((6, 3))
    ref = net.kernel(x, backend="cpu").ntk
    dev = cuda_emulator.asarray(x)
    for a, b in ((x, x), (x, x.copy()), (dev, dev), (dev, cuda_emulator.asarray(x))):
        got = net.kernel(a, b, "ntk", backend="gpu")
        got = got.get() if hasattr(got, "get") else got
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)


def test_kernels_cover_every_entry():
    """Odd sizes around the 32 x 32 thread-block tile, several row blocks:
    every entry written once (NaN-filled outputs), symmetric exactly mirrored."""
    net = ik.serial(ik.Dense(8, b_std=0.3), ik.Relu(), ik.Dense(1))
    rng = np.random.default_rng(0)
    for n1, n2 in ((1, 1), (31, 33), (65, 40)):
        x1 = rng.standard_normal((n1, 5))
        x2 = rng.standard_normal((n2, 5))
        for b in (None, x2):
            shape = (n1, n1 if b is None else n2)
            out = (np.full(shape, np.nan), np.full(shape, np.nan))
            got = net.kernel(x1, b, out=out, backend="gpu")
            ref = net.kernel(x1, b, backend="cpu")
            np.testing.assert_allclose(got.nngp, ref.nngp, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(got.ntk, ref.ntk, rtol=1e-13, atol=1e-15)
            dev = net.kernel(cuda_emulator.asarray(x1),
                             None if b is None else cuda_emulator.asarray(b), backend="gpu")
            np.testing.assert_allclose(dev.ntk.get(), ref.ntk, rtol=1e-13, atol=1e-15)


def test_device_check_script(capsys):
    """benchmarks/gpu_check.py runs end to end (small sizes): device time is
    scarce, so the script must not fail on the device for a Python error."""
    spec = importlib.util.spec_from_file_location(
        "gpu_check", Path(__file__).parents[1] / "benchmarks" / "gpu_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.parity(n1=12, n2=9)
    check.throughput([64], roofline=4800.0, budget_s=60.0)
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count(" cross ") >= 4 and "diagonal pass" in out


def test_device_memory_and_availability_errors(monkeypatch):
    """backend='gpu' explains what is missing: too little device memory for the
    results, for a streamed block of rows, or for the numeric activations'
    per-point tables; no device at all.  Nothing falls back to the CPU."""
    cp = cuda_emulator
    rng = np.random.default_rng(0)
    relu = ik.serial(ik.Dense(8, b_std=0.3), ik.Relu(), ik.Dense(1))
    monkeypatch.setattr(cp.runtime, "memGetInfo", lambda: (1 << 20, 80 << 30))  # 1 MiB free
    with pytest.raises(RuntimeError, match=r"too little free GPU memory for the \(600, 600\)"):
        relu.kernel(cp.asarray(rng.standard_normal((600, 5))), backend="gpu")
    with pytest.raises(RuntimeError, match="a block of 32 rows needs"):
        relu.kernel(rng.standard_normal((64, 5)), rng.standard_normal((4000, 5)), backend="gpu")
    tanh = ik.serial(ik.Dense(8), ik.Tanh(), ik.Dense(1))
    with pytest.raises(RuntimeError, match="per-point tables of the numeric activations"):
        tanh.kernel(rng.standard_normal((600, 5)), backend="gpu")
    assert relu.kernel(rng.standard_normal((20, 5)), backend="gpu").ntk.shape == (20, 20)

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    monkeypatch.setattr(cp.runtime, "getDeviceCount", no_device)
    gpu._probe.cache_clear()
    with pytest.raises(RuntimeError, match="backend='gpu' was requested but CuPy found no CUDA"):
        relu.kernel(rng.standard_normal((4, 5)), backend="gpu")
    assert isinstance(relu.kernel(rng.standard_normal((4, 5)), backend="auto").ntk, np.ndarray)

    # a device, but CuPy without NVRTC (the plain wheel, no CUDA Toolkit)
    monkeypatch.setattr(cp.runtime, "getDeviceCount", lambda: 1)

    def no_nvrtc():
        raise RuntimeError('Failure finding "libnvrtc.so.13"')
    monkeypatch.setattr(cp.cuda.nvrtc, "getVersion", no_nvrtc)
    gpu._probe.cache_clear()
    with pytest.raises(RuntimeError, match=r"cannot load NVRTC or cuBLAS .*\[ctk\]"):
        relu.kernel(rng.standard_normal((4, 5)), backend="gpu")
    assert isinstance(relu.kernel(rng.standard_normal((4, 5)), backend="auto").ntk, np.ndarray)
