// infkernel per-entry math: dual activations and the layer-program interpreter.
//
// Compiles three ways: with NVRTC (CuPy RawModule, the GPU backend), with nvcc
// (compile checks), and with a host C++ compiler (tests compare it with the
// numba path on the CPU).  IK_FN is `__host__ __device__` under CUDA and
// `static inline` otherwise.  No standard headers are needed under NVRTC.
//
// The opcode and kind numbers (IK_OP_*, IK_K_*) are not defined here: the
// includer defines them from infkernel/_program.py (see infkernel/gpu.py), so
// the two can never disagree.
//
// Every formula is a port of infkernel/_duals.py with the same operation
// order, so float64 results agree with the CPU path to a few ulps.  The
// float32 instantiation uses float arithmetic throughout, with float-sized
// polynomials (asin: Cephes asinf; F(t): 5 series terms).
//
// Per-point tables: for the a-th activation op of the program and point i,
// tab[(3a + 0) ld + i] = V (input variance), (3a + 1): S = sqrt(V),
// (3a + 2): R = 1/S (0 when V = 0).
#ifndef INFKERNEL_MATH_CUH
#define INFKERNEL_MATH_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define IK_FN __host__ __device__ __forceinline__
#define IK_UNROLL _Pragma("unroll")
#else
#include <math.h>
#define IK_FN static inline
#define IK_UNROLL _Pragma("GCC unroll 8")
#endif

#ifndef IK_MAX_DIAG_REGS
#define IK_MAX_DIAG_REGS 64
#endif

// ---------------------------------------------------------------------------
// Scalar helpers, overloaded on float / double
// ---------------------------------------------------------------------------
IK_FN double ik_sqrt(double x) { return sqrt(x); }
IK_FN float ik_sqrt(float x) { return sqrtf(x); }
IK_FN double ik_exp(double x) { return exp(x); }
IK_FN float ik_exp(float x) { return expf(x); }
IK_FN double ik_cos(double x) { return cos(x); }
IK_FN float ik_cos(float x) { return cosf(x); }
IK_FN double ik_abs(double x) { return fabs(x); }
IK_FN float ik_abs(float x) { return fabsf(x); }
IK_FN double ik_min(double a, double b) { return fmin(a, b); }
IK_FN float ik_min(float a, float b) { return fminf(a, b); }
IK_FN double ik_max(double a, double b) { return fmax(a, b); }
IK_FN float ik_max(float a, float b) { return fmaxf(a, b); }

IK_FN double ik_inf(double) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff0000000000000LL);
#else
  return HUGE_VAL;
#endif
}
IK_FN float ik_inf(float) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(0x7f800000);
#else
  return HUGE_VALF;
#endif
}
IK_FN double ik_nan(double) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff8000000000000LL);
#else
  return NAN;
#endif
}
IK_FN float ik_nan(float) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(0x7fc00000);
#else
  return NAN;
#endif
}

#define IK_PI 3.141592653589793
#define IK_HALF_PI 1.5707963267948966
#define IK_INV_2PI 0.15915494309189535

// asin(y) = y + y^3 R(y^2) on |y| <= 1/2.
// double: the degree-12 polynomial of _duals._ASIN_R (< 1 ulp);
// float: Cephes asinf (relative error < 2.5e-7).
IK_FN double ik_asin_core(double y) {
  double z = y * y;
  double r = 0.028757851367421566;
  r = r * z + -0.014851887071247204;
  r = r * z + 0.01740087944269402;
  r = r * z + 0.005457506718640358;
  r = r * z + 0.01032281435018578;
  r = r * z + 0.011479177415184906;
  r = r * z + 0.013971212973552933;
  r = r * z + 0.017352392720869973;
  r = r * z + 0.02237217294214989;
  r = r * z + 0.030381944138531247;
  r = r * z + 0.04464285714635543;
  r = r * z + 0.07499999999998433;
  r = r * z + 0.16666666666666669;
  return y + y * z * r;
}
IK_FN float ik_asin_core(float y) {
  float z = y * y;
  float r = 4.2163199048e-2f;
  r = r * z + 2.4181311049e-2f;
  r = r * z + 4.5470025998e-2f;
  r = r * z + 7.4953002686e-2f;
  r = r * z + 1.6666752422e-1f;
  return y + y * z * r;
}

