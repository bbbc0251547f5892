"""The layer program: a network compiled to a flat list of per-entry operations.

Every backend runs the same program.  Per kernel entry (x, x') the state is a
small register file; register r holds the cross covariance q12 = Σ(x, x') and
the cross NTK θ = Θ(x, x') of one branch of the network, and in programs with
kinked activations the signed versine sign(ρ)(1 - |ρ|), which keeps the small
angles to x' or -x' that q12's rounding blurs (``_duals.versine``).  Register 0
starts as the input kernel xᵀx'/d with θ = 0, and holds the output at the end.  The same program run on
one point with q11 = q12 = q22 gives the diagonal, and records the per-point
variances and scales each activation and Dense layer needs (the ``V``/``S``/``R``
tables).

``ops`` rows are ``(opcode, reg, reg2, kind, aux_lo, aux_hi)``; ``params`` rows
hold up to six floats per op.

    OP_DENSE   q' = w2 q + b2;  θ' = c_old q + c_new q' + w2 θ + c_one
               (ntk parameterization: c_new = 1; standard: c_old = fan-in,
               c_one = 1 if there is a bias; Sohl-Dickstein et al. 2020)
    OP_ACT     (q, θ) -> (E[φφ], E[φ'φ'] θ) of activation ``kind``
    OP_SCALE   q' = w2 q,  θ' = w2 θ            (multiplying a signal by √w2)
    OP_COPY    register reg2 := register reg     (fan-out)
    OP_AXPY    reg := params[0] reg + params[1] reg2   (fan-in sum / concat)
    OP_MUL     q := q q2,  θ := θ q2 + q θ2   (fan-in product of independent branches)
    OP_DIAG_SCALE  q, θ *= params[0] on the diagonal pass only, i.e. for an entry
               of a point with itself (dropout's 1/rate; off-diagonal entries,
               identical points included, are unchanged)
"""
import functools
from dataclasses import dataclass

import numpy as np

OP_DENSE, OP_ACT, OP_SCALE, OP_COPY, OP_AXPY, OP_MUL, OP_DIAG_SCALE = range(7)

# Activation kinds with a closed-form dual (see _duals.py).
(K_ABRELU, K_ERF, K_GELU, K_SIN, K_RBF, K_EXP, K_GAUSSIAN, K_SIGN,
 K_MONOMIAL, K_RECTIFIED_MONOMIAL) = range(10)

# The kinked kinds: their derivative duals are singular at ρ = ±1, so they take
# the angle from the signed versine that the kernels carry beside q12 (``_cpu``).
KINKED = (K_ABRELU, K_SIGN, K_RECTIFIED_MONOMIAL)

# Activations without a closed form: Gaussian expectations by Mehler series
# and quadrature over a tabulated φ (see _numeric.py); ops[k, 4] is the
# table's offset in ``aux`` and ops[k, 5] the op's feature slot.
K_NUMERIC = 10

# Polynomials φ = Σ_m b_m e_m in the monomial (e_m = x^m) or the probabilists'
# Hermite basis (e_m = He_m); ops[k, 4] / ops[k, 5] are the offsets of the
# coefficient tables of the dual and of the derivative dual (_duals.py), and
# ops[k, 2] the first of the op's 2n + 1 rows of per-point values B_l
# (``Program.polynomial_rows``, ``_cpu.polynomial_points``).
K_POLYNOMIAL = 11

# Layer normalisation (``layers.LayerNorm``), run as an OP_ACT so that the
# per-point tables carry its scale s = sqrt(q + eps): q12 -> q12 / (s1 s2).
K_LAYERNORM = 12

# The Gabor function exp(-x²) sin x (neural-tangents' ``Gabor``).
K_GABOR = 13

# neural-tangents' ``ExpNormalized`` kernel map (no finite-width counterpart):
# q12 -> s1 s2 exp(γ(ρ + shift)), s = sqrt(q), run as an OP_ACT (``layers``).
K_EXP_NORMALIZED = 14

N_PARAMS = 6


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled network for inputs of dimension ``d_in``."""
    ops: np.ndarray      # (n_ops, 6) int64
    params: np.ndarray   # (n_ops, 6) float64
    aux: np.ndarray      # (n_aux,) float64: coefficient tables of some kinds
    n_regs: int
    d_in: int
    #: op index -> name of the layer that emitted it (for error messages)
    names: dict = None

    @property
    def n_ops(self):
        return self.ops.shape[0]

    @functools.cached_property
    def act_kinds(self):
        """The activation kinds the program uses (a frozenset)."""
        return frozenset(self.ops[self.ops[:, 0] == OP_ACT, 3].tolist())

    @functools.cached_property
    def carries_versine(self):
        """Whether the kernels carry the signed versine per entry (``_duals.versine``):
        only the kinked activations (``KINKED``) read it."""
        return not self.act_kinds.isdisjoint(KINKED)

    @functools.cached_property
    def polynomial_rows(self):
        """The rows of per-point values of polynomial activations: 2n + 1 per
        op of degree n (ops[k, 2] its first)."""
        is_poly = (self.ops[:, 0] == OP_ACT) & (self.ops[:, 3] == K_POLYNOMIAL)
        return int((2 * self.params[is_poly, 0] + 1).sum())

    @functools.cached_property
    def numeric_ops(self):
        """Indices of the ops of numerically integrated activations."""
        return [k for k in range(self.n_ops)
                if self.ops[k, 0] == OP_ACT and self.ops[k, 3] == K_NUMERIC]


class ProgramBuilder:
    """Collects ops while layers compile themselves (``Layer._emit``)."""

    def __init__(self, d_in):
        self.d_in = d_in
        self.ops, self.params, self.aux = [], [], []
        self.n_regs = 1
        self.names = {}
        self.n_numeric = 0

    def emit(self, opcode, reg, reg2=0, kind=0, aux_lo=0, aux_hi=0, params=(), name=None):
        """Append an op; ``name`` (the layer's repr) names it in errors."""
        if len(params) > N_PARAMS:
            raise AssertionError("too many op parameters")
        if name is not None:
            self.names[len(self.ops)] = name
        self.ops.append((opcode, reg, reg2, kind, aux_lo, aux_hi))
        self.params.append(tuple(params) + (0.0,) * (N_PARAMS - len(params)))

    def add_aux(self, values):
        """Append a coefficient table; returns its offset in ``aux``."""
        lo = len(self.aux)
        self.aux.extend(float(v) for v in values)
        return lo

    def new_register(self):
        self.n_regs += 1
        return self.n_regs - 1

    def build(self):
        ops = np.array(self.ops, dtype=np.int64).reshape(-1, 6)
        params = np.array(self.params, dtype=np.float64).reshape(-1, N_PARAMS)
        row = 0
        for k in np.flatnonzero((ops[:, 0] == OP_ACT) & (ops[:, 3] == K_POLYNOMIAL)):
            ops[k, 2] = row                  # the op's per-point rows
            row += 2 * int(params[k, 0]) + 1
        aux = np.array(self.aux if self.aux else [0.0], dtype=np.float64)
        return Program(ops, params, aux, self.n_regs, self.d_in, dict(self.names))
