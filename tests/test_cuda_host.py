"""The CUDA math header compiled for the CPU (g++) against the numba path.

``cuda/infkernel_math.cuh`` holds every dual activation and the per-entry
layer-program interpreter the GPU kernels run.  Here it is built into a small
shared library with the host C++ compiler and compared with ``_cpu.act_tile`` /
``_cpu.gram`` on random and edge-case points (ρ = ±1, zero variance, depth
1000).  When ``nvcc`` is on the PATH, the full ``gram.cu`` code string (every
kernel variant) is also compiled to PTX for sm_80 and sm_90; where NVRTC's
library is found (the ``nvidia-cuda-nvrtc`` wheel of the test extra, or a CUDA
toolkit), the code strings are compiled as CuPy compiles them at run time:
NVRTC has no host compiler pass and no system headers, so code that nvcc
accepts can still fail there.
"""
import ctypes
import ctypes.util
import glob
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import infkernel as ik
from infkernel import _cpu, _numeric, gpu
from infkernel import _program as P
from activation_list import tile_dual

EPS64 = np.finfo(np.float64).eps
FR = 4 * _numeric.NM + 2  # feature rows per numeric op (IK_NUM_FR)

DRIVER = r"""
#include "infkernel_math.cuh"

// One entry per (q11, q12, q22), row point 0 and column point 1; a numeric
// kind (slot hi = 0) first computes both points' features, as _numeric.duals.
template <typename T>
static void act_entries(int kind, const double* p, const double* aux, int lo, int hi, long n,
                        const double* q11, const double* q12, const double* q22, T* k, T* kd) {
  double feat[IK_NUM_FR * 2] = {0.0};
  const long long row = 0;
  const IkFeatures nf = {feat, 2, &row, feat, 2, 1, false};
  for (long i = 0; i < n; ++i) {
    T v1 = T(q11[i]), v2 = T(q22[i]);
    T s1 = ik_point_scale(kind, p, v1), s2 = ik_point_scale(kind, p, v2);
    T r1 = s1 > T(0) ? T(1) / s1 : T(0);
    T r2 = s2 > T(0) ? T(1) / s2 : T(0);
    if (kind == IK_K_NUMERIC) {
      ik_mehler_point(aux, lo, sqrt(q11[i]), feat, 2);
      ik_mehler_point(aux, lo, sqrt(q22[i]), feat + 1, 2);
    }
    T Q = T(q12[i]), TH = T(1), C = ik_nan(T(0));  // versine unknown: from q12
    ik_act<T, 1>(kind, p, aux, lo, hi, &v1, &s1, &r1, v2, s2, r2, &Q, &TH, &C, nf);
    k[i] = Q;
    kd[i] = TH;
  }
}

// Tables, numeric features (fr rows per numeric op) and diagonal outputs of n
// points of squared norms norm2, sq = norm2 / d (float64, as ik_diag).
static void diag(const int* ops, const double* params, const double* aux, int n_ops,
                 const double* norm2, const double* sq, long n, double* tab, double* feat,
                 int fr, double* kd, double* td) {
  for (long i = 0; i < n; ++i)
    ik_diag_point<double>(ops, params, aux, n_ops, norm2[i], sq[i], tab, feat, fr, n, i, kd[i],
                          td[i]);
}

// Every entry (i, j) from G[i, j] = x1_i . x2_j, rows grouped by 4 as in the kernels.
template <typename T, int NR>
static void gram(const int* ops, const double* params, const double* aux, int n_ops,
                 const T* tab1, long n1, const T* tab2, long n2, const double* feat1,
                 const double* feat2, const T* G, T inv_d, const T* x1, const T* x2, int d,
                 T* K, T* TT) {
  const int E = 4;
  for (long j = 0; j < n2; ++j)
    for (long i0 = 0; i0 < n1; i0 += E) {
      long long rw[E];
      T q[NR][E], th[NR][E], c[NR][E];
      for (int e = 0; e < E; ++e) {
        rw[e] = i0 + e < n1 ? i0 + e : n1 - 1;
        q[0][e] = G[rw[e] * n2 + j] * inv_d;
        th[0][e] = T(0);
        c[0][e] = ik_start_versine(G[rw[e] * n2 + j], x1 + rw[e] * d, tab1[rw[e]], x2 + j * d,
                                   tab2[j], d);
        for (int m = 1; m < NR; ++m) q[m][e] = th[m][e] = c[m][e] = T(0);
      }
      ik_run_entries<T, NR, E>(ops, params, aux, n_ops, tab1, n1, rw, tab2, n2, j, feat1, feat2,
                               q, th, c);
      for (int e = 0; e < E && i0 + e < n1; ++e) {
        K[(i0 + e) * n2 + j] = q[0][e];
        TT[(i0 + e) * n2 + j] = th[0][e];
      }
    }
}

extern "C" {
void act_f64(int kind, const double* p, const double* aux, int lo, int hi, long n,
             const double* q11, const double* q12, const double* q22, double* k, double* kd) {
  act_entries<double>(kind, p, aux, lo, hi, n, q11, q12, q22, k, kd);
}
void act_f32(int kind, const double* p, const double* aux, int lo, int hi, long n,
             const double* q11, const double* q12, const double* q22, float* k, float* kd) {
  act_entries<float>(kind, p, aux, lo, hi, n, q11, q12, q22, k, kd);
}
void diag_f64(const int* ops, const double* params, const double* aux, int n_ops,
              const double* norm2, const double* sq, long n, double* tab, double* feat, int fr,
              double* kd, double* td) {
  diag(ops, params, aux, n_ops, norm2, sq, n, tab, feat, fr, kd, td);
}
// Features of points of scale s[i] into feat (IK_NUM_FR rows, leading dimension n).
void mehler_f64(const double* aux, int lo, long n, const double* s, double* feat) {
  for (long i = 0; i < n; ++i) ik_mehler_point(aux, lo, s[i], feat + i, n);
}
void quad_f64(const double* aux, int lo, long n, const double* s1, const double* s2,
              const double* rho, double* k, double* kd) {
  for (long i = 0; i < n; ++i) ik_pair_quadrature(aux, lo, s1[i], s2[i], rho[i], k + i, kd + i);
}
#define GRAM(NAME, T, NR)                                                                 \
  void NAME(const int* ops, const double* params, const double* aux, int n_ops,          \
            const T* tab1, long n1, const T* tab2, long n2, const double* feat1,          \
            const double* feat2, const T* G, T inv_d, const T* x1, const T* x2, int d,    \
            T* K, T* TT) {                                                                \
    gram<T, NR>(ops, params, aux, n_ops, tab1, n1, tab2, n2, feat1, feat2, G, inv_d, x1,  \
                x2, d, K, TT);                                                            \
  }
GRAM(gram_f64_1, double, 1)
GRAM(gram_f64_4, double, 4)
GRAM(gram_f64_32, double, 32)
GRAM(gram_f32_1, float, 1)
GRAM(gram_f32_4, float, 4)
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) on PATH: cannot compile the CUDA header")
    tmp = str(tmp_path_factory.mktemp("ik_host"))
    header = os.path.join(tmp, "infkernel_math.cuh")
    with open(header, "w") as f:
        f.write(gpu.read_source("infkernel_math.cuh"))
    src = os.path.join(tmp, "driver.cpp")
    with open(src, "w") as f:
        f.write(gpu.defines() + DRIVER)
    so = os.path.join(tmp, "driver.so")
    # FMA contraction, as numba (fastmath={"contract"}) and nvcc do.
    flags = ["-O2", "-std=c++14", "-shared", "-fPIC", "-ffp-contract=fast", f"-I{tmp}"]
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        flags.append("-march=native")
    proc = subprocess.run([cxx, *flags, src, "-o", so], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(so)


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _act_host(lib, act, q11, q12, q22, dtype=np.float64):
    prog = ik.serial(ik.Dense(1), act).program(1)
    k = prog.ops[1]
    n = q11.size
    ok = np.empty(n, dtype)
    od = np.empty(n, dtype)
    fn = lib.act_f64 if dtype == np.float64 else lib.act_f32
    fn(ctypes.c_int(int(k[3])), _p(np.ascontiguousarray(prog.params[1])), _p(prog.aux),
       ctypes.c_int(int(k[4])), ctypes.c_int(int(k[5])), ctypes.c_long(n),
       _p(q11), _p(q12), _p(q22), _p(ok), _p(od))
    return ok, od


def _act_numba(act, q11, q12, q22):
    return np.array([tile_dual(act, *c) for c in zip(q11, q12, q22)]).T


def _pairs(rng, n=400):
    """(q11, q12, q22): random correlations plus ρ = ±1 exactly, near ±1, zero
    variance on one or both sides, and tiny and large variances."""
    q11 = rng.uniform(0.05, 3.0, n)
    q22 = rng.uniform(0.05, 3.0, n)
    rho = rng.uniform(-1, 1, n)
    rho[:20] = 1.0
    rho[20:40] = -1.0
    rho[40:60] = 1 - 10.0 ** -rng.uniform(3, 15, 20)
    rho[60:80] = -1 + 10.0 ** -rng.uniform(3, 15, 20)
    q22[:10] = q11[:10]
    q22[20:30] = q11[20:30]
    q11[80:90] = 0.0
    q22[85:95] = 0.0
    q11[95:100] = 1e-12
    q22[100:105] = 1e3
    q12 = rho * np.sqrt(q11) * np.sqrt(q22)
    return q11, q12, q22


def _activations():
    acts = [ik.Relu(), ik.LeakyRelu(0.1), ik.ABRelu(-0.3, 0.7), ik.Abs(),
            ik.Erf(1.2, 0.8, 0.3), ik.Erf(), ik.Sigmoid_like(), ik.Gelu(),
            ik.Sin(0.9, 1.1, 0.4), ik.Cos(), ik.Rbf(0.7), ik.Gaussian(1.1, -0.6),
            ik.Gaussian(0.7, 0.1), ik.Exp(0.8, 0.5), ik.Sign(), ik.Monomial(0),
            ik.Monomial(1), ik.Monomial(2), ik.Monomial(3), ik.Monomial(5),
            ik.RectifiedMonomial(0), ik.RectifiedMonomial(1), ik.RectifiedMonomial(2),
            ik.RectifiedMonomial(3), ik.Polynomial([0.3, -1.0, 0.5, 0.2]), ik.Hermite(4),
            ik.Polynomial([1.5]), ik.Gabor(), ik.ExpNormalized(0.7, -0.5),
            ik.ExpNormalized(do_clip=True)]
    return acts


def _ulps(got, ref, scale, eps=EPS64):
    """max |got - ref| / (eps (|ref| + scale)); equal infinities/NaNs count as 0."""
    got = np.asarray(got, np.float64)
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(same, 0.0, np.abs(got - ref) / (eps * (np.abs(ref) + scale)))
    return float(np.max(err, initial=0.0))


ACTS = _activations()


def test_every_kind_has_a_cuda_case_or_a_clear_error():
    """Every kind (closed forms and K_NUMERIC) runs on the GPU; a kind without
    a CUDA case is refused by gpu.py before any launch (never a silent NaN)."""
    kinds = {getattr(P, n) for n in dir(P) if n.startswith("K_")}
    assert kinds <= gpu.supported_kinds()
    assert gpu.supports(ik.serial(ik.Dense(4), ik.Tanh(), ik.Dense(1)).program(3))
    b = P.ProgramBuilder(3)
    b.emit(P.OP_DENSE, 0, params=(1.0, 0.0, 0.0, 1.0, 0.0))
    b.emit(P.OP_ACT, 0, kind=max(kinds) + 1)
    with pytest.raises(NotImplementedError, match="no GPU implementation"):
        gpu._check_program(b.build())


@pytest.mark.parametrize("act", ACTS, ids=repr)
def test_dual_matches_numba(lib, act):
    """Each dual, float64: agreement to a few ulps of max(|k|, scale).

    ``scale`` is √(q11 q22)-sized (the size of the inputs, the condition of the
    formulas); kinked duals (√(1-ρ²) at ρ = ±1) amplify the last bit of ρ and
    are compared away from |ρ| ≥ 1 - 1e-9 at a looser bound."""
    rng = np.random.default_rng(0)
    q11, q12, q22 = _pairs(rng)
    kh, dh = _act_host(lib, act, q11, q12, q22)
    kn, dn = _act_numba(act, q11, q12, q22)
    assert np.array_equal(np.isnan(kh), np.isnan(kn))
    scale = np.sqrt(np.maximum(q11, 1e-300) * np.maximum(q22, 1e-300)) + 1e-300
    ek = _ulps(kh, kn, scale)
    ed = _ulps(dh, dn, 1.0)
    assert ek <= 16, f"NNGP dual off by {ek:.1f} ulps"
    assert ed <= 16, f"derivative dual off by {ed:.1f} ulps"


@pytest.mark.parametrize("act", ACTS, ids=repr)
def test_dual_float32(lib, act):
    """float32 arithmetic: within 64 float32 ulps of the float64 value, relative
    to |k| + √(q11 q22) (k) and |kd| + 1 (kd), away from |ρ| ≈ 1 for kinked duals."""
    if act.name == "Gaussian" and act.params[1] > 0:
        pytest.skip("b > 0: the dual is 1/sqrt(det) with det -> 0 at the divergence; "
                    "its condition number has no float32-sized bound")
    rng = np.random.default_rng(1)
    q11, q12, q22 = _pairs(rng)
    q11, q12, q22 = (np.float32(a).astype(np.float64) for a in (q11, q12, q22))
    kh, dh = _act_host(lib, act, q11, q12, q22, np.float32)
    kn, dn = _act_numba(act, q11, q12, q22)
    big = np.finfo(np.float32).max
    keep = (np.abs(kn) < big) & (np.abs(dn) < big)  # representable in float32
    kinked = act.name in ("Sign", "RectifiedMonomial", "ABRelu")
    if kinked:
        rho = q12 / np.sqrt(np.maximum(q11 * q22, 1e-300))
        keep &= np.abs(rho) < 1 - 1e-5
    scale = np.sqrt(q11 * q22)
    e32 = float(np.finfo(np.float32).eps)
    ek = _ulps(kh[keep], kn[keep], scale[keep], e32)
    ed = _ulps(dh[keep], dn[keep], 1.0, e32)
    assert ek <= 64 and ed <= 64, f"float32 duals off by {ek:.1f} / {ed:.1f} float32 ulps"


def _points(rng, n=37, d=5):
    """Random points plus duplicates (ρ = 1), negations (ρ = -1), a zero point
    and a scaled copy."""
    x = rng.standard_normal((n, d))
    x[1] = x[0]
    x[2] = -x[0]
    x[3] = 0.0
    x[4] = 3.0 * x[5]
    return x


def _host_diag(lib, prog, x, fr):
    """(tables, features, k, t) of the header's diagonal pass alone, ``fr``
    feature rows per numeric op (FR, or 2: the moments alone)."""
    ops = np.ascontiguousarray(prog.ops.astype(np.int32))
    n_slots = int(np.isin(prog.ops[:, 0], gpu.SLOT_OPS).sum())
    n_num = int(((prog.ops[:, 0] == P.OP_ACT) & (prog.ops[:, 3] == P.K_NUMERIC)).sum())
    n = x.shape[0]
    tab = np.zeros((1 + 3 * n_slots, n))
    feat = np.zeros((max(n_num * fr, 1), n))
    kd = np.empty(n)
    td = np.empty(n)
    norm2 = _cpu.row_norms(x)    # as numba sums them: 1/|x| to the bit (step
    # activations raise an ulp of it at nearly parallel points to ~1e-12)
    lib.diag_f64(_p(ops), _p(np.ascontiguousarray(prog.params)),
                 _p(np.ascontiguousarray(prog.aux)), ctypes.c_int(prog.n_ops), _p(norm2),
                 _p(norm2 / prog.d_in), ctypes.c_long(n), _p(tab), _p(feat),
                 ctypes.c_int(fr), _p(kd), _p(td))
    return tab, feat, kd, td


def _host_gram(lib, prog, x1, x2, dtype=np.float64, nr=1, full=False):
    """(K, T, (k, t) diagonal of x1) by the header's diagonal pass and interpreter;
    ``full``: also the features and tables of x1."""
    ops = np.ascontiguousarray(prog.ops.astype(np.int32))
    params = np.ascontiguousarray(prog.params)
    aux = np.ascontiguousarray(prog.aux)
    tabs = []
    feats = []
    diags = []
    for x in (x1, x2):
        tab, feat, kd, td = _host_diag(lib, prog, x, FR)
        tabs.append(tab.astype(dtype))
        feats.append(feat)
        diags.append((kd, td))
    G = (x1.astype(dtype) @ x2.astype(dtype).T).astype(dtype)
    n1, n2 = G.shape
    K = np.empty((n1, n2), dtype)
    T = np.empty((n1, n2), dtype)
    ct = ctypes.c_double if dtype == np.float64 else ctypes.c_float
    fn = getattr(lib, f"gram_{'f64' if dtype == np.float64 else 'f32'}_{nr}")
    xs = [np.ascontiguousarray(x, dtype) for x in (x1, x2)]
    fn(_p(ops), _p(params), _p(aux), ctypes.c_int(prog.n_ops), _p(tabs[0]), ctypes.c_long(n1),
       _p(tabs[1]), ctypes.c_long(n2), _p(feats[0]), _p(feats[1]), _p(G), ct(1.0 / prog.d_in),
       _p(xs[0]), _p(xs[1]), ctypes.c_int(x1.shape[1]), _p(K), _p(T))
    if full:
        return K, T, diags[0], feats[0], tabs[0]
    return K, T, diags[0]


def _cpu_gram(prog, x1, x2):
    K = np.empty((x1.shape[0], x2.shape[0]))
    T = np.empty_like(K)
    _cpu.gram(prog, x1, x2, K, T)
    return K, T


def _compare(K, T, Kc, Tc, diag1, diag2):
    """ulps of K, T relative to |ref| + √(diag_i diag_j) (the entry's natural scale)."""
    # (√d_i · √d_j: the product d_i d_j overflows for Monomial(5) at depth 3)
    sk = np.outer(np.sqrt(np.abs(diag1[0])), np.sqrt(np.abs(diag2[0]))) + 1e-300
    st = np.outer(np.sqrt(np.abs(diag1[1])), np.sqrt(np.abs(diag2[1]))) + 1e-300
    return _ulps(K, Kc, sk), _ulps(T, Tc, st)


@pytest.mark.parametrize("act", ACTS, ids=repr)
@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_fused_recursion_matches_numba(lib, act, par):
    """Depth-3 networks, every activation: the fused per-entry recursion of the
    header agrees with ``_cpu.gram`` to a few ulps of the entry's scale (the
    standard parameterization's zero first bias: the zero point's first
    pre-activation has variance 0 and NTK 1)."""
    rng = np.random.default_rng(2)
    b0 = 0.2 if par == "ntk" else 0.0
    net = ik.serial(ik.Dense(64, W_std=1.1, b_std=b0, parameterization=par), act,
                    ik.Dense(64, W_std=0.9, b_std=0.1, parameterization=par), act,
                    ik.Dense(64, W_std=1.2, parameterization=par), act,
                    ik.Dense(1, W_std=1.0, b_std=0.3, parameterization=par))
    # exp-type activations at these depths overflow (or diverge, Gaussian with
    # b > 0) on the larger points, which both backends refuse: smaller inputs
    scale = 0.2 if act.name in ("Exp", "Gaussian") else 1.0
    x1 = _points(rng) * scale
    x2 = np.vstack([x1[:6], rng.standard_normal((21, 5)) * scale])
    prog = net.program(5)
    K, T, d1 = _host_gram(lib, prog, x1, x2)
    _, _, d2 = _host_gram(lib, prog, x2, x2[:1])
    Kc, Tc = _cpu_gram(prog, x1, x2)
    ek, et = _compare(K, T, Kc, Tc, d1, d2)
    bound = 64 if act.name in ("Sign", "RectifiedMonomial", "ABRelu") else 16
    assert ek <= bound and et <= bound, f"NNGP {ek:.1f} ulps, NTK {et:.1f} ulps"
    # the diagonals (Monomial(5) raises an ulp to the 5³: 23 ulps at q ~ 1e271)
    _, kc, tc = _cpu.point_tables(prog, x1)
    assert _ulps(d1[0], kc, np.abs(kc) + 1e-300) <= 64
    assert _ulps(d1[1], tc, np.abs(tc) + 1e-300) <= 64


@pytest.mark.parametrize("net", [
    ik.serial(*[ik.Dense(8, W_std=2 ** 0.5), ik.Relu()] * 1000, ik.Dense(1, W_std=2 ** 0.5)),
    ik.serial(*[ik.Dense(8, W_std=1.0, b_std=0.1), ik.Erf()] * 1000, ik.Dense(1)),
], ids=["relu-1000", "erf-1000"])
def test_depth_1000(lib, net):
    """Depth 1000: no overflow or NaN; float64 within 1e-10 relative to the
    entry scale (rounding accumulates over 1000 layers: ~1000 · few ulps).
    Both networks are in the ordered/critical phase: in the chaotic phase the
    correlation map amplifies one ulp exponentially with depth, so no two
    implementations can agree there."""
    rng = np.random.default_rng(3)
    x = _points(rng, n=13)
    prog = net.program(5)
    K, T, d1 = _host_gram(lib, prog, x, x)
    Kc, Tc = _cpu_gram(prog, x, x)
    assert np.all(np.isfinite(K)) and np.all(np.isfinite(T))
    ek, et = _compare(K, T, Kc, Tc, d1, d1)
    assert ek * EPS64 <= 1e-10 and et * EPS64 <= 1e-10, (ek, et)


def _branchy_program(d, n_regs):
    """Dense, fan-out to a second register, different activations per branch,
    weighted sum and scale: exercises COPY / AXPY / SCALE and the register file."""
    b = P.ProgramBuilder(d)
    b.emit(P.OP_DENSE, 0, params=(1.3, 0.2, 0.0, 1.0, 0.0))
    for _ in range(n_regs - 1):
        b.new_register()
    b.emit(P.OP_COPY, 0, n_regs - 1)
    b.emit(P.OP_ACT, 0, kind=P.K_ABRELU, params=(0.0, 1.0))
    b.emit(P.OP_ACT, n_regs - 1, kind=P.K_ERF, params=(1.0, 1.0, 0.0))
    b.emit(P.OP_AXPY, 0, n_regs - 1, params=(0.5, 0.7))
    b.emit(P.OP_SCALE, 0, params=(1.7,))
    b.emit(P.OP_DENSE, 0, params=(1.0, 0.1, 0.0, 1.0, 0.0))
    b.emit(P.OP_ACT, 0, kind=P.K_GELU)
    # the versine: unknown after Gelu and the sum, rebuilt by a Dense, carried
    # through a copy, a kinked activation and a product
    b.emit(P.OP_DENSE, 0, params=(0.9, 0.05, 0.0, 1.0, 0.0))
    b.emit(P.OP_COPY, 0, n_regs - 1)
    b.emit(P.OP_ACT, 0, kind=P.K_ABRELU, params=(-0.4, 1.0))
    b.emit(P.OP_MUL, 0, n_regs - 1)
    b.emit(P.OP_DENSE, 0, params=(1.1, 0.1, 0.0, 1.0, 0.0))
    b.emit(P.OP_ACT, 0, kind=P.K_ABRELU, params=(0.0, 1.0))
    b.emit(P.OP_DENSE, 0, params=(0.8, 0.0, 0.0, 1.0, 0.0))
    return b.build()


@pytest.mark.parametrize("n_regs,nr", [(2, 4), (4, 4), (7, 32)])
def test_register_file(lib, n_regs, nr):
    rng = np.random.default_rng(4)
    prog = _branchy_program(5, n_regs)
    x1 = _points(rng)
    x2 = rng.standard_normal((9, 5))
    K, T, d1 = _host_gram(lib, prog, x1, x2, nr=nr)
    _, _, d2 = _host_gram(lib, prog, x2, x2[:1], nr=nr)
    Kc, Tc = _cpu_gram(prog, x1, x2)
    ek, et = _compare(K, T, Kc, Tc, d1, d2)
    assert ek <= 16 and et <= 16, (ek, et)


@pytest.mark.parametrize("act", [ik.Relu(), ik.Abs(), ik.LeakyRelu(0.1), ik.Sign(),
                                 ik.RectifiedMonomial(0), ik.RectifiedMonomial(1),
                                 ik.RectifiedMonomial(2), ik.RectifiedMonomial(5)], ids=repr)
def test_nearly_parallel_points_match_numba(lib, act):
    """Points 1e-9 apart, parallel ones of another norm, duplicates and their
    near and exact antipodes, through a plain network with and without biases,
    a residual one and a product of branches, after a smooth activation and
    after train-mode Dropout: the header starts, carries, takes from q12 and
    drops the signed versine as numba does (without it the two differ by ~1e-9
    of the scale, ~1e7 ulps; kept through Dropout, by 0.2)."""
    rng = np.random.default_rng(9)
    x1 = rng.standard_normal((8, 5))
    noise = rng.standard_normal((8, 5))
    x2 = np.vstack([x1 + 1e-9 * noise, 2.5 * x1 + 1e-9 * noise, x1, -x1 + 1e-9 * noise, -x1])
    plain = ik.serial(ik.Dense(8, 1.2, 0.1), act, ik.Dense(8, 1.1, 0.2), act, ik.Dense(1))
    residual = ik.serial(ik.Dense(8, 1.2, 0.1), act, ik.FanOut(2),
                         ik.parallel(ik.serial(ik.Dense(8, 1.1, 0.2), act, ik.Dense(8)),
                                     ik.Dense(8, 0.7)),
                         ik.FanInSum(), act, ik.Dense(1))
    smooth = ik.serial(ik.Dense(8, 1.2, 0.1), ik.Erf(), ik.Dense(8, 1.1, 0.2), act, ik.Dense(1))
    dropped = ik.serial(ik.Dense(8, 1.2, 0.1), act, ik.Dropout(0.5), ik.Dense(8, 1.1, 0.2), act,
                        ik.Dense(1))
    unbiased = ik.serial(ik.Dense(8, 1.2), act, ik.Dense(8, 1.1), act, ik.Dense(1))
    product = ik.serial(ik.Dense(8, 1.2), ik.FanOut(2), ik.parallel(ik.Dense(8), ik.Dense(8, 0.7)),
                        ik.FanInProd(), ik.Dense(8), act, ik.Dense(1))
    for net in (plain, residual, smooth, dropped, unbiased, product):
        prog = net.program(5)
        K, T, d1 = _host_gram(lib, prog, x1, x2, nr=4)
        _, _, d2 = _host_gram(lib, prog, x2, x2[:1], nr=4)
        Kc, Tc = _cpu_gram(prog, x1, x2)
        ek, et = _compare(K, T, Kc, Tc, d1, d2)
        assert ek <= 16 and et <= 16, (ek, et)


def test_diagonal_pass_matches_numba(lib):
    rng = np.random.default_rng(5)
    net = ik.serial(ik.Dense(8, b_std=0.1), ik.Gelu(), ik.Dense(8), ik.Relu(), ik.Dense(1))
    x = _points(rng)
    prog = net.program(5)
    _, _, (kd, td) = _host_gram(lib, prog, x, x[:1])
    _, kc, tc = _cpu.point_tables(prog, x)
    assert _ulps(kd, kc, 0.0 * kc + np.abs(kc).max()) <= 4
    assert _ulps(td, tc, 0.0 * tc + np.abs(tc).max()) <= 4


def test_diagonal_alone_skips_the_features(lib):
    """With 2 feature rows per numeric op (the moments E[φ²], E[φ'²] alone)
    the diagonal pass gives the same diagonal, bit for bit, as with the full
    features, and numba's diagonal within a few ulps."""
    rng = np.random.default_rng(8)
    net = ik.serial(ik.Dense(8, 1.3, 0.1), ik.Tanh(), ik.Dense(8, 1.2), ik.Elu(),
                    ik.Dense(8), ik.Relu(), ik.Dense(1))
    x = _points(rng)
    prog = net.program(5)
    tab, feat, kd, td = _host_diag(lib, prog, x, FR)
    tab2, feat2, kd2, td2 = _host_diag(lib, prog, x, 2)
    assert np.array_equal(kd, kd2) and np.array_equal(td, td2) and np.array_equal(tab, tab2)
    for slot in range(2):   # the moments are the last two rows of each full block
        assert np.array_equal(feat2[2 * slot:2 * slot + 2], feat[(slot + 1) * FR - 2:(slot + 1) * FR])
    _, kc, tc = _cpu.point_tables(prog, x, features=False)
    assert _ulps(kd2, kc, 0.0 * kc + np.abs(kc).max()) <= 4
    assert _ulps(td2, tc, 0.0 * tc + np.abs(tc).max()) <= 4


def test_float32_recursion(lib):
    """float32 arithmetic through a depth-3 ReLU, Erf and Tanh network (Tanh's
    expectations compute in float64 from float32 inputs): error relative to
    √(K(x,x) K(x',x')) below 1e-5 (≈ 100 float32 ulps: GEMM of d terms plus
    ~10 rounded operations per layer), away from ρ = ±1 duplicates for the
    NTK of ReLU (kinked)."""
    rng = np.random.default_rng(6)
    for act in (ik.Erf(), ik.Relu(), ik.Tanh()):
        net = ik.serial(*[ik.Dense(64, W_std=1.4, b_std=0.1), act] * 3, ik.Dense(1))
        x1 = rng.standard_normal((40, 5))
        x2 = rng.standard_normal((30, 5))
        prog = net.program(5)
        K, T, d1 = _host_gram(lib, prog, x1, x2, np.float32)
        _, _, d2 = _host_gram(lib, prog, x2, x2[:1])
        Kc, Tc = _cpu_gram(prog, x1, x2)
        ek, et = _compare(K, T, Kc, Tc, d1, d2)
        assert ek * EPS64 <= 1e-5 and et * EPS64 <= 1e-5, (act, ek * EPS64, et * EPS64)


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
def test_cuda_sources_compile(tmp_path):
    """The code string gpu.py hands to NVRTC (all variants) compiles for sm_80 and sm_90."""
    tmp = str(tmp_path)
    src = os.path.join(tmp, "gram.cu")
    with open(src, "w") as f:
        f.write(gpu.source())

    def build(arch):
        out = os.path.join(tmp, f"gram_{arch}.ptx")
        return subprocess.run([NVCC, f"-arch={arch}", "--ptx", "-std=c++14",
                               "-Werror", "all-warnings", src, "-o", out],
                              capture_output=True, text=True)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(build, ["sm_80", "sm_90"]))
    for arch, proc in zip(["sm_80", "sm_90"], results):
        assert proc.returncode == 0, f"{arch}:\n{proc.stderr}"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("numeric", [False, True])
