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
// (3a + 2): R = 1/S (0 when V = 0).  Activations without a closed form (kind
// K_NUMERIC, a port of infkernel/_numeric.py) also read per-point Mehler
// features, float64, filled by the diagonal pass (layout above
// ik_tab_eval); their constants IK_NUM_* come from the includer too.
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

// IK_NUMERIC 0 compiles the kind K_NUMERIC out of the dispatcher (its case
// yields NaN), keeping the register allocation of closed-form kernels as it
// is; infkernel/gpu.py builds the numeric module only for programs using it.
#ifndef IK_NUMERIC
#define IK_NUMERIC 1
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
IK_FN double ik_expm1(double x) { return expm1(x); }
IK_FN float ik_expm1(float x) { return expm1f(x); }
IK_FN double ik_sin(double x) { return sin(x); }
IK_FN float ik_sin(float x) { return sinf(x); }
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

/// a * b rounded, never fused into an FMA with what follows (ik_input_versine).
IK_FN double ik_mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  volatile double p = a * b;
  return p;
#endif
}
IK_FN float ik_mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float p = a * b;
  return p;
#endif
}

#define IK_PI 3.141592653589793
#define IK_HALF_PI 1.5707963267948966
#define IK_INV_2PI 0.15915494309189535

// asin(y) = y + y^3 R(y^2) on |y| <= 1/2.
// double: the degree-12 polynomial of _duals._ASIN_R (< 1 ulp);
// float: Cephes asinf (relative error < 2.5e-7).
IK_FN double ik_asin_r(double z) {  // R(z)
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
  return r * z + 0.16666666666666669;
}
IK_FN float ik_asin_r(float z) {
  float r = 4.2163199048e-2f;
  r = r * z + 2.4181311049e-2f;
  r = r * z + 4.5470025998e-2f;
  r = r * z + 7.4953002686e-2f;
  return r * z + 1.6666752422e-1f;
}
template <typename T>
IK_FN T ik_asin_core(T y) {
  T z = y * y;
  return y + y * z * ik_asin_r(z);
}

// sqrt(1 - w) = 1 + w P(w) on 0 <= w <= 1/4 (_duals._SQRT_P).
// double: degree 13 (< 0.75 ulp); float: degree 5 (< 0.83 ulp).
IK_FN double ik_sqrt_p(double w) {
  double p = -0.03154768650454239;
  p = p * w + 0.020347018016311433;
  p = p * w + -0.02093027360248084;
  p = p * w + -0.0034770511245371793;
  p = p * w + -0.010260124848657546;
  p = p * w + -0.010761656527228766;
  p = p * w + -0.013107601450727433;
  p = p * w + -0.01611215215450132;
  p = p * w + -0.020507867816550614;
  p = p * w + -0.027343748251537233;
  p = p * w + -0.03906250003299409;
  p = p * w + -0.06249999999967604;
  p = p * w + -0.12500000000000125;
  return p * w + -0.5;
}
IK_FN float ik_sqrt_p(float w) {
  float p = -0.03920287638902664f;
  p = p * w + -0.021379616111516953f;
  p = p * w + -0.03988244757056236f;
  p = p * w + -0.06245044991374016f;
  p = p * w + -0.12500107288360596f;
  return p * w + -0.5f;
}

/// arcsin(x), x in [-1, 1].
template <typename T>
IK_FN T ik_asin_c(T x, T omx) {  // asin x given omx = 1 - |x| (_duals.asin_c)
  T ax = ik_abs(x);
  bool small = ax <= T(0.5);
  T y = small ? x : ik_sqrt(T(0.5) * omx);
  T a = ik_asin_core(y);
  T big = T(IK_HALF_PI) - T(2) * a;
  big = x >= T(0) ? big : -big;
  return small ? a : big;
}

/// Identical or antipodal points after ik_snap_q12 (_duals.same_point).
template <typename T>
IK_FN bool ik_same_point(T q11, T q12, T q22) {
  return q11 == q22 && ik_abs(q12) == q11;
}

/// rho = q12 r1 r2 (r = 1/sqrt(q), 0 for a zero variance, which gives rho = 0);
/// values within 4 ulps of +-1 (or beyond) become exactly +-1, as in _duals.correlation.
IK_FN double ik_rho_one(double) { return 1.0 - 4.0 * 2.220446049250313e-16; }
IK_FN float ik_rho_one(float) { return 1.0f - 4.0f * 1.1920929e-07f; }
IK_FN double ik_copysign(double a, double b) { return copysign(a, b); }
IK_FN float ik_copysign(float a, float b) { return copysignf(a, b); }
template <typename T>
IK_FN T ik_correlation(T q12, T r1, T r2) {
  T rho = q12 * ik_min(r1, r2) * ik_max(r1, r2);  // (x, y) and (y, x) round alike
  return ik_abs(rho) < ik_rho_one(T(0)) ? rho : ik_copysign(T(1), rho);
}

/// q12 -> +-q11 when q11 == q22 and |q12| >= q11 (1 - 4 ulps): identical and
/// antipodal points stay exactly so in the smooth duals (_duals.snap_q12).
template <typename T>
IK_FN T ik_snap_q12(T q11, T q12, T q22) {
  return q11 == q22 && ik_abs(q12) >= ik_rho_one(T(0)) * q11 ? ik_copysign(q11, q12) : q12;
}

/// The arc-cosine kernels' angles theta = acos rho, psi = pi - theta and
/// F(t) = sin t - t cos t at both, with one square root (_duals.arc_cosine_c):
/// u = rho if |rho| <= 1/2 else y = sqrt((1 - |rho|)/2), w = u^2;
/// |rho| <= 1/2: F(psi), F(theta) = E +- pi rho / 2, E = 1 + w (1 + P + w R);
/// otherwise the small angle 2 asin y has F = 2yw (2 + P - R (1 - 2w)), the
/// large one that plus pi |rho|.  omt = 1 - |rho|, which a caller may know
/// more accurately than it rounds to (_duals.arc_cosine_c).
template <typename T>
IK_FN void ik_arc_cosine_c(T rho, T omt, T& psi, T& theta, T& f_psi, T& f_theta) {
  T t = ik_abs(rho);
  bool small = t <= T(0.5);
  T y = ik_sqrt(T(0.5) * omt);
  T u = small ? rho : y;
  T w = u * u;
  T r = ik_asin_r(w);
  T p = ik_sqrt_p(w);
  T asin_u = u + u * w * r;
  T e = T(1) + w * (T(1) + p + w * r);
  T f_small = T(2) * y * w * (T(2) + p - r * (T(1) - T(2) * w));
  T f_large = f_small + T(IK_PI) * t;
  bool pos = rho > T(0);
  psi = small ? T(IK_HALF_PI) + asin_u : (pos ? T(IK_PI) - T(2) * asin_u : T(2) * asin_u);
  theta = small ? T(IK_HALF_PI) - asin_u : (pos ? T(2) * asin_u : T(IK_PI) - T(2) * asin_u);
  f_psi = small ? e + T(IK_HALF_PI) * rho : (pos ? f_large : f_small);
  f_theta = small ? e - T(IK_HALF_PI) * rho : (pos ? f_small : f_large);
}

/// (rho, 1 - |rho|) from the carried signed versine c = sign(rho) (1 - |rho|),
/// or where c is NaN (not carried) from ik_correlation (_duals.versine,
/// _duals.correlation_angle).
template <typename T>
IK_FN void ik_versine(T q12, T r1, T r2, T c, T& rho, T& omt) {
  if (c == c) {
    omt = ik_abs(c);
    rho = ik_copysign(T(1), c) < T(0) ? omt - T(1) : T(1) - omt;
  } else {
    rho = ik_correlation(q12, r1, r2);
    omt = T(1) - ik_abs(rho);
  }
}

/// c = sign(rho) omt, omt = 1 - |rho| (_duals.signed_versine; -0 at rho = -1).
template <typename T>
IK_FN T ik_signed_versine(T rho, T omt) {
  return ik_copysign(omt, rho);
}

/// (1 - rho, 1 + rho) from the signed versine c (_duals._poles).
template <typename T>
IK_FN void ik_poles(T c, T& minus, T& plus) {
  const T omt = ik_abs(c);
  const bool neg = ik_copysign(T(1), c) < T(0);
  minus = neg ? T(2) - omt : omt;
  plus = neg ? omt : T(2) - omt;
}

/// The signed versine of ik_dual_abrelu's result, rho' = rho + m F(theta)/pi,
/// from omt = 1 - |rho| and f_small = F of the smaller angle (theta for
/// rho >= 0, else psi), g = m f_small / pi: rho >= 0: 1 - rho' = omt - g,
/// 1 + rho' = 2 - omt + g; rho < 0: 1 - rho' = 2 - m + (m - 1) omt - g,
/// 1 + rho' = m + (1 - m) omt + g; the smaller kept (_duals._arc_versine).
template <typename T>
IK_FN T ik_arc_versine(T rho, T omt, T f_small, T m) {
  const T g = m * f_small * T(1.0 / IK_PI);
  const bool pos = rho >= T(0);
  const T lo = pos ? omt - g : (T(2) - m) + (m - T(1)) * omt - g;
  const T hi = pos ? T(2) - omt + g : m + (T(1) - m) * omt + g;
  return lo <= hi ? ik_max(lo, T(0)) : -ik_max(hi, T(0));
}

