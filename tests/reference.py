"""A slow, obvious NumPy reference of the NNGP/NTK recursion.

Layer by layer over whole matrices, with Gaussian expectations computed by
generic quadrature that knows nothing of the closed forms:

* positively homogeneous activations (φ(cx) = c^n φ(x) for c > 0: ReLU family,
  rectified monomials, sign, monomials) by the polar form
      E[φ(u)φ(v)] = (s1 s2)^n 2^n n! / (2π) ∫_0^{2π} φ(cos α) φ(cos(α - θ)) dα
  with the circle split at the kinks (cos α = 0, cos(α - θ) = 0) and
  Gauss–Legendre on each arc (exact to rounding for these integrands);
* everything else by a 2-D Gauss–Hermite product rule of high degree.
"""
import math

import numpy as np

import infkernel as ik

_GL_X, _GL_W = np.polynomial.legendre.leggauss(48)
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(160)
_GH_W = _GH_W / _GH_W.sum()


def homogeneous_degree(act):
    """n such that φ(cx) = c^n φ(x) for c > 0, or None."""
    if act.name == "ABRelu":
        return 1
    if act.name == "Sign":
        return 0
    if act.name in ("RectifiedMonomial", "Monomial"):
        return int(act.params[0])
    return None


def _circle(phi, n, q11, q12, q22):
    """Polar-form expectation for a degree-n homogeneous φ (arrays broadcast)."""
    q11, q12, q22 = np.broadcast_arrays(*(np.asarray(a, float) for a in (q11, q12, q22)))
    s = np.sqrt(q11 * q22)
    # the angle by arctan2 (exact 0 and π at ρ = ±1); π/2 at zero variance
    theta = np.arctan2(np.sqrt(np.maximum(q11 * q22 - q12 * q12, 0)), q12)
    theta = np.where(s > 0, theta, np.pi / 2)[..., None]
    cuts = np.concatenate([np.broadcast_to([0, math.pi / 2, 3 * math.pi / 2, 2 * math.pi],
                                           theta.shape[:-1] + (4,)),
                           (theta + math.pi / 2) % (2 * math.pi),
                           (theta + 3 * math.pi / 2) % (2 * math.pi)], axis=-1)
    cuts = np.sort(cuts, axis=-1)
    lo, hi = cuts[..., :-1, None], cuts[..., 1:, None]
    alpha = 0.5 * (hi + lo) + 0.5 * (hi - lo) * _GL_X
    w = 0.5 * (hi - lo) * _GL_W
    f = phi(np.cos(alpha)) * phi(np.cos(alpha - theta[..., None]))
    integral = (f * w).sum(axis=(-1, -2))
    return s ** n * 2.0 ** n * math.factorial(n) / (2 * math.pi) * integral


def _hermite(phi, q11, q12, q22):
    """2-D Gauss–Hermite expectation of φ(u)φ(v)."""
    q11, q12, q22 = np.broadcast_arrays(*(np.asarray(a, float) for a in (q11, q12, q22)))
    s1 = np.sqrt(q11)
    c = np.divide(q12, s1, out=np.zeros_like(s1), where=s1 > 0)
    d = np.sqrt(np.maximum(q22 - c * c, 0))
    z1 = _GH_X[:, None]
    z2 = _GH_X[None, :]
    w = _GH_W[:, None] * _GH_W[None, :]
    u = s1[..., None, None] * z1
    v = c[..., None, None] * z1 + d[..., None, None] * z2
    return (phi(u) * phi(v) * w).sum(axis=(-1, -2))


def gaussian_moment(a, b, q11, q12, q22):
    """E[uᵃ vᵇ] for a centred Gaussian pair by Isserlis' theorem (pairings):
    Σ_k C(a,k) C(b,k) k! q12ᵏ (a-k-1)!! q11^((a-k)/2) (b-k-1)!! q22^((b-k)/2),
    over k with a - k and b - k even.  Plain arithmetic: works on mpmath numbers."""
    def dfact(m):            # (m - 1)!! for even m >= 0
        return math.prod(range(m - 1, 0, -2))
    return sum(math.comb(a, k) * math.comb(b, k) * math.factorial(k) * q12 ** k
               * dfact(a - k) * q11 ** ((a - k) // 2) * dfact(b - k) * q22 ** ((b - k) // 2)
               for k in range(min(a, b) + 1) if (a - k) % 2 == 0 and (b - k) % 2 == 0)


def expect(phi, degree, q11, q12, q22):
    if degree is not None:
        return _circle(phi, degree, q11, q12, q22)
    return _hermite(phi, q11, q12, q22)


def duals(act, q11, q12, q22):
    """(E[φφ], E[φ'φ']) by quadrature; the derivative dual of Sign and of the
    degree-0 (rectified) monomials is 0 by neural-tangents' convention."""
    n = homogeneous_degree(act)
    k = expect(act.fn, n, q11, q12, q22)
    if n == 0:
        return k, np.zeros_like(k)
    kd = expect(act.dfn, None if n is None else n - 1, q11, q12, q22)
    return k, kd


def kernels(net, x1, x2=None):
    """(nngp, ntk) of a serial network of Dense/activation/Identity/Dropout
    layers (train-mode Dropout: a point's entry with itself times 1/rate)."""
    same = x2 is None
    x2 = x1 if same else x2
    d = x1.shape[1]
    Q = x1 @ x2.T / d
    q1 = (x1 * x1).sum(1) / d
    q2 = (x2 * x2).sum(1) / d
    T = np.zeros_like(Q)
    t1, t2 = np.zeros_like(q1), np.zeros_like(q2)
    width = d
    for layer in net.layers:
        if isinstance(layer, ik.Dense):
            w2 = layer.W_std ** 2
            b2 = 0.0 if layer.b_std is None else layer.b_std ** 2
            if layer.parameterization == "ntk":
                Q, q1, q2 = w2 * Q + b2, w2 * q1 + b2, w2 * q2 + b2
                T, t1, t2 = Q + w2 * T, q1 + w2 * t1, q2 + w2 * t2
            else:
                one = 0.0 if layer.b_std is None else 1.0
                T = width * Q + w2 * T + one
                t1, t2 = width * q1 + w2 * t1 + one, width * q2 + w2 * t2 + one
                Q, q1, q2 = w2 * Q + b2, w2 * q1 + b2, w2 * q2 + b2
            width = layer.out_dim
        elif isinstance(layer, ik.Activation):
            k, kd = duals(layer, q1[:, None], Q, q2[None, :])
            k1, kd1 = duals(layer, q1, q1, q1)
            k2, kd2 = duals(layer, q2, q2, q2)
            Q, T = k, T * kd
            q1, t1, q2, t2 = k1, t1 * kd1, k2, t2 * kd2
        elif isinstance(layer, ik.Dropout):
            if layer.training:
                f = 1.0 / layer.rate
                q1, t1, q2, t2 = f * q1, f * t1, f * q2, f * t2
                if same:
                    Q, T = Q.copy(), T.copy()
                    Q[np.diag_indices_from(Q)] *= f
                    T[np.diag_indices_from(T)] *= f
        elif isinstance(layer, ik.Identity):
            pass
        else:
            raise TypeError(f"reference does not know {layer!r}")
    return Q, T