def test_cuda_variant_compiles(numeric, tmp_path):
    """One variant as gpu.py compiles it at run time, with the numeric kind
    compiled out (closed-form programs) and in (IK_NUMERIC), for sm_90."""
    tmp = str(tmp_path)
    src = os.path.join(tmp, "gram.cu")
    variant = gpu._variant(np.dtype(np.float64), np.dtype(np.float32), 4, numeric)
    with open(src, "w") as f:
        f.write(gpu.source(variant))
    proc = subprocess.run([NVCC, "-arch=sm_90", "--ptx", "-std=c++14", "-Werror",
                           "all-warnings", src, "-o", os.path.join(tmp, "v.ptx")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ptx = open(os.path.join(tmp, "v.ptx")).read()
    assert ("ik_pair_quadrature" in ptx) == numeric


def _nvrtc():
    """NVRTC's library (ctypes), its builtins loaded first so that it finds
    them; None when absent."""
    dirs = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs += glob.glob(os.path.join(root, "cu*", "lib")) + glob.glob(
            os.path.join(root, "cuda_nvrtc", "lib"))
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            dirs.append(os.path.join(os.environ[env], "lib64"))
    dirs += glob.glob("/usr/local/cuda*/lib64")
    for d in dirs:
        libs = sorted(glob.glob(os.path.join(d, "libnvrtc.so*")))
        builtins = sorted(glob.glob(os.path.join(d, "libnvrtc-builtins.so*")))
        if libs and builtins:
            try:
                ctypes.CDLL(builtins[0], mode=ctypes.RTLD_GLOBAL)
                return ctypes.CDLL(libs[0])
            except OSError:
                continue
    name = ctypes.util.find_library("nvrtc")
    return ctypes.CDLL(name) if name else None


def _nvrtc_compile(lib, code, options):
    """(status, log) of compiling ``code`` to PTX with NVRTC."""
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), b"gram.cu",
                                  0, None, None) == 0
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    status = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return status, log.value.decode(errors="replace")


