"""Interface semantics: get/out/dtype/memmap/progress, and bad input."""
import warnings

import numpy as np
import pytest
import scipy.sparse

import infkernel as ik

RNG = np.random.default_rng(5)
X1 = RNG.standard_normal((9, 4))
X2 = RNG.standard_normal((6, 4))
NET = ik.serial(ik.Dense(64, 1.5, 0.05), ik.Relu(), ik.Dense(64, 1.5, 0.05), ik.Erf(),
                ik.Dense(1, 1.5, 0.05))


def test_get_forms():
    both = NET.kernel(X1, X2)
    assert both.nngp.shape == (9, 6) and both.ntk.shape == (9, 6)
    assert np.array_equal(NET.kernel(X1, X2, "ntk"), both.ntk)
    only = NET.kernel(X1, X2, ("ntk",))
    assert only._fields == ("ntk",) and np.array_equal(only.ntk, both.ntk)
    nngp, ntk = NET.kernel(X1, X2, ("nngp", "ntk"))
    assert np.array_equal(nngp, both.nngp)


def test_get_cov1_cov2_are_the_nngp_diagonals():
    """neural-tangents' 'cov1'/'cov2': Σ(x1_i, x1_i) and Σ(x2_j, x2_j), from the
    diagonal pass; the diagonals of the symmetric Gram matrices."""
    k = NET.kernel(X1, X2, ("ntk", "cov2", "cov1"))
    assert k._fields == ("ntk", "cov2", "cov1")
    # the symmetric path writes its diagonal from the same diagonal pass: equal exactly
    assert np.array_equal(k.cov1, np.diag(NET.kernel(X1, None, "nngp")))
    assert np.array_equal(k.cov2, np.diag(NET.kernel(X2, None, "nngp")))
    assert np.array_equal(k.ntk, NET.kernel(X1, X2, "ntk"))
    assert NET.kernel(X1, None, "cov2") is None
    assert NET.kernel(X1, X1, "cov2").shape == (9,)
    assert NET.kernel(X1, X2, "cov1", dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="out= holds Gram matrices only"):
        NET.kernel(X1, X2, ("nngp", "cov1"), out=(np.empty((9, 6)), np.empty(9)))
    with pytest.raises(ValueError, match="unknown get='cov1'"):
        NET.diag(X1, "cov1")


def test_get_none_result_has_cov1_cov2():
    """As neural-tangents' Kernel, the get=None result has .cov1 / .cov2 (on
    first access); it stays the namedtuple Kernel(nngp, ntk): unpacks, pickles
    with its diagonals, and a Kernel built by hand has no diagonals to give."""
    import pickle
    k = NET.kernel(X1, X2)
    assert isinstance(k, ik.Kernel) and k._fields == ("nngp", "ntk")
    nngp, ntk = k
    assert np.array_equal(ntk, NET.kernel(X1, X2, "ntk"))
    assert np.array_equal(k.cov1, NET.kernel(X1, X2, "cov1"))
    assert np.array_equal(k.cov2, NET.diag(X2, "nngp"))
    assert NET.kernel(X1).cov2 is None
    assert np.array_equal(NET.kernel(X1, dtype=np.float32).cov1, NET.diag(X1, "nngp",
                                                                        dtype=np.float32))
    back = pickle.loads(pickle.dumps(k))
    assert type(back) is ik.Kernel and all(np.array_equal(a, b) for a, b in zip(back, k))
    assert np.array_equal(back.cov1, k.cov1) and np.array_equal(back.cov2, k.cov2)
    assert pickle.loads(pickle.dumps(NET.kernel(X1))).cov2 is None
    with pytest.raises(AttributeError, match="built by hand"):
        ik.Kernel(nngp, ntk).cov1