/// The signed versine from q12 and r = 1/sqrt q (0 where a variance is zero:
/// rho = 0), where none is carried; +-0 for identical and antipodal points
/// (_duals.versine_of).
template <typename T>
IK_FN T ik_versine_of(T q12, T r1, T r2) {
  const T rho = ik_correlation(q12, r1, r2);
  return ik_signed_versine(rho, T(1) - ik_abs(rho));
}

/// The signed versine of a sum of two independent signals A + B (a Dense
/// layer's w h + bias, cb = 0; a fan-in sum; _duals.mixed_versine): per point
/// the unit vector (a, b) = (sqrt qA, sqrt qB) / sqrt(qA + qB) ((0, 0) for a
/// zero variance); 1 -+ rho = a1 a2 (1 -+ rhoA) + b1 b2 (1 -+ rhoB)
/// + ((a1 - a2)^2 + (b1 - b2)^2) / 2, the smaller kept.
template <typename T>
IK_FN T ik_mixed_versine(T a1, T a2, T b1, T b2, T ca, T cb) {
  if (a1 * a1 + b1 * b1 == T(0) || a2 * a2 + b2 * b2 == T(0)) return T(1);
  const T da = a1 - a2, db = b1 - b2;
  const T d = T(0.5) * (da * da + db * db);
  T ma, pa, mb, pb;
  ik_poles(ca, ma, pa);
  ik_poles(cb, mb, pb);
  const T lo = a1 * a2 * ma + b1 * b2 * mb + d;
  const T hi = a1 * a2 * pa + b1 * b2 * pb + d;
  return lo <= hi ? lo : -hi;  // (a NaN, not carried, stays NaN)
}

/// A point's table entries for ik_mixed_versine, (1/sqrt q, a, b) with
/// (a, b) = (ra, rb)/sqrt q, ra = sqrt qA and rb = sqrt qB given as products of
/// square roots, zeros where q = 0 (_duals.mixed_scales), into t[0], t[ld], t[2 ld].
template <typename T>
IK_FN void ik_mixed_scales(T ra, T rb, T q, T* t, long long ld) {
  const T v = q > T(0) ? T(1) / ik_sqrt(q) : T(0);
  t[0] = v;
  t[ld] = ra * v;
  t[2 * ld] = rb * v;
}

/// 1 - cos angle(a, b) = |a ua - b ub|^2 / 2, ua = 1/|a|, ub = 1/|b| (ub = -1/|b|:
/// 1 + cos angle(a, b)) (_cpu._input_versine), at most 2.  Both products rounded: identical points
/// give exactly 0 (an FMA would leave a product's rounding error, ~1e-33, which
/// step activations raise to ~1e-8 two layers on).
template <typename T>
IK_FN T ik_input_versine(const T* a, T ua, const T* b, T ub, int d) {
  T acc = T(0);
  for (int k = 0; k < d; ++k) {
    const T t = ik_mul_rn(a[k], ua) - ik_mul_rn(b[k], ub);  // (numba scales the row first)
    acc += t * t;
  }
  return ik_min(T(0.5) * acc, T(2));
}

