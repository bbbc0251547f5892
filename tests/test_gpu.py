"""GPU backend on a real device: parity with the CPU backend, result placement,
out= streaming (np.memmap), float32 modes, diagonal, numeric activations.
Skipped without CuPy or a CUDA device (the math itself is checked on the CPU by
test_cuda_host.py)."""
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
        ik.RectifiedMonomial(0), ik.RectifiedMonomial(2), ik.Polynomial([0.3, -1.0, 0.5, 0.2]),
        ik.Hermite(3), ik.serial(ik.LayerNorm(), ik.Hermite(3)), ik.Gabor(),
        ik.serial(ik.Relu(), ik.Dropout(0.7))]


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
    """|got - ref| <= tol (|ref| + √(diag_i diag_j)); NaN/Inf exactly where the
    reference has them."""
    got = np.asarray(got, np.float64)
    assert np.array_equal(np.isfinite(got), np.isfinite(ref)), "non-finite entries differ"
    scale = np.outer(np.sqrt(np.abs(diag_a)), np.sqrt(np.abs(diag_b)))
    err = np.abs(got - ref) / (np.abs(ref) + scale + 1e-300)
    assert np.nanmax(err, initial=0.0) <= tol, np.nanmax(err)


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
    d = net.diag(x, get="ntk", backend="cpu")
    _close(k, net.kernel(x, get="ntk", backend="cpu"), d, d, 1e-12)


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


@pytest.mark.parametrize("act", [ik.Gelu(), ik.Tanh()], ids=repr)
def test_diag(act):
    """The diagonal alone (numeric activations: their moments only, without
    the Mehler features) equals the CPU's and the Gram kernel's diagonal."""
    rng = np.random.default_rng(5)
    net = _net(act)
    x = rng.standard_normal((40, 7))
    got = net.diag(cp.asarray(x), backend="gpu")
    ref = net.diag(x, backend="cpu")
    full = net.kernel(cp.asarray(x), backend="gpu")
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(got, g).get(), getattr(ref, g), rtol=1e-13)
        np.testing.assert_array_equal(getattr(got, g).get(), np.diag(getattr(full, g).get()))


def test_bad_input():
    net = _net(ik.Relu())
    x = cp.asarray(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="NaN or Inf"):
        net.kernel(x, backend="gpu")
    with pytest.raises(ValueError, match="shape"):
        net.kernel(cp.ones((4, 2)), get="nngp", out=cp.empty((3, 3)), backend="gpu")
    same = cp.empty((4, 4))
    with pytest.raises(ValueError, match="share memory"):
        net.kernel(cp.ones((4, 2)), out=(same, same), backend="gpu")
    with pytest.raises(ValueError, match="out for 'ntk' overlaps x2"):    # read while written
        x2 = cp.ones((4, 4))
        net.kernel(cp.ones((4, 4)), x2, out=(cp.empty((4, 4)), x2), backend="gpu")
    with pytest.raises(ValueError, match=r"squared norm of row\(s\) \[1\]"):
        net.kernel(cp.asarray(np.r_[np.ones((1, 2)), np.full((1, 2), 1e160)]), backend="gpu")


NUMERIC = [ik.Tanh(), ik.Softplus(), ik.Sigmoid(), ik.Silu(), ik.Elu(0.7), ik.Selu(), ik.Mish(),
           ik.SReLU(), ik.S2ReLU(),
           ik.Elementwise(lambda x: np.maximum(x, 0.5 * x) + 0.1 * np.sin(x), name="kinked")]

#: numeric activations: each backend certifies each layer's series truncation
#: to 1e-12 of √(E[φ(u)²]E[φ(v)²]) but may stop at different terms (the CPU
#: certifies 512-column tiles, the GPU 4 entries of one column): ≤ 2e-12 per
#: layer over three layers with gain ≲ 1.5 (see test_cuda_host.NUMERIC_GRAM_TOL)
NUMERIC_TOL = 1e-11


@pytest.mark.parametrize("act", NUMERIC, ids=repr)
@pytest.mark.parametrize("sym", [False, True])
def test_parity_numeric(act, sym):
    rng = np.random.default_rng(6)
    net = _net(act)
    x1 = _x(rng, 101)
    x2 = None if sym else rng.standard_normal((77, 7))
    ref = net.kernel(x1, x2, backend="cpu")
    got = net.kernel(cp.asarray(x1), None if sym else cp.asarray(x2), backend="gpu")
    d1 = net.diag(x1, backend="cpu")
    d2 = d1 if sym else net.diag(x2, backend="cpu")
    _close(got.nngp.get(), ref.nngp, d1.nngp, d2.nngp, NUMERIC_TOL)
    _close(got.ntk.get(), ref.ntk, d1.ntk, d2.ntk, NUMERIC_TOL)
    # the diagonal pass makes the CPU's truncation choices: a few ulps
    gd = net.diag(cp.asarray(x1), backend="gpu")
    np.testing.assert_allclose(gd.nngp.get(), d1.nngp, rtol=1e-13)
    np.testing.assert_allclose(gd.ntk.get(), d1.ntk, rtol=1e-13)