NVRTC = _nvrtc()


#: the options CuPy 14's RawModule passes to NVRTC for ``options=("-std=c++14",)``
#: on an sm_90 device (cupy/cuda/compiler.py), less its include paths
CUPY_NVRTC_OPTIONS = ["-std=c++14", "-ftz=true", "-arch=sm_90",
                      "--device-as-default-execution-space"]


@pytest.mark.skipif(NVRTC is None, reason="NVRTC's library (pip install nvidia-cuda-nvrtc) "
                    "was not found")
@pytest.mark.parametrize("variant", [
    (np.float64, np.float32, 4, True), (np.float64, np.float64, 32, False),
    (np.float32, np.float32, 1, False)])
def test_cuda_variant_compiles_with_nvrtc(variant):
    """The code string of a variant, as ``gpu._kernels`` hands it to CuPy's
    RawModule, compiles with NVRTC to an sm_90 binary (ptxas included): no
    host header, macro or host-only function on the device path."""
    compute_dt, out_dt, n_regs, numeric = variant
    code = gpu.source(gpu._variant(np.dtype(compute_dt), np.dtype(out_dt), n_regs, numeric))
    status, log = _nvrtc_compile(NVRTC, code, CUPY_NVRTC_OPTIONS)
    assert status == 0, log
    assert "warning" not in log.lower(), log


