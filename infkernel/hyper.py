"""Hyperparameter gradients of the NNGP/NTK and the GP log marginal likelihood.

Forward-mode differentiation through the kernel recursion (layer by layer,
vectorised over the N×N Gram matrix).  For a Dense layer (DESIGN.md)

    Σ' = w² Σ + b²,   Θ' = Σ' + w² Θ            (ntk parameterization)

the tangents are dΣ' = w² dΣ + Σ dw² + db²,  dΘ' = dΣ' + w² dΘ + Θ dw².
For an activation, with k(q11, q12, q22) = E[φ(u)φ(v)] and
k̇ = E[φ'(u)φ'(v)]:

    dΣ' = ∂₁₁k dq11 + ∂₁₂k dq12 + ∂₂₂k dq22,   dΘ' = k̇ dΘ + Θ (∂k̇ · dq)

∂₁₂k = k̇ by Price's theorem (Price 1958) wherever φ is Lipschitz; for the
step-like Sign and RectifiedMonomial(0) the true derivative is used.  The
variance derivatives ∂₁₁, ∂₂₂ are closed forms per activation: for positively
homogeneous φ of degree n (ReLU family, Monomial, RectifiedMonomial, Sign)
Euler's relation k(a²q11, a q12, q22) = aⁿ k gives
∂₁₁k = (n k − q12 ∂₁₂k) / (2 q11); the others (Erf, Sin, Rbf, Exp,
Gaussian) are differentiated directly, Gelu and Gabor by evaluating the
kernels' formulas on first-order jets (``_jets.dual_derivatives``; exact up
to rounding).  Diagonal entries follow the one-variable map q ↦ k(q, q, q),
whose derivative is finite even where ∂₁₂k̇ is not (ReLU at correlation 1);
so do other pairs at correlation ±1 of the kinked kinds (identical,
antipodal or parallel points, which stay there: their derivative is taken
along |ρ| = 1).

Activation parameters (``activation_params=True``): each continuous
parameter p of an activation layer gets its own tangent slot.  It enters the
recursion only at that layer, so its tangent there is the local partial at
fixed covariances, dΣ' = ∂k/∂p, dΘ' = Θ ∂k̇/∂p (diagonal: ∂/∂p of
q ↦ k(q, q, q)), carried on by the layers above like any other tangent.  The
partials are closed forms: scales are trivial (k, k̇ ∝ a²; Erf's c adds c² to
k only); ABRelu's b differentiates (a² + b²) and 2ab; Erf's b via β = b²,
∂k/∂β = a²(4/π) q12 (1 − βq11/r1 − βq22/r2)/√D; Sin's b, c, Rbf's γ, Exp's b
and Gaussian's b differentiate the exponentials / D^-½ directly.  Parameters
are those of the stored activation: Relu, LeakyRelu(α) and Abs are
ABRelu(a, b), Cos(a, b, c) is Sin(a, b, c + π/2), Sigmoid_like is
Erf(0.5, 1/2.402…, 0.5); ``parameter_names`` lists them as
"layer i ABRelu.a" (i the index in ``net.layers``).  Integer degrees
(Monomial, RectifiedMonomial) and parameter-free Gelu / Sign get no slot;
numeric (quadrature) activations have no derivative rule here.

Dense layers inside ``parallel`` branches (``Residual``, ``MscaleDNN2``, …)
are hyperparameters like the others, ordered depth-first in branch order
(:func:`dense_layers`); such networks, and networks with input maps or
``Scale``, get their W_std / b_std derivatives by Richardson-extrapolated
central differences of the kernel (no activation slots).

The log marginal likelihood of y (N, C) under GP(0, K), K = Σ + σ²I, and its
gradient (Rasmussen & Williams 2006, eqs. 2.30, 5.9):

    log p = -½ tr(Yᵀ K⁻¹ Y) - C/2 log|K| - NC/2 log 2π,
    ∂log p/∂θ = ½ tr((α αᵀ - C K⁻¹) ∂K/∂θ),  α = K⁻¹ Y.
"""
import dataclasses
import math

import numpy as np
import scipy.linalg as sla
from scipy.optimize import minimize

from . import _program as P
from ._checks import KernelRangeError, count, flag, one_kernel, real, real_array
from ._duals import _F_TAYLOR, _RHO_ONE, GELU_ANTIPODAL_Z
from ._jets import dual_derivatives
from .activations import Activation
from .combinators import parallel
from .empirical import _as_network
from .layers import Dense, Dropout, ExpNormalized, Flatten, Identity, LayerNorm, Network

__all__ = ["kernel_and_grad", "log_marginal_likelihood", "fit_hyperparameters",
           "dense_layers", "with_hyperparameters", "parameter_names", "activation_layers",
           "activation_parameters", "with_activation_parameters"]

INV_2PI = 0.5 / math.pi


# ---------------------------------------------------------------------------
# activation duals and their partial derivatives (NumPy, vectorised)
# ---------------------------------------------------------------------------

def _homog_degree(kind, p):
    if kind == P.K_ABRELU:
        return 1
    if kind in (P.K_MONOMIAL, P.K_RECTIFIED_MONOMIAL):
        return int(p[0])
    if kind == P.K_SIGN:
        return 0
    return None


