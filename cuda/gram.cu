// infkernel Gram kernels: diagonal pass, cross tile, symmetric row block.
//
// Compiled at run time by infkernel/gpu.py (CuPy RawModule / NVRTC) with the
// contents of infkernel_math.cuh inlined in place of the #include below and
// the IK_OP_* / IK_K_* numbers defined from infkernel/_program.py.
//
// Thread layout of the Gram kernels: blocks of IK_BX x IK_BY threads cover a
// 32 x 32 output tile; each thread owns one column and IK_E = 4 rows
// (ty + 8e), so a warp stores 32 consecutive entries of a row (coalesced) and
// the column point's tables are loaded once per activation for 4 entries.
// The per-entry state (q, theta per register) lives in registers.
#include "infkernel_math.cuh"

#define IK_BX 32
#define IK_BY 8
#define IK_E 4
#define IK_TILE 32  // IK_BY * IK_E

/// Diagonal pass, one thread per point: sq = |x_i|^2 / d, then the program on
/// (x_i, x_i): per-point tables, the per-point Mehler features of numeric
/// activations (feat, fr rows per numeric op, leading dimension n; fr = 2: the
/// moments alone, for the diagonal; unused without them) and the diagonal
/// outputs (float64).
extern "C" __global__ void ik_diag(const double* __restrict__ x, long long n, int d,
                                   double inv_d, const int* __restrict__ ops,
                                   const double* __restrict__ params,
                                   const double* __restrict__ aux, int n_ops,
                                   double* __restrict__ tab, double* __restrict__ feat, int fr,
                                   double* __restrict__ kd, double* __restrict__ td) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const double* xi = x + i * d;
  double s = 0.0;
  for (int c = 0; c < d; ++c) s += xi[c] * xi[c];
  double k, t;
  ik_diag_point<double>(ops, params, aux, n_ops, s, s * inv_d, tab, feat, fr, n, i, k, t);
  kd[i] = k;
  td[i] = t;
}

/// One thread's IK_E entries (i0 + IK_BY e, col) of a tile, through the whole
/// program: q = G / d, theta = 0, the input versine from G or from the points
/// x1 (row block), x2 (column block) themselves (ik_start_versine; rows past
/// `rows` repeat the last row and are not stored).  With `upper`, entries with i >= j start from q = 0 instead:
/// the symmetric kernel discards them (the diagonal comes from the diagonal
/// pass, lower entries by transposition), so a numeric activation never runs
/// its slow quadrature fallback on them.
template <typename T, int NR>
__device__ __forceinline__ void ik_tile_entries(
    const T* __restrict__ G, long long ldg, int rows, long long i0, long long col,
    bool upper, long long j, T inv_d, const T* __restrict__ tab1, long long ld1,
    const T* __restrict__ tab2, long long ld2, const double* __restrict__ feat1,
    const double* __restrict__ feat2, const int* __restrict__ ops,
    const double* __restrict__ params, const double* __restrict__ aux, int n_ops,
    const T* __restrict__ x1, const T* __restrict__ x2, int d,
    T (&q)[NR][IK_E], T (&th)[NR][IK_E]) {
  long long rw[IK_E];
  T c[NR][IK_E];
  IK_UNROLL
  for (int e = 0; e < IK_E; ++e) {
    long long i = i0 + IK_BY * e;
    rw[e] = i < rows ? i : rows - 1;
    const bool live = !upper || i < j;
    const T g = G[rw[e] * ldg + col];
    q[0][e] = live ? g * inv_d : T(0);
    th[0][e] = T(0);
    c[0][e] = live ? ik_start_versine(g, x1 + rw[e] * d, tab1[rw[e]], x2 + col * d,
                                      tab2[col], d)
                   : T(1);
    IK_UNROLL
    for (int m = 1; m < NR; ++m) q[m][e] = th[m][e] = c[m][e] = T(0);
  }
  ik_run_entries<T, NR, IK_E>(ops, params, aux, n_ops, tab1, ld1, rw, tab2, ld2, col, feat1,
                              feat2, q, th, c);
}

