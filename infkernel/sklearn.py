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
import dataclasses

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.validation import check_is_fitted, validate_data

from . import predict as _predict
from ._checks import KernelRangeError, count, flag, one_kernel, real
from .activations import ACTIVATIONS, Activation
from .combinators import parallel
from .hyper import _dense, dense_layers, kernel_and_grad, with_hyperparameters
from .kernel import check_inputs
from .layers import Dense, Network, serial

__all__ = ["NetworkKernel", "NNGPRegressor", "NTKRegressor", "make_network"]


def make_network(depth=2, activation="relu", W_std=1.0, b_std=0.1):
    """serial(Dense, φ) × depth + Dense, with φ an activation (``ik.LeakyRelu(0.1)``)
    or one named as in ``ACTIVATIONS`` ("relu", "erf", "gelu", ...)."""
    depth = count("depth", depth, 0)
    if isinstance(activation, Activation):
        phi = activation
    elif not isinstance(activation, str):
        raise TypeError(f"activation must be an activation (e.g. ik.LeakyRelu(0.1)) or its "
                        f"name, got {activation!r}")
    elif activation not in ACTIVATIONS:
        raise ValueError(f"activation must be an activation (e.g. ik.LeakyRelu(0.1)) or one "
                         f"of {sorted(ACTIVATIONS)}, got {activation!r}")
    else:
        try:
            phi = ACTIVATIONS[activation]()
        except TypeError:
            raise ValueError(f"activation {activation!r} needs parameters: pass the "
                             "activation itself, e.g. ik.LeakyRelu(0.1)") from None
    layers = []
    for _ in range(depth):
        layers += [Dense(1, 1.0, 0.0), phi]
    return _with_stds(serial(*layers, Dense(1, 1.0, 0.0)), W_std, b_std)


def _with_stds(net, W_std, b_std):
    """``with_hyperparameters(net, W_std, b_std)`` after checking that each is a
    real number >= 0 or one per Dense layer (no strings or booleans); b_std
    (or an entry) may be None: no bias."""
    n = _n_dense(net)
    for name, value in (("W_std", W_std), ("b_std", b_std)):
        if _n_values(name, value) not in (1, n):
            raise ValueError(f"{name} must be a scalar or have one value per Dense layer "
                             f"({n}), got {value!r}")
    return with_hyperparameters(net, W_std, b_std)


def _n_values(name, value):
    """How many values ``value`` (a std: a scalar or a 1-D sequence of real
    numbers >= 0; for b_std also None, no bias) holds, or an error naming
    ``name``."""
    a = np.asarray(value, dtype=object) if value is not None else np.asarray(None)
    if a.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D sequence, got {value!r}")
    for i, v in enumerate(a.ravel()):
        where = name if a.ndim == 0 else f"{name}[{i}]"
        if v is None:
            if name != "b_std":
                raise ValueError(f"{where} must be a number >= 0, got None")
        else:
            real(where, v, lower=0, squared=True)
    return a.size


def _hyperparameter(name, value, bounds):
    """The sklearn ``Hyperparameter`` of W_std / b_std: its values are searched
    in log space, so unless fixed they must be > 0 (a None b_std, no bias, is
    fixed: there is nothing to optimise)."""
    n = _n_values(name, value)
    bounds = _bounds(f"{name}_bounds", bounds, n)
    if value is None:
        return Hyperparameter(name, "numeric", "fixed", n)
    if bounds != "fixed":
        for i, v in enumerate(np.asarray(value, dtype=object).ravel()):
            where = name if np.ndim(value) == 0 else f"{name}[{i}]"
            if v is None:
                raise ValueError(f"{where} is None (no bias), which cannot be optimised: pass "
                                 f"b_std_bounds='fixed', or a number for every Dense layer")
            if v == 0:
                raise ValueError(f"{where} is 0, which cannot be optimised (the search is over "
                                 f"log({name})): pass {name}_bounds='fixed' to keep it at 0, "
                                 f"or a value > 0")
    return Hyperparameter(name, "numeric", bounds, n)


