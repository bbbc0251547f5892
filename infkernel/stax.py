"""neural-tangents' ``stax`` names, for code that reads ``from neural_tangents
import stax``: ``from infkernel import stax`` then ``stax.serial(stax.Dense(512),
stax.Relu(), stax.Dense(1))`` builds the same network as ``ik.serial(...)``."""
from .activations import (ABRelu, Abs, Cos, Erf, Exp, Gabor, Gaussian, Gelu,  # noqa: F401
                          Hermite, LeakyRelu, Monomial, Polynomial, Rbf, RectifiedMonomial,
                          Relu, Sigmoid_like, Sign, Sin)
from .activations_numeric import (S2ReLU, Elementwise, ElementwiseNumerical, Elu,  # noqa: F401
                                  Mish, Selu, Sigmoid, Silu, Softplus, SReLU, Swish, Tanh)
from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, parallel  # noqa: F401
from .layers import (Dense, Dropout, ExpNormalized, Flatten, Identity, LayerNorm,  # noqa: F401
                      repeat, serial)