@pytest.mark.skipif(NVRTC is None, reason="NVRTC's library was not found")
def test_nvrtc_check_detects_host_only_code():
    """The compile check above can fail: a host-only macro does, under NVRTC."""
    status, log = _nvrtc_compile(NVRTC, "__global__ void k(double* a) { a[0] = HUGE_VAL; }",
                                 CUPY_NVRTC_OPTIONS)
    assert status != 0 and "HUGE_VAL" in log


# ---------------------------------------------------------------------------
# Kind K_NUMERIC: per-point Mehler features, certified series, quadrature
# ---------------------------------------------------------------------------

def _kinked(x):
    return np.maximum(x, 0.5 * x) + 0.1 * np.sin(x)


def _off_centre(x):
    return np.tanh(2 * (x - 1.5))


#: every numeric activation; the Elementwise ones: a kink (detected at 0) and a
#: derivative differentiated from the table (df=None); with panel caps
#: (``_numeric``: sin everywhere, W = 4; a transition away from 0, W = 1/2 on one side)
NUMERIC = [ik.Tanh(), ik.Softplus(), ik.Sigmoid(), ik.Silu(), ik.Elu(0.7), ik.Selu(),
           ik.Mish(), ik.SReLU(), ik.S2ReLU(), ik.Elementwise(_kinked, name="Elementwise(kinked)"),
           ik.Elementwise(np.sin, np.cos, name="Elementwise(sin)"),
           ik.Elementwise(_off_centre, name="Elementwise(off_centre)")]

