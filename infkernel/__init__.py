"""infkernel: analytic infinite-width NNGP and NTK kernels of neural networks.

    import infkernel as ik
    net = ik.serial(ik.Dense(512, W_std=1.5, b_std=0.05), ik.Relu(), ik.Dense(1))
    k = net.kernel(x1, x2, get=("nngp", "ntk"))   # k.nngp, k.ntk: (N1, N2)
"""
from .activations import (ABRelu, Abs, Activation, Cos, Erf, Exp, Gabor, Gaussian, Gelu,
                          Hermite, LeakyRelu, Monomial, Polynomial, Rbf, RectifiedMonomial,
                          Relu, Sigmoid_like, Sign, Sin)
from .activations_numeric import (S2ReLU, Elementwise, ElementwiseNumerical, Elu, Mish,
                                  Selu, Sigmoid, Silu, Softplus, SReLU, Swish, Tanh)
from .empirical import (MonteCarloKernel, NtkImplementation, empirical_kernel_fn,
                        empirical_nngp_fn, empirical_ntk_fn, empirical_ntk_vp_fn, linearize,
                        monte_carlo_kernel_fn)
from ._checks import KernelRangeError
from .kernel import Kernel, batch
from .layers import (Dense, Dropout, ExpNormalized, Flatten, Identity, Layer, LayerNorm,
                     Network, repeat, serial)
from .verification import verify
from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, Residual, Scale, parallel
from .features import (FourierFeatures, GaussianFeatureLimit, GaussianFourierFeatures,
                       MscaleDNN1, MscaleDNN2, PositionalEncoding)
from . import spectral

__version__ = "0.1.0"

__all__ = ["serial", "repeat", "Dense", "Identity", "Flatten", "LayerNorm", "ExpNormalized",
           "Dropout", "Layer", "Network", "Kernel", "KernelRangeError", "Activation",
           "Relu", "LeakyRelu", "ABRelu", "Abs", "Erf", "Sigmoid_like", "Gelu", "Sin",
           "Cos", "Rbf", "Gaussian", "Exp", "Sign", "Gabor", "Monomial", "RectifiedMonomial",
           "Polynomial", "Hermite", "Tanh", "Sigmoid", "Softplus", "Silu", "Swish", "Elu",
           "Selu", "Mish", "SReLU", "S2ReLU", "Elementwise", "ElementwiseNumerical",
           "empirical_kernel_fn", "empirical_nngp_fn", "empirical_ntk_fn", "empirical_ntk_vp_fn",
           "monte_carlo_kernel_fn", "MonteCarloKernel", "NtkImplementation", "linearize",
           "verify", "batch",
           "FanOut", "parallel", "FanInSum", "FanInProd", "FanInConcat", "Residual", "Scale",
           "FourierFeatures", "PositionalEncoding", "GaussianFourierFeatures",
           "GaussianFeatureLimit", "MscaleDNN1", "MscaleDNN2", "spectral", "pinn",
           "predict", "stax"]
from . import pinn, predict, stax  # noqa: E402  (ik.pinn.kernel, ik.predict..., ik.stax)
