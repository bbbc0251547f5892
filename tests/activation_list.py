"""The one shared list of closed-form activations every invariant test runs
over, and the kernels' dual of one activation at one entry (``tile_dual``)."""
import numpy as np

import infkernel as ik
from infkernel import _cpu, _program as P
from infkernel._duals import point_scale

CLOSED_FORMS = [
    ik.Relu(), ik.LeakyRelu(0.1), ik.ABRelu(-0.3, 0.7), ik.Abs(),
    ik.Erf(1.2, 0.8, 0.3), ik.Erf(), ik.Sigmoid_like(), ik.Gelu(),
    ik.Sin(0.9, 1.1, 0.4), ik.Cos(), ik.Rbf(0.7), ik.Gaussian(1.1, -0.6),
    ik.Exp(0.8, 0.5), ik.Sign(), ik.Monomial(0), ik.Monomial(1), ik.Monomial(2),
    ik.Monomial(3), ik.RectifiedMonomial(0), ik.RectifiedMonomial(1),
    ik.RectifiedMonomial(2), ik.RectifiedMonomial(3),
    ik.Polynomial([0.3, -1.0, 0.5, 0.2]), ik.Hermite(3), ik.Gabor(),
]

#: activations whose duals have a √(1-ρ²) kink at ρ = ±1 (derivative dual for
#: ABRelu with ab ≠ 0, the NNGP of step/sign): one ulp of ρ moves them by ~1e-8
KINKED_AT_ONE = ("Sign", "RectifiedMonomial", "ABRelu")


def tile_dual(act, q11, q12, q22):
    """(k, k̇) of one activation at given covariances, by the CPU kernels' own
    tile routines on a single entry (row point q11 against column point q22):
    ``_cpu.act_tile``, or for polynomials their per-point rows
    (``polynomial_points``) and ``polynomial_tile``."""
    prog = ik.serial(ik.Dense(1), act).program(1)
    o, p = prog.ops[1], prog.params[1]
    Q, TH, W = np.array([q12]), np.array([1.0]), np.empty((3, 1))
    if o[3] == P.K_POLYNOMIAL:
        rows = np.zeros((prog.polynomial_rows, 2))
        _cpu.polynomial_points(p, prog.aux, o[4], o[5], o[2], np.array([q11, q22]), np.ones(2),
                               rows, 0, 2)
        _cpu.polynomial_tile(p, o[2], 0, 1, 1, q11, np.array([q22]), Q, TH, rows, rows, W)
        return Q[0], TH[0]
    s1, s2 = point_scale(o[3], p, q11), point_scale(o[3], p, q22)
    r1, r2 = (1 / s if s > 0 else 0.0 for s in (s1, s2))
    none = np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1))
    # versine NaN: the angle from q12, as for an entry whose ρ is not carried
    _cpu.act_tile(o[3], p, prog.aux, o[4], o[5], q11, s1, r1, Q, TH, np.array([np.nan]),
                  np.array([q22]), np.array([s2]), np.array([r2]), 0, 1, 0, *none, *none,
                  np.ones((1, 2, 1)), W)
    return Q[0], TH[0]