#: scales s = √q of the range [0, Q_MAX], its ends, tiny values, the diagonal
#: pass's cap 2√Q_MAX, and scales where φ is evaluated on its tails' lines
_SCALES = np.concatenate([[0.0, 1e-8, 1e-3, 0.05, 0.5, 1.0, 3.0, math.sqrt(_numeric.Q_MAX),
                           2 * math.sqrt(_numeric.Q_MAX), 1e2, 1e4, 1e10],
                          np.sqrt(np.random.default_rng(7).uniform(0, _numeric.Q_MAX, 7))])


def _numba_features(table, s):
    F = np.zeros((1, 4, _numeric.NM, s.size))
    G = np.zeros((1, 2, s.size))
    for i in range(s.size):
        _numeric.mehler_point(table, 0, s[i], F, G, 0, i)
    return F[0], G[0]


def _host_features(lib, table, s):
    feat = np.zeros((FR, s.size))
    lib.mehler_f64(_p(table), ctypes.c_int(0), ctypes.c_long(s.size), _p(s), _p(feat))
    nm = _numeric.NM
    return feat[:4 * nm].reshape(4, nm, s.size), feat[4 * nm:]


@pytest.mark.parametrize("act", NUMERIC, ids=repr)
def test_numeric_features_match_numba(lib, act):
    """ik_mehler_point = _numeric.mehler_point: the same panels (the header
    merges sorted edge sequences instead of sorting a buffer), nodes and sums in
    the same order; only the compilers' FMA contraction may differ (≤ 1 ulp per
    operation, passed on by the Hermite recurrence and ~10³-term sums).
    Coefficients: 64 ulps of the point's scale √E[φ²] (√E[φ'²]); tails: their
    squares (E - Σ a²)/E + 1e-15 to 64 ulps absolute (rounding of E - Σ a²,
    relative to E); E[φ²], E[φ'²]: 16 ulps relative."""
    table = act.tables[0]
    Fh, Gh = _host_features(lib, table, _SCALES)
    Fn, Gn = _numba_features(table, _SCALES)
    for c in (0, 1):
        err = _ulps(Fh[c], Fn[c], np.sqrt(Gn[c])[None, :] + 1e-300)
        assert err <= 64, f"{'ad'[c]}_n off by {err:.1f} ulps of the point scale"
    for c in (2, 3):
        err = float(np.abs(Fh[c] ** 2 - Fn[c] ** 2).max()) / EPS64
        assert err <= 64, f"tails off by {err:.1f} ulps"
    assert _ulps(Gh, Gn, 0.0) <= 16