// Taylor series of (sin t - t cos t)/t^3 in z = t^2 (highest power first), times z t.
// double: 11 terms (truncation < 1e-21 relative for t < 1); float: 5 terms (< 6e-9).
IK_FN double ik_f_series(double t) {
  double z = t * t;
  double r = 8.509974375387503e-22;
  r = r * z + -3.9145882126782523e-19;
  r = r * z + 1.4797143443923793e-16;
  r = r * z + -4.498331606952833e-14;
  r = r * z + 1.0706029224547743e-11;
  r = r * z + -1.9270852604185937e-09;
  r = r * z + 2.505210838544172e-07;
  r = r * z + -2.2045855379188714e-05;
  r = r * z + 0.0011904761904761906;
  r = r * z + -0.03333333333333333;
  r = r * z + 0.3333333333333333;
  return r * z * t;
}
IK_FN float ik_f_series(float t) {
  float z = t * t;
  float r = 2.505210838544172e-07f;
  r = r * z + -2.2045855379188714e-05f;
  r = r * z + 0.0011904761904761906f;
  r = r * z + -0.03333333333333333f;
  r = r * z + 0.3333333333333333f;
  return r * z * t;
}

/// arccos(x), x in [-1, 1]: |x| <= 1/2: pi/2 - asin(x); else 2 asin(sqrt((1-|x|)/2)),
/// reflected for x < 0.
template <typename T>
IK_FN T ik_acos(T x) {
  T ax = ik_abs(x);
  bool small = ax <= T(0.5);
  T y = small ? x : ik_sqrt(T(0.5) * (T(1) - ax));
  T a = ik_asin_core(y);
  T big = T(2) * a;
  big = x > T(0) ? big : T(IK_PI) - big;
  return small ? T(IK_HALF_PI) - a : big;
}

/// arcsin(x), x in [-1, 1].
template <typename T>
IK_FN T ik_asin(T x) {
  T ax = ik_abs(x);
  bool small = ax <= T(0.5);
  T y = small ? x : ik_sqrt(T(0.5) * (T(1) - ax));
  T a = ik_asin_core(y);
  T big = T(IK_HALF_PI) - T(2) * a;
  big = x >= T(0) ? big : -big;
  return small ? a : big;
}

/// rho = q12 r1 r2 (r = 1/sqrt(q), 0 for a zero variance, which gives rho = 0);
/// values within 4 ulps of +-1 (or beyond) become exactly +-1, as in _duals.correlation.
IK_FN double ik_rho_one(double) { return 1.0 - 4.0 * 2.220446049250313e-16; }
IK_FN float ik_rho_one(float) { return 1.0f - 4.0f * 1.1920929e-07f; }
IK_FN double ik_copysign(double a, double b) { return copysign(a, b); }
IK_FN float ik_copysign(float a, float b) { return copysignf(a, b); }
template <typename T>
IK_FN T ik_correlation(T q12, T r1, T r2) {
  T rho = q12 * r1 * r2;
  return ik_abs(rho) < ik_rho_one(T(0)) ? rho : ik_copysign(T(1), rho);
}

/// F(t) = sin t - t cos t on [0, pi] from sin t, cos t; a series where F ~ t^3/3.
/// A branch (not a select): on a GPU whole warps usually take one side.
template <typename T>
IK_FN T ik_sin_minus_x_cos(T t, T sin_t, T cos_t) {
  if (t < T(1)) return ik_f_series(t);
  return sin_t - t * cos_t;
}

/// x^n by binary exponentiation (numba's algorithm for float ** int).
template <typename T>
IK_FN T ik_ipow(T x, int n) {
  T r = T(1);
  while (n != 0) {
    if (n & 1) r *= x;
    n >>= 1;
    x *= x;
  }
  return r;
}

// ---------------------------------------------------------------------------
// Closed-form duals: (q11, q12, q22, s, r per point) -> k = E[phi phi], kd = E[phi' phi']
// ---------------------------------------------------------------------------