@pytest.mark.parametrize("act", [ik.Tanh(), ik.SReLU()], ids=repr)
def test_numeric_large_variance_and_fallback(act):
    """Variances up to ~Q_MAX: many entries need the quadrature fallback."""
    rng = np.random.default_rng(7)
    x = _x(rng, 70)
    x *= np.sqrt(np.minimum(1.9 / np.maximum((x * x).mean(axis=1), 1e-300), 1.0))[:, None]
    layers = [ik.Dense(64, W_std=8.0, b_std=0.2), act, ik.Dense(64, W_std=1.2), act]
    net = ik.serial(*layers, ik.Dense(1))
    ref = net.kernel(x, backend="cpu")
    got = net.kernel(x, backend="gpu")
    d = net.diag(x, backend="cpu")
    _close(got.nngp, ref.nngp, d.nngp, d.nngp, NUMERIC_TOL)
    _close(got.ntk, ref.ntk, d.ntk, d.ntk, NUMERIC_TOL)


def test_numeric_float32_and_streaming(tmp_path, monkeypatch):
    """float32 output (numeric entries compute in float64, then one rounding of
    Q/TH per layer in float32 math: the float32 bound 1e-5), and row blocks
    streamed to host memory: the features are offset with the tables."""
    monkeypatch.setattr(gpu, "TILE_BYTES", 64 * 1024)
    rng = np.random.default_rng(8)
    net = _net(ik.Tanh())
    x1 = _x(rng, 200)
    x2 = rng.standard_normal((90, 7))
    ref = net.kernel(x1, x2, backend="cpu")
    d1, d2 = net.diag(x1, backend="cpu"), net.diag(x2, backend="cpu")
    got = net.kernel(x1, x2, dtype=np.float32, backend="gpu")
    _close(got.nngp, ref.nngp, d1.nngp, d2.nngp, 1e-5)
    _close(got.ntk, ref.ntk, d1.ntk, d2.ntk, 1e-5)
    got = net.kernel(x1, x2, backend="gpu")
    _close(got.nngp, ref.nngp, d1.nngp, d2.nngp, NUMERIC_TOL)
    got = net.kernel(x1, backend="gpu")
    ref = net.kernel(x1, backend="cpu")
    _close(got.ntk, ref.ntk, d1.ntk, d1.ntk, NUMERIC_TOL)
    assert np.array_equal(got.ntk, got.ntk.T)


@pytest.mark.parametrize("act,w_std,v", [
    (ik.Elementwise(np.sin, np.cos, name="Sin"), 20.0, r"(400\.0|399\.9+\d*|400\.0+\d*)"),
    (ik.Tanh(), 2e10, r"(4e\+20|3\.9+\d*e\+20|4\.0+\d*e\+20)")])    # ranges [0, 128], [0, 1e20]
def test_numeric_variance_out_of_range(act, w_std, v):
    """The CPU backend's error, raised from the device tables."""
    net = ik.serial(ik.Dense(8, W_std=w_std), act, ik.Dense(1))
    x = np.full((5, 3), 0.1)
    x[3] = 1.0                        # variance 400 w_std²/20² at the activation's input
    msg = rf"{act.name}\(?\)?: its input variance reaches {v} \(x2 row 3\), outside the guaranteed"
    with pytest.raises(ValueError, match=msg):
        net.kernel(x[:2], x, backend="cpu")
    with pytest.raises(ValueError, match=msg):
        net.kernel(cp.asarray(x[:2]), cp.asarray(x), backend="gpu")


def test_overflow_and_float32_range_errors():
    """The CPU backend's errors for an overflowing variance and for float32
    results beyond range, raised from the device tables before any output."""
    x = np.random.default_rng(2).standard_normal((3, 2))
    deep = ik.serial(*([ik.Dense(4, 3.0), ik.Relu()] * 1000), ik.Dense(4), ik.Sign(),
                     ik.Dense(1))
    for data in (x, cp.asarray(x)):
        with pytest.raises(ValueError, match=r"x1 row 0: .* at the input of Relu\(\)"):
            deep.kernel(data, backend="gpu")
        with pytest.raises(ValueError, match="x row 0: the variance overflows"):
            deep.diag(data, backend="gpu")
    big = ik.serial(ik.Dense(4, 1e10, 0.1), ik.Relu(), ik.Dense(4, 1e10), ik.Relu(),
                    ik.Dense(1))
    with pytest.raises(ValueError, match="dtype=float32: the NNGP reaches .* at x1 row"):
        big.kernel(x, dtype=np.float32, backend="gpu")
    with pytest.raises(ValueError, match="dtype=float32: the NTK reaches .* at x2 row"):
        big.kernel(x[:1] * 0.0, x, "ntk", dtype=np.float32, backend="gpu")
    with pytest.raises(ValueError, match="dtype=float32: the NNGP reaches .* at x row"):
        big.diag(x, dtype=np.float32, backend="gpu")
    small = ik.serial(ik.Dense(4, 1.5, None), ik.Relu(), ik.Dense(1, 1.5, None))
    with pytest.raises(ValueError, match="dtype=float32: every NTK entry is at most"):
        small.kernel(x * 1e-25, x * 1e-25, "ntk", dtype=np.float32, backend="gpu")
    assert small.kernel(x * 1e-25, x, "ntk", dtype=np.float32, backend="gpu").all()


def test_auto_uses_gpu_for_numeric():
    net = _net(ik.Tanh())
    assert gpu.supports(net.program(7))
    x = cp.asarray(np.random.default_rng(9).standard_normal((20, 7)))
    assert isinstance(net.kernel(x, get="nngp", backend="auto"), cp.ndarray)