def _numeric_pairs(rng, n=240):
    """(q11, q12, q22) over the range [0, Q_MAX]: log-uniform variances, ρ = ±1
    exactly and near ±1, equal variances at ρ = 1 (the exact diagonal
    shortcut), zero variance on one or both sides, variance Q_MAX; and
    variances 1e3 … 1e20 (φ on its tails' lines)."""
    qm = _numeric.Q_MAX
    q11 = np.exp(rng.uniform(math.log(1e-4), math.log(qm), n))
    q22 = np.exp(rng.uniform(math.log(1e-4), math.log(qm), n))
    rho = rng.uniform(-1, 1, n)
    rho[:20] = 1.0
    rho[20:40] = -1.0
    rho[40:60] = 1 - 10.0 ** -rng.uniform(3, 15, 20)
    rho[60:80] = -1 + 10.0 ** -rng.uniform(3, 15, 20)
    q22[:10] = q11[:10]
    q22[20:30] = q11[20:30]
    q11[80:90] = 0.0
    q22[85:95] = 0.0
    q11[95:105] = qm
    q22[100:110] = qm
    q11[110:115] = q22[110:115] = qm
    q11[115:125] = 10.0 ** rng.uniform(3, 20, 10)
    q22[120:130] = 10.0 ** rng.uniform(3, 20, 10)
    q12 = rho * np.sqrt(q11) * np.sqrt(q22)
    return q11, q12, q22