/// phi = a min(x,0) + b max(x,0); theta = acos rho, psi = pi - theta:
/// k = s1 s2 [(a^2+b^2) F(psi) - 2ab F(theta)] / 2pi, kd = [(a^2+b^2) psi + 2ab theta] / 2pi.
template <typename T>
IK_FN void ik_dual_abrelu(T a, T b, T q11, T q12, T q22, T s1, T s2, T r1, T r2,
                          T& k, T& kd) {
  T rho = ik_correlation(q12, r1, r2);
  T sin_t = ik_sqrt((T(1) - rho) * (T(1) + rho));
  T psi = ik_acos(-rho);
  T s = s1 * s2;
  T kk = (a * a + b * b) * ik_sin_minus_x_cos(psi, sin_t, -rho);
  T d = (a * a + b * b) * psi;
  if (a * b != T(0)) {
    T theta = ik_acos(rho);
    kk -= T(2) * a * b * ik_sin_minus_x_cos(theta, sin_t, rho);
    d += T(2) * a * b * theta;
  }
  k = s * kk * T(IK_INV_2PI);
  kd = d * T(IK_INV_2PI);
}

/// phi = a erf(bx) + c: k = a^2 (2/pi) asin z + c^2, z = 2b^2 q12 / sqrt((1+2b^2q11)(1+2b^2q22));
/// kd = a^2 (4b^2/pi) / sqrt(det).
template <typename T>
IK_FN void ik_dual_erf(T a, T b, T c, T q11, T q12, T q22, T& k, T& kd) {
  T b2 = b * b;
  T e1 = ik_sqrt(T(1) + T(2) * b2 * q11);
  T e2 = ik_sqrt(T(1) + T(2) * b2 * q22);
  T z = T(2) * b2 * q12 / e1 / e2;
  z = ik_min(ik_max(z, T(-1)), T(1));
  k = a * a * T(2.0 / IK_PI) * ik_asin(z) + c * c;
  T root = ik_max(e1 * e2 * ik_sqrt((T(1) - z) * (T(1) + z)),
                  ik_sqrt(T(1) + T(2) * b2 * (q11 + q22)));
  kd = a * a * T(4.0 / IK_PI) * b2 / root;
}

/// phi = x Phi(x) (Tsuchida et al. 2021), p_i = 1 + q_ii, z = q12/sqrt(p1 p2).
template <typename T>
IK_FN void ik_dual_gelu(T q11, T q12, T q22, T& k, T& kd) {
  T p1 = T(1) + q11;
  T p2 = T(1) + q22;
  T e1 = ik_sqrt(p1);
  T e2 = ik_sqrt(p2);
  T z = q12 / e1 / e2;
  z = ik_min(ik_max(z, T(-1)), T(1));
  T delta = ik_max(e1 * e2 * ik_sqrt((T(1) - z) * (T(1) + z)), ik_sqrt(T(1) + q11 + q22));
  T angle = ik_asin(z);
  T h = (q11 / p1) * (q22 / p2);
  k = T(0.25) * q12 + (z * z / delta + h * delta + q12 * angle) * T(IK_INV_2PI);
  T bracket = T(1) / (delta * delta) + T(1) / p1 / p2 - h + T(1);
  kd = T(0.25) + angle * T(IK_INV_2PI) + q12 / delta * bracket * T(IK_INV_2PI);
}

/// phi = a sin(bx + c): k = a^2/2 [e- - e+ cos 2c], kd = a^2 b^2/2 [e- + e+ cos 2c],
/// e-+ = exp(-b^2 (q11 + q22 -+ 2 q12) / 2).
template <typename T>
IK_FN void ik_dual_sin(T a, T b, T c, T q11, T q12, T q22, T& k, T& kd) {
  T b2 = b * b;
  T em = ik_exp(T(-0.5) * b2 * ik_max(q11 + q22 - T(2) * q12, T(0)));
  T ep = ik_exp(T(-0.5) * b2 * (q11 + q22 + T(2) * q12)) * ik_cos(T(2) * c);
  T h = T(0.5) * a * a;
  k = h * (em - ep);
  kd = h * b2 * (em + ep);
}

/// k = exp(-gamma (q11 + q22 - 2 q12)), kd = 2 gamma k.
template <typename T>
IK_FN void ik_dual_rbf(T gamma, T q11, T q12, T q22, T& k, T& kd) {
  k = ik_exp(-gamma * ik_max(q11 + q22 - T(2) * q12, T(0)));
  kd = T(2) * gamma * k;
}

/// phi = a exp(bx): k = a^2 exp(b^2 ((q11 + q22)/2 + q12)), kd = b^2 k.
template <typename T>
IK_FN void ik_dual_exp(T a, T b, T q11, T q12, T q22, T& k, T& kd) {
  T b2 = b * b;
  k = a * a * ik_exp(b2 * (T(0.5) * (q11 + q22) + q12));
  kd = b2 * k;
}