def _bounds(name, bounds, n):
    """``bounds`` of a hyperparameter with n values: "fixed", or (lower, upper)
    (or one pair per value) with 0 < lower <= upper < inf (log-space search)."""
    if isinstance(bounds, str):
        if bounds != "fixed":
            raise ValueError(f"{name} must be 'fixed' or a pair (lower, upper), got {bounds!r}")
        return bounds
    try:
        b = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        b = None
    if b is None or b.shape not in ((2,), (n, 2)):
        raise ValueError(f"{name} must be 'fixed', a pair (lower, upper) or {n} such pairs, "
                         f"got {bounds!r}")
    b2 = b.reshape(-1, 2)
    if not (np.isfinite(b2).all() and (b2[:, 0] > 0).all() and (b2[:, 0] <= b2[:, 1]).all()):
        raise ValueError(f"{name} must satisfy 0 < lower <= upper < inf (the search is over "
                         f"log(W_std), log(b_std)), got {bounds!r}")
    return bounds


def _same(a, b):
    """a and b are the same network, layer or parameter: layers field by field,
    activations by the factory call that made them (their φ is a closure, so
    two ``ik.Tanh()`` are equal and ``Elementwise(np.tanh)`` differs from
    ``Elementwise(np.sin, name="Elementwise(tanh)")``), arrays elementwise."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, Network):
        return _same(a.layers, b.layers)
    if isinstance(a, parallel):
        return _same(a.branches, b.branches)
    if isinstance(a, Activation):
        made = a.__dict__.get("_made_by")
        return made is not None and _same(made, b.__dict__.get("_made_by"))
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name))
                   for f in dataclasses.fields(a))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _normalisation(y2, normalize):
    """(mean, std) per output column, as GaussianProcessRegressor's
    ``normalize_y`` (a zero std counts as 1); (0, 1) when not normalising."""
    if not normalize:
        return np.zeros(y2.shape[1]), np.ones(y2.shape[1])
    top = np.abs(y2).max(axis=0, initial=0.0)
    top = np.where(top > 0, top, 1.0)     # on y / max|y|: no overflow for |y| ~ 1e308
    std = top * (y2 / top).std(axis=0)
    return top * (y2 / top).mean(axis=0), np.where(std > 0, std, 1.0)


def _n_dense(net):
    """The number of Dense layers, those inside ``parallel`` branches included."""
    return len(dense_layers(net))


def _rounded(value):
    """``value`` rounded for a repr (None entries, no bias, as they are)."""
    try:
        return np.round(value, 4)
    except TypeError:
        return value


class NetworkKernel(Kernel):
    """The NNGP (``get="nngp"``) or NTK of ``network`` as an sklearn kernel.

    Args:
      network: an infkernel Network (default: 2 hidden ReLU layers).  Its
        Dense layers' W_std / b_std, those inside ``parallel`` branches
        included, are replaced by the hyperparameters.
      W_std, b_std: scalars (shared by all Dense layers) or arrays with one
        value per Dense layer, in the order of ``infkernel.hyper.dense_layers``
        (depth-first through branches).  Optimised in log space within the
        bounds (``"fixed"`` to freeze; a value 0 must be fixed).
        ``b_std=None`` (or a None entry, with ``b_std_bounds="fixed"``) means
        no bias, as in ``Dense``: it differs from 0 in the standard
        parameterization, whose NTK gets 1 per layer with a bias.  A None
        b_std is fixed.  Where an optimiser's trial values make the
        kernel not computable (``KernelRangeError``: an overflowing variance,
        or one beyond a numerically integrated activation's range),
        the error names them; narrow the bounds so that the variances stay in
        range (scikit-learn's optimisers treat only ``LinAlgError`` as an
        infeasible point).
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
        return _hyperparameter("W_std", self.W_std, self.W_std_bounds)

    @property
    def hyperparameter_b_std(self):
        return _hyperparameter("b_std", self.b_std, self.b_std_bounds)

    def _net(self):
        one_kernel(self.get)
        base = make_network() if self.network is None else self.network
        if not isinstance(base, Network):
            raise TypeError(f"network must be an infkernel Network, got "
                            f"{type(base).__name__}")
        return _with_stds(base, self.W_std, self.b_std)

    def __call__(self, X, Y=None, eval_gradient=False):
        net = self._net()
        X = check_inputs(net._flatten(X), "X")
        if Y is not None:
            Y = check_inputs(net._flatten(Y), "Y", X.shape[1], like="X")
        eval_gradient = flag("eval_gradient", eval_gradient)
        if eval_gradient and Y is not None:
            raise ValueError("eval_gradient=True is only supported when Y is None")
        shared = np.size(self.W_std) == 1 and np.size(self.b_std) == 1
        try:
            if not eval_gradient:
                return np.asarray(net.kernel(X, Y, self.get))
            K, dK = kernel_and_grad(net, X, one_kernel(self.get), shared=shared)
        except KernelRangeError as exc:
            # an optimiser (GaussianProcessRegressor's) explored hyperparameters
            # where the kernel is not computable: say which, and the remedy
            raise KernelRangeError(
                f"NetworkKernel at W_std={self.W_std}, b_std={self.b_std}: {exc}. If an "
                "optimiser chose these values, narrow W_std_bounds / b_std_bounds (or "
                "rescale X) so that the pre-activation variances stay in range") from None
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
        net = self._net()
        return np.asarray(net.diag(check_inputs(net._flatten(X), "X"), one_kernel(self.get)))

    def is_stationary(self):
        return False

    @property
    def requires_vector_input(self):
        return True

    def __eq__(self, other):
        return type(self) is type(other) and _same(self.get_params(), other.get_params())

    def __hash__(self):
        # equal kernels have equal reprs (the converse need not hold)
        return hash(repr(self))

    def __repr__(self):
        net = "default" if self.network is None else repr(self.network)
        return (f"NetworkKernel({self.get}, W_std={_rounded(self.W_std)}, "
                f"b_std={_rounded(self.b_std)}, network={net})")


#: the regressors' W_std and b_std where "auto" has no network to take them from
_DEFAULT_STDS = {"W_std": 1.5, "b_std": 0.1}


def _std_or_auto(name, value, network):
    """A regressor's W_std / b_std: "auto" means those of ``network``'s Dense
    layers (one per layer), or without a network ``_DEFAULT_STDS``."""
    if not isinstance(value, str):
        return value
    if value != "auto":
        raise TypeError(f"{name} must be 'auto', a real number >= 0 or one per Dense "
                        f"layer, got {value!r}")
    if network is None:
        return _DEFAULT_STDS[name]
    return [getattr(layer, name) for layer in _dense(network)]


class _NetworkRegressor(RegressorMixin, BaseEstimator):
    """Shared implementation of the NNGP / NTK regressors."""

    _get = None

    def _net(self):
        net = self.network
        if net is not None and not isinstance(net, Network):
            raise TypeError(f"network must be an infkernel Network, got {type(net).__name__}")
        W_std, b_std = (_std_or_auto(name, getattr(self, name), net)
                        for name in ("W_std", "b_std"))
        if net is not None:
            return _with_stds(net, W_std, b_std)
        if isinstance(self.depth, Network):
            raise TypeError("depth must be an integer >= 0, got a Network: pass a custom "
                            "network as network=...")
        return make_network(self.depth, self.activation, W_std, b_std)

    def _t(self):
        """The training time: None (t = ∞) or a real number >= 0 (inf allowed)."""
        t = getattr(self, "t", None)
        if t is None:
            return None
        try:
            return real("t", t, lower=0, inf=True)
        except TypeError:
            raise TypeError(f"t must be None (t = ∞) or one training time, a real number "
                            f">= 0, got {t!r} (for several times use infkernel.predict."
                            "gradient_descent_mse_ensemble)") from None

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
            if np.asarray(y).dtype.kind in "USV":
                raise ValueError(f"y must hold numbers (regression targets), got dtype "
                                 f"{np.asarray(y).dtype}")
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                                 dtype=np.float64)
            net = self._net()
            t = self._t()
            flag("diag_reg_absolute_scale", self.diag_reg_absolute_scale)
            y2 = y.reshape(len(y), -1)
            mean, scale = _normalisation(y2, flag("normalize_y", self.normalize_y))
            solver = dict(learning_rate=getattr(self, "learning_rate", 1.0),
                          diag_reg=self.diag_reg,
                          diag_reg_absolute_scale=self.diag_reg_absolute_scale)
            pf = _predict.gradient_descent_mse_ensemble(net, X, (y2 - mean) / scale, **solver)
            # compute the training kernel and its factorisation now, so that
            # errors surface in fit and the state only changes on success
            pf(t=t, x_test=X[:1], get=self._get)
        except BaseException:
            for k in keys:                      # validate_data already reset these
                if k in old:
                    setattr(self, k, old[k])
                elif hasattr(self, k):
                    delattr(self, k)
            raise
        self._commit(X, y, mean, scale, net, solver, t, pf)
        return self

    def _commit(self, X, y, mean, scale, net, solver, t, pf):
        self.X_train_ = X
        self.y_train_ = y
        self.y_mean_ = mean
        self.y_std_ = scale
        #: the fitted network, solver settings and training time: predictions
        #: follow them until the next fit, whatever set_params changes meanwhile
        self.network_ = net
        self._solver = solver
        self._fitted_t = t
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
                self.network_, self.X_train_, (y2 - self.y_mean_) / self.y_std_, **self._solver)
            self._predict_fn = pf
        return pf

    def predict(self, X, return_std=False, return_cov=False):
        """Posterior / ensemble mean; with ``return_std`` the standard
        deviation, with ``return_cov`` the (M, M) covariance (shared by all
        outputs; shape (M, M, C) for multi-output y, like
        GaussianProcessRegressor)."""
        return_std, return_cov = flag("return_std", return_std), flag("return_cov", return_cov)
        if return_std and return_cov:
            raise ValueError("at most one of return_std and return_cov may be True")
        check_is_fitted(self, "X_train_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        pf = self._fn()
        cov = "diag" if return_std else return_cov
        out = pf(t=self._fitted_t, x_test=X, get=self._get, compute_cov=cov)
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
        with np.errstate(over="ignore"):
            cov = var[:, :, None] * self.y_std_ ** 2
        if not np.isfinite(cov).all():
            raise ValueError(f"the predictive covariance overflows float64 (the targets' std "
                             f"is up to {self.y_std_.max():.3g}, its square beyond 1.8e308): "
                             "rescale y, or ask for return_std")
        return mean, cov[:, :, 0] if one_d else cov


class NNGPRegressor(_NetworkRegressor):
    """Exact GP regression with the NNGP of an infinitely wide network.

    Args:
      depth, activation: the default network ``make_network(depth, activation)``
        (``activation``: a name such as "relu", or an activation such as
        ``ik.LeakyRelu(0.1)``).
      W_std, b_std: weight / bias standard deviations of every Dense layer
        (scalars, or one per Dense layer as in :class:`NetworkKernel`);
        ``b_std=None`` (or a None entry): no bias, as in ``Dense``.  "auto"
        (the default): the network's own, and 1.5 / 0.1 for the network
        made from ``depth`` and ``activation``.
      network: a custom infkernel Network (overrides depth / activation; a
        W_std or b_std other than "auto" replaces its Dense layers' own,
        those inside ``parallel`` branches included).
      diag_reg: observation noise, relative to the mean kernel diagonal
        (absolute with ``diag_reg_absolute_scale``).
      normalize_y: fit to y centred and scaled by its training mean and
        standard deviation, and undo both on predictions (the prior's
        amplitude follows the data), as ``GaussianProcessRegressor``.
    """
    _get = "nngp"

    def __init__(self, depth=2, activation="relu", W_std="auto", b_std="auto", network=None,
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

    def __init__(self, depth=2, activation="relu", W_std="auto", b_std="auto", network=None,
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