def _angle(q1, q12, q2):
    """s = √(q11 q22), ρ, θ = acos ρ, sin θ and q11 q22 − q12² (bounded below)
    for the kinked kinds; ρ within 4 ulps of ±1 is ±1, as in the kernels
    (``_duals.correlation``)."""
    s = np.sqrt(q1) * np.sqrt(q2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(s > 0, q12 / np.where(s > 0, s, 1.0), 0.0)
    rho = np.where(np.abs(rho) < _RHO_ONE, rho, np.sign(rho))
    det = np.maximum(q1 * q2 - q12 * q12, 1e-300 + 1e-15 * q1 * q2)
    return s, rho, np.arccos(rho), np.sqrt((1 - rho) * (1 + rho)), det


def _rect_j(n, rho, theta, sin_t):
    """Cho & Saul's J_n(θ) (upward recurrence)."""
    psi = np.pi - theta
    j0 = psi
    if n == 0:
        return j0
    j1 = sin_t + psi * rho
    for m in range(2, n + 1):
        j0, j1 = j1, (2 * m - 1) * rho * j1 + (m - 1) ** 2 * sin_t ** 2 * j0
    return j1


def _mono_terms(n, q1, q12, q2):
    """E[uⁿvⁿ] = Σ_k A_{n,k} q12ᵏ (q11 q22)^{(n-k)/2} and its partials."""
    from ._duals import monomial_coefficients
    coef = monomial_coefficients(n)
    k = np.zeros(np.broadcast(q1, q12, q2).shape)
    k12 = np.zeros_like(k)
    k1 = np.zeros_like(k)
    for j in range(n % 2, n + 1, 2):
        m = (n - j) // 2
        base = coef[j] * (q1 * q2) ** m
        k = k + base * q12 ** j
        if j:
            k12 = k12 + j * coef[j] * (q1 * q2) ** m * q12 ** (j - 1)
        if m:
            k1 = k1 + coef[j] * m * q1 ** (m - 1) * q2 ** m * q12 ** j
    return k, k12, k1


def _poly_terms(n, q0, table, q1, q12, q2):
    """Σ_l B_l(q1 - q0) B_l(q2 - q0) q12ˡ (``_duals.dual_polynomial``) and its
    partials in q12 and q1."""
    shape = np.broadcast(q1, q12, q2).shape
    k, k12, k1 = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    if n < 0:
        return k, k12, k1
    t = np.asarray(table, dtype=np.float64)[:(n + 1) * (n // 2 + 1)].reshape(n + 1, -1)
    pv = np.polynomial.polynomial.polyval
    for l in range(n + 1):
        b1, b2 = pv(q1 - q0, t[l]), pv(q2 - q0, t[l])
        k = k + b1 * b2 * q12 ** l
        if l:
            k12 = k12 + l * b1 * b2 * q12 ** (l - 1)
        k1 = k1 + pv(q1 - q0, np.polynomial.polynomial.polyder(t[l])) * b2 * q12 ** l
    return k, k12, k1


def _same_point(q1, q12, q2):
    """Identical or antipodal pairs after the snap (``_duals.same_point``)."""
    return (q1 == q2) & (np.abs(q12) == q1)


def _det(det, exact, q1, q12, q2):
    """A determinant-like difference of products, replaced by its ``exact``
    value at the same point, where it would carry the rounding of q²
    (``_duals.same_point``)."""
    return np.where(_same_point(q1, q12, q2), exact, det)


def _erf_terms(b2, q1, q12, q2):
    """Erf's dual in normalised form (``_duals.dual_erf``): t_i = 1/(1 + 2b²q_ii),
    z = 2b²q12 √(t1 t2) (k = a²(2/π) asin z + c²) and g = 1 − z², bounded below
    by t1 + t2 − t1 t2, its value at the same point (taken there): the
    determinant det(I + 2b²Σ) = g/(t1 t2) without a product of variances
    (which overflows from q ~ 1e154) or the cancellation of
    (1 + 2b²q)² − 4b⁴q² (relative error ε·b²q at identical points)."""
    t1, t2 = 1 / (1 + 2 * b2 * q1), 1 / (1 + 2 * b2 * q2)
    rt = np.sqrt(t1) * np.sqrt(t2)
    z = np.clip(2 * b2 * q12 * rt, -1.0, 1.0)
    low = t1 + t2 - t1 * t2
    g = np.where(_same_point(q1, q12, q2), low, np.maximum((1 - z) * (1 + z), low))
    return t1, t2, rt, z, g


#: kinds whose (k, k̇) and partial derivatives come from the kernels' own
#: formulas evaluated in jet arithmetic (``_jets.dual_derivatives``: exact
#: up to rounding)
_BY_JETS = (P.K_GELU, P.K_GABOR)


def _layer_params(layer):
    """What ``_dual`` takes as ``p``: the params, and for polynomials also
    their coefficient tables."""
    return (layer.params, layer.tables) if layer.kind == P.K_POLYNOMIAL else layer.params


def dual_values(kind, p, q1, q12, q2):
    """(k, k̇) of activation ``kind`` (params ``p``); arrays broadcast."""
    return _dual(kind, p, q1, q12, q2, partials=False)[:2]


#: Kinds whose duals snap q12 to ±q11 at equal variances (``_duals.snap_q12``).
_SNAPPED = (P.K_ERF, P.K_GELU, P.K_SIN, P.K_RBF, P.K_EXP, P.K_GAUSSIAN, P.K_POLYNOMIAL,
            P.K_GABOR)


def _covariances(kind, q1, q12, q2):
    """float64 arrays of one shape; q12 snapped to ±q11 as the kernels do
    (``_duals.snap_q12``), so identical points stay identical here too."""
    q1, q12, q2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                        for a in (q1, q12, q2)))
    if kind in _SNAPPED:
        q12 = np.where((q1 == q2) & (np.abs(q12) >= _RHO_ONE * q1), np.copysign(q1, q12), q12)
    return q1, q12, q2


def _dual(kind, p, q1, q12, q2, partials=True):
    """k, k̇, ∂₁₁k, ∂₁₂k, ∂₁₁k̇, ∂₁₂k̇ (∂₂₂ by swapping q11 and q22)."""
    q1, q12, q2 = _covariances(kind, q1, q12, q2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if kind == P.K_ABRELU:
            a, b = p[0], p[1]
            s, rho, theta, sin_t, det = _angle(q1, q12, q2)
            psi = np.pi - theta
            k = s * INV_2PI * ((a * a + b * b) * (sin_t + psi * rho)
                               - 2 * a * b * (sin_t - theta * rho))
            kd = ((a * a + b * b) * psi + 2 * a * b * theta) * INV_2PI
            if not partials:
                return k, kd
            k12 = kd
            kd12 = (a - b) ** 2 * INV_2PI / np.sqrt(det)
        elif kind == P.K_SIGN:
            s, rho, theta, sin_t, det = _angle(q1, q12, q2)
            k = (2 / np.pi) * np.arcsin(rho)
            kd = np.zeros_like(k)
            if not partials:
                return k, kd
            k12 = (2 / np.pi) / np.sqrt(det)
            kd12 = np.zeros_like(k)
        elif kind == P.K_RECTIFIED_MONOMIAL:
            n = int(p[0])
            s, rho, theta, sin_t, det = _angle(q1, q12, q2)
            k = s ** n * _rect_j(n, rho, theta, sin_t) * INV_2PI
            if n == 0:      # step(0) = 0, as the kernels
                k = np.where((q1 == 0) | (q2 == 0), 0.0, k)
            kd = (n * n * s ** (n - 1) * _rect_j(n - 1, rho, theta, sin_t) * INV_2PI
                  if n else np.zeros_like(k))
            if not partials:
                return k, kd
            step12 = INV_2PI / np.sqrt(det)     # ∂/∂q12 of the step-function dual
            k12 = kd if n else step12
            if n == 0:
                kd12 = np.zeros_like(k)
            elif n == 1:
                kd12 = step12
            else:
                kd12 = n * n * (n - 1) ** 2 * s ** (n - 2) * _rect_j(n - 2, rho, theta,
                                                                     sin_t) * INV_2PI
        elif kind == P.K_MONOMIAL:
            n = int(p[0])
            k, k12, k1 = _mono_terms(n, q1, q12, q2)
            if n:
                kd0, kd12, kd1 = _mono_terms(n - 1, q1, q12, q2)
                kd, kd12, kd1 = n * n * kd0, n * n * kd12, n * n * kd1
            else:
                kd = kd12 = kd1 = np.zeros_like(k)
            if not partials:
                return k, kd
            return k, kd, k1, k12, kd1, kd12
        elif kind == P.K_POLYNOMIAL:   # p = (params, tables): see _layer_params
            (n, q0), (tk, tkd) = p[0][:2], p[1]
            n = int(n)
            k, k12, k1 = _poly_terms(n, q0, tk, q1, q12, q2)
            kd, kd12, kd1 = _poly_terms(n - 1, q0, tkd, q1, q12, q2)
            if not partials:
                return k, kd
            return k, kd, k1, k12, kd1, kd12
        elif kind == P.K_EXP_NORMALIZED:
            gamma, shift = p[0], p[1]
            s = np.sqrt(q1) * np.sqrt(q2)
            rho = np.clip(np.where(s > 0, q12 / np.where(s > 0, s, 1.0), 0.0), -1.0, 1.0)
            g = np.exp(gamma * (rho + shift))
            k, kd = s * g, gamma * g
            if not partials:
                return k, kd
            return (k, kd, g / (2 * q1) * (s - gamma * q12), kd,
                    -gamma * gamma * g * rho / (2 * q1), gamma * gamma * g / s)
        elif kind == P.K_LAYERNORM:    # r = 1/√(q + ε), 0 where q + ε = 0 (as the kernels)
            e1, e2 = q1 + p[0], q2 + p[0]
            r1 = np.where(e1 > 0, 1.0 / np.sqrt(np.where(e1 > 0, e1, 1.0)), 0.0)
            r2 = np.where(e2 > 0, 1.0 / np.sqrt(np.where(e2 > 0, e2, 1.0)), 0.0)
            kd = r1 * r2
            k = q12 * kd
            if not partials:
                return k, kd
            return k, kd, -0.5 * k * r1 * r1, kd, -0.5 * kd * r1 * r1, np.zeros_like(k)
        elif kind == P.K_ERF:
            a, b, c = p[0], p[1], p[2]
            b2 = b * b
            t1, t2, rt, z, g = _erf_terms(b2, q1, q12, q2)
            sg = np.sqrt(g)
            k = a * a * (2 / np.pi) * np.arctan2(z, sg) + c * c
            C = a * a * (4 / np.pi) * b2
            kd = C * rt / sg
            if not partials:
                return k, kd
            k1 = -(2 / np.pi) * a * a * b2 * z * t1 / sg
            kd1 = -C * b2 * t1 * (rt / (g * sg))       # (grouped: t1 t2 underflows)
            kd12 = 2 * C * b2 * z * (t1 / g) * (t2 / sg)
            return k, kd, k1, kd, kd1, kd12
        elif kind == P.K_SIN:        # as _duals.dual_sin: e∓ without their cancellation
            a, b, c = p[0], p[1], p[2]
            b2 = b * b
            x = b2 * q12
            e = np.exp(-0.5 * b2 * np.maximum(q1 + q2 - 2 * np.abs(q12), 0.0))
            m = np.expm1(-2 * np.abs(x))
            odd, even = np.where(x >= 0, -0.5 * m, 0.5 * m), np.where(x >= 0, 1 + m, 1.0)
            k = a * a * e * (odd + even * math.sin(c) ** 2)
            kd = a * a * b2 * e * (odd + even * math.cos(c) ** 2)
            if not partials:
                return k, kd
            return k, kd, -0.5 * b2 * k, kd, -0.5 * b2 * kd, b2 * b2 * k
        elif kind == P.K_RBF:
            g = p[0]
            k = np.exp(-g * (q1 + q2 - 2 * q12))
            kd = 2 * g * k
            if not partials:
                return k, kd
            return k, kd, -g * k, kd, -g * kd, 2 * g * kd
        elif kind == P.K_EXP:
            a, b = p[0], p[1]
            b2 = b * b
            k = a * a * np.exp(b2 * (0.5 * (q1 + q2) + q12))
            kd = b2 * k
            if not partials:
                return k, kd
            return k, kd, 0.5 * b2 * k, kd, 0.5 * b2 * kd, b2 * kd
        elif kind == P.K_GAUSSIAN:
            a, b = p[0], p[1]
            t1, t2 = 1 - 2 * b * q1, 1 - 2 * b * q2
            D = t1 * t2 - 4 * b * b * q12 * q12
            low = 1 - 2 * b * (q1 + q2)     # D >= low for b < 0; equal at the same point
            D = _det(np.maximum(D, low) if b < 0 else D, low, q1, q12, q2)
            bad = (t1 <= 0) | (t2 <= 0) | (D <= 0)
            D = np.where(bad, np.nan, D)
            k = np.where(bad, np.inf, a * a * D ** -0.5)
            kd = np.where(bad, np.inf, 4 * a * a * b * b * q12 * D ** -1.5)
            if not partials:
                return k, kd
            k1 = a * a * b * t2 * D ** -1.5
            # (no D^-2.5 or q12²: they underflow / overflow where these do not)
            kd1 = 12 * a * a * b ** 3 * (q12 / D) * (t2 / D) / np.sqrt(D)
            kd12 = 4 * a * a * b * b * D ** -1.5 * (1 + 12 * (b * q12) * (b * q12 / D))
            return k, kd, k1, kd, kd1, kd12
        elif kind in _BY_JETS:
            k, kd, k1, _, kd1, kd12 = dual_derivatives(kind, p, q1, q12, q2, (1, 0, 0),
                                                       (0, 1, 0))
            return k, kd, k1, kd, kd1, kd12
        else:
            raise NotImplementedError(f"no derivative rule for activation kind {kind}")
        # kinked kinds, k = (q11 q22)^(n/2) f(ρ): not differentiable in q12 at
        # |ρ| = 1 (f' infinite); the pairs there (identical, antipodal or
        # parallel points) keep |ρ| = 1 as the hyperparameters change (biased
        # layers move them off it only from b_std = 0, whose derivative the
        # chain rule's factor 2 b_std zeroes), so along their tangents dρ = 0
        # and the partials are those of (q11 q22)^(n/2) f(±1): k12 = kd12 = 0
        edge = np.abs(rho) == 1
        k12, kd12 = np.where(edge, 0.0, k12), np.where(edge, 0.0, kd12)
        # Euler's relation for the variance derivatives (homogeneous of degree n)
        n = _homog_degree(kind, p)
        k1 = (n * k - q12 * k12) / (2 * q1)
        kd1 = ((n - 1) * kd - q12 * kd12) / (2 * q1)
        return k, kd, k1, k12, kd1, kd12


def _gelu_same_point(q, sign):
    """Gelu's k, k̇ at q11 = q22 = q, q12 = ±q (``sign``) and their derivatives
    in q along that line, in closed form (``_duals.dual_gelu``): with p = 1 + q,
    D = 1 + 2q, h = (q/p)², ψₐ = acos(q/p) = 2 asin sqrt(1/(2p)) and ψ = π − ψₐ
    (identical points) or ψₐ (antipodal ones),
      2πk   = ±qψ + h (√D + 1/√D),
      2πk'  = ±ψ + q/(p√D) + 2q (√D + 1/√D)/p³ + 2qh/D^(3/2),
      2πk̇  = ψ ± q (1/D + 2/p)/√D,
      2πk̇' = ±[(3 + q)/(p²√D) + D^(−3/2) − 3q D^(−5/2) − 2q/(p D^(3/2))];
    at antipodal points with z = −q/p below ``GELU_ANTIPODAL_Z`` (q > 9, as the
    kernels), where ±qψ and h√D cancel (ε·q^1.5), with F(ψ) = sin ψ − ψ cos ψ
    from its series (``_F_TAYLOR``):
      2πk   = p F(ψ) − (1 + 3q)/(p√D),
      2πk'  = F(ψ) − ψ/p − 2/(p²√D) + (1 + 3q)/(p D^(3/2)).
    Terms stay within a few times the results (the jets' general form loses
    ε·q^1.5 near the antipode and overflows from q ~ 1e154)."""
    q = np.asarray(q, dtype=np.float64)
    p, D = 1 + q, 1 + 2 * q
    rD, u, v = np.sqrt(D), q / p, q / D         # (ratios: no overflow up to q ~ 1e308)
    psi_a = 2 * np.arcsin(np.sqrt(0.5 / p))
    psi = np.pi - psi_a if sign > 0 else psi_a
    h = u * u
    k = sign * q * psi + h * (rD + 1 / rD)
    dk = sign * psi + u / rD + 2 * u * (rD + 1 / rD) / p / p + 2 * v * h / rD
    if sign < 0:
        near = -u < GELU_ANTIPODAL_Z
        F = psi ** 3 * np.polynomial.polynomial.polyval(psi * psi, _F_TAYLOR)
        w = (1 + 3 * q) / p
        k = np.where(near, p * F - w / rD, k)
        dk = np.where(near, F - psi / p - 2 / p / p / rD + w / D / rD, dk)
    kd = psi + sign * (v + 2 * u) / rD
    dkd = sign * (((3 + q) / p / p + 1 / D - 3 * v / D - 2 * u / D) / rD)
    return k * INV_2PI, kd * INV_2PI, dk * INV_2PI, dkd * INV_2PI


def _dual_diag(kind, p, q, sign=1.0):
    """k and k̇ at q11 = q22 = q, q12 = ±q (``sign``: a point with itself, or
    with its antipode), and their derivatives along that line, (1, ±1, 1)."""
    q = np.asarray(q, dtype=np.float64)
    n = _homog_degree(kind, p)
    if n is not None and kind != P.K_MONOMIAL:
        k1, kd1 = (np.asarray(v, dtype=np.float64)
                   for v in dual_values(kind, p, 1.0, sign, 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            k = k1 * q ** n
            dk = n * k1 * q ** (n - 1) if n else np.zeros_like(q)
            kd = kd1 * q ** (n - 1) if n else np.zeros_like(q)
            dkd = (n - 1) * kd1 * q ** (n - 2) if n >= 2 else np.zeros_like(q)
        # at q = 0 the kernels' own values (correlation 0 there: sign(0) = 0)
        k0, kd0 = dual_values(kind, p, 0.0, 0.0, 0.0)
        zero = q == 0
        return np.where(zero, k0, k), np.where(zero, kd0, kd), dk, dkd
    if kind == P.K_GELU:
        return _gelu_same_point(q, sign)
    if kind in _BY_JETS:
        k, kd, dk, _, dkd, _ = dual_derivatives(kind, p, q, sign * q, q, (1, sign, 1),
                                                (0, 0, 0))
        return k, kd, dk, dkd
    # the derivatives along the line in closed form where the sum of the
    # partials 2∂₁₁ ± ∂₁₂ cancels (relative error ε·b²q); with t = 1/(1 + 2b²q),
    # E = e^(−2b²q): Erf: k = a²(2/π) asin(±(1 − t)) + c², k̇ = a²(4/π)b²√(t/(2 − t));
    # Sin: k = (a²/2)(1 − E cos 2c) at +, (a²/2)(E − cos 2c) at −, k̇ likewise
    # with b² and + (k̇' = ∓b² k'); Gaussian: a²(1 − 4bq)^(−1/2) and
    # ±4a²b²q (1 − 4bq)^(−3/2) (D = 1 − 4bq on both lines)
    if kind in (P.K_ERF, P.K_SIN, P.K_GAUSSIAN):
        k, kd = dual_values(kind, p, q, sign * q, q)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if kind == P.K_ERF:
            a, b2 = p[0], p[1] * p[1]
            t = 1 / (1 + 2 * b2 * q)
            r = t / (2 - t)
            return (k, kd, sign * (4 / np.pi) * a * a * b2 * t * np.sqrt(r),
                    -(8 / np.pi) * a * a * b2 * b2 * r * np.sqrt(r))
        if kind == P.K_SIN:
            a, b2, c = p[0], p[1] * p[1], p[2]
            dk = a * a * b2 * np.exp(-2 * b2 * q) * (math.cos(2 * c) if sign > 0 else -1.0)
            return k, kd, dk, -sign * b2 * dk
        if kind == P.K_GAUSSIAN:
            a, b = p[0], p[1]
            D = 1 - 4 * b * q
            return (k, kd, 2 * a * a * b * D ** -1.5,
                    sign * 4 * a * a * b * b * D ** -1.5 * (1 + 2 * b * q) / D)
    k, kd, k1, k12, kd1, kd12 = _dual(kind, p, q, sign * q, q)
    return k, kd, 2 * k1 + sign * k12, 2 * kd1 + sign * kd12


# ---------------------------------------------------------------------------
# derivatives of the duals with respect to the activation's own parameters
# ---------------------------------------------------------------------------

#: differentiable continuous parameters of each closed-form kind, in the
#: order of ``Activation.params`` (integer degrees and parameter-free kinds
#: have none)
ACT_PARAM_NAMES = {
    P.K_ABRELU: ("a", "b"),
    P.K_ERF: ("a", "b", "c"),
    P.K_SIN: ("a", "b", "c"),
    P.K_RBF: ("gamma",),
    P.K_EXP: ("a", "b"),
    P.K_GAUSSIAN: ("a", "b"),
}


def _act_param_names(layer):
    return ACT_PARAM_NAMES.get(layer.kind, ())


def _dual_param_partials(kind, p, q1, q12, q2):
    """(∂k/∂p_m, ∂k̇/∂p_m) for each differentiable parameter p_m of ``kind``
    at fixed covariances (q11, q12, q22): two lists of arrays, closed forms."""
    q1, q12, q2 = _covariances(kind, q1, q12, q2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if kind == P.K_ABRELU:
            a, b = p[0], p[1]
            s, rho, theta, sin_t, _ = _angle(q1, q12, q2)
            psi = np.pi - theta
            u, w = sin_t + psi * rho, sin_t - theta * rho
            ka = s * INV_2PI * (2 * a * u - 2 * b * w)
            kb = s * INV_2PI * (2 * b * u - 2 * a * w)
            kda = (2 * a * psi + 2 * b * theta) * INV_2PI
            kdb = (2 * b * psi + 2 * a * theta) * INV_2PI
            return [ka, kb], [kda, kdb]
        if kind == P.K_ERF:
            a, b, c = p[0], p[1], p[2]
            b2 = b * b
            t1, t2, rt, z, g = _erf_terms(b2, q1, q12, q2)
            sg = np.sqrt(g)
            # with β = b²: ∂k/∂β = a²(2/π) q12 (t1 + t2) √(t1 t2) / √g and
            # ∂k̇/∂β = a²(2/π) √(t1 t2) (t1 + t2) / g^(3/2) (g = 1 − z²)
            ka = 2 * a * (2 / np.pi) * np.arctan2(z, sg)
            kda = 2 * a * (4 / np.pi) * b2 * rt / sg
            kb = a * a * (4 / np.pi) * b * q12 * rt * (t1 + t2) / sg
            kdb = a * a * (4 / np.pi) * b * (rt / (g * sg)) * (t1 + t2)
            kc = np.full_like(q12, 2 * c)
            return [ka, kb, kc], [kda, kdb, np.zeros_like(q12)]
        if kind == P.K_SIN:
            a, b, c = p[0], p[1], p[2]
            b2 = b * b
            S, T = q1 + q2 - 2 * q12, q1 + q2 + 2 * q12
            em = np.exp(-0.5 * b2 * S)
            er = np.exp(-0.5 * b2 * T)
            ep = er * math.cos(2 * c)
            h = 0.5 * a * a
            ka, kda = a * (em - ep), a * b2 * (em + ep)
            dem, dep = -b * S * em, -b * T * ep
            kb = h * (dem - dep)
            kdb = h * (2 * b * (em + ep) + b2 * (dem + dep))
            dep_c = -2 * math.sin(2 * c) * er
            return [ka, kb, -h * dep_c], [kda, kdb, h * b2 * dep_c]
        if kind == P.K_RBF:
            g = p[0]
            S = q1 + q2 - 2 * q12
            k = np.exp(-g * S)
            kg = -S * k
            return [kg], [2 * k + 2 * g * kg]
        if kind == P.K_EXP:
            a, b = p[0], p[1]
            b2 = b * b
            E = 0.5 * (q1 + q2) + q12
            e = np.exp(b2 * E)
            k = a * a * e
            ka, kb = 2 * a * e, 2 * b * E * k
            return [ka, kb], [b2 * ka, 2 * b * k + b2 * kb]
        if kind == P.K_GAUSSIAN:
            a, b = p[0], p[1]
            t1, t2 = 1 - 2 * b * q1, 1 - 2 * b * q2
            D = _det(t1 * t2 - 4 * b * b * q12 * q12, 1 - 2 * b * (q1 + q2), q1, q12, q2)
            bad = (t1 <= 0) | (t2 <= 0) | (D <= 0)
            D = np.where(bad, np.nan, D)
            dD = _det(-2 * q1 * t2 - 2 * q2 * t1 - 8 * b * q12 * q12, -2 * (q1 + q2), q1, q12, q2)
            ka = 2 * a * D ** -0.5
            kda = 8 * a * b * b * q12 * D ** -1.5
            kb = -0.5 * a * a * D ** -1.5 * dD
            kdb = a * a * b * q12 * D ** -1.5 * (8 - 6 * b * dD / D)
            return [ka, kb], [kda, kdb]
    return [], []


def _dual_diag_param_partials(kind, p, q):
    """Parameter partials of the diagonal map q ↦ k(q, q, q), k̇(q, q, q)."""
    q = np.asarray(q, dtype=np.float64)
    if kind == P.K_ABRELU:
        # correlation exactly 1 (θ = 0): k = q(a² + b²)/2, k̇ = (a² + b²)/2;
        # evaluating the general form at q12 = q would amplify rounding in θ
        a, b = p[0], p[1]
        one = np.ones_like(q)
        return [a * q, b * q], [a * one, b * one]
    return _dual_param_partials(kind, p, q, q, q)


def _rebuild_activation(layer, params):
    """The same activation with new parameters (through its factory, so that
    its finite-width forward function matches)."""
    from . import activations as A
    factory = {P.K_ABRELU: A.ABRelu, P.K_ERF: A.Erf, P.K_SIN: A.Sin, P.K_RBF: A.Rbf,
               P.K_EXP: A.Exp, P.K_GAUSSIAN: A.Gaussian}[layer.kind]
    return factory(*(float(v) for v in params))


def activation_layers(net):
    """Indices of the activation layers with differentiable parameters."""
    net = _as_network(net)
    return [i for i, l in enumerate(net.layers)
            if isinstance(l, Activation) and _act_param_names(l)]


def activation_parameters(net):
    """Current values of the differentiable activation parameters, in the
    order of :func:`parameter_names` (after the Dense ones)."""
    net = _as_network(net)
    return np.array([v for i in activation_layers(net)
                     for v in net.layers[i].params[:len(_act_param_names(net.layers[i]))]],
                    dtype=np.float64)


def with_activation_parameters(net, values):
    """A copy of ``net`` whose differentiable activation parameters are
    ``values`` (flat, in the order of :func:`activation_parameters`)."""
    net = _as_network(net)
    layers = list(net.layers)
    counts = {i: len(_act_param_names(layers[i])) for i in activation_layers(net)}
    n = sum(counts.values())
    values = real_array("values", values, finite=True,
                        what=f"{n} real numbers (activation_parameters' order)").ravel()
    if n != values.size:
        raise ValueError(f"values: expected {n} activation parameters, got {values.size}")
    o = 0
    for i, m in counts.items():
        new = list(layers[i].params)
        new[:m] = values[o:o + m]
        layers[i] = _rebuild_activation(layers[i], new)
        o += m
    return net.with_layers(layers)


def parameter_names(net, shared=True, activation_params=False):
    """Names of the entries of ``kernel_and_grad``'s dK (and of the
    log-marginal-likelihood gradient, which appends "noise").

    Dense parameters come first: ["W_std", "b_std"] when shared, else
    "layer i Dense.W_std" for every Dense layer then "layer i Dense.b_std"
    (i the 0-based index in ``net.layers``; "layer i branch b layer j" for
    layer j of branch b of the ``parallel`` layer i), in the order of
    :func:`dense_layers`.  With ``activation_params`` they are followed by
    "layer i <Name>.<param>" for each differentiable parameter of each
    activation layer, named as stored: Relu, LeakyRelu and Abs are
    ABRelu(a, b); Cos(a, b, c) is Sin(a, b, c + π/2); Sigmoid_like is
    Erf(a, b, c).
    """
    net = _as_network(net)
    shared = flag("shared", shared)
    if flag("activation_params", activation_params):
        _check_activation_params(net)
    if shared:
        names = ["W_std", "b_std"]
    else:
        where = [_path_name(p) for p in dense_layers(net)]
        names = [f"{w} Dense.W_std" for w in where] + [f"{w} Dense.b_std" for w in where]
    if activation_params:
        names += [f"layer {i} {net.layers[i].name}.{pn}" for i in activation_layers(net)
                  for pn in _act_param_names(net.layers[i])]
    return names


# ---------------------------------------------------------------------------
# forward-mode recursion
# ---------------------------------------------------------------------------

def dense_layers(net):
    """Positions of the Dense layers of ``net``, depth-first through
    ``parallel`` branches in branch order: i for ``net.layers[i]``, and
    (i, b, j) for layer j of branch b of the parallel layer ``net.layers[i]``
    (deeper branches append further (b, j) pairs).  Per-layer W_std / b_std
    values and gradients follow this order."""
    net = _as_network(net)

    def walk(layers, prefix):
        for i, layer in enumerate(layers):
            if isinstance(layer, Dense):
                yield prefix + (i,)
            elif isinstance(layer, parallel):
                for b, branch in enumerate(layer.branches):
                    yield from walk(branch, prefix + (i, b))
    return [p[0] if len(p) == 1 else p for p in walk(net.layers, ())]


def _dense(net):
    """The Dense layers of ``net`` in the order of :func:`dense_layers`."""
    out = []
    _map_dense(net.layers, lambda l: out.append(l) or l)
    return out


def _map_dense(layers, fn):
    """``layers`` with every Dense layer replaced by ``fn(layer)``, called in
    the order of :func:`dense_layers`."""
    out = []
    for layer in layers:
        if isinstance(layer, Dense):
            layer = fn(layer)
        elif isinstance(layer, parallel):
            branches = [_map_dense(b, fn) for b in layer.branches]
            layer = parallel(*(b[0] if len(b) == 1 else Network(b) for b in branches))
        out.append(layer)
    return out


def _path_name(path):
    """"layer i" or "layer i branch b layer j" for a :func:`dense_layers` entry."""
    path = (path,) if isinstance(path, (int, np.integer)) else path
    return f"layer {path[0]}" + "".join(f" branch {b} layer {j}"
                                       for b, j in zip(path[1::2], path[2::2]))


def with_hyperparameters(net, W_std, b_std):
    """A copy of ``net`` whose Dense layers, those inside ``parallel``
    branches included, get W_std / b_std: scalars shared by all Dense layers,
    or one value per Dense layer in the order of :func:`dense_layers`.
    ``b_std=None`` (or a None entry) means no bias, as in ``Dense``; a number,
    0 included, gives the layer a bias (in the standard parameterization a
    bias of std 0 still adds 1 per layer to the NTK)."""
    net = _as_network(net)
    n = len(dense_layers(net))
    values = iter(zip(_per_layer("W_std", W_std, n),
                      _per_layer("b_std", b_std, n, allow_none=True)))

    def replace(layer):
        w, b = next(values)
        return dataclasses.replace(layer, W_std=w, b_std=b)
    return net.with_layers(_map_dense(net.layers, replace))


def _per_layer(name, value, n, allow_none=False):
    """n values (floats >= 0, or None when ``allow_none``) from a scalar, a
    length-1 or a length-n sequence, or an error naming ``name``."""
    a = np.asarray(value, dtype=object) if value is not None else np.asarray(None)
    if a.ndim > 1 or (a.ndim == 1 and a.size not in (1, n)):
        raise ValueError(f"{name} must be a number >= 0 or one per Dense layer ({n}), "
                         f"got {value!r}")
    out = []
    for i, v in enumerate(a.ravel()):
        where = name if a.ndim == 0 else f"{name}[{i}]"
        if v is None:
            if not allow_none:
                raise ValueError(f"{where} must be a number >= 0, got None")
            out.append(None)
        else:
            out.append(real(where, v, lower=0, squared=True))
    return out * n if len(out) == 1 else out


#: layers that the forward-mode recursion of :func:`kernel_and_grad` handles
_FORWARD = (Dense, Activation, LayerNorm, ExpNormalized, Dropout, Identity, Flatten)


def _check_activation_params(net):
    """Activation parameters are differentiated only in serial networks of
    closed-form activations: else a ValueError naming the first layer that
    is not supported."""
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Activation) and layer.kind == P.K_NUMERIC:
            raise ValueError(
                f"{layer!r} has no closed-form dual: activation parameters are "
                "differentiated only in networks of closed-form activations (pass "
                "activation_params=False to differentiate W_std and b_std)")
        if not isinstance(layer, _FORWARD):
            raise ValueError(
                f"net.layers[{i}] is {layer!r}: activation parameters are differentiated "
                "only in serial networks (Dense, activation, LayerNorm, ExpNormalized, "
                "Dropout, Identity, Flatten layers); pass activation_params=False to "
                "differentiate W_std and b_std")


@np.errstate(over="ignore", invalid="ignore")   # overflow: one KernelRangeError below
def kernel_and_grad(net, x, get="nngp", shared=True, activation_params=False):
    """K(x, x) and its derivatives with respect to each Dense layer's W_std
    and b_std (and, on request, the activations' parameters).

    Returns ``(K, dK)``, K (N, N) and dK (P, N, N): with ``shared=True``
    P = 2 (d/dW_std, d/db_std of a value shared by all Dense layers, i.e. the
    sum over layers); otherwise P = 2L ordered [W_std_1..L, b_std_1..L], the
    L Dense layers in the order of :func:`dense_layers` (through ``parallel``
    branches).  A layer with ``b_std=None`` has no bias and stays so: its
    b_std slot is 0 (the derivative at b_std = 0; the kernel depends on
    b_std²).

    With ``activation_params=True``, dK gets one more slot per differentiable
    continuous parameter of each activation layer (one per layer, never
    shared), after the Dense slots: see :func:`parameter_names` for the order
    and names.  Integer degrees (Monomial, RectifiedMonomial) and
    parameter-free activations (Gelu, Sign) contribute no slot; numerically
    integrated activations (kind K_NUMERIC) have no closed-form dual to
    differentiate: networks with them, and networks with layers other than
    Dense, activations, LayerNorm, ExpNormalized, Dropout, Identity and
    Flatten (``parallel`` branches, ``Scale``, input maps), get W_std / b_std
    derivatives by Richardson-extrapolated central differences of the kernel
    (:func:`_kernel_grad_by_differences`), and no activation slots.
    """
    from .kernel import check_inputs
    get = one_kernel(get)
    if not isinstance(net, Network):
        raise TypeError(f"net must be an infkernel Network, got {type(net).__name__}")
    shared = flag("shared", shared)
    if flag("activation_params", activation_params):
        _check_activation_params(net)
    x = check_inputs(x, "x")
    n, d = x.shape
    L = len(dense_layers(net))
    if L == 0:
        raise ValueError("net has no Dense layer: nothing to differentiate")
    if not all(isinstance(l, _FORWARD) and getattr(l, "kind", None) != P.K_NUMERIC
               for l in net.layers):
        return _kernel_grad_by_differences(net, x, get, shared)
    act_slot, M = {}, 0
    if activation_params:
        for i in activation_layers(net):
            act_slot[i] = 2 * L + M
            M += len(_act_param_names(net.layers[i]))
    Q = x @ x.T / d
    v = np.einsum("ij,ij->i", x, x) / d
    TH = np.zeros_like(Q)
    dQ = np.zeros((2 * L + M, n, n))
    dTH = np.zeros_like(dQ)
    dv = np.zeros((2 * L + M, n))
    ii = np.diag_indices(n)
    width, j, gaussian = d, 0, False
    for li, layer in enumerate(net.layers):
        if isinstance(layer, Dense):
            w2 = layer.W_std ** 2
            b2 = 0.0 if layer.b_std is None else layer.b_std ** 2
            if layer.parameterization == "ntk":
                c_old, c_new, c_one = 0.0, 1.0, 0.0
            else:
                c_old, c_new, c_one = width / layer.s[0], 0.0, 0.0 if layer.b_std is None else 1.0
            Qn = w2 * Q + b2
            dQn = w2 * dQ
            dQn[j] += Q                     # ∂/∂w2
            dQn[L + j] += 1.0               # ∂/∂b2
            dTH = c_old * dQ + c_new * dQn + w2 * dTH
            dTH[j] += TH
            TH = c_old * Q + c_new * Qn + w2 * TH + c_one
            dv = w2 * dv
            dv[j] += v
            dv[L + j] += 1.0
            v = w2 * v + b2
            Q, dQ = Qn, dQn
            width, gaussian = layer.width, True
            j += 1
        elif isinstance(layer, (Activation, LayerNorm, ExpNormalized)):
            if not gaussian:
                raise ValueError(f"{layer!r} must follow a Dense layer")
            kind, p = layer.kind, _layer_params(layer)
            q1, q2 = v[:, None], v[None, :]
            k, kd, k1, k12, kd1, kd12 = _dual(kind, p, q1, Q, q2)
            _, _, k2, _, kd2, _ = _dual(kind, p, q2, Q, q1)
            dTH0 = dTH
            dv1, dv2 = dv[:, :, None], dv[:, None, :]
            # zero-variance points only: partials infinite or 0/0 meet zero tangents
            mul = _times if (v == 0).any() else np.multiply
            with np.errstate(invalid="ignore", over="ignore"):
                dQn = mul(k1, dv1) + mul(k12, dQ) + mul(k2, dv2)
                dTH = mul(kd, dTH) + TH * (mul(kd1, dv1) + mul(kd12, dQ) + mul(kd2, dv2))
            kdg, kddg, dkg, dkdg = _dual_diag(kind, p, v)
            # identical points (a duplicated row) and antipodal ones (x, −x)
            # off the diagonal: k1·dv1 + k12·dQ + k2·dv2 cancels there
            # (relative error ~ε·b²q for the smooth duals, ~ε·q^1.5 for Gelu's
            # jets): the values and derivatives along q12 = ±q instead (the
            # points' tangent dv), plus the partials in q12 times what leaves
            # that line, dQ ∓ dv: rounding, but for a bias too small to move
            # the pair off ±q in float64 (where a partial the jets could not
            # form, inf or NaN, counts as 0)
            for sign in (1.0, -1.0):
                si, sj = np.nonzero((q1 == q2) & (sign * Q >= _RHO_ONE * q1) & (q1 > 0))
                if not si.size:
                    continue
                line = (kdg, kddg, dkg, dkdg) if sign > 0 else _dual_diag(kind, p, v, sign)
                k_s, kd_s, dk_s, dkd_s = (a[si] for a in line)
                t, off = dv[:, si], dQ[:, si, sj] - sign * dv[:, si]
                k12_s, kd12_s = (np.where(np.isfinite(a[si, sj]), a[si, sj], 0.0)
                                 for a in (k12, kd12))
                k[si, sj], kd[si, sj] = k_s, kd_s
                dQn[:, si, sj] = dk_s * t + k12_s * off
                dTH[:, si, sj] = (dkd_s * t + kd12_s * off) * TH[si, sj] + kd_s * dTH0[:, si, sj]
            th_q12, th_full = Q, TH
            th_diag = TH[ii].copy()
            dth_diag = dTH0[:, ii[0], ii[1]].copy()
            TH = kd * TH
            TH[ii] = kddg * th_diag
            dTH[:, ii[0], ii[1]] = mul(dkdg, dv) * th_diag + mul(kddg, dth_diag)
            Q = k
            Q[ii] = kdg
            dQn[:, ii[0], ii[1]] = mul(dkg, dv)
            dQ = dQn
            dv = mul(dkg, dv)
            if li in act_slot:
                # the parameter enters here only: its incoming tangents are 0,
                # so the local partial at fixed covariances is the whole tangent
                s0 = act_slot[li]
                pk, pkd = _dual_param_partials(kind, p, q1, th_q12, q2)
                gk, gkd = _dual_diag_param_partials(kind, p, v)
                with np.errstate(invalid="ignore", over="ignore"):
                    for m in range(len(pk)):
                        dQ[s0 + m] = pk[m]
                        dQ[s0 + m][ii] = gk[m]
                        dTH[s0 + m] = th_full * pkd[m]
                        dTH[s0 + m][ii] = th_diag * gkd[m]
                        dv[s0 + m] = gk[m]
            v = kdg
            gaussian = isinstance(layer, LayerNorm)   # a normalised Gaussian stays one
        elif isinstance(layer, Dropout):
            if layer.training:       # a point's entry with itself, times 1/rate
                f = 1.0 / layer.rate
                Q[ii] *= f
                TH[ii] *= f
                dQ[:, ii[0], ii[1]] *= f
                dTH[:, ii[0], ii[1]] *= f
                v, dv = f * v, f * dv
                gaussian = False
        elif isinstance(layer, (Identity, Flatten)):
            continue
        else:
            raise NotImplementedError(f"kernel_and_grad: layer {layer!r} is not supported "
                                      "(serial Dense / activation / LayerNorm / "
                                      "ExpNormalized / Dropout / Identity networks only)")
    K, dK = (Q, dQ) if get == "nngp" else (TH, dTH)
    # chain rule: d/dW_std = 2 W_std d/dw2, d/db_std = 2 b_std d/db2
    dense = _dense(net)
    ws = np.array([l.W_std for l in dense])
    bs = np.array([0.0 if l.b_std is None else l.b_std for l in dense])
    scale = np.concatenate([2.0 * ws, 2.0 * bs, np.ones(M)])
    # a zero W_std / b_std: the kernel is even in it, its derivative there 0
    # (the tangent in w², b² may be infinite at a zero-variance point)
    dK = (_times if (scale == 0).any() else np.multiply)(dK, scale[:, None, None])
    if shared:
        dK = np.concatenate([dK[:L].sum(0)[None], dK[L:2 * L].sum(0)[None], dK[2 * L:]])
    if not (np.isfinite(K).all() and np.isfinite(dK).all()):
        raise KernelRangeError(
            f"kernel_and_grad: the {get} kernel or its derivatives overflow float64 "
            f"({np.count_nonzero(~np.isfinite(K))} of {K.size} kernel entries, "
            f"{np.count_nonzero(~np.isfinite(dK))} of {dK.size} derivative entries not "
            "finite): reduce W_std / b_std or rescale x")
    # K itself from net.kernel: the same values, exact near ρ = 1 where this
    # recursion's kinked duals, their angle taken from q12, lose digits
    return np.asarray(net.kernel(x, None, get)), dK


def _times(partial, tangent):
    """partial · tangent, and 0 where the tangent is 0: at a point of zero
    variance (a zero input without bias, W_std = 0) a partial such as
    ∂k/∂q11 ∝ q11^(-1/2) is infinite or 0/0, and its tangent vanishes (q11 is
    a smooth function >= 0 of the hyperparameters, at its minimum)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(tangent == 0, 0.0, partial * tangent)


def _kernel_grad_by_differences(net, x, get, shared):
    """``kernel_and_grad`` (W_std, b_std slots) by central differences of the
    kernel, Richardson-extrapolated: (4 D(h/2) − D(h))/3 with steps h = 1e-3
    of the values, truncation O(h⁴) ~ 1e-12, and the quadrature's certified
    1e-10 amplified to ≲ 1e-7 of the kernel's scale.  The kernel depends on
    W_std², b_std² (steps below 0 are mirrored); ``b_std=None`` layers keep no
    bias, their slots are 0 (∂/∂b at b = 0 of an even function)."""
    dense = _dense(net)
    L = len(dense)
    biased = [l.b_std is not None for l in dense]
    theta = np.array([l.W_std for l in dense]
                     + [0.0 if l.b_std is None else l.b_std for l in dense])

    def kernel(t):
        t = np.abs(t)
        m = with_hyperparameters(net, t[:L], [b if h else None for b, h in zip(t[L:], biased)])
        return np.asarray(m.kernel(x, None, get), dtype=np.float64)

    blocks = ([np.r_[np.ones(L), np.zeros(L)], np.r_[np.zeros(L), np.ones(L)]] if shared
              else list(np.eye(2 * L)))
    dK = np.empty((len(blocks),) + (x.shape[0],) * 2)
    for m, e in enumerate(blocks):
        if not (e[:L].any() or e[L:][biased].any()):
            dK[m] = 0.0             # b_std of bias-free layers only
            continue
        h = 1e-3 * (np.abs(theta[e > 0]).mean() + 1e-3)

        def diff(step):
            return (kernel(theta + step * e) - kernel(theta - step * e)) / (2 * step)
        dK[m] = (4 * diff(h / 2) - diff(h)) / 3
    return np.asarray(net.kernel(x, None, get), dtype=np.float64), dK


# ---------------------------------------------------------------------------
# log marginal likelihood
# ---------------------------------------------------------------------------

def _lml_from(K, dK, y, noise):
    """(log p, ∂log p/∂θ for each dK, ∂log p/∂noise)."""
    n = K.shape[0]
    Y = y.reshape(n, -1)
    C = Y.shape[1]
    A = K + noise * np.eye(n)
    try:
        c = sla.cho_factor(A, lower=True, check_finite=False)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        raise np.linalg.LinAlgError("K + noise·I is not positive definite; increase noise")
    alpha = sla.cho_solve(c, Y, check_finite=False)
    logdet = 2.0 * np.log(np.diagonal(c[0])).sum()
    lml = -0.5 * np.einsum("ij,ij->", Y, alpha) - 0.5 * C * logdet \
        - 0.5 * n * C * math.log(2 * math.pi)
    W = alpha @ alpha.T - C * sla.cho_solve(c, np.eye(n), check_finite=False)
    grad = 0.5 * np.einsum("ij,pji->p", W, dK) if dK is not None else None
    gnoise = 0.5 * np.trace(W)
    return lml, grad, gnoise


def log_marginal_likelihood(net, x, y, noise=1e-6, get="nngp", shared=True,
                            eval_gradient=False, activation_params=False):
    """log p(y | x) under GP(0, K + noise·I), K the NNGP (or NTK) of ``net``.

    ``y`` is (N,) or (N, C) (independent outputs sharing K).  With
    ``eval_gradient`` returns ``(lml, grad)``, grad = ∂/∂[W_std, b_std] (shared)
    or ∂/∂[W_std_1..L, b_std_1..L], then (with ``activation_params``) ∂/∂ each
    differentiable activation parameter, followed by ∂/∂noise; the names are
    ``parameter_names(net, shared, activation_params) + ["noise"]``.
    """
    from .kernel import check_inputs
    from .predict import _check_y
    if not isinstance(net, Network):
        raise TypeError(f"net must be an infkernel Network, got {type(net).__name__}")
    get = one_kernel(get)
    x = check_inputs(x, "x")
    if len(x) == 0:
        raise ValueError("x has no rows: the likelihood of no data is not defined")
    y = _check_y(y, len(x), "y")
    noise = real("noise", noise, lower=0)
    shared = flag("shared", shared)
    activation_params = flag("activation_params", activation_params)
    if flag("eval_gradient", eval_gradient):
        K, dK = kernel_and_grad(net, x, get, shared, activation_params)
    else:
        K, dK = np.asarray(net.kernel(x, None, get)), None
    with np.errstate(over="ignore", invalid="ignore"):
        lml, grad, gnoise = _lml_from(K, dK, y, noise)
    if not (np.isfinite(lml) and np.isfinite(gnoise) and (grad is None
                                                         or np.isfinite(grad).all())):
        raise KernelRangeError(
            f"log_marginal_likelihood: the likelihood or its gradient overflows float64 "
            f"(|y| up to {np.abs(y).max():.3g}, K up to {np.abs(K).max():.3g}); rescale y")
    if not eval_gradient:
        return lml
    return lml, np.append(grad, gnoise)


def fit_hyperparameters(net, x, y, noise=1e-2, get="nngp", shared=True, fit_noise=True,
                        W_bounds=(1e-2, 1e2), b_bounds=(1e-4, 1e1),
                        noise_bounds=(1e-8, 1e2), maxiter=100, activation_params=False):
    """Maximise the log marginal likelihood over W_std, b_std (shared or per
    layer) and the noise variance, with L-BFGS-B in log space using the
    analytic gradient.

    Every Dense layer is fitted, those inside ``parallel`` branches included
    (:func:`dense_layers`).  Bias-free layers (``b_std=None``) stay bias-free:
    b_std is fitted only for the layers that have a bias (with ``shared``, one
    value for all of them; none when no layer has one).  A layer with
    ``b_std=0`` has a bias and starts from ``b_bounds[0]``.

    With ``activation_params=True`` the differentiable activation parameters
    (one set per activation layer, see :func:`parameter_names`) are optimised
    too, in linear space and unbounded except Rbf's gamma (>= 0, as the
    activation requires).  A step to parameters where the kernel is not
    finite (e.g. Gaussian with b > 0) is rejected like a non-PD kernel.

    Returns ``(fitted_net, noise, lml)``.
    """
    from .kernel import check_inputs
    from .predict import _check_y
    if not isinstance(net, Network):
        raise TypeError(f"net must be an infkernel Network, got {type(net).__name__}")
    shared, fit_noise = flag("shared", shared), flag("fit_noise", fit_noise)
    if flag("activation_params", activation_params):
        _check_activation_params(net)
    x = check_inputs(x, "x")
    if len(x) == 0:
        raise ValueError("x has no rows: nothing to fit")
    y = _check_y(y, len(x), "y")
    W_bounds, b_bounds, noise_bounds = (_bounds(n, b) for n, b in (
        ("W_bounds", W_bounds), ("b_bounds", b_bounds), ("noise_bounds", noise_bounds)))
    noise = real("noise", noise, lower=0, strict=fit_noise)
    maxiter = count("maxiter", maxiter)
    dense = _dense(net)
    L = len(dense)
    if L == 0:
        raise ValueError("net has no Dense layer: nothing to fit")
    biased = np.array([l.b_std is not None for l in dense])
    W0 = np.clip([l.W_std for l in dense], *W_bounds)
    B0 = np.clip([l.b_std for l in dense if l.b_std is not None], *b_bounds)
    noise0 = min(max(noise, noise_bounds[0]), noise_bounds[1]) if fit_noise else noise
    if shared:
        W0, B0 = W0[:1], B0[:1]
    nW, nB = W0.size, B0.size
    # the entries of log_marginal_likelihood's gradient that theta holds
    # (the b_std slots of bias-free layers are left out)
    kept = np.r_[np.ones(nW, bool), biased.any() if shared else biased]
    A0 = activation_parameters(net) if activation_params else np.zeros(0)
    nA = A0.size
    a_bounds = [((0.0, None) if net.layers[i].kind == P.K_RBF else (None, None))
                for i in (activation_layers(net) if activation_params else [])
                for _ in _act_param_names(net.layers[i])]
    kept = np.r_[kept, np.ones(nA, bool), fit_noise]
    # layout of theta: [log W, log b, activation params (linear), log noise]
    theta0 = np.concatenate([np.log(W0), np.log(B0), A0]
                            + ([np.log([noise0])] if fit_noise else []))
    bounds = ([tuple(np.log(W_bounds))] * nW + [tuple(np.log(b_bounds))] * nB + a_bounds
              + ([tuple(np.log(noise_bounds))] if fit_noise else []))
    logged = np.ones(theta0.size, bool)
    logged[nW + nB:nW + nB + nA] = False

    def unpack(th):
        e = np.where(logged, np.exp(np.where(logged, th, 0.0)), th)
        return (e[:nW], e[nW:nW + nB], e[nW + nB:nW + nB + nA],
                (e[nW + nB + nA] if fit_noise else noise))

    def build(th):
        W, B, Aa, nz = unpack(th)
        B = iter(np.repeat(B, L) if shared else B)
        m = with_hyperparameters(net, W[0] if shared else W,
                                 [next(B) if h else None for h in biased])
        if nA:
            m = with_activation_parameters(m, Aa)
        return m, nz

    failures, feasible = [], []

    def infeasible(th):
        """Where the kernel is not defined: a quadratic wall around the last
        feasible point, so that the line search steps back (a flat 1e300
        stops L-BFGS-B at the start when its first step overshoots)."""
        if not feasible:
            return 1e300, np.zeros_like(th)
        th0, f0 = feasible[-1]
        c = 1e3 * (1.0 + abs(f0))
        d = th - th0
        return f0 + c * (1.0 + d @ d), 2.0 * c * d

    def objective(th):
        m, nz = build(th)
        try:
            with np.errstate(all="ignore"):
                lml, g = log_marginal_likelihood(m, x, y, nz, get, shared, eval_gradient=True,
                                                 activation_params=bool(nA))
        except (np.linalg.LinAlgError, KernelRangeError) as exc:
            # parameters where the kernel is not defined (a variance outside a
            # quadrature's range, an overflow, K + noise·I singular)
            failures.append(exc)
            return infeasible(th)
        if not (np.isfinite(lml) and np.all(np.isfinite(g))):
            return infeasible(th)
        g = g[kept]
        chain = np.where(logged, np.exp(np.where(logged, th, 0.0)), 1.0)
        feasible.append((th.copy(), -lml))
        return -lml, -g * chain

    minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
             options={"maxiter": maxiter})   # the best feasible point is kept below
    if not feasible:
        raise ValueError("the marginal likelihood was not finite at any parameters tried "
                         "(the kernel plus noise is singular or not finite there); allow "
                         "noise (fit_noise=True, noise > 0) or change the bounds"
                         + (f"; first failure: {failures[0]}" if failures else ""))
    th, f = min(feasible, key=lambda e: e[1])   # the optimiser may end on the wall
    fitted, nz = build(th)
    return fitted, float(nz), float(-f)


def _bounds(name, b):
    """(lo, hi) with 0 < lo <= hi < inf (the search runs in log space)."""
    try:
        lo, hi = (float(v) for v in b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {b!r}") from None
    if not (0 < lo <= hi < np.inf):
        raise ValueError(f"{name} must satisfy 0 < low <= high < inf, got {b!r}")
    return lo, hi