/// phi = a exp(b x^2): t_i = 1 - 2b q_ii, D = t1 t2 - 4b^2 q12^2; k = a^2/sqrt(D),
/// kd = 4a^2b^2 q12 / D^{3/2}; +inf where the integral diverges.
template <typename T>
IK_FN void ik_dual_gaussian(T a, T b, T q11, T q12, T q22, T& k, T& kd) {
  T t1 = T(1) - T(2) * b * q11;
  T t2 = T(1) - T(2) * b * q22;
  T det = t1 * t2 - T(4) * b * b * q12 * q12;
  if (b < T(0)) det = ik_max(det, T(1) - T(2) * b * (q11 + q22));
  if (t1 <= T(0) || t2 <= T(0) || det <= T(0)) {
    k = ik_inf(T(0));
    kd = k;
    return;
  }
  T root = ik_sqrt(det);
  k = a * a / root;
  kd = T(4) * b * b * q12 * k / det;
}

/// phi = sign x: k = (2/pi) asin rho, kd = 0.
template <typename T>
IK_FN void ik_dual_sign(T q12, T r1, T r2, T& k, T& kd) {
  k = T(2.0 / IK_PI) * ik_asin(ik_correlation(q12, r1, r2));
  kd = T(0);
}

/// sum_{k=0..n} coef[lo + k] rho^k (Horner).
template <typename T>
IK_FN T ik_poly_rho(const double* coef, int lo, int n, T rho) {
  T r = T(0);
  for (int k = n; k >= 0; --k) r = r * rho + T(coef[lo + k]);
  return r;
}

/// phi = x^n (Mehler): k = (s1 s2)^n sum_k A_{n,k} rho^k, kd = (s1 s2)^{n-1} sum_k n^2 A_{n-1,k} rho^k.
template <typename T>
IK_FN void ik_dual_monomial(int n, const double* coef, int lo_k, int lo_kd, T q12, T s1, T s2,
                            T r1, T r2, T& k, T& kd) {
  T rho = ik_correlation(q12, r1, r2);
  T s = s1 * s2;
  k = ik_ipow(s, n) * ik_poly_rho(coef, lo_k, n, rho);
  kd = n == 0 ? T(0) : ik_ipow(s, n - 1) * ik_poly_rho(coef, lo_kd, n - 1, rho);
}

/// Cho & Saul's J_n: J_0 = pi - theta, J_1 = F(pi - theta),
/// J_m = (2m-1) cos(theta) J_{m-1} + (m-1)^2 sin^2(theta) J_{m-2}.
template <typename T>
IK_FN T ik_arccos_j(int n, T rho) {
  T psi = ik_acos(-rho);
  T j0 = psi;
  if (n == 0) return j0;
  T sin2 = (T(1) - rho) * (T(1) + rho);
  T j1 = ik_sin_minus_x_cos(psi, ik_sqrt(sin2), -rho);
  for (int m = 2; m <= n; ++m) {
    T j2 = T(2 * m - 1) * rho * j1 + T((m - 1) * (m - 1)) * sin2 * j0;
    j0 = j1;
    j1 = j2;
  }
  return j1;
}

/// phi = max(x,0)^n: k = (s1 s2)^n J_n / 2pi, kd = n^2 (s1 s2)^{n-1} J_{n-1} / 2pi (0 for n = 0).
template <typename T>
IK_FN void ik_dual_rectified_monomial(int n, T q12, T s1, T s2, T r1, T r2, T& k, T& kd) {
  T rho = ik_correlation(q12, r1, r2);
  T s = s1 * s2;
  k = ik_ipow(s, n) * ik_arccos_j(n, rho) * T(IK_INV_2PI);
  kd = n == 0 ? T(0)
              : T(n * n) * ik_ipow(s, n - 1) * ik_arccos_j(n - 1, rho) * T(IK_INV_2PI);
}

// ---------------------------------------------------------------------------
// One activation applied to E entries that share the column point (q22, s2, r2)
// and have row points (q11[e], s1[e], r1[e]): Q[e] <- k, TH[e] <- TH[e] kd.
// The kind is dispatched once, outside the entry loop.  New kinds add a case.
// ---------------------------------------------------------------------------
#define IK_ACT_LOOP(CALL)            \
  IK_UNROLL                          \
  for (int e = 0; e < E; ++e) {      \
    T k_, d_;                        \
    CALL;                            \
    Q[e] = k_;                       \
    TH[e] *= d_;                     \
  }