/// Cross tile: out[i, j] for i < rows, j < cols from G[i, j] = x1_i . x2_j
/// (leading dimension ldg); tables of the row points start at tab1 (stride ld1,
/// already offset to the tile's first row), column points at tab2; the Mehler
/// features of numeric activations at feat1 / feat2 (same offsets and strides).
/// K or TT may be null (not requested).
template <typename T, typename OutT, int NR>
__device__ __forceinline__ void ik_cross_impl(
    const T* __restrict__ G, long long ldg, int rows, int cols, T inv_d,
    const T* __restrict__ tab1, long long ld1, const T* __restrict__ tab2, long long ld2,
    const double* __restrict__ feat1, const double* __restrict__ feat2,
    const int* __restrict__ ops, const double* __restrict__ params,
    const double* __restrict__ aux, int n_ops, const T* __restrict__ x1,
    const T* __restrict__ x2, int d, OutT* __restrict__ K,
    OutT* __restrict__ TT, long long ldo) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long j = (long long)blockIdx.x * IK_BX + tx;
  if (j >= cols) return;
  const long long i0 = (long long)blockIdx.y * IK_TILE + ty;
  T q[NR][IK_E], th[NR][IK_E];
  ik_tile_entries<T, NR>(G, ldg, rows, i0, j, false, j, inv_d, tab1, ld1, tab2, ld2, feat1,
                         feat2, ops, params, aux, n_ops, x1, x2, d, q, th);
  IK_UNROLL
  for (int e = 0; e < IK_E; ++e) {
    long long i = i0 + IK_BY * e;
    if (i < rows) {
      if (K) K[i * ldo + j] = OutT(q[0][e]);
      if (TT) TT[i * ldo + j] = OutT(th[0][e]);
    }
  }
}

/// Symmetric row block: the entries (I0 + i, I0 + j), j > i, of K(X, X) for
/// i < rows, j < cols, from G[i, j] = x_{I0+i} . x_{I0+j}; tab1 and tab2 point
/// at the tables of point I0; kd, td at the diagonal of point I0.  Writes the
/// upper entries and the diagonal at out[i, j] (out = &K[I0, I0], ldo), the
/// lower entries of each diagonal 32 x 32 tile by transposition in shared
/// memory, and, when `mirror` is set, every lower entry out[j, i] = out[i, j]
/// (coalesced through shared memory): then the block's part of the full
/// symmetric matrix is complete.  Without `mirror` the caller mirrors.
template <typename T, typename OutT, int NR>
__device__ __forceinline__ void ik_sym_impl(
    const T* __restrict__ G, long long ldg, int rows, int cols, T inv_d,
    const T* __restrict__ tab1, long long ld1, const T* __restrict__ tab2, long long ld2,
    const double* __restrict__ feat1, const double* __restrict__ feat2,
    const int* __restrict__ ops, const double* __restrict__ params,
    const double* __restrict__ aux, int n_ops, const T* __restrict__ x1,
    const T* __restrict__ x2, int d, const T* __restrict__ kdiag,
    const T* __restrict__ tdiag, OutT* __restrict__ K, OutT* __restrict__ TT,
    long long ldo, int mirror) {
  __shared__ T sk[IK_TILE][IK_TILE + 1];
  __shared__ T st[IK_TILE][IK_TILE + 1];
  const int bi = blockIdx.y, bj = blockIdx.x;
  if (bj < bi) return;  // entirely below the diagonal (uniform per block)
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long j = (long long)bj * IK_TILE + tx;
  const long long i0 = (long long)bi * IK_TILE + ty;
  const long long jc = j < cols ? j : cols - 1;
  T q[NR][IK_E], th[NR][IK_E];
  ik_tile_entries<T, NR>(G, ldg, rows, i0, jc, true, j, inv_d, tab1, ld1, tab2, ld2, feat1,
                         feat2, ops, params, aux, n_ops, x1, x2, d, q, th);
  IK_UNROLL
  for (int e = 0; e < IK_E; ++e) {
    long long i = i0 + IK_BY * e;
    bool diag = (i == j) && (i < rows);
    sk[ty + IK_BY * e][tx] = diag ? kdiag[i] : q[0][e];
    st[ty + IK_BY * e][tx] = diag ? tdiag[i] : th[0][e];
  }
  __syncthreads();
  IK_UNROLL
  for (int e = 0; e < IK_E; ++e) {
    const int a = ty + IK_BY * e;
    long long i = i0 + IK_BY * e;
    if (i < rows && j < cols) {
      bool lower = j < i;  // only within a diagonal tile
      T kv = lower ? sk[tx][a] : sk[a][tx];
      T tv = lower ? st[tx][a] : st[a][tx];
      if (K) K[i * ldo + j] = OutT(kv);
      if (TT) TT[i * ldo + j] = OutT(tv);
    }
    if (mirror && bj > bi) {
      // out[bj*32 + a, bi*32 + tx] = entry (bi*32 + tx, bj*32 + a)
      long long r = (long long)bj * IK_TILE + a;
      long long c = (long long)bi * IK_TILE + tx;
      if (r < cols && c < rows) {
        if (K) K[r * ldo + c] = OutT(sk[tx][a]);
        if (TT) TT[r * ldo + c] = OutT(st[tx][a]);
      }
    }
  }
}