def test_get_none_result_has_neural_tangents_fields():
    """neural-tangents' Kernel fields for a fully-connected network (values as
    neural-tangents 0.6.5 gives them for the same networks): shape1, shape2
    (N, the output's channels), x1_is_x2, is_gaussian (a Dense layer's output),
    the constant layout fields, and replace(); they survive pickling."""
    import pickle
    k = NET.kernel(X1, X2)
    assert (k.shape1, k.shape2, k.x1_is_x2, k.is_gaussian) == ((9, 1), (6, 1), False, True)
    assert (k.batch_axis, k.channel_axis, k.diagonal_batch, k.diagonal_spatial) == (0, 1, True,
                                                                                   False)
    assert (k.is_reversed, k.is_input, k.mask1, k.mask2) == (False, False, None, None)
    hidden = ik.serial(ik.Dense(7), ik.Relu())
    for x2 in (None, X1.copy()):
        h = hidden.kernel(X1, x2)
        assert (h.shape1, h.shape2, h.x1_is_x2, h.is_gaussian) == ((9, 7), (9, 7), True, False)
    r = k.replace(ntk=2 * k.ntk)
    assert np.array_equal(r.ntk, 2 * k.ntk) and r.nngp is k.nngp
    assert np.array_equal(r.cov1, k.cov1) and r.shape2 == (6, 1)
    assert r.replace(cov2=None).cov2 is None
    with pytest.raises(TypeError, match="cannot replace shape1"):
        k.replace(shape1=(1, 1))
    back = pickle.loads(pickle.dumps(k))
    assert (back.shape1, back.shape2, back.x1_is_x2, back.is_gaussian) == ((9, 1), (6, 1),
                                                                           False, True)
    with pytest.raises(AttributeError, match="built by hand"):
        ik.Kernel(k.nngp, k.ntk).shape1


def test_results_of_any_get_pickle():
    """Results for any tuple ``get`` (namedtuple types made at run time) and
    predict's Gaussians pickle and come back with their fields and values,
    as joblib and multiprocessing need."""
    import pickle
    k = NET.kernel(X1, None, ("ntk", "nngp"))
    results = [NET.kernel(X1, X2, g) for g in (("ntk",), ("ntk", "nngp"), ("cov1", "ntk"))]
    results += [NET.diag(X1, ("ntk",)), ik.pinn.kernel(NET, X1, X2, get=("ntk", "nngp"))]
    results.append(ik.predict.gp_inference(k, X1[:, :1], diag_reg=1e-3)(
        ("nngp", "ntk"), NET.kernel(X2, X1, ("ntk", "nngp")), NET.kernel(X2, None, None)))
    for r in results:
        back = pickle.loads(pickle.dumps(r))
        assert type(back) is type(r) and back._fields == r._fields
        for a, b in zip(back, r):
            if hasattr(a, "_fields"):       # predict's Gaussian(mean, covariance)
                a, b = np.concatenate([np.ravel(v) for v in a]), np.concatenate(
                    [np.ravel(v) for v in b])
            np.testing.assert_array_equal(a, b)


def test_stax_triple():
    init_fn, apply_fn, kernel_fn = NET
    assert np.array_equal(kernel_fn(X1, X2, "nngp"), NET.kernel(X1, X2, "nngp"))
    shape, params = init_fn(0, (-1, 4))
    assert shape == (-1, 1) and apply_fn(params, X1).shape == (9, 1)
    # neural-tangents' kernel_fn options that change nothing here are accepted
    assert np.array_equal(kernel_fn(X1, X2, "nngp", pattern=None, mask_constant=None,
                                    diagonal_batch=True, diagonal_spatial=False),
                          NET.kernel(X1, X2, "nngp"))
    for bad in (dict(mask_constant=0.0), dict(diagonal_batch=False), dict(pattern=(X1, X2))):
        with pytest.raises(ValueError, match=f"kernel_fn: {next(iter(bad))} must be"):
            kernel_fn(X1, X2, "nngp", **bad)
    with pytest.raises(TypeError, match="foo"):
        kernel_fn(X1, X2, "nngp", foo=1)
    dense = ik.Dense(3, W_std=2.0)          # one layer is a triple too, as in neural-tangents
    assert len(dense) == 3 and list(dense)[0](0, (-1, 4))[0] == (-1, 3)
    assert np.array_equal(dense[2](X1, X2, "nngp"), 4.0 * X1 @ X2.T / 4)


def test_neural_tangents_spellings():
    """Code written for neural-tangents' stax runs unchanged against ik.stax."""
    from infkernel import stax
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(64, W_std=1.5, b_std=0.05,
                                                          batch_axis=0, channel_axis=-1),
                                               stax.Relu(), stax.Dense(1, 1.5, 0.05))
    net = ik.serial(ik.Dense(64, 1.5, 0.05), ik.Relu(), ik.Dense(1, 1.5, 0.05))
    assert np.array_equal(kernel_fn(X1, X2, "NTK"), net.kernel(X1, X2, "ntk"))
    assert len(net) == 3 and net[2](X1, None, "nngp").shape == (9, 9)
    _, params = init_fn(0, (-1, 4))
    assert np.array_equal(apply_fn(params, X1, rng=None), net.apply_fn(params, X1))
    pf = ik.predict.gradient_descent_mse_ensemble(kernel_fn, X1, np.ones((9, 1)), diag_reg=1e-4)
    assert pf(x_test=X2, get="ntk", compute_cov=True).covariance.shape == (6, 6)


