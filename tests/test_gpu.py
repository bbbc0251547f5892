"""GPU backend on a real device: parity with the CPU backend, result placement,
out= streaming (np.memmap), float32 modes, diagonal.  Skipped without CuPy or a
CUDA device (the math itself is checked on the CPU by test_cuda_host.py)."""
import numpy as np
import pytest

import infkernel as ik
from infkernel import gpu

if not gpu.available():
    pytest.skip(f"GPU backend unavailable: {gpu._probe()}", allow_module_level=True)

import cupy as cp  # noqa: E402

ACTS = [ik.Relu(), ik.LeakyRelu(0.1), ik.ABRelu(-0.3, 0.7), ik.Abs(), ik.Erf(1.2, 0.8, 0.3),
        ik.Sigmoid_like(), ik.Gelu(), ik.Sin(0.9, 1.1, 0.4), ik.Cos(), ik.Rbf(0.7),
        ik.Gaussian(1.1, -0.6), ik.Exp(0.8, 0.5), ik.Sign(), ik.Monomial(0), ik.Monomial(3),
        ik.RectifiedMonomial(0), ik.RectifiedMonomial(2)]


def _net(act, depth=3):
    layers = []
    for _ in range(depth):
        layers += [ik.Dense(64, W_std=1.2, b_std=0.1), act]
    return ik.serial(*layers, ik.Dense(1, b_std=0.2))


def _x(rng, n, d=7):
    x = rng.standard_normal((n, d))
    x[1] = x[0]
    x[2] = -x[0]
    x[3] = 0.0
    return x


def _close(got, ref, diag_a, diag_b, tol):
    """|got - ref| <= tol (|ref| + √(diag_i diag_j))."""
    scale = np.sqrt(np.outer(np.abs(diag_a), np.abs(diag_b)))
    err = np.abs(np.asarray(got, np.float64) - ref) / (np.abs(ref) + scale + 1e-300)
    assert np.nanmax(err) <= tol, np.nanmax(err)


@pytest.mark.parametrize("act", ACTS, ids=repr)
@pytest.mark.parametrize("sym", [False, True])
def test_parity_float64(act, sym):
    """float64: the same formulas in the same order -> agreement to ~1e-13
    (a few ulps amplified by three layers; cuBLAS and BLAS round the GEMM differently)."""
    rng = np.random.default_rng(0)
    net = _net(act)
    x1 = _x(rng, 101)
    x2 = None if sym else rng.standard_normal((77, 7))
    ref = net.kernel(x1, x2, backend="cpu")
    got = net.kernel(cp.asarray(x1), None if sym else cp.asarray(x2), backend="gpu")
    assert isinstance(got.nngp, cp.ndarray)
    d1 = net.diag(x1, backend="cpu")
    d2 = d1 if sym else net.diag(x2, backend="cpu")
    _close(got.nngp.get(), ref.nngp, d1.nngp, d2.nngp, 1e-12)
    _close(got.ntk.get(), ref.ntk, d1.ntk, d2.ntk, 1e-12)
    if sym:
        assert np.array_equal(got.nngp.get(), got.nngp.get().T)
        assert np.array_equal(got.ntk.get(), got.ntk.get().T)


@pytest.mark.parametrize("sym", [False, True])
def test_streaming_to_memmap(tmp_path, monkeypatch, sym):
    """Tiny row blocks (many launches, both streams) into np.memmap outputs."""
    monkeypatch.setattr(gpu, "TILE_BYTES", 64 * 1024)
    rng = np.random.default_rng(1)
    net = _net(ik.Relu())
    x1 = _x(rng, 300)
    x2 = None if sym else rng.standard_normal((211, 7))
    n2 = 300 if sym else 211
    outs = tuple(np.memmap(tmp_path / f"{g}.dat", dtype=np.float64, mode="w+",
                           shape=(300, n2)) for g in ("nngp", "ntk"))
    ticks = []
    res = net.kernel(x1, x2, out=outs, backend="gpu", progress=lambda d, t: ticks.append((d, t)))
    assert res.nngp is outs[0]
    ref = net.kernel(x1, x2, backend="cpu")
    np.testing.assert_allclose(np.asarray(outs[0]), ref.nngp, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(outs[1]), ref.ntk, rtol=1e-12, atol=1e-13)
    assert len(ticks) > 2 and ticks[-1][0] == ticks[-1][1]


def test_numpy_in_numpy_out_and_single_get():
    rng = np.random.default_rng(2)
    net = _net(ik.Erf())
    x = rng.standard_normal((50, 7))
    k = net.kernel(x, get="ntk", backend="gpu")
    assert isinstance(k, np.ndarray) and k.shape == (50, 50)
    np.testing.assert_allclose(k, net.kernel(x, get="ntk", backend="cpu"), rtol=1e-12)


def test_cupy_out():
    rng = np.random.default_rng(3)
    net = _net(ik.Relu())
    x = cp.asarray(rng.standard_normal((64, 7)))
    out = cp.empty((64, 64))
    res = net.kernel(x, get="nngp", out=out, backend="gpu")
    assert res is out
    np.testing.assert_allclose(out.get(), net.kernel(x.get(), get="nngp", backend="cpu"),
                               rtol=1e-12)


@pytest.mark.parametrize("math_", ["float32", "float64"])
def test_float32(monkeypatch, math_):
    """float32 math: ≲1e-5 of the entry scale (see gpu.py); float64 math rounded
    on store: one float32 rounding (2^-24) of the float64 value."""
    monkeypatch.setattr(gpu, "FLOAT32_MATH", math_)
    rng = np.random.default_rng(4)
    net = _net(ik.Erf())
    x1 = rng.standard_normal((90, 7))
    x2 = rng.standard_normal((70, 7))
    got = net.kernel(x1, x2, dtype=np.float32, backend="gpu")
    assert got.nngp.dtype == np.float32
    ref = net.kernel(x1, x2, backend="cpu")
    d1, d2 = net.diag(x1, backend="cpu"), net.diag(x2, backend="cpu")
    tol = 1e-5 if math_ == "float32" else 1.2e-7
    _close(got.nngp, ref.nngp, d1.nngp, d2.nngp, tol)
    _close(got.ntk, ref.ntk, d1.ntk, d2.ntk, tol)


def test_diag():
    rng = np.random.default_rng(5)
    net = _net(ik.Gelu())
    x = rng.standard_normal((40, 7))
    got = net.diag(cp.asarray(x), backend="gpu")
    ref = net.diag(x, backend="cpu")
    np.testing.assert_allclose(got.nngp.get(), ref.nngp, rtol=1e-13)
    np.testing.assert_allclose(got.ntk.get(), ref.ntk, rtol=1e-13)


def test_bad_input():
    net = _net(ik.Relu())
    x = cp.asarray(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="NaN or Inf"):
        net.kernel(x, backend="gpu")
    with pytest.raises(ValueError, match="shape"):
        net.kernel(cp.ones((4, 2)), get="nngp", out=cp.empty((3, 3)), backend="gpu")