def _second_moments(table, q):
    """(E[φ(√q z)²], E[φ'(√q z)²]) per q (numba's per-point features)."""
    return _numba_features(table, np.sqrt(q))[1]


@pytest.mark.parametrize("act", NUMERIC, ids=repr)
def test_numeric_entries_match_numba(lib, act):
    """ik_act on K_NUMERIC entries (features of both points, certified Mehler
    sum, per-entry fallback to E[φ²] or the quadrature) against
    _numeric.duals, which runs numba's path for one-entry tiles: the same
    truncation rule, so agreement to 16 ulps of √(E[φ(u)²] E[φ(v)²])
    (√(E[φ'(u)²] E[φ'(v)²]) for the derivative)."""
    rng = np.random.default_rng(8)
    q11, q12, q22 = _numeric_pairs(rng)
    table = act.tables[0]
    kh, dh = _act_host(lib, act, q11, q12, q22)
    kn, dn = _numeric.duals(table, q11, q12, q22)
    g1, g2 = _second_moments(table, q11), _second_moments(table, q22)
    ek = _ulps(kh, kn, np.sqrt(g1[0] * g2[0]) + 1e-300)
    ed = _ulps(dh, dn, np.sqrt(g1[1] * g2[1]) + 1e-300)
    assert ek <= 16 and ed <= 16, f"k off by {ek:.1f}, kdot by {ed:.1f} ulps"


