"""scikit-learn interop: a ``Kernel`` wrapping a network, and NNGP/NTK
regressors.

* :class:`NetworkKernel` is a ``sklearn.gaussian_process.kernels.Kernel``
  whose hyperparameters are the Dense layers' W_std and b_std (shared, or one
  per layer when given as arrays), with analytic ``eval_gradient`` (forward
  mode through the recursion, :mod:`infkernel.hyper`) and an O(N) ``diag``.
  ``GaussianProcessRegressor`` optimises it; ``KernelRidge(kernel=k)`` and
  ``SVC(kernel=k)`` accept it as a callable.
* :class:`NNGPRegressor` is exact Bayesian inference with the NNGP
  (Lee et al. 2018); :class:`NTKRegressor` is the mean (and covariance) of an
  infinite ensemble of infinitely wide networks trained by gradient flow on MSE
  for time ``t`` (``None``: to convergence; Lee et al. 2019).
"""
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.validation import check_is_fitted, validate_data

from . import predict as _predict
from .activations import ACTIVATIONS
from .hyper import kernel_and_grad, with_hyperparameters
from .layers import Dense, Network, serial

__all__ = ["NetworkKernel", "NNGPRegressor", "NTKRegressor", "make_network"]


def make_network(depth=2, activation="relu", W_std=1.0, b_std=0.1):
    """serial(Dense, φ) × depth + Dense, with φ named as in ``ACTIVATIONS``
    ("relu", "erf", "gelu", ...)."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    try:
        phi = ACTIVATIONS[activation]()
    except TypeError:
        raise ValueError(f"activation {activation!r} needs parameters (e.g. "
                         "ik.LeakyRelu(0.1)): build the network and pass it as "
                         "network=ik.serial(...)") from None
    layers = []
    for _ in range(depth):
        layers += [Dense(1, 1.0, 0.0), phi]
    net = serial(*layers, Dense(1, 1.0, 0.0))
    return with_hyperparameters(net, W_std, b_std)


def _normalisation(y2, normalize):
    """(mean, std) per output column, as GaussianProcessRegressor's
    ``normalize_y`` (a zero std counts as 1); (0, 1) when not normalising."""
    if not normalize:
        return np.zeros(y2.shape[1]), np.ones(y2.shape[1])
    std = y2.std(axis=0)
    return y2.mean(axis=0), np.where(std > 0, std, 1.0)


def _n_dense(net):
    return sum(isinstance(l, Dense) for l in net.layers)


class NetworkKernel(Kernel):
    """The NNGP (``get="nngp"``) or NTK of ``network`` as an sklearn kernel.

    Args:
      network: an infkernel Network (default: 2 hidden ReLU layers).  Its
        Dense layers' W_std / b_std are replaced by the hyperparameters.
      W_std, b_std: scalars (shared by all Dense layers) or arrays with one
        value per Dense layer.  Optimised in log space within the bounds
        (``"fixed"`` to freeze).
    """

    def __init__(self, network=None, W_std=1.0, b_std=0.1, W_std_bounds=(1e-2, 1e2),
                 b_std_bounds=(1e-4, 1e1), get="nngp"):
        self.network = network
        self.W_std = W_std
        self.b_std = b_std
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds
        self.get = get

    @property
    def hyperparameter_W_std(self):
        return Hyperparameter("W_std", "numeric", self.W_std_bounds, np.size(self.W_std))

    @property
    def hyperparameter_b_std(self):
        return Hyperparameter("b_std", "numeric", self.b_std_bounds, np.size(self.b_std))

    def _net(self):
        if self.get not in ("nngp", "ntk"):
            raise ValueError(f"get must be 'nngp' or 'ntk', got {self.get!r}")
        base = make_network() if self.network is None else self.network
        if not isinstance(base, Network):
            raise TypeError(f"network must be an infkernel Network, got "
                            f"{type(base).__name__}")
        L = _n_dense(base)
        for name, v in (("W_std", self.W_std), ("b_std", self.b_std)):
            if np.size(v) not in (1, L):
                raise ValueError(f"{name} must be a scalar or have one value per Dense "
                                 f"layer ({L}), got {np.size(v)} values")
            if np.any(np.asarray(v) < 0):
                raise ValueError(f"{name} must be >= 0, got {v}")
        return with_hyperparameters(base, self.W_std, self.b_std)

    def __call__(self, X, Y=None, eval_gradient=False):
        net = self._net()
        X = np.asarray(X, dtype=np.float64)
        if not eval_gradient:
            return np.asarray(net.kernel(X, None if Y is None else np.asarray(Y, float),
                                         self.get))
        if Y is not None:
            raise ValueError("eval_gradient=True is only supported when Y is None")
        shared = np.size(self.W_std) == 1 and np.size(self.b_std) == 1
        K, dK = kernel_and_grad(net, X, self.get, shared=shared)
        L = _n_dense(net)
        if shared:
            dW, dB = dK[:1], dK[1:]
        else:
            dW, dB = dK[:L], dK[L:]
            if np.size(self.W_std) == 1:
                dW = dW.sum(0, keepdims=True)
            if np.size(self.b_std) == 1:
                dB = dB.sum(0, keepdims=True)
        grads = []
        # sklearn differentiates with respect to log(θ): dK/dlogθ = θ dK/dθ
        if not self.hyperparameter_W_std.fixed:
            grads.append(dW * np.atleast_1d(self.W_std)[:, None, None])
        if not self.hyperparameter_b_std.fixed:
            grads.append(dB * np.atleast_1d(self.b_std)[:, None, None])
        g = np.concatenate(grads) if grads else np.empty((0,) + K.shape)
        return K, np.moveaxis(g, 0, -1)

    def diag(self, X):
        return np.asarray(self._net().diag(np.asarray(X, dtype=np.float64), self.get))

    def is_stationary(self):
        return False

    @property
    def requires_vector_input(self):
        return True

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        a, b = self.get_params(), other.get_params()
        return (repr(a.pop("network")) == repr(b.pop("network"))
                and all(np.array_equal(np.asarray(a[k], dtype=object),
                                       np.asarray(b[k], dtype=object)) for k in a))

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        net = "default" if self.network is None else repr(self.network)
        return (f"NetworkKernel({self.get}, W_std={np.round(self.W_std, 4)}, "
                f"b_std={np.round(self.b_std, 4)}, network={net})")


class _NetworkRegressor(RegressorMixin, BaseEstimator):
    """Shared implementation of the NNGP / NTK regressors."""

    _get = None

    def _net(self):
        if self.network is not None:
            if not isinstance(self.network, Network):
                raise TypeError(f"network must be an infkernel Network, got "
                                f"{type(self.network).__name__}")
            return with_hyperparameters(self.network, self.W_std, self.b_std)
        return make_network(self.depth, self.activation, self.W_std, self.b_std)

    def _t(self):
        return getattr(self, "t", None)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def fit(self, X, y):
        """Fit to (X, y), y of shape (N,) or (N, C).  A failed fit leaves a
        previously fitted estimator unchanged."""
        keys = ("n_features_in_", "feature_names_in_")
        old = {k: getattr(self, k) for k in keys if hasattr(self, k)}
        try:
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                                 dtype=np.float64)
            net = self._net()
            _predict._check_t(self._t())
            y2 = y.reshape(len(y), -1)
            mean, scale = _normalisation(y2, self.normalize_y)
            pf = _predict.gradient_descent_mse_ensemble(
                net, X, (y2 - mean) / scale,
                learning_rate=getattr(self, "learning_rate", 1.0),
                diag_reg=self.diag_reg,
                diag_reg_absolute_scale=self.diag_reg_absolute_scale)
            # compute the training kernel and its factorisation now, so that
            # errors surface in fit and the state only changes on success
            pf(t=self._t(), x_test=X[:1], get=self._get)
        except BaseException:
            for k in keys:                      # validate_data already reset these
                if k in old:
                    setattr(self, k, old[k])
                elif hasattr(self, k):
                    delattr(self, k)
            raise
        self._commit(X, y, mean, scale, pf)
        return self

    def _commit(self, X, y, mean, scale, pf):
        self.X_train_ = X
        self.y_train_ = y
        self.y_mean_ = mean
        self.y_std_ = scale
        self._predict_fn = pf

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_predict_fn", None)   # a closure over cached factorisations
        return state

    def _fn(self):
        pf = getattr(self, "_predict_fn", None)
        if pf is None:
            y2 = self.y_train_.reshape(len(self.y_train_), -1)
            pf = _predict.gradient_descent_mse_ensemble(
                self._net(), self.X_train_, (y2 - self.y_mean_) / self.y_std_,
                learning_rate=getattr(self, "learning_rate", 1.0), diag_reg=self.diag_reg,
                diag_reg_absolute_scale=self.diag_reg_absolute_scale)
            self._predict_fn = pf
        return pf

    def predict(self, X, return_std=False, return_cov=False):
        """Posterior / ensemble mean; with ``return_std`` the standard
        deviation, with ``return_cov`` the (M, M) covariance (shared by all
        outputs; shape (M, M, C) for multi-output y, like
        GaussianProcessRegressor)."""
        if return_std and return_cov:
            raise ValueError("at most one of return_std and return_cov may be True")
        check_is_fitted(self, "X_train_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        pf = self._fn()
        cov = "diag" if return_std else bool(return_cov)
        out = pf(t=self._t(), x_test=X, get=self._get, compute_cov=cov)
        mean = (out.mean if cov else out) * self.y_std_ + self.y_mean_
        one_d = self.y_train_.ndim == 1
        if one_d:
            mean = mean[:, 0]
        if not cov:
            return mean
        var = out.covariance
        if return_std:
            std = np.sqrt(np.maximum(var, 0.0))[:, None] * self.y_std_
            return mean, std[:, 0] if one_d else std
        cov = var[:, :, None] * self.y_std_ ** 2
        return mean, cov[:, :, 0] if one_d else cov


class NNGPRegressor(_NetworkRegressor):
    """Exact GP regression with the NNGP of an infinitely wide network.

    Args:
      depth, activation: the default network ``make_network(depth, activation)``.
      W_std, b_std: weight / bias standard deviations of every Dense layer.
      network: a custom infkernel Network (overrides depth / activation; its
        Dense layers still get W_std / b_std).
      diag_reg: observation noise, relative to the mean kernel diagonal
        (absolute with ``diag_reg_absolute_scale``).
      normalize_y: fit to y centred and scaled by its training mean and
        standard deviation, and undo both on predictions (the prior's
        amplitude follows the data), as ``GaussianProcessRegressor``.
    """
    _get = "nngp"

    def __init__(self, depth=2, activation="relu", W_std=1.5, b_std=0.1, network=None,
                 diag_reg=1e-4, diag_reg_absolute_scale=False, normalize_y=True):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.diag_reg = diag_reg
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        self.normalize_y = normalize_y


class NTKRegressor(_NetworkRegressor):
    """Infinite ensemble of infinitely wide networks trained by gradient flow
    on MSE, at time ``t`` (``None``: t = ∞) with ``learning_rate``; other
    arguments as :class:`NNGPRegressor`."""
    _get = "ntk"

    def __init__(self, depth=2, activation="relu", W_std=1.5, b_std=0.1, network=None,
                 diag_reg=1e-4, diag_reg_absolute_scale=False, normalize_y=True, t=None,
                 learning_rate=1.0):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.network = network
        self.diag_reg = diag_reg
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        self.normalize_y = normalize_y
        self.t = t
        self.learning_rate = learning_rate