/// The input signed versine of an entry from its GEMM value g = a.b, or below
/// IK_VERSINE_DIRECT (_cpu.VERSINE_DIRECT, defined by the includer) from the
/// points themselves, |a ua -+ b ub|^2 / 2 with rho's sign.
template <typename T>
IK_FN T ik_start_versine(T g, const T* a, T ua, const T* b, T ub, int d) {
  const T rho = g * ua * ub;
  const T c = ik_signed_versine(rho, T(1) - ik_abs(rho));
  return ik_abs(c) < T(IK_VERSINE_DIRECT) && ua * ub > T(0)
             ? ik_signed_versine(c, ik_input_versine(a, ua, b, ik_copysign(ub, c), d))
             : c;
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
/// k = s1 s2 [(a^2+b^2) F(psi) - 2ab F(theta)] / 2pi, kd = [(a^2+b^2) psi + 2ab theta] / 2pi,
/// and the result's signed versine (ik_arc_versine, m = (a-b)^2 / (a^2+b^2);
/// _duals.dual_abrelu).
template <typename T>
IK_FN void ik_dual_abrelu(T a, T b, T q11, T q12, T q22, T s1, T s2, T r1, T r2, T c,
                          T& k, T& kd, T& vc) {
  T rho, omt, psi, theta, f_psi, f_theta;
  ik_versine(q12, r1, r2, c, rho, omt);
  const bool zero = s1 == T(0) || s2 == T(0);  // rho = 0 (_duals._zero_angle)
  rho = zero ? T(0) : rho;
  omt = zero ? T(1) : omt;
  ik_arc_cosine_c(rho, omt, psi, theta, f_psi, f_theta);
  T c2 = a * a + b * b;
  T kk = c2 * f_psi - T(2) * a * b * f_theta;
  T d = c2 * psi + T(2) * a * b * theta;
  vc = zero ? T(1)
            : ik_arc_versine(rho, omt, rho >= T(0) ? f_theta : f_psi,
                             c2 != T(0) ? (a - b) * (a - b) / c2 : T(0));
  k = s1 * s2 * kk * T(IK_INV_2PI);
  kd = d * T(IK_INV_2PI);
}

/// phi = a erf(bx) + c, s_i = sqrt(1 + 2b^2 q_ii) (ik_point_scale):
/// k = a^2 (2/pi) asin z + c^2, z = 2b^2 q12 / (s1 s2); kd = a^2 (4b^2/pi) / sqrt(det),
/// det = s1^2 s2^2 - 4b^4 q12^2 >= 1 + 2b^2 (q11 + q22).
template <typename T>
IK_FN void ik_dual_erf(T a, T b, T c, T q11, T q12, T q22, T s1, T s2, T r1, T r2, T& k,
                       T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  bool same = ik_same_point(q11, q12, q22);
  T b2 = b * b;
  T rr = r1 * r2;
  // 2b^2 q may overflow where the results do not: then from b/s_i = b r_i (_duals.dual_erf)
  const bool big = !(T(2) * b2 * (q11 + q22) < ik_inf(T(0)));
  T z = ik_min(ik_max(big ? T(2) * (b * r1) * (b * r2) * q12 : T(2) * b2 * q12 * rr, T(-1)),
               T(1));
  k = a * a * T(2.0 / IK_PI) * ik_asin_c(z, same ? rr : T(1) - ik_abs(z)) + c * c;
  // sqrt(det) = s1 s2 sqrt(1 - z^2), no product of two variances (overflow);
  // the lower bound is exact at the same point
  if (big) {  // the bound is r1^2 + r2^2 - r1^2 r2^2 = m^2 l, formed without underflow
    const T m = ik_max(r1, r2);
    const T a1 = r1 / m, a2 = r2 / m;
    const T l = a1 * a1 + a2 * a2 - (a1 * a2 * m) * (a1 * a2 * m);
    const T gap = (T(1) - z) * (T(1) + z);
    const T root = same || gap < m * m * l ? m * ik_sqrt(l) : ik_sqrt(gap);
    kd = a * a * T(4.0 / IK_PI) * (b * r1) * (b * r2) / root;
    return;
  }
  T low = (T(1) + T(2) * b2 * (q11 + q22)) * rr * rr;
  T root = ik_sqrt(same ? low : ik_max((T(1) - z) * (T(1) + z), low));
  kd = a * a * T(4.0 / IK_PI) * b2 / (s1 * s2 * root);
}

/// F(t) = sin t - t cos t for t <= acos 0.9 from its Taylor series (_duals._F_TAYLOR).
template <typename T>
IK_FN T ik_f_taylor(T t) {
  T u = t * t;
  T f = T(-1.0 / 22230464256000.0);
  f = f * u + T(1.0 / 93405312000.0);
  f = f * u + T(-1.0 / 518918400.0);
  f = f * u + T(1.0 / 3991680.0);
  f = f * u + T(-1.0 / 45360.0);
  f = f * u + T(1.0 / 840.0);
  f = f * u + T(-1.0 / 30.0);
  f = f * u + T(1.0 / 3.0);
  return t * u * f;
}

/// phi = x Phi(x) (Tsuchida et al. 2021), p_i = 1 + q_ii = s_i^2 (ik_point_scale),
/// z = q12/(s1 s2), psi = acos(-z), delta = s1 s2 sin psi, h = (q11/p1)(q22/p2);
/// for z < IK_GELU_ANTIPODAL_Z q12 psi + h delta = s1 s2 F(psi) - (1 - h) delta
/// (_duals.dual_gelu).
template <typename T>
IK_FN void ik_dual_gelu(T q11, T q12, T q22, T s1, T s2, T r1, T r2, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  bool same = ik_same_point(q11, q12, q22);
  T rr = r1 * r2;
  T z = ik_min(ik_max(q12 * rr, T(-1)), T(1));
  // delta = s1 s2 sqrt(1 - z^2), no product of two variances (overflow); exact
  // lower bound 1 - h and 1 - |z| = r1 r2 at the same point
  T one_minus_h = (T(1) + q11 + q22) * rr * rr;
  T delta = s1 * s2 * ik_sqrt(same ? one_minus_h : ik_max((T(1) - z) * (T(1) + z), one_minus_h));
  T inv_delta = T(1) / delta;
  bool small = ik_abs(z) <= T(0.5);
  T a = ik_asin_core(small ? z : ik_sqrt(T(0.5) * (same ? rr : T(1) - ik_abs(z))));
  T psi = small ? T(IK_HALF_PI) + a : (z > T(0) ? T(IK_PI) - T(2) * a : T(2) * a);
  if (z < T(IK_GELU_ANTIPODAL_Z)) {
    k = s1 * s2 * ik_f_taylor(psi) - one_minus_h * delta;
  } else {
    k = q12 * psi + ((q11 * rr) * (q22 * rr)) * delta;
  }
  k = (k + z * z * inv_delta) * T(IK_INV_2PI);
  T bracket = inv_delta * inv_delta + (T(2) + q11 + q22) * rr * rr;
  kd = (psi + q12 * inv_delta * bracket) * T(IK_INV_2PI);
}

/// The NTK after a Dense layer, c_old q + c_new q' + w2 theta + c_one, where a zero
/// coefficient contributes exactly 0 (inf, not 0 * inf = NaN, after overflow);
/// _duals.dense_theta.
template <typename T>
IK_FN T ik_dense_theta(T w2, T c_old, T c_new, T c_one, T q, T qn, T th) {
  return (c_old != T(0) ? c_old * q : T(0)) + (c_new != T(0) ? c_new * qn : T(0)) +
         (w2 != T(0) ? w2 * th : T(0)) + c_one;
}

/// The per-point scale the kind's dual takes (r = 1/s), as _duals.point_scale:
/// sqrt(1 + 2b^2 q) for Erf, sqrt(1 + q) for Gelu, sqrt(q + eps) for LayerNorm,
/// sqrt(q) otherwise.
template <typename T>
IK_FN T ik_point_scale(int kind, const double* p, T q) {
  if (kind == IK_K_ERF) {  // 2b^2 q may overflow where s does not
    const T v = T(2) * T(p[1]) * T(p[1]) * q;
    return v < ik_inf(T(0)) ? ik_sqrt(T(1) + v) : ik_abs(T(p[1])) * ik_sqrt(T(2)) * ik_sqrt(q);
  }
  if (kind == IK_K_GELU) return ik_sqrt(T(1) + q);
  if (kind == IK_K_LAYERNORM) return ik_sqrt(q + T(p[0]));
  return ik_sqrt(q);
}

/// Layer normalisation (_duals.dual_layernorm): k = q12 r1 r2, kd = r1 r2.
template <typename T>
IK_FN void ik_dual_layernorm(T q12, T r1, T r2, T& k, T& kd) {
  kd = r1 * r2;
  k = q12 * r1 * r2;
}

/// phi = a sin(bx + c): k = a^2/2 [e- - e+ cos 2c], kd = a^2 b^2/2 [e- + e+ cos 2c],
/// e-+ = exp(-b^2 (q11 + q22 -+ 2 q12) / 2), without their cancellation at small
/// x = b^2 q12 (_duals.dual_sin): e- - e+ cos 2c = e^-A [sign(x)(1 - e^-2|x|)
/// + 2 e^-(|x| + x) sin^2 c], A = b^2 (q11 + q22 - 2|q12|)/2, 1 - e^-2|x| = -expm1(-2|x|).
template <typename T>
IK_FN void ik_dual_sin(T a, T b, T c, T q11, T q12, T q22, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  T b2 = b * b;
  T x = b2 * q12;
  T e = ik_exp(T(-0.5) * b2 * ik_max(q11 + q22 - T(2) * ik_abs(q12), T(0)));
  T m = ik_expm1(T(-2) * ik_abs(x));
  T odd = x >= T(0) ? T(-0.5) * m : T(0.5) * m;
  T even = x >= T(0) ? T(1) + m : T(1);
  T sc = ik_sin(c), cc = ik_cos(c);
  k = a * a * e * (odd + even * sc * sc);
  kd = a * a * b2 * e * (odd + even * cc * cc);
}

/// k = exp(-gamma (q11 + q22 - 2 q12)), kd = 2 gamma k.
template <typename T>
IK_FN void ik_dual_rbf(T gamma, T q11, T q12, T q22, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  k = ik_exp(-gamma * ik_max(q11 + q22 - T(2) * q12, T(0)));
  kd = T(2) * gamma * k;
}

/// phi = a exp(bx): k = a^2 exp(b^2 ((q11 + q22)/2 + q12)), kd = b^2 k.
template <typename T>
IK_FN void ik_dual_exp(T a, T b, T q11, T q12, T q22, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  T b2 = b * b;
  k = a * a * ik_exp(b2 * (T(0.5) * (q11 + q22) + q12));
  kd = b2 * k;
}

/// phi = a exp(b x^2): t_i = 1 - 2b q_ii, D = t1 t2 - 4b^2 q12^2; k = a^2/sqrt(D),
/// kd = 4a^2b^2 q12 / D^{3/2}; +inf where the integral diverges (_duals.dual_gaussian,
/// evaluated as D = t1 t2 (1 - z^2), z = 2b q12 / sqrt(t1 t2)).
template <typename T>
IK_FN void ik_dual_gaussian(T a, T b, T q11, T q12, T q22, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  T t1 = T(1) - T(2) * b * q11;
  T t2 = T(1) - T(2) * b * q22;
  T i1 = T(1) / t1;
  T i2 = T(1) / t2;
  T g1 = ik_sqrt(ik_abs(i1));
  T g2 = ik_sqrt(ik_abs(i2));
  T z = (T(2) * b * g1) * (q12 * g2);  // D = t1 t2 (1 - z^2): no product of two variances
  T low = i1 + i2 - i1 * i2;  // D / (t1 t2) >= low for b < 0; equal at the same point
  T rel = ik_same_point(q11, q12, q22)
              ? low
              : (b < T(0) ? ik_max((T(1) - z) * (T(1) + z), low) : (T(1) - z) * (T(1) + z));
  if (t1 <= T(0) || t2 <= T(0) || rel <= T(0)) {
    k = ik_inf(T(0));
    kd = k;
    return;
  }
  k = a * a * (g1 * g2) / ik_sqrt(rel);
  kd = T(2) * b * z * (g1 * g2) * k / rel;
}

IK_FN double ik_sinh(double x) { return sinh(x); }
IK_FN float ik_sinh(float x) { return sinhf(x); }

/// phi = exp(-x^2) sin x (_duals.dual_gabor): D = 1 + 2(q11 + q22) + delta,
/// delta = 4(q11 q22 - q12^2) (0 at correlation +-1), A = (q11 + q22 + delta)/(2D), B = q12/D:
/// k = exp(-A) sinh(B)/sqrt(D), kd = exp(-A) D^{-5/2} [4 q12 (D + 1 + q11 + q22) sinh B
/// + (D + 8 q12^2) cosh B] (_duals.dual_gabor: finite where q11 q22 or D^2 overflow).
template <typename T>
IK_FN void ik_dual_gabor(T q11, T q12, T q22, T r1, T r2, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  T rho = ik_correlation(q12, r1, r2);
  T s = q11 + q22;
  T p = q11 * q22;
  T delta;
  if (ik_abs(rho) == T(1))
    delta = T(0);  // exactly 0 at correlation +-1
  else if (p < ik_inf(T(0)))
    delta = T(4) * ik_max(p - q12 * q12, T(0));
  else  // q11 q22 overflows: delta from the correlation, maybe inf
    delta = T(4) * (q11 * (T(1) - rho)) * (q22 * (T(1) + rho));
  T d = T(1) + T(2) * s + delta;
  T rest = (T(1) + s) / d;  // (D + 1 + s)/D = 1 + rest
  T e = d < ik_inf(T(0)) ? ik_exp(T(-0.5) * (s + delta) / d) : ik_exp(T(-0.5));
  T b = q12 / d;
  T sh = ik_sinh(b);
  T root = ik_sqrt(d);
  k = e * sh / root;
  T ch = ik_sqrt(T(1) + sh * sh);  // cosh b
  // D^{-1/2} [4 B (1 + rest) sinh B + (1 + 8 q12 B) cosh B / D]: no D^2 or q12 D (overflow)
  kd = e / root * (T(4) * b * (T(1) + rest) * sh + (T(1) + T(8) * q12 * b) * ch / d);
}

/// neural-tangents' ExpNormalized (_duals.dual_exp_normalized): rho = ik_correlation (in
/// [-1, 1], so its clip is a no-op), k = s1 s2 exp(gamma (rho + shift)),
/// kd = gamma exp(gamma (rho + shift)).
template <typename T>
IK_FN void ik_dual_exp_normalized(T gamma, T shift, T q12, T s1, T s2, T r1, T r2, T& k,
                                  T& kd) {
  T rho = ik_correlation(q12, r1, r2);
  T g = ik_exp(gamma * (rho + shift));
  k = s1 * s2 * g;
  kd = gamma * g;
}

/// phi = sign x: k = (2/pi) asin rho = 1 - 2 theta/pi, kd = 0; a kinked dual
/// (angle from ik_versine), the result's signed versine sign(k) (1 - |k|);
/// k = 0, vc = 1 where a variance is 0; one polynomial: for |rho| > 1/2 the
/// small angle 2 asin sqrt(omt/2) gives |vc| exactly (_duals.dual_sign).
template <typename T>
IK_FN void ik_dual_sign(T q12, T s1, T s2, T r1, T r2, T c, T& k, T& kd, T& vc) {
  T rho, omt;
  ik_versine(q12, r1, r2, c, rho, omt);
  const bool small = ik_abs(rho) <= T(0.5);
  const T a = ik_asin_core(small ? rho : ik_sqrt(T(0.5) * omt));
  const T t = T(4.0 / IK_PI) * a;  // |rho| > 1/2: 2 theta/pi (rho > 0), 2 psi/pi (rho < 0)
  const bool zero = s1 == T(0) || s2 == T(0);
  const T kk = small ? T(2.0 / IK_PI) * a : (rho > T(0) ? T(1) - t : t - T(1));
  vc = zero ? T(1) : ik_signed_versine(rho, small ? T(1) - ik_abs(kk) : t);
  k = zero ? T(0) : kk;
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

/// B_l(x) = sum_{i<m} t[lo + l m + i] x^i (_duals._poly_b).
template <typename T>
IK_FN T ik_poly_b(const double* t, int lo, int m, int l, T x) {
  T r = T(0);
  for (int i = m - 1; i >= 0; --i) r = r * x + T(t[lo + l * m + i]);
  return r;
}

/// sum_{l=0..n} B_l(x1) B_l(x2) q12^l with rows of width n/2 + 1 (_duals._poly_sum).
template <typename T>
IK_FN T ik_poly_sum(const double* t, int lo, int n, T x1, T q12, T x2) {
  int m = n / 2 + 1;
  T r = T(0);
  for (int l = n; l >= 0; --l)
    r = r * q12 + ik_poly_b(t, lo, m, l, x1) * ik_poly_b(t, lo, m, l, x2);
  return r;
}

/// phi = sum_m b_m e_m, e_m = x^m (q0 = 0) or He_m (q0 = 1) (_duals.dual_polynomial):
/// k = sum_l B_l(q11 - q0) B_l(q22 - q0) q12^l, kd the same with the tables of phi'.
template <typename T>
IK_FN void ik_dual_polynomial(int n, T q0, const double* aux, int lo_k, int lo_kd, T q11, T q12,
                              T q22, T& k, T& kd) {
  q12 = ik_snap_q12(q11, q12, q22);
  T x1 = q11 - q0, x2 = q22 - q0;
  k = ik_poly_sum(aux, lo_k, n, x1, q12, x2);
  kd = n > 0 ? ik_poly_sum(aux, lo_kd, n - 1, x1, q12, x2) : T(0);
}

/// Cho & Saul's J_n and J_{n-1} (_duals.arccos_j): J_0 = pi - theta, J_1 = F(pi - theta),
/// J_m = (2m-1) cos(theta) J_{m-1} + (m-1)^2 sin^2(theta) J_{m-2}; J_{-1} = 0;
/// also theta and F of the smaller angle (theta for rho >= 0, else psi), for
/// the versine of the result.
template <typename T>
IK_FN void ik_arccos_j(int n, T rho, T omt, T& jn, T& jn1, T& theta, T& f_small) {
  T psi, f_psi, f_theta;
  ik_arc_cosine_c(rho, omt, psi, theta, f_psi, f_theta);
  f_small = rho >= T(0) ? f_theta : f_psi;
  if (n == 0) {
    jn = psi;
    jn1 = T(0);
    return;
  }
  T sin2 = (T(1) - rho) * (T(1) + rho);
  T j0 = psi, j1 = f_psi;
  for (int m = 2; m <= n; ++m) {
    T j2 = T(2 * m - 1) * rho * j1 + T((m - 1) * (m - 1)) * sin2 * j0;
    j0 = j1;
    j1 = j2;
  }
  jn = j1;
  jn1 = j0;
}

/// The signed versine of a rectified monomial's result (_duals.rectified_versine):
/// theta/pi for n = 0 (rho' >= 0), ik_arc_versine's for n = 1, 1 where a
/// variance is 0, NaN (unknown) for n >= 2.
template <typename T>
IK_FN T ik_rectified_versine(int n, T s1, T s2, T rho, T omt, T theta, T f_small) {
  if (s1 == T(0) || s2 == T(0)) return T(1);
  if (n == 0) return theta * T(1.0 / IK_PI);
  return n == 1 ? ik_arc_versine(rho, omt, f_small, T(1)) : ik_nan(T(0));
}

/// phi = max(x,0)^n: k = (s1 s2)^n J_n / 2pi, kd = n^2 (s1 s2)^{n-1} J_{n-1} / 2pi (0 for n = 0);
/// the powers by multiplication, as _duals.dual_rectified_monomial; a kinked
/// dual (angle from ik_versine, the result's versine in vc).
template <typename T>
IK_FN void ik_dual_rectified_monomial(int n, T q12, T s1, T s2, T r1, T r2, T c, T& k, T& kd,
                                      T& vc) {
  T rho, omt, jn, jn1, theta, f_small;
  ik_versine(q12, r1, r2, c, rho, omt);
  ik_arccos_j(n, rho, omt, jn, jn1, theta, f_small);
  vc = ik_rectified_versine(n, s1, s2, rho, omt, theta, f_small);
  if (jn < T(0)) jn = T(0);    // J >= 0: rounding of the recurrence near rho = -1
  if (jn1 < T(0)) jn1 = T(0);
  T s = s1 * s2;
  T sn1 = T(1);
  for (int m = 1; m < n; ++m) sn1 *= s;
  // step(0) = 0, as the finite networks use: k = 0 where a variance is 0
  k = n == 0 ? (s1 == T(0) || s2 == T(0) ? T(0) : jn * T(IK_INV_2PI))
             : sn1 * s * jn * T(IK_INV_2PI);
  kd = n == 0 || s1 == T(0) || s2 == T(0) ? T(0) : T(n * n) * sn1 * jn1 * T(IK_INV_2PI);
}

// ---------------------------------------------------------------------------
// Kind K_NUMERIC: activations without a closed form (port of infkernel/_numeric.py,
// same panels, nodes and operation order; see that module for the method).
//
// The IK_NUM_* constants (table geometry, Mehler terms, tolerance, Gauss-Legendre
// nodes, Hermite recurrence coefficients) are defined by the includer from
// infkernel/_numeric.py (infkernel/gpu.py: defines()).
//
// Per-point features of numeric slot s (the s-th numeric op) for point i, float64:
//   feat[(s FR + c NM + n) ld + i], c = 0: a_n, 1: d_n, 2, 3: normalised tails;
//   feat[(s FR + 4 NM + c) ld + i], c = 0: E[phi^2], 1: E[phi'^2];  FR = 4 NM + 2.
// (numba's F[s, c, n, i] and G[s, c, i], one array.)  Numeric entries compute in
// float64 for every compute type T; the result is rounded to T once.
// ---------------------------------------------------------------------------
#define IK_NUM_FR (4 * IK_NUM_NM + 2)
#define IK_NUM_MAXSEQ (2 * IK_NUM_MAX_BREAKS)

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
__constant__ double ik_dev_glx12[IK_NUM_NG] = IK_NUM_GLX12;
__constant__ double ik_dev_glw12[IK_NUM_NG] = IK_NUM_GLW12;
__constant__ double ik_dev_glx16[16] = IK_NUM_GLX16;
__constant__ double ik_dev_glw16[16] = IK_NUM_GLW16;
__constant__ double ik_dev_ghx[IK_NUM_NGH] = IK_NUM_GHX;
__constant__ double ik_dev_ghw[IK_NUM_NGH] = IK_NUM_GHW;
__constant__ double ik_dev_gh_sigs[IK_NUM_GH_RULES] = IK_NUM_GH_SIGS;
__constant__ double ik_dev_gh_clears[IK_NUM_GH_RULES] = IK_NUM_GH_CLEARS;
__constant__ double ik_dev_herm_a1[IK_NUM_NM] = IK_NUM_HERM_A1;
__constant__ double ik_dev_herm_a0[IK_NUM_NM] = IK_NUM_HERM_A0;
#endif
#if !defined(__CUDACC_RTC__)  // host copies (host compilers; nvcc's host pass)
#define IK_HOST_TABLE static const double __attribute__((unused))
IK_HOST_TABLE ik_host_glx12[IK_NUM_NG] = IK_NUM_GLX12;
IK_HOST_TABLE ik_host_glw12[IK_NUM_NG] = IK_NUM_GLW12;
IK_HOST_TABLE ik_host_glx16[16] = IK_NUM_GLX16;
IK_HOST_TABLE ik_host_glw16[16] = IK_NUM_GLW16;
IK_HOST_TABLE ik_host_ghx[IK_NUM_NGH] = IK_NUM_GHX;
IK_HOST_TABLE ik_host_ghw[IK_NUM_NGH] = IK_NUM_GHW;
IK_HOST_TABLE ik_host_gh_sigs[IK_NUM_GH_RULES] = IK_NUM_GH_SIGS;
IK_HOST_TABLE ik_host_gh_clears[IK_NUM_GH_RULES] = IK_NUM_GH_CLEARS;
IK_HOST_TABLE ik_host_herm_a1[IK_NUM_NM] = IK_NUM_HERM_A1;
IK_HOST_TABLE ik_host_herm_a0[IK_NUM_NM] = IK_NUM_HERM_A0;
#endif
#if defined(__CUDA_ARCH__)
#define IK_NUM_CONST(name) ik_dev_##name
#else
#define IK_NUM_CONST(name) ik_host_##name
#endif

/// numba's _estrin: sum_k c[k] y^k, k < 12, grouped as there (depth 4).
IK_FN double ik_estrin(const double* c, double y, double y2, double y4, double y8) {
  const double a0 = c[0] + c[1] * y, a1 = c[2] + c[3] * y, a2 = c[4] + c[5] * y;
  const double a3 = c[6] + c[7] * y, a4 = c[8] + c[9] * y, a5 = c[10] + c[11] * y;
  return (a0 + a1 * y2) + (a2 + a3 * y2) * y4 + (a4 + a5 * y2) * y8;
}

/// (phi(x), phi'(x)) from the table at aux[lo] (per panel the powers of the
/// panel coordinate y, phi's then phi''s); beyond +-U the lines of the tails
/// (header entries IK_NUM_HDR_TAILS + 0..3); within +-H/2 the graded panels,
/// y = 4m - 3 for |x| = m 2^e, and below IK_NUM_X_ZERO the values at 0.
IK_FN void ik_tab_eval(const double* aux, int lo, double x, double& f, double& df) {
  const double u = IK_NUM_U;
  if (x < -u || x > u) {
    const int e = IK_NUM_HDR_TAILS + (x < -u ? 0 : 2);
    df = aux[lo + e + 1];
    f = aux[lo + e] + df * (x < -u ? x + u : x - u);
    return;
  }
  if (fabs(x) < IK_NUM_X_GRADED) {  // the graded panels toward 0, then the values at 0
    const double* c = aux + lo + IK_NUM_HDR + IK_NUM_MAX_BREAKS + 2LL * IK_NUM_NC * IK_NUM_P;
    if (fabs(x) < IK_NUM_X_ZERO) {
      const int z = 4 * IK_NUM_NC * IK_NUM_J + (x == 0.0 ? 0 : x > 0.0 ? 2 : 4);
      df = c[z + 1];
      f = c[z] + df * x;
      return;
    }
    int e;
    const double m = frexp(fabs(x), &e);
    c += 2LL * IK_NUM_NC * ((-4 - e) + (x > 0.0 ? 0 : IK_NUM_J));
    const double y = 4.0 * m - 3.0, y2 = y * y, y4 = y2 * y2, y8 = y4 * y4;
    f = ik_estrin(c, y, y2, y4, y8);
    df = ik_estrin(c + IK_NUM_NC, y, y2, y4, y8);
    return;
  }
  const double t = (x + u) * IK_NUM_INV_H;
  int p = int(floor(t));
  p = p < 0 ? 0 : p > IK_NUM_P - 1 ? IK_NUM_P - 1 : p;
  double y = 2.0 * (t - p) - 1.0;
  y = fmin(fmax(y, -1.0), 1.0);
  const double y2 = y * y, y4 = y2 * y2, y8 = y4 * y4;
  const double* c = aux + lo + IK_NUM_HDR + IK_NUM_MAX_BREAKS + 2LL * IK_NUM_NC * p;
  f = ik_estrin(c, y, y2, y4, y8);
  df = ik_estrin(c + IK_NUM_NC, y, y2, y4, y8);
}

/// The sorted quadrature edges of numba's _add_centre / _finish_edges, produced
/// in order by merging sorted sequences instead of sorting a buffer: per centre
/// b the values b -+ w 2^j (j < J, w 2^j < dmax) and b, kept inside (lo, hi);
/// then the uniform grid lo + (hi - lo) k / nu, k = 0..nu, nu = ceil((hi - lo) / dmax).
/// The same multiset of doubles in nondecreasing order, so the same panels.
/// Up to two panel caps (numba's _add_cap): the values (k W - mid) / sc for
/// L <= k W <= R, strictly inside (lo, hi), increasing with k (sc > 0).
struct IkEdges {
  double lo, hi, dmax;
  double b[IK_NUM_MAXSEQ], w[IK_NUM_MAXSEQ], head[IK_NUM_MAXSEQ];
  int J[IK_NUM_MAXSEQ], t[IK_NUM_MAXSEQ];
  int n, nu, ku;
  double cw, cl[2], cr[2], cmid[2], csc[2], chead[2];
  long long ck[2], ck1[2];
  int nc;
};

IK_FN double ik_edge_value(const IkEdges& E, int c, int t) {
  const int J = E.J[c];
  if (t < J) return E.b[c] - ldexp(E.w[c], J - 1 - t);
  if (t == J) return E.b[c];
  return E.b[c] + ldexp(E.w[c], t - J - 1);
}

/// Head of sequence c at or after cursor t: the first value > lo, or +inf when
/// the sequence has no more values inside (lo, hi).
IK_FN void ik_edge_head(IkEdges& E, int c) {
  const int len = 2 * E.J[c] + 1;
  while (E.t[c] < len && !(ik_edge_value(E, c, E.t[c]) > E.lo)) ++E.t[c];
  double v = E.t[c] < len ? ik_edge_value(E, c, E.t[c]) : ik_inf(0.0);
  E.head[c] = v < E.hi ? v : ik_inf(0.0);
}

IK_FN void ik_edges_init(IkEdges& E, double lo, double hi, double dmax) {
  E.lo = lo;
  E.hi = hi;
  E.dmax = dmax;
  E.n = 0;
  E.nu = int(ceil((hi - lo) / dmax));
  E.ku = 0;
  E.nc = 0;
}

/// Head of cap c at or after its cursor: the first value inside (lo, hi), or
/// +inf.  k W is exact (W a power of 2, |k| small), so (k W - mid) / sc rounds
/// as numba's, contracted to an FMA or not.
IK_FN void ik_cap_head(IkEdges& E, int c) {
  double v = ik_inf(0.0);
  for (; E.ck[c] <= E.ck1[c]; ++E.ck[c]) {
    const double k = double(E.ck[c]);
    if (!(E.cl[c] <= k * E.cw && k * E.cw <= E.cr[c])) continue;
    const double t = (k * E.cw - E.cmid[c]) / E.csc[c];
    if (t >= E.hi) break;
    if (t > E.lo) {
      v = t;
      break;
    }
  }
  E.chead[c] = v;
}

/// numba's _add_cap(mid, sc): the table's panel cap, if it has one (sc < 0:
/// the mirrored cap [-R, -L] for -mid, |sc|, which gives the same doubles).
IK_FN void ik_edges_cap(IkEdges& E, const double* aux, int lo, double mid, double sc) {
  const double w = aux[lo + IK_NUM_HDR_WCAP];
  if (w == 0.0 || sc == 0.0 || !(fabs(sc) < ik_inf(0.0))) return;
  double l = aux[lo + IK_NUM_HDR_LCAP], r = aux[lo + IK_NUM_HDR_RCAP];
  if (sc < 0.0) {
    const double l0 = l;
    l = -r;
    r = -l0;
    mid = -mid;
    sc = -sc;
  }
  const int c = E.nc++;
  E.cw = w;
  E.cl[c] = l;
  E.cr[c] = r;
  E.cmid[c] = mid;
  E.csc[c] = sc;
  const double ua = fmin(fmax(mid + E.lo * sc, l - w), r + w);
  const double ub = fmin(fmax(mid + E.hi * sc, l - w), r + w);
  E.ck[c] = (long long)floor(ua / w) - 1;
  E.ck1[c] = (long long)ceil(ub / w) + 1;
  ik_cap_head(E, c);
}

/// numba's _add_centre(b, lam): centre b, smallest half-width max(lam, 1e-13).
IK_FN void ik_edges_add(IkEdges& E, double b, double lam) {
  const int c = E.n++;
  double w = fmax(lam, 1e-13);
  int J = 0;
  for (double ww = w; ww < E.dmax; ww *= 2.0) ++J;
  E.b[c] = b;
  E.w[c] = w;
  E.J[c] = J;
  E.t[c] = 0;
  ik_edge_head(E, c);
}

/// The next edge in nondecreasing order; false when all are out.
IK_FN bool ik_edges_next(IkEdges& E, double& v) {
  double best = E.ku <= E.nu ? E.lo + (E.hi - E.lo) * E.ku / E.nu : ik_inf(0.0);
  int arg = -1, cap = -1;
  for (int c = 0; c < E.n; ++c) {
    if (E.head[c] < best) {
      best = E.head[c];
      arg = c;
    }
  }
  for (int c = 0; c < E.nc; ++c) {
    if (E.chead[c] < best) {
      best = E.chead[c];
      cap = c;
    }
  }
  if (cap >= 0) {
    ++E.ck[cap];
    ik_cap_head(E, cap);
  } else if (arg < 0) {
    if (E.ku > E.nu) return false;
    ++E.ku;
  } else {
    ++E.t[arg];
    ik_edge_head(E, arg);
  }
  v = best;
  return true;
}

/// numba's _inner: E_w[phi(m + sig w)] and E_w[phi'(m + sig w)], w ~ N(0, 1)
/// (Gauss-Hermite rule r, 8 2^r nodes, at sig <= IK_NUM_GH_SIGS[r] lambda with
/// every kink beyond IK_NUM_GH_CLEARS[r] sig of m; else graded Gauss-Legendre).
IK_FN void ik_num_inner(const double* aux, int lo, double m, double sig, double& h,
                        double& hd) {
  if (sig <= 0.0) {
    ik_tab_eval(aux, lo, m, h, hd);
    return;
  }
  const int nk = int(aux[lo + 4]);
  const int ns = int(aux[lo + 5]);
  const double lam = aux[lo + 6];
  if (sig <= IK_NUM_GH_SIG * lam) {
    int r = 0;  // the rule: the fewest nodes that serve this sigma
    while (sig > IK_NUM_CONST(gh_sigs)[r] * lam) ++r;
    bool clear = true;
    for (int k = 0; k < nk; ++k)
      clear = clear && fabs(aux[lo + IK_NUM_HDR + k] - m) > IK_NUM_CONST(gh_clears)[r] * sig;
    if (clear) {
      double acc = 0.0, accd = 0.0;
      for (int g = 8 * ((1 << r) - 1); g < 8 * ((2 << r) - 1); ++g) {
        double f, df;
        ik_tab_eval(aux, lo, m + sig * IK_NUM_CONST(ghx)[g], f, df);
        acc += IK_NUM_CONST(ghw)[g] * f;
        accd += IK_NUM_CONST(ghw)[g] * df;
      }
      h = acc;
      hd = accd;
      return;
    }
  }
  IkEdges E;
  ik_edges_init(E, -IK_NUM_ZF, IK_NUM_ZF, IK_NUM_DMAX);
  for (int k = 0; k < nk + ns; ++k)
    ik_edges_add(E, (aux[lo + IK_NUM_HDR + k] - m) / sig, lam / sig);
  ik_edges_cap(E, aux, lo, m, sig);
  double acc = 0.0, accd = 0.0;
  double a, b;
  ik_edges_next(E, a);
  while (ik_edges_next(E, b)) {
    if (!(b - a <= 1e-15)) {
      const double hw = 0.5 * (b - a);
      const double mid = 0.5 * (a + b);
      for (int g = 0; g < IK_NUM_NG; ++g) {
        const double w = mid + hw * IK_NUM_CONST(glx12)[g];
        const double wt = hw * IK_NUM_CONST(glw12)[g] * exp(-0.5 * w * w);
        double f, df;
        ik_tab_eval(aux, lo, m + sig * w, f, df);
        acc += wt * f;
        accd += wt * df;
      }
    }
    a = b;
  }
  h = acc * IK_NUM_INV_SQRT_2PI;
  hd = accd * IK_NUM_INV_SQRT_2PI;
}

/// numba's pair_quadrature: (E[phi(u)phi(v)], E[phi'(u)phi'(v)]) by nested graded
/// Gauss-Legendre, u = s1 x, v = s2 (rho x + c w), c = sqrt(1 - rho^2).
/// The fallback for entries the Mehler series cannot certify (slow: ~10^5
/// table evaluations).  Not inlined on the GPU, so that it does not enlarge
/// the register allocation of the fast paths.
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
__host__ __device__ __noinline__
#else
static
#endif
void ik_pair_quadrature(const double* aux, int lo, double s1, double s2, double rho,
                        double* k_out, double* kd_out) {
  rho = fmin(fmax(rho, -1.0), 1.0);
  const double c = sqrt((1.0 - rho) * (1.0 + rho));
  const int nk = int(aux[lo + 4]);
  const int ns = int(aux[lo + 5]);
  const double lam = aux[lo + 6];
  const double arho = fabs(rho);
  const double sig = s2 * c;
  const bool half = aux[lo + IK_NUM_HDR_PARITY] != 0.0;  // odd/even phi: x in [0, ZF], doubled
  IkEdges E;
  ik_edges_init(E, half ? 0.0 : -IK_NUM_ZF, IK_NUM_ZF, IK_NUM_DMAX);
  for (int k = 0; k < nk + ns; ++k) {
    const double t = aux[lo + IK_NUM_HDR + k];
    if (s1 > 0.0) ik_edges_add(E, half ? fabs(t / s1) : t / s1, lam / s1);
    if (s2 * arho > 0.0) {
      double w;
      if (k < nk)  // smoothed kink of width sigma, smooth sides of width lambda
        w = sig > 1e-9 * lam ? fmin(sig, lam) : lam;
      else
        w = fmax(sig, lam);
      const double b = t / (s2 * rho);
      ik_edges_add(E, half ? fabs(b) : b, w / (s2 * arho));
    }
  }
  ik_edges_cap(E, aux, lo, 0.0, s1);
  ik_edges_cap(E, aux, lo, 0.0, s2 * rho);
  double acc = 0.0, accd = 0.0;
  double a, b;
  ik_edges_next(E, a);
  while (ik_edges_next(E, b)) {
    if (!(b - a <= 1e-15)) {
      const double hw = 0.5 * (b - a);
      const double mid = 0.5 * (a + b);
      for (int g = 0; g < IK_NUM_NG; ++g) {
        const double x = mid + hw * IK_NUM_CONST(glx12)[g];
        const double wt = hw * IK_NUM_CONST(glw12)[g] * exp(-0.5 * x * x);
        double f, df, h, hd;
        ik_tab_eval(aux, lo, s1 * x, f, df);
        ik_num_inner(aux, lo, s2 * rho * x, sig, h, hd);
        acc += wt * f * h;
        accd += wt * df * hd;
      }
    }
    a = b;
  }
  const double c0 = (half ? 2.0 : 1.0) * IK_NUM_INV_SQRT_2PI;
  *k_out = acc * c0;
  *kd_out = accd * c0;
}

/// numba's mehler_point: the features of the point of scale s (see above) into
/// f[(c NM + n) ld] and E[phi^2], E[phi'^2] into g[0], g[ld] (f, g already
/// offset to the slot and the point; f = nullptr: the moments alone, for the
/// diagonal).  Loops are node-outer, term-inner (numba: term-outer); every a_n
/// still sums the nodes in the same order, so the values are the same.
IK_FN void ik_mehler_moments(const double* aux, int lo, double s, double* f, double* g,
                             long long ld) {
  if (s == 0.0) {
    // u = 0 surely: a_0 = phi(0), a_n = 0 beyond, exactly (as numba)
    double f0, d0;
    ik_tab_eval(aux, lo, 0.0, f0, d0);
    g[0] = f0 * f0;
    g[ld] = d0 * d0;
    if (!f) return;
    for (int n = 0; n < IK_NUM_NM; ++n) {
      f[n * ld] = n == 0 ? f0 : 0.0;
      f[(IK_NUM_NM + n) * ld] = n == 0 ? d0 : 0.0;
      f[(2 * IK_NUM_NM + n) * ld] = f0 != 0.0 ? sqrt(1e-15) : 0.0;
      f[(3 * IK_NUM_NM + n) * ld] = d0 != 0.0 ? sqrt(1e-15) : 0.0;
    }
    return;
  }
  const int nk = int(aux[lo + 4]);
  const int ns = int(aux[lo + 5]);
  const double lam = aux[lo + 6];
  IkEdges E;
  ik_edges_init(E, -IK_NUM_ZC, IK_NUM_ZC, 0.5);
  for (int k = 0; k < nk + ns; ++k) ik_edges_add(E, aux[lo + IK_NUM_HDR + k] / s, lam / s);
  ik_edges_cap(E, aux, lo, 0.0, s);
  // sums over the nodes in 8 lanes (node m in lane m mod 8), combined in
  // _numeric._lane_sum's order: the numba path's result, bit for bit up to FMA
  double sa[IK_NUM_NM][8], sd[IK_NUM_NM][8];
  for (int n = 0; n < IK_NUM_NM; ++n)
    for (int l = 0; l < 8; ++l) sa[n][l] = sd[n][l] = 0.0;
  double ef = 0.0, ed = 0.0;
  int lane = 0;
  double a, b;
  ik_edges_next(E, a);
  while (ik_edges_next(E, b)) {
    if (!(b - a <= 1e-15)) {
      const double hw = 0.5 * (b - a);
      const double mid = 0.5 * (a + b);
      for (int g = 0; g < 16; ++g) {
        const double x = mid + hw * IK_NUM_CONST(glx16)[g];
        const double wt =
            hw * IK_NUM_CONST(glw16)[g] * exp(-0.5 * x * x) * IK_NUM_INV_SQRT_2PI;
        double fv, dfv;
        ik_tab_eval(aux, lo, s * x, fv, dfv);
        const double wf = wt * fv;
        const double wd = wt * dfv;
        ef += wt * fv * fv;
        ed += wt * dfv * dfv;
        if (!f) continue;
        double h0 = 1.0, h1 = x;
        sa[0][lane] += wf * h0;
        sd[0][lane] += wd * h0;
        sa[1][lane] += wf * h1;
        sd[1][lane] += wd * h1;
        for (int n = 2; n < IK_NUM_NM; ++n) {
          const double h = x * h1 * IK_NUM_CONST(herm_a1)[n] - IK_NUM_CONST(herm_a0)[n] * h0;
          h0 = h1;
          h1 = h;
          sa[n][lane] += wf * h;
          sd[n][lane] += wd * h;
        }
        lane = (lane + 1) & 7;
      }
    }
    a = b;
  }
  g[0] = ef;
  g[ld] = ed;
  if (!f) return;
  double pa = 0.0, pd = 0.0;
  for (int n = 0; n < IK_NUM_NM; ++n) {
    const double* a = sa[n];
    const double* d = sd[n];
    const double an = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    const double dn = ((d[0] + d[1]) + (d[2] + d[3])) + ((d[4] + d[5]) + (d[6] + d[7]));
    f[n * ld] = an;
    f[(IK_NUM_NM + n) * ld] = dn;
    pa += an * an;
    pd += dn * dn;
    // normalised tails; the 1e-15 floor covers the rounding of E - partial
    f[(2 * IK_NUM_NM + n) * ld] = ef > 0.0 ? sqrt(fmax(ef - pa, 0.0) / ef + 1e-15) : 0.0;
    f[(3 * IK_NUM_NM + n) * ld] = ed > 0.0 ? sqrt(fmax(ed - pd, 0.0) / ed + 1e-15) : 0.0;
  }
}

/// The full features of a point: IK_NUM_FR rows of f, E[phi^2], E[phi'^2] last.
IK_FN void ik_mehler_point(const double* aux, int lo, double s, double* f, long long ld) {
  ik_mehler_moments(aux, lo, s, f, f + 4 * IK_NUM_NM * ld, ld);
}

/// Where the per-point features of an activation's entries are: the row points
/// rows[e] of f1 (leading dimension ld1) and the column point col of f2, both at
/// the feature block of the op's slot.  `diag`: the diagonal pass (numba runs it
/// with column tail maxima TM = 1 for the truncation choice).
struct IkFeatures {
  const double* f1;
  long long ld1;
  const long long* rows;
  const double* f2;
  long long ld2;
  long long col;
  bool diag;
};

/// numba's numeric_tile for E entries sharing the column point: Q[e] = q12 -> k,
/// TH[e] *= kdot.  Truncation: the fewest terms N such that every entry is
/// certified, |rho_e|^{N} ta_1(N-1) ta_2(N-1) <= TOL for phi and phi' (numba
/// certifies a tile of columns with the largest column tails; here each entry
/// uses its own column's tails, never more terms than numba would choose for a
/// one-column tile).  Entries at rho = 1 with equal variances: the exact
/// diagonal E[phi^2]; other entries not certified by all NM terms: quadrature.
template <typename T, int E>
IK_FN void ik_numeric_entries(const double* aux, int lo, int slot, const T* q11, const T* s1,
                              const T* r1, T q22, T s2, T r2, T* Q, T* TH,
                              const IkFeatures& nf) {
  const long long ld1 = nf.ld1, ld2 = nf.ld2;
  const double* F1 = nf.f1 + (long long)slot * IK_NUM_FR * ld1;
  const double* F2 = nf.f2 + (long long)slot * IK_NUM_FR * ld2 + nf.col;
  long long ri[E];
  double rho[E], arho[E], p[E];
  bool open[E];
  IK_UNROLL
  for (int e = 0; e < E; ++e) {
    ri[e] = nf.rows[e];
    rho[e] = double(ik_correlation(Q[e], r1[e], r2));  // snapped at T's precision
    arho[e] = fabs(rho[e]);
    p[e] = arho[e];
    open[e] = true;
  }
  int nt = IK_NUM_NM;
  for (int m = 0; m < IK_NUM_NM; ++m) {
    const double ta2 = nf.diag ? 1.0 : F2[(2 * IK_NUM_NM + m) * ld2];
    const double td2 = nf.diag ? 1.0 : F2[(3 * IK_NUM_NM + m) * ld2];
    bool any = false;
    IK_UNROLL
    for (int e = 0; e < E; ++e) {
      if (open[e]) {
        const double ta1 = F1[(2 * IK_NUM_NM + m) * ld1 + ri[e]];
        const double td1 = F1[(3 * IK_NUM_NM + m) * ld1 + ri[e]];
        if (p[e] * ta1 * ta2 <= IK_NUM_TOL && p[e] * td1 * td2 <= IK_NUM_TOL) {
          open[e] = false;
        } else {
          any = true;
          p[e] *= arho[e];
        }
      }
    }
    if (!any) {
      nt = m + 1;
      break;
    }
  }
  double acc[E], accd[E];
  IK_UNROLL
  for (int e = 0; e < E; ++e) acc[e] = accd[e] = 0.0;
  for (int m = nt - 1; m >= 0; --m) {
    const double A = F2[m * ld2];
    const double D = F2[(IK_NUM_NM + m) * ld2];
    IK_UNROLL
    for (int e = 0; e < E; ++e) {
      acc[e] = acc[e] * rho[e] + F1[m * ld1 + ri[e]] * A;
      accd[e] = accd[e] * rho[e] + F1[(IK_NUM_NM + m) * ld1 + ri[e]] * D;
    }
  }
  if (nt == IK_NUM_NM) {  // check entry by entry; the rest by quadrature
    const double ta2 = F2[(3 * IK_NUM_NM - 1) * ld2];
    const double td2 = F2[(4 * IK_NUM_NM - 1) * ld2];
    for (int e = 0; e < E; ++e) {
      const double pn = ik_ipow(arho[e], IK_NUM_NM);
      const double ta1 = F1[(3 * IK_NUM_NM - 1) * ld1 + ri[e]];
      const double td1 = F1[(4 * IK_NUM_NM - 1) * ld1 + ri[e]];
      if ((pn * ta1 * ta2 > IK_NUM_TOL || pn * td1 * td2 > IK_NUM_TOL) &&
          !(rho[e] == 1.0 && q22 == q11[e]))
        ik_pair_quadrature(aux, lo, double(s1[e]), double(s2), rho[e], &acc[e], &accd[e]);
    }
  }
  // rho = 1 at equal variances (the diagonal, duplicate points): E[phi^2],
  // E[phi'^2] of the diagonal pass itself, as numba does
  IK_UNROLL
  for (int e = 0; e < E; ++e) {
    const bool same = rho[e] == 1.0 && q22 == q11[e];
    Q[e] = T(same ? F1[(4 * IK_NUM_NM) * ld1 + ri[e]] : acc[e]);
    TH[e] *= T(same ? F1[(4 * IK_NUM_NM + 1) * ld1 + ri[e]] : accd[e]);
  }
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
                  T* Q, T* TH, T* C, const IkFeatures& nf) {
  // the signed versine C of the result: the kinked kinds' formula, unchanged
  // by LayerNorm, else NaN (unknown: from q12 where needed; _cpu.act_tile)
  if (kind != IK_K_ABRELU && kind != IK_K_SIGN && kind != IK_K_RECTIFIED_MONOMIAL &&
      kind != IK_K_LAYERNORM) {
    IK_UNROLL
    for (int e = 0; e < E; ++e) C[e] = ik_nan(T(0));
  }
  switch (kind) {
    case IK_K_ABRELU: {
      T a = T(p[0]), b = T(p[1]);
      IK_ACT_LOOP(ik_dual_abrelu(a, b, q11[e], Q[e], q22, s1[e], s2, r1[e], r2, C[e], k_, d_,
                                 C[e]))
      break;
    }
    case IK_K_ERF: {
      T a = T(p[0]), b = T(p[1]), c = T(p[2]);
      IK_ACT_LOOP(ik_dual_erf(a, b, c, q11[e], Q[e], q22, s1[e], s2, r1[e], r2, k_, d_))
      break;
    }
    case IK_K_GELU: {
      IK_ACT_LOOP(ik_dual_gelu(q11[e], Q[e], q22, s1[e], s2, r1[e], r2, k_, d_))
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
    case IK_K_EXP_NORMALIZED: {
      T g = T(p[0]), sh = T(p[1]);
      IK_ACT_LOOP(ik_dual_exp_normalized(g, sh, Q[e], s1[e], s2, r1[e], r2, k_, d_))
      break;
    }
    case IK_K_GABOR: {
      IK_ACT_LOOP(ik_dual_gabor(q11[e], Q[e], q22, r1[e], r2, k_, d_))
      break;
    }
    case IK_K_SIGN: {
      IK_ACT_LOOP(ik_dual_sign(Q[e], s1[e], s2, r1[e], r2, C[e], k_, d_, C[e]))
      break;
    }
    case IK_K_MONOMIAL: {
      int n = int(p[0]);
      IK_ACT_LOOP(ik_dual_monomial(n, aux, lo, hi, Q[e], s1[e], s2, r1[e], r2, k_, d_))
      break;
    }
    case IK_K_RECTIFIED_MONOMIAL: {
      int n = int(p[0]);
      IK_ACT_LOOP(ik_dual_rectified_monomial(n, Q[e], s1[e], s2, r1[e], r2, C[e], k_, d_,
                                             C[e]))
      break;
    }
    case IK_K_LAYERNORM: {
      IK_ACT_LOOP(ik_dual_layernorm(Q[e], r1[e], r2, k_, d_))
      break;
    }
    case IK_K_POLYNOMIAL: {
      int n = int(p[0]);
      T q0 = T(p[1]);
      IK_ACT_LOOP(ik_dual_polynomial(n, q0, aux, lo, hi, q11[e], Q[e], q22, k_, d_))
      break;
    }
    case IK_K_NUMERIC: {
#if IK_NUMERIC
      ik_numeric_entries<T, E>(aux, lo, hi, q11, s1, r1, q22, s2, r2, Q, TH, nf);
#else  // compiled without numeric support: gpu.py selects the IK_NUMERIC module
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        Q[e] = ik_nan(T(0));
        TH[e] = Q[e];
      }
#endif
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
/// q[0][e] = x_i.x_j / d, th[0][e] = 0 and c[0][e] = the input versine
/// (ik_start_versine); on exit register 0 holds (NNGP, NTK).  c carries the
/// signed versine sign(rho) (1 - |rho|) per register (NaN: unknown; _cpu._run_ops).
/// ops: n_ops x 6 ints (opcode, reg, reg2, kind, aux_lo, aux_hi); params: n_ops x 6.
/// Tables (ik_diag_point): row 0 is 1/|x|, then three rows per Dense or
/// activation op (its slot, in program order).
template <typename T, int NR, int E>
IK_FN void ik_run_entries(const int* ops, const double* params, const double* aux, int n_ops,
                          const T* tab1, long long ld1, const long long* rows,
                          const T* tab2, long long ld2, long long col,
                          const double* feat1, const double* feat2,
                          T (&q)[NR][E], T (&th)[NR][E], T (&c)[NR][E]) {
  const IkFeatures nf = {feat1, ld1, rows, feat2, ld2, col, false};
  int slot = 0;
  for (int k = 0; k < n_ops; ++k) {
    const int* o = ops + 6 * k;
    const double* p = params + 6 * k;
    const int op = o[0];
    const int r = o[1];
    T Q[E], TH[E], C[E];
    ik_reg_get<T, NR, E>(q, r, Q);
    ik_reg_get<T, NR, E>(th, r, TH);
    ik_reg_get<T, NR, E>(c, r, C);
    const T* t1 = tab1 + (1 + 3 * slot) * ld1;
    const T* t2 = tab2 + (1 + 3 * slot) * ld2;
    if (op == IK_OP_DENSE) {  // tables: 1/sqrt q', the unit vector (a, b)
      T w2 = T(p[0]), b2 = T(p[1]), c_old = T(p[2]), c_new = T(p[3]), c_one = T(p[4]);
      const T v2 = t2[col], a2 = t2[ld2 + col], bb2 = t2[2 * ld2 + col];
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        T qn = w2 * Q[e] + b2;
        TH[e] = ik_dense_theta(w2, c_old, c_new, c_one, Q[e], qn, TH[e]);
        // carried: from c; else (NaN) from the new q12 (_cpu._run_ops)
        C[e] = C[e] == C[e] ? ik_mixed_versine(t1[ld1 + rows[e]], a2, t1[2 * ld1 + rows[e]],
                                               bb2, C[e], T(0))
                            : ik_versine_of(qn, t1[rows[e]], v2);
        Q[e] = qn;
      }
      ++slot;
    } else if (op == IK_OP_ACT) {
      T v1[E], s1[E], r1[E];
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        v1[e] = t1[rows[e]];
        s1[e] = t1[ld1 + rows[e]];
        r1[e] = t1[2 * ld1 + rows[e]];
      }
      ik_act<T, E>(o[3], p, aux, o[4], o[5], v1, s1, r1, t2[col], t2[ld2 + col],
                   t2[2 * ld2 + col], Q, TH, C, nf);
      ++slot;
    } else if (op == IK_OP_SCALE) {
      T w = T(p[0]);
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        Q[e] *= w;
        TH[e] *= w;
        C[e] = w != T(0) ? C[e] : T(1);  // zero variances: rho = 0
      }
    } else if (op == IK_OP_DIAG_SCALE) {  // the diagonal only: rho of the others changes
      IK_UNROLL
      for (int e = 0; e < E; ++e) C[e] = ik_nan(T(0));
    } else if (op == IK_OP_COPY) {
      ik_reg_set<T, NR, E>(q, o[2], Q);
      ik_reg_set<T, NR, E>(th, o[2], TH);
      ik_reg_set<T, NR, E>(c, o[2], C);
      continue;
    } else if (op == IK_OP_AXPY) {  // tables: 1/sqrt q', the unit vector (a, b)
      T Q2[E], TH2[E], C2[E];
      ik_reg_get<T, NR, E>(q, o[2], Q2);
      ik_reg_get<T, NR, E>(th, o[2], TH2);
      ik_reg_get<T, NR, E>(c, o[2], C2);
      T x = T(p[0]), y = T(p[1]);
      const T a2 = t2[ld2 + col], bb2 = t2[2 * ld2 + col];
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        Q[e] = x * Q[e] + y * Q2[e];
        TH[e] = x * TH[e] + y * TH2[e];
        // NaN (not carried) if either branch's is
        C[e] = ik_mixed_versine(t1[ld1 + rows[e]], a2, t1[2 * ld1 + rows[e]], bb2, C[e], C2[e]);
      }
      ++slot;
    } else if (op == IK_OP_MUL) {  // rho = rho1 rho2: 1 - |rho| = t1 + t2 - t1 t2
      T Q2[E], TH2[E], C2[E];
      ik_reg_get<T, NR, E>(q, o[2], Q2);
      ik_reg_get<T, NR, E>(th, o[2], TH2);
      ik_reg_get<T, NR, E>(c, o[2], C2);
      IK_UNROLL
      for (int e = 0; e < E; ++e) {
        TH[e] = TH[e] * Q2[e] + Q[e] * TH2[e];
        Q[e] = Q[e] * Q2[e];
        const T t1 = ik_abs(C[e]), t2 = ik_abs(C2[e]);
        C[e] = ik_copysign(t1 + t2 - t1 * t2, C[e] * C2[e]);
      }
    }
    ik_reg_set<T, NR, E>(q, r, Q);
    ik_reg_set<T, NR, E>(th, r, TH);
    ik_reg_set<T, NR, E>(c, r, C);
  }
}

/// Diagonal pass for one point i: runs the program on (x_i, x_i) starting from
/// sq = |x_i|^2 / d, fills the point's column of the tables and returns
/// (k, t) = (NNGP, NTK)(x_i, x_i).  n_regs <= IK_MAX_DIAG_REGS.  A numeric
/// activation's entry is E[phi^2], E[phi'^2] (as numba's _diag_pass); its
/// per-point block of feat has fr rows: IK_NUM_FR (the features the Gram
/// kernels read) or 2 (the moments alone, for the diagonal).
template <typename T>
IK_FN void ik_diag_point(const int* ops, const double* params, const double* aux, int n_ops,
                         T norm2, T sq, T* tab, double* feat, int fr, long long ld, long long i,
                         T& k_out, T& t_out) {
  const IkFeatures nf = {feat, ld, &i, feat, ld, i, true};
  T q[IK_MAX_DIAG_REGS], th[IK_MAX_DIAG_REGS];
  q[0] = sq;
  th[0] = T(0);
  const T u = T(1) / ik_sqrt(norm2);  // 1/|x| (0 for x = 0 or an overflowed norm)
  tab[i] = u < ik_inf(T(0)) ? u : T(0);
  int slot = 0;
  for (int k = 0; k < n_ops; ++k) {
    const int* o = ops + 6 * k;
    const double* p = params + 6 * k;
    const int op = o[0];
    const int r = o[1];
    T* t = tab + (1 + 3 * slot) * ld;
    if (op == IK_OP_DENSE) {  // w h + bias (ik_mixed_versine)
      T qn = T(p[0]) * q[r] + T(p[1]);
      th[r] = ik_dense_theta(T(p[0]), T(p[2]), T(p[3]), T(p[4]), q[r], qn, th[r]);
      ik_mixed_scales(ik_sqrt(T(p[0])) * ik_sqrt(q[r]), ik_sqrt(T(p[1])), qn, t + i, ld);
      q[r] = qn;
      ++slot;
    } else if (op == IK_OP_ACT) {
      T v = q[r];
      T s = ik_point_scale(o[3], p, v);
      T rs = s > T(0) ? T(1) / s : T(0);
      T cz = T(0);  // a point against itself: versine 0
      t[i] = v;
      t[ld + i] = s;
      t[2 * ld + i] = rs;
#if IK_NUMERIC
      if (o[3] == IK_K_NUMERIC) {  // scale capped as in _cpu._diag_pass
        double* f = feat + (long long)o[5] * fr * ld + i;
        double* g = f + (fr - 2) * ld;
        const double s_cap = 2.0 * sqrt(aux[o[4] + IK_NUM_HDR_QMAX]);
        ik_mehler_moments(aux, o[4], fmin(double(s), s_cap),
                          fr == IK_NUM_FR ? f : nullptr, g, ld);
        q[r] = T(g[0]);
        th[r] *= T(g[ld]);
        ++slot;
        continue;
      }
#endif
      ik_act<T, 1>(o[3], p, aux, o[4], o[5], &v, &s, &rs, v, s, rs, &q[r], &th[r], &cz, nf);
      ++slot;
    } else if (op == IK_OP_SCALE || op == IK_OP_DIAG_SCALE) {
      q[r] *= T(p[0]);
      th[r] *= T(p[0]);
    } else if (op == IK_OP_COPY) {
      q[o[2]] = q[r];
      th[o[2]] = th[r];
    } else if (op == IK_OP_AXPY) {  // a sum (ik_mixed_versine)
      const T qn = T(p[0]) * q[r] + T(p[1]) * q[o[2]];  // as the Gram kernels round it
      ik_mixed_scales(ik_sqrt(T(p[0])) * ik_sqrt(q[r]), ik_sqrt(T(p[1])) * ik_sqrt(q[o[2]]), qn,
                      t + i, ld);
      q[r] = qn;
      th[r] = T(p[0]) * th[r] + T(p[1]) * th[o[2]];
      ++slot;
    } else if (op == IK_OP_MUL) {
      th[r] = th[r] * q[o[2]] + q[r] * th[o[2]];
      q[r] = q[r] * q[o[2]];
    }
  }
  k_out = q[0];
  t_out = th[0];
}

#endif  // INFKERNEL_MATH_CUH