def test_flatten_and_repeat():
    """Flatten first: image-shaped inputs (N, H, W, C) have the kernel of their
    flattened rows, in kernel, diag, init_fn and apply_fn; elsewhere a no-op.
    repeat(layer, n) is serial of n copies."""
    from infkernel import stax
    rng = np.random.default_rng(2)
    img1, img2 = rng.standard_normal((5, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
    flat = ik.serial(ik.Flatten(), ik.Dense(16, 1.2, 0.1), ik.Relu(), ik.Flatten(), ik.Dense(1))
    plain = ik.serial(ik.Dense(16, 1.2, 0.1), ik.Relu(), ik.Dense(1))
    a1, a2 = img1.reshape(5, -1), img2.reshape(4, -1)
    assert np.array_equal(flat.kernel(img1, img2, "ntk"), plain.kernel(a1, a2, "ntk"))
    assert np.array_equal(flat.kernel(img1, None, "nngp"), plain.kernel(a1, None, "nngp"))
    assert np.array_equal(flat.diag(img1, "ntk"), plain.diag(a1, "ntk"))
    shape, params = flat.init_fn(0, img1.shape)
    assert shape == (5, 1)
    assert np.array_equal(flat.apply_fn(params, img1), plain.apply_fn(params[1:3] + params[4:], a1))
    with pytest.raises(ValueError, match="Flatten: batch_axis must be the leading axis"):
        ik.Flatten(batch_axis=1)
    deep = stax.serial(stax.Dense(8), stax.repeat(stax.serial(stax.Relu(), stax.Dense(8)), 3))
    assert repr(deep) == repr(ik.serial(ik.Dense(8), *[ik.Relu(), ik.Dense(8)] * 3))
    with pytest.raises(ValueError, match="repeat: n must be a positive integer"):
        ik.repeat(ik.Relu(), 0)


def test_shorthand_activations_are_shown_as_called():
    """Relu(), LeakyRelu(α), Abs(), Sigmoid_like(), Cos(...) are stored as the
    general kind (ABRelu, Erf, Sin) but read as the user wrote them, and
    compute the same kernel as the general call."""
    cases = [(ik.Relu(), "Relu()", ik.ABRelu(0, 1)),
             (ik.LeakyRelu(0.1), "LeakyRelu(0.1)", ik.ABRelu(0.1, 1)),
             (ik.LeakyRelu(alpha=0.2), "LeakyRelu(alpha=0.2)", ik.ABRelu(0.2, 1)),
             (ik.Abs(), "Abs()", ik.ABRelu(-1, 1)),
             (ik.Sigmoid_like(), "Sigmoid_like()", ik.Erf(0.5, 1 / 2.4020563531719796, 0.5)),
             (ik.Cos(1.1, 0.7, 0.2), "Cos(1.1, 0.7, 0.2)", ik.Sin(1.1, 0.7, 0.2 + np.pi / 2))]
    for short, shown, general in cases:
        assert repr(short) == shown
        k1 = ik.serial(ik.Dense(4, 1.3, 0.2), short, ik.Dense(1)).kernel(X1, None, "ntk")
        k2 = ik.serial(ik.Dense(4, 1.3, 0.2), general, ik.Dense(1)).kernel(X1, None, "ntk")
        np.testing.assert_allclose(k1, k2, rtol=1e-14, atol=0)
    assert repr(ik.ABRelu(0, 1)) == "ABRelu(0, 1)"
    assert repr(ik.Erf()) == "Erf(1, 1, 0)"


def test_batch_is_accepted_for_porting():
    """nt.batch(kernel_fn, batch_size, ...) spellings: the same kernels (any
    batch size, no divisibility), emulated device arrays brought to host with
    store_on_device=False, and clear errors for bad arguments."""
    from cuda_emulator import asarray
    kf = ik.batch(NET.kernel_fn, batch_size=4, device_count=0)
    assert np.array_equal(kf(X1, X2, "ntk"), NET.kernel(X1, X2, "ntk"))
    host = ik.batch(lambda *a: ik.Kernel(asarray(np.ones(2)), np.zeros(2)),
                    store_on_device=False)()
    assert type(host.nngp) is np.ndarray and type(host.ntk) is np.ndarray
    with pytest.raises(ValueError, match="batch: batch_size must be an integer >= 0"):
        ik.batch(NET.kernel_fn, batch_size=-1)
    with pytest.raises(TypeError, match="batch: kernel_fn must be callable"):
        ik.batch(3)


def test_outputs_must_not_overlap_inputs_or_each_other():
    """A tile written into an input still being read, or one output aliasing
    another, would be silently wrong: both are refused."""
    z = RNG.standard_normal((9, 9))
    with pytest.raises(ValueError, match="overlaps x1"):
        NET.kernel(z, None, "nngp", out=z)
    with pytest.raises(ValueError, match="overlaps x2"):
        NET.kernel(RNG.standard_normal((9, 9)), z, "nngp", out=z)
    a = np.empty((9, 9))
    with pytest.raises(ValueError, match="overlaps 'nngp'"):
        NET.kernel(X1, None, out=(a, a))


def test_symmetric_path_equals_cross_and_diag():
    ks, kc, kd = NET.kernel(X1), NET.kernel(X1, X1.copy()), NET.diag(X1)
    for f in ("nngp", "ntk"):
        a, b = getattr(ks, f), getattr(kc, f)
        assert np.array_equal(a, a.T)
        # identical points: ρ from x·x (GEMM) vs |x|² differs by ulps, which the
        # ReLU derivative dual's √(1-ρ) kink turns into ~1e-8
        assert np.allclose(a, b, rtol=1e-7, atol=0)
        assert np.array_equal(np.diag(a), getattr(kd, f))


def test_float32_and_out_and_memmap(tmp_path):
    ref = NET.kernel(X1, X2)
    k32 = NET.kernel(X1, X2, dtype=np.float32)
    assert k32.nngp.dtype == np.float32
    assert np.allclose(k32.ntk, ref.ntk, rtol=2 ** -23, atol=0)  # one rounding
    mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64, shape=(9, 9))
    res = NET.kernel(X1, None, "ntk", out=mm)
    assert res is mm
    mm.flush()
    assert np.array_equal(np.load(tmp_path / "k.npy"), NET.kernel(X1, None, "ntk"))
    o1, o2 = np.empty((9, 6)), np.empty((9, 6))
    NET.kernel(X1, X2, ("ntk", "nngp"), out=(o1, o2))
    assert np.array_equal(o1, ref.ntk) and np.array_equal(o2, ref.nngp)


def test_result_dtype_is_float64_or_outs():
    """dtype=None: float64 whatever the inputs' precision (float32 inputs are
    exact in float64: their kernel is not rounded to float32), else out='s
    dtype; float32 results are the float64 ones rounded once."""
    x1, x2 = X1.astype(np.float32), X2.astype(np.float32)
    ref = NET.kernel(x1.astype(np.float64), x2.astype(np.float64))
    k = NET.kernel(x1, x2)
    assert k.nngp.dtype == k.ntk.dtype == np.float64
    assert np.array_equal(k.ntk, ref.ntk)
    assert NET.diag(x1, "ntk").dtype == np.float64
    deep = ik.serial(*[ik.Dense(8, W_std=1e-3), ik.Relu()] * 10, ik.Dense(1, W_std=1e-3))
    assert 0 < deep.kernel(x1, None, "nngp")[0, 0] < 1e-60     # float32 would underflow
    out = np.empty((9, 6), np.float32)
    assert NET.kernel(X1, X2, "ntk", out=out) is out
    assert np.array_equal(out, NET.kernel(X1, X2, "ntk").astype(np.float32))


def test_out_strided_and_fortran_views():
    """out= may be any writable view: strided, Fortran-ordered, mixed with C arrays."""
    ref = NET.kernel(X1, X2)
    strided = np.full((9, 12), np.nan)[:, ::2]
    fortran = np.asfortranarray(np.full((9, 6), np.nan))
    NET.kernel(X1, X2, out=(strided, fortran))
    assert np.array_equal(strided, ref.nngp) and np.array_equal(fortran, ref.ntk)
    sym = np.full((9, 18), np.nan)[:, 1::2]
    NET.kernel(X1, None, "ntk", out=sym)
    assert np.array_equal(sym, NET.kernel(X1, None, "ntk"))


def test_read_only_and_unaligned_inputs_reuse_the_compiled_kernels():
    """Read-only inputs (np.asarray of a JAX array, a memmap opened with 'r')
    and unaligned ones give the kernels of writable ones, on the kernels
    already compiled: numba types such arrays apart, and each kind would
    otherwise compile the tile kernel again (~20 s in a fresh installation)."""
    from infkernel import _cpu
    ref, ref_sym = NET.kernel(X1, X2), NET.kernel(X1)
    _, tiles = _cpu._kernels(NET.program(X1.shape[1]))
    compiled = len(tiles.signatures)
    read_only = X1.copy()
    read_only.flags.writeable = False
    raw = np.zeros(X2.size * 8 + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float64, X2.size, offset=1).reshape(X2.shape)
    unaligned[...] = X2
    assert not unaligned.flags.aligned
    for a, b in ((read_only, unaligned), (unaligned, read_only)):
        got = NET.kernel(a, b)
        want = ref if a is read_only else NET.kernel(X2, X1)
        assert np.array_equal(got.nngp, want.nngp) and np.array_equal(got.ntk, want.ntk)
    got_sym = NET.kernel(read_only)
    assert np.array_equal(got_sym.nngp, ref_sym.nngp) and np.array_equal(got_sym.ntk, ref_sym.ntk)
    assert len(tiles.signatures) == compiled


def test_progress_callback_reaches_total():
    calls = []
    NET.kernel(X1, X2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (54, 54)
    calls.clear()
    NET.kernel(X1, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (36, 36)


def test_empty_and_integer_inputs():
    k = NET.kernel(np.empty((0, 4)), X2)
    assert k.nngp.shape == (0, 6)
    assert NET.kernel(np.empty((0, 4))).ntk.shape == (0, 0)
    xi = np.arange(12).reshape(3, 4)
    assert np.array_equal(NET.kernel(xi, None, "ntk"), NET.kernel(xi.astype(float), None, "ntk"))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: NET.kernel(np.array([[1.0, np.nan, 0, 0], [0, 0, 0, 0]])), ValueError, "row(s) [0]"),
    (lambda: NET.kernel(X1, X2[:, :3]), ValueError, "3 features, expected 4"),
    (lambda: NET.kernel(X1[0]), ValueError, "2-D"),
    (lambda: NET.kernel(X1.reshape(9, 2, 2)), ValueError,
     "x1 must be 2-D (N, d), got shape (9, 2, 2) (start the network with Flatten()"),
    (lambda: NET.kernel(X1, get="nngpp"), ValueError, "unknown get"),
    (lambda: NET.kernel(X1, get=5), TypeError, "get"),
    (lambda: NET.kernel(X1, dtype=np.int32), ValueError, "dtype"),
    (lambda: NET.kernel(X1, out=np.empty((9, 8)), get="ntk"), ValueError, "shape (9, 9)"),
    (lambda: NET.kernel(X1, out=np.empty((9, 9), np.float32), get="ntk", dtype=np.float64),
     ValueError, "float64"),
    (lambda: NET.kernel(X1, out=(np.empty((9, 9), np.float32), np.empty((9, 9)))), ValueError,
     "dtype float32"),
    (lambda: NET.kernel(X1, out=np.empty((9, 9), np.int64), get="ntk"), ValueError,
     "out's dtype must be float64 or float32, got int64"),
    (lambda: NET.kernel(X1, backend="tpu"), ValueError, "backend"),
    (lambda: NET.kernel(np.array([["a"]])), TypeError, "numeric"),
    (lambda: ik.Dense(3, W_std=-1.0), ValueError, "W_std"),
    (lambda: ik.Dense(3, b_std=float("inf")), ValueError, "b_std"),
    (lambda: ik.Dense(0), ValueError, "out_dim"),
    (lambda: ik.Dense(2.0), TypeError, "out_dim must be a positive integer, got 2.0"),
    (lambda: ik.Dense(3, parameterization="mup"), ValueError, "parameterization"),
    (lambda: ik.serial(ik.Relu(), ik.Dense(1)).kernel(X1), ValueError,
     "Relu() is applied to the network input, which is not Gaussian: an activation must follow a Dense"),
    (lambda: ik.serial(ik.Dense(2), ik.Relu(), ik.Erf()).kernel(X1), ValueError, "another activation"),
    (lambda: ik.Monomial(-1), ValueError, "degree"),
    (lambda: ik.Erf(a=float("nan")), ValueError, "finite"),
    (lambda: ik.Erf(b=1e200), ValueError, "Erf: b must be at most 1e+150"),
    (lambda: ik.Sin(1.0, -1e200), ValueError, "Sin: b must be at most"),
    (lambda: ik.Monomial(200), ValueError, "degree 200 is too large"),
    (lambda: ik.Gelu(approximate="x"), TypeError, "approximate"),
    (lambda: ik.Relu(3), TypeError, "Relu: do_stabilize must be True or False, got 3"),
    (lambda: ik.LeakyRelu(0.1, 0.2), TypeError, "LeakyRelu: do_stabilize must be True or False"),
    (lambda: ik.ExpNormalized(-1.0), ValueError, "ExpNormalized: gamma must be finite and >= 0"),
    (lambda: ik.serial(ik.Dense(2), "relu"), TypeError, "serial"),
    (lambda: NET.kernel(X1, "ntk"), TypeError, "get is the third argument"),
    (lambda: NET.kernel(X1 * 1e160), ValueError, "squared norm of row(s) [0, 1, 2, 3, 4] ..."),
    (lambda: NET.kernel(X1, dtype="foo"), ValueError, "dtype must be float64 or float32, got 'foo'"),
    (lambda: NET.kernel(X1.astype("m8[s]")), TypeError, "numeric"),
    (lambda: NET.diag(X1[0]), ValueError, "x must be 2-D"),
    (lambda: NET.kernel(NET.kernel(X1)), TypeError,
     "x1 must be an array of points, got a Kernel with fields ('nngp', 'ntk')"),
    (lambda: ik.serial(ik.Flatten(), ik.Dense(1)).kernel(X1, NET.kernel(X1)), TypeError,
     "x2 must be an array of points, got a Kernel with fields ('nngp', 'ntk')"),
    (lambda: NET.diag(X1, X2), TypeError,
     "diag takes one input x (the diagonal of K(x, x)); its second argument is get"),
    (lambda: ik.Dense(3, W_std=1e200), ValueError, "Dense: W_std must be at most 1e+150"),
    (lambda: ik.Dense(3, channel_axis=0), ValueError, "channel_axis"),
    (lambda: ik.Dense(3, s=(0, 1)), ValueError, "s must be a pair of positive integers"),
    (lambda: ik.Dense(3, s=2), ValueError, "s must be a pair of positive integers (width scalings), got 2"),
    (lambda: NET.init_fn(0, 4), TypeError, "input_shape must be a tuple"),
    (lambda: NET.apply_fn(NET.init_fn(0, (-1, 3))[1], X1), ValueError,
     "the inputs have 4 features, these params were made for 3"),
    (lambda: ik.Dense(3, 1.0, 0.1, "standard", parameterization="ntk"), TypeError,
     "parameterization given twice, as the fourth argument ('standard') and as a keyword"),
    (lambda: ik.Dense(3, s=(2, 2)), ValueError, "s=(2, 2) scales the widths of the standard "
     "parameterization only"),
    (lambda: ik.Dense(10 ** 400, parameterization="standard"), ValueError,
     "Dense: out_dim must be below 2**63"),
    (lambda: NET.kernel(scipy.sparse.csr_matrix(X1)), TypeError, "x1 is a sparse matrix"),
    (lambda: NET.kernel(X1, np.ma.masked_array(X2, X2 > 1)), ValueError,
     "x2 is a masked array with masked entries"),
    (lambda: ik.serial(ik.FourierFeatures(np.full((2, 4), 1e300)), ik.Dense(1)).kernel(X1 * 1e10),
     ValueError, "x1: the input map FourierFeatures(m=2, d=4) gives NaN or Inf features"),
    (lambda: ik.MscaleDNN2([1, 2], (8,), activation=ik.Dense(3)), TypeError,
     "MscaleDNN2: activation must be an activation layer"),
    (lambda: NET.kernel(X1[0], None, "cov2"), ValueError, "x1 must be 2-D (N, d), got shape (4,)"),
    (lambda: NET.kernel(np.full((3, 4), np.longdouble("1e400"))), ValueError,
     "x1 has values beyond float64's range (±1.8e308) in row(s) [0, 1, 2]"),
    (lambda: ik.serial(ik.FourierFeatures(np.ones((3, 4))), ik.FourierFeatures(np.ones((2, 4))),
                       ik.Dense(1)).kernel(X1), ValueError,
     "x1 mapped by FourierFeatures(m=3, d=4) has 6 features, but FourierFeatures(m=2, d=4) "
     "maps inputs of dimension 4"),
    (lambda: ik.spectral.gram_eigh(NET.kernel(X1)), TypeError,
     "K must be an array of real numbers, got a Kernel with fields ('nngp', 'ntk'): pass one"),
    (lambda: ik.serial(ik.Flatten(), ik.Dense(1)).kernel(np.ones((3, 4, 1)), np.ones((2, 1, 4))),
     ValueError, "x2 has samples of shape (1, 4), x1 of shape (4, 1): Flatten needs the same"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=None) as info:
        call()
    assert words in str(info.value)


def test_rows_whose_squared_norms_sum_past_float64_are_accepted():
    """The input check sums all squared norms first; rows that are each fine
    but whose sum overflows take the row-by-row check and are accepted."""
    x = np.full((4, 1), 1e154)        # |x_i|² = 1e308 each, their sum overflows
    net = ik.serial(ik.Dense(1, W_std=1e-10), ik.Relu(), ik.Dense(1))
    k = net.kernel(x, None, "nngp")
    np.testing.assert_allclose(k, np.full((4, 4), 1e308 * 1e-20 / 2), rtol=1e-14)


def test_input_dim_is_checked_before_any_work():
    """A network that knows its input width (``from_torch`` sets it) refuses
    others in every entry point; None (the default) takes any width."""
    net, free = (ik.serial(ik.Dense(3), ik.Relu(), ik.Dense(1)) for _ in range(2))
    assert net.input_dim is None and net.kernel(X1[:, :2], None, "ntk").shape == (9, 9)
    net.input_dim = X1.shape[1]
    np.testing.assert_array_equal(net.kernel(X1, None, "ntk"), free.kernel(X1, None, "ntk"))
    outer = ik.serial(net, ik.Relu(), ik.Dense(1))       # a network in front keeps its width
    assert outer.input_dim == X1.shape[1] and ik.serial(ik.Dense(3), net).input_dim is None
    for call in (lambda: net.kernel(X1[:, :2]), lambda: net.diag(X1[:, :2]),
                 lambda: net.kernel(X1[:, :2], X1[:, :2], "nngp"),
                 lambda: ik.pinn.kernel(net, X1[:, :2]), lambda: outer.kernel(X1[:, :2])):
        with pytest.raises(ValueError, match=f"takes inputs of dimension {X1.shape[1]}, "
                                             "got points of dimension 2"):
            call()


def test_results_beyond_the_available_memory_are_refused(monkeypatch):
    """New outputs larger than the memory available are refused before any
    work (an overcommitted allocation would succeed, then fail mid-run)."""
    from infkernel import _checks
    monkeypatch.setattr(_checks, "available_memory", lambda: 3 * 2 ** 30)
    x = np.zeros((16000, 4))         # 16000² float64 = 1.9 GiB per kernel
    with pytest.raises(MemoryError, match=r"the result needs 3\.8 GiB \(2 array\(s\) of "
                                          r"shape \(16000, 16000\), float64\) and 3\.0 GiB"):
        NET.kernel(x, None, None)
    assert NET.kernel(x, x[:1], "ntk").shape == (16000, 1)      # a result that fits


def test_available_memory_honours_a_cgroup_limit(monkeypatch):
    """MemAvailable, and in a container (cgroup v2) the limit less its usage."""
    import io
    from infkernel import _checks
    files = {"/proc/meminfo": "MemTotal: 99 kB\nMemAvailable:   10485760 kB\n",
             "/sys/fs/cgroup/memory.max": f"{4 * 2 ** 30}\n",
             "/sys/fs/cgroup/memory.current": f"{2 ** 30}\n"}
    monkeypatch.setattr(_checks, "open", lambda path: io.StringIO(files[path]), raising=False)
    assert _checks.available_memory() == 3 * 2 ** 30
    files["/sys/fs/cgroup/memory.max"] = "max\n"
    assert _checks.available_memory() == 10 * 2 ** 30


def test_gpu_backend_without_device_says_why():
    from infkernel import gpu
    if gpu.available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="backend='gpu'"):
        NET.kernel(X1, backend="gpu")


@pytest.mark.parametrize("call, exc, words", [
    (lambda: NET.init_fn(0, (-1, 3.5)), TypeError, "input_shape must end in the feature "
                                                   "dimension d, a positive integer, got (-1, 3.5)"),
    (lambda: NET.init_fn(0, (-1, 0)), ValueError, "a positive integer, got (-1, 0)"),
    (lambda: NET.init_fn(0, (-1, -2)), ValueError, "a positive integer, got (-1, -2)"),
    (lambda: NET.init_fn("abc", (-1, 4)), TypeError, "init_fn: rng must be a "
                                                     "numpy.random.Generator, a non-negative int"),
    (lambda: NET.init_fn(1.5, (-1, 4)), TypeError, "init_fn: rng must be"),
    (lambda: NET.init_fn(-1, (-1, 4)), ValueError, "init_fn: rng must be >= 0"),
    (lambda: NET.init_fn(np.array([1, -2]), (-1, 4)), TypeError, "init_fn: rng must be"),
    (lambda: NET.apply_fn(None, X1), TypeError, "apply_fn: params must be the tuple returned "
                                                "by init_fn, got NoneType"),
    (lambda: NET.apply_fn(NET.init_fn(0, (-1, 4))[1], X1 + 1j), TypeError,
     "apply_fn: x must be a real numeric array, got dtype complex128"),
    (lambda: NET.apply_fn(NET.init_fn(0, (-1, 4))[1], X1, rng="abc"), TypeError,
     "apply_fn: rng must be"),
])
def test_finite_network_bad_input(call, exc, words):
    """init_fn / apply_fn reject what numpy would truncate (a feature dimension
    3.5), accept silently (0 features, complex inputs: imaginary part dropped)
    or report in its own terms (None params, a string seed)."""
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_finite_network_rng_forms_are_equivalent():
    """A seed, a PRNG key (array of non-negative ints) and the Generator they
    make give the same parameters."""
    for seed in (3, np.array([0, 3], dtype=np.uint32)):
        a = NET.init_fn(seed, (-1, 4))[1]
        b = NET.init_fn(np.random.default_rng(seed), (-1, 4))[1]
        assert all(np.array_equal(u, v) for pa, pb in zip(a, b) for u, v in zip(pa, pb))


def test_float32_std_gives_no_overflow_warning():
    """Comparing a float32 std with the 1e150 cap must not cast the cap to
    float32 (RuntimeWarning: overflow encountered in cast)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ik.Dense(3, W_std=np.float32(2), b_std=np.float32(0.5)).W_std == 2.0


def test_neural_tangents_positional_dense_and_stax_triples():
    """Dense takes neural-tangents' positional order (out_dim, W_std, b_std,
    batch_axis, channel_axis, parameterization) and still reads a string in
    the fourth place as the parameterization; serial and parallel take the
    (init_fn, apply_fn, kernel_fn) triples neural-tangents code passes."""
    ref = ik.Dense(8, W_std=1.5, b_std=0.05, parameterization="standard")
    assert ik.stax.Dense(8, 1.5, 0.05, 0, -1, "standard") == ref
    assert ik.Dense(8, 1.5, 0.05, "standard") == ref
    assert ik.Dense(8, 1.5, 0.05, 0) == ik.Dense(8, W_std=1.5, b_std=0.05)
    with pytest.raises(ValueError, match="batch_axis=0 and channel_axis=-1"):
        ik.Dense(8, 1.5, 0.05, 1)
    body = ik.serial(ik.Dense(8, 1.2, 0.1), ik.Erf())
    x = np.random.default_rng(0).standard_normal((4, 3))
    plain = ik.serial(body, ik.Dense(1))
    assert np.array_equal(ik.serial(tuple(body), ik.Dense(1)).kernel(x).ntk, plain.kernel(x).ntk)
    init_fn, apply_fn, kernel_fn = body
    branched = ik.serial(ik.FanOut(2), ik.parallel((init_fn, apply_fn, kernel_fn), body),
                         ik.FanInConcat(), ik.Dense(1))
    assert "parallel(serial(Dense(8" in repr(branched)
    # concatenating two copies of one branch averages equal kernels: rounding only
    np.testing.assert_allclose(branched.kernel(x).ntk, plain.kernel(x).ntk, rtol=1e-14)


def test_thin_cross_kernels_out_dtype_and_errors():
    """A thin cross kernel (few columns, computed transposed) fills out=
    arrays of any layout, rounds to float32 once, and names the right input
    and row in errors."""
    x1, x2 = RNG.standard_normal((50, 4)), RNG.standard_normal((3, 4))
    ref = NET.kernel(x1, x2)
    out = np.empty((50, 3), order="F")
    assert NET.kernel(x1, x2, "ntk", out=out) is out and np.array_equal(out, ref.ntk)
    k32 = NET.kernel(x1, x2, "nngp", dtype=np.float32)
    assert k32.dtype == np.float32 and np.allclose(k32, ref.nngp, rtol=2 ** -23, atol=0)
    net = ik.serial(ik.Dense(8), ik.Elementwise(np.sin, np.cos), ik.Dense(1))  # q <= 128
    far = 30 * np.ones(4)
    for a, b, where in ((x1, np.stack([x2[0], far]), "x2 row 1"),
                        (np.concatenate([x1[:7], [far], x1[8:]]), x2, "x1 row 7")):
        with pytest.raises(ik.KernelRangeError, match=where):
            net.kernel(a, b)


def test_readme_code_blocks_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written (in a fresh
    namespace; the first writes ntk.npy into the working directory)."""
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # PinnAccuracyWarning and the like
            exec(compile(block, "README.md", "exec"), {})