template <typename T, int E>
IK_FN void ik_act(int kind, const double* p, const double* aux, int lo, int hi,
                  const T* q11, const T* s1, const T* r1, T q22, T s2, T r2,
                  T* Q, T* TH) {
  switch (kind) {
    case IK_K_ABRELU: {
      T a = T(p[0]), b = T(p[1]);
      IK_ACT_LOOP(ik_dual_abrelu(a, b, q11[e], Q[e], q22, s1[e], s2, r1[e], r2, k_, d_))
      break;
    }
    case IK_K_ERF: {
      T a = T(p[0]), b = T(p[1]), c = T(p[2]);
      IK_ACT_LOOP(ik_dual_erf(a, b, c, q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_GELU: {
      IK_ACT_LOOP(ik_dual_gelu(q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_SIN: {
      T a = T(p[0]), b = T(p[1]), c = T(p[2]);
      IK_ACT_LOOP(ik_dual_sin(a, b, c, q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_RBF: {
      T g = T(p[0]);
      IK_ACT_LOOP(ik_dual_rbf(g, q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_EXP: {
      T a = T(p[0]), b = T(p[1]);
      IK_ACT_LOOP(ik_dual_exp(a, b, q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_GAUSSIAN: {
      T a = T(p[0]), b = T(p[1]);
      IK_ACT_LOOP(ik_dual_gaussian(a, b, q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_SIGN: {
      IK_ACT_LOOP(ik_dual_sign(Q[e], r1[e], r2, k_, d_))
      break;
    }
    case IK_K_MONOMIAL: {
      int n = int(p[0]);
      IK_ACT_LOOP(ik_dual_monomial(n, aux, lo, hi, Q[e], s1[e], s2, r1[e], r2, k_, d_))
      break;
    }
    case IK_K_RECTIFIED_MONOMIAL: {
      int n = int(p[0]);
      IK_ACT_LOOP(ik_dual_rectified_monomial(n, Q[e], s1[e], s2, r1[e], r2, k_, d_))
      break;
    }
    default: {
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        Q[e] = ik_nan(T(0));
        TH[e] = Q[e];
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The layer-program interpreter
// ---------------------------------------------------------------------------

/// Register file access with a run-time register index.  For NR <= 4 the
/// index is resolved by selects so that the file stays in registers.
template <typename T, int NR, int E>
IK_FN void ik_reg_get(const T (&a)[NR][E], int r, T* out) {
  if (NR > 4) {
    IK_UNROLL
    for (int e = 0; e < E; ++e) out[e] = a[r][e];
  } else {
    IK_UNROLL
    for (int m = 0; m < (NR > 4 ? 1 : NR); ++m) {
      if (NR == 1 || m == r) {
        IK_UNROLL
        for (int e = 0; e < E; ++e) out[e] = a[m][e];
      }
    }
  }
}

template <typename T, int NR, int E>
IK_FN void ik_reg_set(T (&a)[NR][E], int r, const T* v) {
  if (NR > 4) {
    IK_UNROLL
    for (int e = 0; e < E; ++e) a[r][e] = v[e];
  } else {
    IK_UNROLL
    for (int m = 0; m < (NR > 4 ? 1 : NR); ++m) {
      if (NR == 1 || m == r) {
        IK_UNROLL
        for (int e = 0; e < E; ++e) a[m][e] = v[e];
      }
    }
  }
}

/// Run the program on E entries (row point rows[e], column point col): on entry
/// q[0][e] = x_i.x_j / d and th[0][e] = 0; on exit register 0 holds (NNGP, NTK).
/// ops: n_ops x 6 ints (opcode, reg, reg2, kind, aux_lo, aux_hi); params: n_ops x 6.
template <typename T, int NR, int E>
IK_FN void ik_run_entries(const int* ops, const double* params, const double* aux, int n_ops,
                          const T* tab1, long long ld1, const long long* rows,
                          const T* tab2, long long ld2, long long col,
                          T (&q)[NR][E], T (&th)[NR][E]) {
  int slot = 0;
  for (int k = 0; k < n_ops; ++k) {
    const int* o = ops + 6 * k;
    const double* p = params + 6 * k;
    const int op = o[0];
    const int r = o[1];
    T Q[E], TH[E];
    ik_reg_get<T, NR, E>(q, r, Q);
    ik_reg_get<T, NR, E>(th, r, TH);
    if (op == IK_OP_DENSE) {
      T w2 = T(p[0]), b2 = T(p[1]), c_old = T(p[2]), c_new = T(p[3]), c_one = T(p[4]);
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        T qn = w2 * Q[e] + b2;
        TH[e] = c_old * Q[e] + c_new * qn + w2 * TH[e] + c_one;
        Q[e] = qn;
      }
    } else if (op == IK_OP_ACT) {
      const T* t1 = tab1 + 3 * slot * ld1;
      const T* t2 = tab2 + 3 * slot * ld2;
      T v1[E], s1[E], r1[E];
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        v1[e] = t1[rows[e]];
        s1[e] = t1[ld1 + rows[e]];
        r1[e] = t1[2 * ld1 + rows[e]];
      }
      ik_act<T, E>(o[3], p, aux, o[4], o[5], v1, s1, r1, t2[col], t2[ld2 + col],
                   t2[2 * ld2 + col], Q, TH);
      ++slot;
    } else if (op == IK_OP_SCALE) {
      T w = T(p[0]);
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        Q[e] *= w;
        TH[e] *= w;
      }
    } else if (op == IK_OP_COPY) {
      ik_reg_set<T, NR, E>(q, o[2], Q);
      ik_reg_set<T, NR, E>(th, o[2], TH);
      continue;
    } else if (op == IK_OP_AXPY) {
      T Q2[E], TH2[E];
      ik_reg_get<T, NR, E>(q, o[2], Q2);
      ik_reg_get<T, NR, E>(th, o[2], TH2);
      T x = T(p[0]), y = T(p[1]);
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        Q[e] = x * Q[e] + y * Q2[e];
        TH[e] = x * TH[e] + y * TH2[e];
      }
    }
    ik_reg_set<T, NR, E>(q, r, Q);
    ik_reg_set<T, NR, E>(th, r, TH);
  }
}

/// Diagonal pass for one point i: runs the program on (x_i, x_i) starting from
/// sq = |x_i|^2 / d, fills the point's column of the tables and returns
/// (k, t) = (NNGP, NTK)(x_i, x_i).  n_regs <= IK_MAX_DIAG_REGS.
template <typename T>
IK_FN void ik_diag_point(const int* ops, const double* params, const double* aux, int n_ops,
                         T sq, T* tab, long long ld, long long i, T& k_out, T& t_out) {
  T q[IK_MAX_DIAG_REGS], th[IK_MAX_DIAG_REGS];
  q[0] = sq;
  th[0] = T(0);
  int slot = 0;
  for (int k = 0; k < n_ops; ++k) {
    const int* o = ops + 6 * k;
    const double* p = params + 6 * k;
    const int op = o[0];
    const int r = o[1];
    if (op == IK_OP_DENSE) {
      T qn = T(p[0]) * q[r] + T(p[1]);
      th[r] = T(p[2]) * q[r] + T(p[3]) * qn + T(p[0]) * th[r] + T(p[4]);
      q[r] = qn;
    } else if (op == IK_OP_ACT) {
      T v = q[r];
      T s = ik_sqrt(v);
      T rs = s > T(0) ? T(1) / s : T(0);
      T* t = tab + 3 * slot * ld;
      t[i] = v;
      t[ld + i] = s;
      t[2 * ld + i] = rs;
      ik_act<T, 1>(o[3], p, aux, o[4], o[5], &v, &s, &rs, v, s, rs, &q[r], &th[r]);
      ++slot;
    } else if (op == IK_OP_SCALE) {
      q[r] *= T(p[0]);
      th[r] *= T(p[0]);
    } else if (op == IK_OP_COPY) {
      q[o[2]] = q[r];
      th[o[2]] = th[r];
    } else if (op == IK_OP_AXPY) {
      q[r] = T(p[0]) * q[r] + T(p[1]) * q[o[2]];
      th[r] = T(p[0]) * th[r] + T(p[1]) * th[o[2]];
    }
  }
  k_out = q[0];
  t_out = th[0];
}

#endif  // INFKERNEL_MATH_CUH