@pytest.mark.parametrize("act", NUMERIC, ids=repr)
def test_numeric_quadrature_matches_numba(lib, act):
    """ik_pair_quadrature = _numeric.pair_quadrature (same panels and nodes)
    at ρ = ±1, 0, near ±1, zero and large scales (to 1e10, φ on its tails'
    lines): 16 ulps of the Cauchy–Schwarz scale."""
    table = act.tables[0]
    smax = math.sqrt(_numeric.Q_MAX)
    cases = [(s1, s2, r) for s1 in (0.0, 1e-6, 1.0, 4.0, smax, 1e4) for s2 in (0.3, smax, 1e10)
             for r in (1.0, -1.0, 0.0, 0.37, 1 - 1e-9, -1 + 1e-12)]
    s1, s2, rho = (np.array(c) for c in zip(*cases))
    k = np.empty(s1.size)
    kd = np.empty(s1.size)
    lib.quad_f64(_p(table), ctypes.c_int(0), ctypes.c_long(s1.size), _p(s1), _p(s2), _p(rho),
                 _p(k), _p(kd))
    ref = np.array([_numeric.duals_quadrature(table, a, b, c) for a, b, c in cases])
    g1, g2 = _second_moments(table, s1 ** 2), _second_moments(table, s2 ** 2)
    assert _ulps(k, ref[:, 0], np.sqrt(g1[0] * g2[0]) + 1e-300) <= 16
    assert _ulps(kd, ref[:, 1], np.sqrt(g1[1] * g2[1]) + 1e-300) <= 16


def _numeric_net(act, par="ntk", w0=1.1):
    return ik.serial(ik.Dense(64, W_std=w0, b_std=0.2, parameterization=par), act,
                     ik.Dense(64, W_std=0.9, b_std=0.1, parameterization=par), act,
                     ik.Dense(64, W_std=1.2, parameterization=par), act,
                     ik.Dense(1, W_std=1.0, b_std=0.3, parameterization=par))


#: Gram entries: each backend certifies every numeric layer's truncation to
#: TOL = 1e-12 of √(E[φ(u)²] E[φ(v)²]), but the CPU certifies a tile of 512
#: columns at once and the header E = 4 entries of one column, so they may stop
#: at different terms: ≤ 2 TOL per layer, three layers, each later layer
#: passing it on with gain ≲ σ_w² E[φ'²] ≤ 1.5: ≤ 2e-12 · 3 · 1.5 ≈ 1e-11.
NUMERIC_GRAM_TOL = 1e-11


@pytest.mark.parametrize("act", NUMERIC, ids=repr)
def test_numeric_fused_recursion_matches_numba(lib, act):
    """Depth-3 networks of every numeric activation, points with duplicates
    (ρ = 1), negations (ρ = -1), a zero point and a scaled copy: the diagonal
    pass (features, K(x,x), Θ(x,x)) to a few ulps of numba's, the Gram within
    NUMERIC_GRAM_TOL of the entry scale √(K(x,x) K(x',x'))."""
    rng = np.random.default_rng(9)
    net = _numeric_net(act)
    x1 = _points(rng)
    x2 = np.vstack([x1[:6], rng.standard_normal((21, 5))])
    prog = net.program(5)
    K, T, d1, feat, _ = _host_gram(lib, prog, x1, x2, full=True)
    _, _, d2 = _host_gram(lib, prog, x2, x2[:1])
    (_, _, _, F, G, _, _), kc, tc = _cpu.point_tables(prog, x1)
    assert _ulps(d1[0], kc, np.abs(kc).max()) <= 4
    assert _ulps(d1[1], tc, np.abs(tc).max()) <= 4
    nm = _numeric.NM
    for slot in range(F.shape[0]):
        blk = feat[slot * FR:(slot + 1) * FR]
        for c in (0, 1):
            err = _ulps(blk[c * nm:(c + 1) * nm], F[slot, c], np.sqrt(G[slot, c]) + 1e-300)
            assert err <= 64, (slot, c, err)
        # E[φ²], E[φ'²] at s = √V, V from the layers below (an ulp apart with
        # the two compilers' FMAs): the table's panel fits agree at their
        # edges to ~1e-14 only, so a node crossing one moves a sum by up to
        # ~50 ulps (measured for a sech² peak in the Gaussian's tail)
        assert _ulps(blk[4 * nm:], G[slot], 0.0) <= 64
    Kc, Tc = _cpu_gram(prog, x1, x2)
    ek, et = _compare(K, T, Kc, Tc, d1, d2)
    assert max(ek, et) * EPS64 <= NUMERIC_GRAM_TOL, f"NNGP {ek * EPS64:.2e}, NTK {et * EPS64:.2e}"


@pytest.mark.parametrize("w0", [8.0, 3e3])
@pytest.mark.parametrize("act", [ik.Tanh(), ik.Elu(0.7), ik.SReLU()], ids=repr)
def test_numeric_large_variance(lib, act, w0):
    """First-layer variances up to ~Q_MAX (W_std = 8 on points with |x|²/d up to
    1.9) and ~1.7e7 (W_std = 3e3, φ on its tails' lines), standard
    parameterization, 4-register file: the Mehler series cannot certify many
    of these entries, so the quadrature fallback runs inside the fused
    recursion.  Same bound as above."""
    rng = np.random.default_rng(10)
    x = _points(rng, n=21)
    norms = np.einsum("ij,ij->i", x, x) / 5
    x *= np.sqrt(np.minimum(1.9 / np.maximum(norms, 1e-300), 1.0))[:, None]
    net = _numeric_net(act, "standard", w0=w0)
    prog = net.program(5)
    K, T, d1 = _host_gram(lib, prog, x, x, nr=4)
    Kc, Tc = _cpu_gram(prog, x, x)
    ek, et = _compare(K, T, Kc, Tc, d1, d1)
    assert max(ek, et) * EPS64 <= NUMERIC_GRAM_TOL, (ek * EPS64, et * EPS64)
