"""The one shared list of closed-form activations every invariant test runs over."""
import infkernel as ik

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