#define IK_CROSS(NAME, T, OutT, NR)                                                    \
  extern "C" __global__ void __launch_bounds__(IK_BX* IK_BY) NAME(                     \
      const T* G, long long ldg, int rows, int cols, T inv_d, const T* tab1,           \
      long long ld1, const T* tab2, long long ld2, const double* feat1,                \
      const double* feat2, const int* ops, const double* params,                       \
      const double* aux, int n_ops, const T* x1, const T* x2, int d, OutT* K,         \
      OutT* TT, long long ldo) {                                                       \
    ik_cross_impl<T, OutT, NR>(G, ldg, rows, cols, inv_d, tab1, ld1, tab2, ld2, feat1, \
                               feat2, ops, params, aux, n_ops, x1, x2, d, K, TT, ldo); \
  }

#define IK_SYM(NAME, T, OutT, NR)                                                      \
  extern "C" __global__ void __launch_bounds__(IK_BX* IK_BY) NAME(                     \
      const T* G, long long ldg, int rows, int cols, T inv_d, const T* tab1,           \
      long long ld1, const T* tab2, long long ld2, const double* feat1,                \
      const double* feat2, const int* ops, const double* params,                       \
      const double* aux, int n_ops, const T* x1, const T* x2, int d, const T* kdiag,   \
      const T* tdiag, OutT* K, OutT* TT, long long ldo, int mirror) {                  \
    ik_sym_impl<T, OutT, NR>(G, ldg, rows, cols, inv_d, tab1, ld1, tab2, ld2, feat1,  \
                             feat2, ops, params, aux, n_ops, x1, x2, d, kdiag, tdiag, \
                             K, TT, ldo, mirror);                                      \
  }

// Instantiations: ik_{cross,sym}_<compute type>_<output type>_<register file size>.
// f64_f32 computes in float64 and rounds once on store (the CPU's float32).
// infkernel/gpu.py compiles one variant per module (-DIK_VARIANT_<name>);
// without a variant macro every kernel is instantiated (compile checks).
#define IK_PAIR(TN, T, OutT, NR)            \
  IK_CROSS(ik_cross_##TN##_##NR, T, OutT, NR) \
  IK_SYM(ik_sym_##TN##_##NR, T, OutT, NR)

#if defined(IK_VARIANT_T) && defined(IK_VARIANT_OUT) && defined(IK_VARIANT_NAME) && defined(IK_VARIANT_NR)
#define IK_PAIR_V(TN, T, OutT, NR) IK_PAIR(TN, T, OutT, NR)
IK_PAIR_V(IK_VARIANT_NAME, IK_VARIANT_T, IK_VARIANT_OUT, IK_VARIANT_NR)
#else
#define IK_ALL(TN, T, OutT) \
  IK_PAIR(TN, T, OutT, 1)   \
  IK_PAIR(TN, T, OutT, 4)   \
  IK_PAIR(TN, T, OutT, 32)
IK_ALL(f64_f64, double, double)
IK_ALL(f32_f32, float, float)
IK_ALL(f64_f32, double, float)
#endif
