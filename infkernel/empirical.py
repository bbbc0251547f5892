"""Finite-width networks and their empirical kernels.

For a network f(x; θ) with k outputs, the empirical kernels, traced over the
outputs as in neural-tangents (``trace_axes=(-1,)``), are

    NNGP:  K(x, x') = (1/k) Σ_j f_j(x) f_j(x')
    NTK:   Θ(x, x') = (1/k) Σ_j Σ_p ∂f_j(x)/∂θ_p ∂f_j(x')/∂θ_p

For fully-connected networks Θ is computed exactly without forming the
Jacobian: a ``Dense`` layer z = c·hW + s·b (ntk parameterization c = W_std/√n,
s = b_std; standard c = s = 1) contributes

    Θ_layer(x, x') = (c² h(x)·h(x') + s²) · (1/k) Σ_j δ_j(x)·δ_j(x'),

the Hadamard product of the Gram matrix of the layer's inputs and the Gram
matrix of the back-propagated signals δ_j = ∂f_j/∂z (Jacot et al. 2018;
Novak et al. 2022, "Fast finite width neural tangent kernel", structured
derivatives).  Both Gram matrices are GEMMs of size N × width.  In branched
networks the signals pass back through the combinators (FanOut sums the
branches' signals, FanInSum copies, FanInProd multiplies by the other
branches, FanInConcat splits) and every Dense layer of every branch
contributes its own product.

Their averages over random initialisations converge to the analytic kernels
as the widths grow, with fluctuations O(1/√width) (Hanin & Nica 2020); for one
hidden layer (``Dense, φ, Dense``) with ntk parameterization they are unbiased
at every width.  :func:`monte_carlo_kernel_fn` estimates these averages with
standard errors.
"""
import enum
import weakref
from collections import namedtuple

import numpy as np

from ._checks import count, entropy, flag, no_overflow, real_array
from .kernel import _kernel_type, check_inputs, parse_get
from .layers import Dense, Dropout, Flatten, Identity, Layer, LayerNorm, Network, serial
from .activations import Activation
from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, Scale, parallel

__all__ = ["empirical_nngp_fn", "empirical_ntk_fn", "empirical_kernel_fn",
           "empirical_ntk_vp_fn", "monte_carlo_kernel_fn", "MonteCarloKernel", "check_params",
           "linearize", "NtkImplementation"]

#: Doubles held by one batch of back-propagated signals (batch × N × outputs ×
#: width); larger problems are processed in chunks of output channels.
_MAX_ENTRIES = 1 << 24

#: ``mean`` and ``stderr`` have the layout of the analytic result (an array for
#: a string ``get``, else a ``Kernel`` namedtuple); ``n_samples`` is an int.
MonteCarloKernel = namedtuple("MonteCarloKernel", ["mean", "stderr", "n_samples"])


class NtkImplementation(enum.IntEnum):
    """neural-tangents' choices of how to contract Jacobians, for porting:
    accepted as ``implementation`` and unused (the kernels here come from
    per-layer Gram matrices, exactly, whichever is named)."""
    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


def _check_implementation(implementation):
    if implementation is not None and (isinstance(implementation, bool) or implementation
                                       not in set(NtkImplementation)):
        raise ValueError(f"implementation must be None or a NtkImplementation (0-3), got "
                         f"{implementation!r}")


# --------------------------------------------------------------------------
# checks
def _as_network(net):
    """A Network from a network, a layer, or one of its stax functions
    (neural-tangents passes ``apply_fn``: its network is the method's owner)."""
    owner = getattr(net, "__self__", None)
    if isinstance(owner, Network):
        return owner
    if isinstance(net, Network):
        return net
    if isinstance(net, Layer):
        return serial(net)
    raise TypeError(f"net must be an infkernel network (ik.serial(...)) or its apply_fn, "
                    f"got {type(net).__name__}")


_BRANCHING = (FanOut, parallel, FanInSum, FanInProd, FanInConcat, Scale)


def _check_layers(net):
    """Layers the structured formulas understand, or a TypeError naming the culprit."""
    def check(layers, where):
        for i, layer in enumerate(layers):
            if isinstance(layer, Dropout) and layer.training:
                raise TypeError(f"empirical kernels need a fixed network; {where}layer {i} is "
                                f"{layer!r}, which draws new masks on every call (use "
                                "mode='test')")
            if isinstance(layer, parallel):
                for b, branch in enumerate(layer.branches):
                    check(branch, f"{where}layer {i} branch {b}: ")
            elif not isinstance(layer, (Dense, Activation, Identity, LayerNorm, Flatten, Dropout)
                                + _BRANCHING):
                raise TypeError(
                    f"empirical kernels support Dense, elementwise activations, LayerNorm, "
                    f"Identity, Flatten, Dropout(mode='test'), Scale and branches (FanOut, "
                    f"parallel, FanInSum/Prod/Concat); {where}layer {i} is {layer!r}")
    check(net.layers, "")
    if not any(map(_has_dense, net.layers)):
        raise ValueError("the network has no Dense layer, so no parameters: its NTK is 0 "
                         "and its NNGP is not random")


def _has_dense(layer):
    return isinstance(layer, Dense) or (isinstance(layer, parallel) and any(
        _has_dense(l) for branch in layer.branches for l in branch))


def _branched(net):
    return any(isinstance(layer, _BRANCHING) for layer in net.layers)


def _map_inputs(net, x1, x2):
    """Inputs after the network's leading input maps (checked; (N, ...)
    inputs flattened first when the network starts with Flatten)."""
    a1 = check_inputs(net._flatten(x1), "x1")
    a2 = None if x2 is None else check_inputs(net._flatten(x2), "x2", a1.shape[1])
    return net.map_inputs(a1, "x1"), None if a2 is None else net.map_inputs(a2, "x2")


def check_params(net, params, d_in, name="x", first=0):
    """Raises a ValueError/TypeError unless ``params`` fit ``net`` for inputs
    (``name``) of dimension ``d_in`` (the structure ``net.init_fn`` returns);
    ``first``: the index of ``params[0]`` in the user's tuple (for messages)."""
    net = _as_network(net)
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"params must be the tuple returned by init_fn, got {type(params).__name__}")
    if len(params) != len(net.layers):
        raise ValueError(f"params has {len(params)} entries, the network has "
                         f"{len(net.layers)} layers")
    if net.input_maps:        # parameter-free maps; the body sees their outputs
        width = d_in
        for fmap in net.input_maps:
            fmap.check_dim(width, name)
            width = fmap.out_dim(width)
        n = len(net.input_maps)
        check_params(net.body, tuple(params[n:]), width, name, first + n)
        return
    if _branched(net):
        for i, (p, ref) in enumerate(zip(params, _param_shapes(net, d_in))):
            _check_structure(p, ref, f"params[{first + i}]")
        return
    width = d_in
    for i, (layer, p) in enumerate(zip(net.layers, params)):
        where = f"params[{first + i}] ({layer!r})"
        if isinstance(layer, Dense):
            if not isinstance(p, (tuple, list)) or len(p) != 2:
                raise ValueError(f"{where} must be a pair (W, b), got {type(p).__name__}")
            W, b = p
            W = _param_array(W, f"{where}: W")
            b = None if b is None else _param_array(b, f"{where}: b")
            if W.shape != (width, layer.width):
                first = (not any(isinstance(l, Dense) for l in net.layers[:i])
                         and W.ndim == 2 and W.shape[1] == layer.width)
                raise ValueError(f"{where}: W must have shape {(width, layer.width)}, "
                                 f"got {W.shape}" + (
                                     f" (the inputs have {d_in} features, these params "
                                     f"were made for {W.shape[0]})" if first else ""))
            if layer.b_std is None:
                if b is not None:
                    raise ValueError(f"{where}: the layer has no bias (b_std=None) but b is given")
            else:
                if b is None or np.shape(b) not in ((layer.width,), (1, layer.width)):
                    raise ValueError(f"{where}: b must have shape {(layer.width,)} (or "
                                     f"neural-tangents' {(1, layer.width)}), got "
                                     f"{None if b is None else np.shape(b)}")
            for name, a in (("W", W), ("b", b)):
                if a is not None and not np.all(np.isfinite(a)):
                    raise ValueError(f"{where}: {name} has NaN or Inf entries")
            width = layer.width
        elif p not in ((), [], None):
            raise ValueError(f"{where}: a layer without parameters takes (), got {type(p).__name__}")


class _ArrayShape:
    """Stands in for a parameter array of ``init_fn`` in a reference structure."""
    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = shape


#: network -> {input width: init_fn's parameter structure, arrays as shapes}
_PARAM_SHAPES = weakref.WeakKeyDictionary()


def _param_shapes(net, d_in):
    """``net.init_fn``'s parameters for inputs of ``d_in`` features with the
    arrays replaced by their shapes, memoised per network (drawing them,
    for each apply_fn call, cost more than the forward pass)."""
    def shapes(p):
        if isinstance(p, tuple):
            return tuple(shapes(q) for q in p)
        return None if p is None else _ArrayShape(np.shape(p))
    per_net = _PARAM_SHAPES.setdefault(net, {})
    if d_in not in per_net:
        per_net[d_in] = shapes(net.init_fn(0, (-1, d_in))[1])
    return per_net[d_in]


def _check_structure(p, ref, where):
    """``p`` has the nesting and array shapes of ``ref`` (``_param_shapes``; a
    bias may also have neural-tangents' shape (1, k)), with finite entries."""
    if isinstance(ref, tuple):
        if not isinstance(p, (tuple, list)) or len(p) != len(ref):
            raise ValueError(f"{where} must be a tuple of {len(ref)} entries, as init_fn "
                             f"returns, got {type(p).__name__}"
                             + (f" of {len(p)}" if isinstance(p, (tuple, list)) else ""))
        for j, (a, b) in enumerate(zip(p, ref)):
            _check_structure(a, b, f"{where}[{j}]")
    elif ref is None:
        if p is not None:
            raise ValueError(f"{where}: the layer has no bias (b_std=None) but one is given")
    else:
        p = None if p is None else _param_array(p, where)
        shape = np.shape(p)
        if p is None or shape not in (ref.shape, (1,) + ref.shape):
            raise ValueError(f"{where} must have shape {ref.shape}, got "
                             f"{None if p is None else shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{where} has NaN or Inf entries")


def _param_array(a, where):
    """``a`` as a real NumPy array, or a TypeError naming it (complex values
    would lose their imaginary part, other dtypes are not numbers)."""
    try:
        arr = np.asarray(a)
    except Exception as exc:   # e.g. a torch tensor that requires grad
        raise TypeError(f"{where} must be a real array (NumPy or array-like), got "
                        f"{type(a).__name__}: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{where} must be a real numeric array, got dtype {arr.dtype}")
    return arr


# --------------------------------------------------------------------------
# forward / backward on (optionally) stacked parameters
#
# Parameters may carry a leading batch axis B (W: (B, n, m), b: (B, 1, m));
# activations then have shape (B, N, width).  Without it shapes are (N, width).


def _forward(layers, params, x):
    """Output and the input of every layer (for ``parallel``: the list of its
    branches' own input lists)."""
    h, inputs = x, []
    for layer, p in zip(layers, params):
        if isinstance(layer, parallel):
            outs, subs = [], []
            for branch, bp, hb in zip(layer.branches, p, h):
                o, ins = _forward(branch, bp, hb)
                outs.append(o)
                subs.append(ins)
            inputs.append(subs)
            h = outs
            continue
        inputs.append(h)
        if isinstance(layer, Dense):
            W, b = p
            c, s = layer.coefs(W.shape[-2])
            h = h @ W                          # a new array: scaled in place
            if c != 1.0:
                h *= c
            if b is not None:
                h += s * b if s != 1.0 else b
        elif isinstance(layer, Activation):
            h = layer.fn(h)
        elif isinstance(layer, (LayerNorm,) + _BRANCHING):
            h = layer._apply((), h)
    return h, inputs


def _backward(layers, params, inputs, delta, visit, extra, key=()):
    """Back-propagates ``delta`` = ∂(·)/∂(output), shape (..., N, [m,] width)
    (``extra`` = 1 with the output-channel axis m); calls ``visit(key, layer,
    c, s, h, delta_at_z)`` at every Dense layer (key: its index path through
    parallel branches, h: its input).  Returns the signal at the input of
    ``layers``, except at the top level (``key`` empty), where propagation
    stops at the first layer with parameters."""
    stop = next(i for i, layer in enumerate(layers) if _has_dense(layer)) if not key else 0

    def expand(a):
        return a[..., None, :] if extra else a
    for i in range(len(layers) - 1, stop - 1, -1):
        layer, h = layers[i], inputs[i]
        if isinstance(layer, Dense):
            W, _ = params[i]
            c, s = layer.coefs(W.shape[-2])
            visit(key + (i,), layer, c, s, h, delta)
            if i > stop or key:
                delta = _times_wt(delta, W, c, extra)
        elif isinstance(layer, Activation):
            delta = delta * expand(layer.dfn(h))
        elif isinstance(layer, LayerNorm):
            # y = (h - μ)/σ: ∂/∂h = (δ - mean δ - y mean(δ y)) / σ over the channels
            cen = h - h.mean(axis=-1, keepdims=True)
            sigma = np.sqrt((cen * cen).mean(axis=-1, keepdims=True) + layer.eps)
            y, sigma = expand(cen / sigma), expand(sigma)
            delta = (delta - delta.mean(axis=-1, keepdims=True)
                     - y * (delta * y).mean(axis=-1, keepdims=True)) / sigma
        elif isinstance(layer, Scale):
            delta = layer.a * delta
        elif isinstance(layer, FanInSum):
            delta = [delta] * len(h)
        elif isinstance(layer, FanInProd):
            delta = [delta * expand(np.prod([g for j, g in enumerate(h) if j != b], axis=0))
                     for b in range(len(h))]
        elif isinstance(layer, FanInConcat):
            delta = np.split(delta, np.cumsum([g.shape[-1] for g in h])[:-1], axis=-1)
        elif isinstance(layer, parallel):
            delta = [_backward(branch, bp, ins, d, visit, extra, key + (i, b))
                     for b, (branch, bp, ins, d) in enumerate(zip(layer.branches, params[i],
                                                                  h, delta))]
        elif isinstance(layer, FanOut):
            delta = sum(delta[1:], delta[0])
    return delta


def _times_wt(delta, W, c, extra):
    """c · delta @ Wᵀ, the point (and output-channel) axes of ``delta`` merged
    into one GEMM dimension (NumPy would otherwise run one small product per
    point); ``delta`` is broadcast to W's batch axes first."""
    lead = delta.shape[:delta.ndim - 2 - extra]
    rows, n = delta.shape[len(lead):-1], delta.shape[-1]
    batch = np.broadcast_shapes(lead, W.shape[:-2])
    flat = np.broadcast_to(delta, batch + rows + (n,)).reshape(batch + (-1, n))
    out = (flat @ np.swapaxes(W, -1, -2)).reshape(batch + rows + (W.shape[-2],))
    return out * c if c != 1.0 else out


def _gram(a, b):
    return a @ np.swapaxes(b, -1, -2)


def _ntk(layers, params, k, inputs, split=None, mode="trace"):
    """Empirical NTK of the points whose forward pass left ``inputs`` (see
    :func:`_forward`): K(x, x), or for ``split`` = N1 the cross kernel of
    x[:N1] against x[N1:] (one back-propagation for both sets).  (..., N1, N2)
    traced over the k outputs, (..., N1, N2, k, k) for ``mode="full"``,
    (..., N1, N2, k) for ``"diagonal"``.  Each Dense layer's contribution is
    added as soon as its signals are known: memory does not grow with depth."""
    lead = inputs[0].shape[:-1]
    widths = [inputs[0].shape[-1], k] + [l.width for l in _dense_layers(layers)]
    per_channel = np.prod(lead) * max(widths)
    # untraced kernels pair every channel of x1 with every channel of x2: one chunk
    chunk = int(max(1, min(k, _MAX_ENTRIES // max(per_channel, 1)))) if mode == "trace" else k
    eye = np.eye(k)
    total = None

    def visit(key, layer, c, s, h, delta):
        nonlocal total
        if split is None:
            g_delta, g_in = _signal_gram(delta, delta, mode), _gram(h, h)
        else:
            g_delta = _signal_gram(delta[..., :split, :, :], delta[..., split:, :, :], mode)
            g_in = _gram(h[..., :split, :], h[..., split:, :])
        g_in *= c * c
        if layer.b_std is not None:
            g_in += s * s
        term = g_delta * _outer_axes(g_in, mode)   # (the last layer's signal: no batch axis)
        if total is not None and total.shape == term.shape:
            total += term
        else:
            total = term if total is None else total + term

    for j0 in range(0, k, chunk):
        e = eye[j0:j0 + chunk]                 # (m, k): output channels j0..j0+m
        _backward(layers, params, inputs, np.broadcast_to(e, lead + e.shape), visit, 1)
    return total / k if mode == "trace" else total


def _dense_layers(layers):
    """The Dense layers of ``layers``, through parallel branches."""
    for layer in layers:
        if isinstance(layer, Dense):
            yield layer
        elif isinstance(layer, parallel):
            for branch in layer.branches:
                yield from _dense_layers(branch)


def _signal_gram(d1, d2, mode):
    """Σ_u d1[..., x, j, u] d2[..., y, j', u], summed over j = j' ("trace"),
    as (..., x, y, j, j') ("full") or for j = j' as (..., x, y, j) ("diagonal")."""
    (n1, k, u), n2 = d1.shape[-3:], d2.shape[-3]   # explicit sizes: N1 or N2 may be 0
    if mode == "trace":
        return _gram(d1.reshape(d1.shape[:-2] + (k * u,)), d2.reshape(d2.shape[:-2] + (k * u,)))
    if mode == "diagonal":
        return np.moveaxis(_gram(np.moveaxis(d1, -2, -3), np.moveaxis(d2, -2, -3)), -3, -1)
    g = _gram(d1.reshape(d1.shape[:-3] + (n1 * k, u)), d2.reshape(d2.shape[:-3] + (n2 * k, u)))
    return np.swapaxes(g.reshape(g.shape[:-2] + (n1, k, n2, k)), -3, -2)


def _outer_axes(g, mode):
    """A (..., N1, N2) Gram with the output-channel axes of ``mode`` appended."""
    return g if mode == "trace" else g[..., None] if mode == "diagonal" else g[..., None, None]


def _output_kernel(f1, f2, mode):
    """The empirical NNGP Σ_j f_j(x) f_j'(x') in the layout of ``mode``
    (traced: divided by the number k of outputs)."""
    if mode == "trace":
        return _gram(f1, f2) / f1.shape[-1]
    a, b = f1[..., :, None, :], f2[..., None, :, :]      # (..., N1, 1, k), (..., 1, N2, k)
    return a * b if mode == "diagonal" else a[..., :, None] * b[..., None, :]


def _leaves(tree):
    """The arrays of a nested params-like structure."""
    if isinstance(tree, (tuple, list)):
        for t in tree:
            yield from _leaves(t)
    elif tree is not None:
        yield tree


def _kernels(net, params, x1, x2, names, mode="trace"):
    """{name: array} of empirical kernels for (possibly stacked) params, in the
    output layout of ``mode`` (see :func:`_ntk`)."""
    layers = net.layers
    split = None if x2 is None else x1.shape[-2]
    res = {}
    with np.errstate(over="ignore", invalid="ignore"):   # (checked below)
        f, inputs = _forward(layers, params,
                             x1 if x2 is None else np.concatenate((x1, x2), -2))
        f1, f2 = (f, f) if x2 is None else (f[..., :split, :], f[..., split:, :])
        if "nngp" in names:
            res["nngp"] = _output_kernel(f1, f2, mode)
        if "ntk" in names:
            res["ntk"] = _ntk(layers, params, f.shape[-1], inputs, split, mode)
    no_overflow("kernels", *res.values())
    return res


def _through_input_maps(full, x1, x2, params):
    """Inputs and params for ``full.body``: the network's leading input maps
    (Fourier features, fixed) applied to the data, their params dropped."""
    params = _body_params(full, params)
    if full.input_maps:
        x1, x2 = _map_inputs(full, x1, x2)
    return x1, x2, params


def _body_params(full, params):
    if params is None:
        raise ValueError("params is required: pass the params returned by net.init_fn")
    if not full.input_maps:
        return params
    if not isinstance(params, (tuple, list)) or len(params) != len(full.layers):
        raise ValueError(f"params must be the tuple of {len(full.layers)} entries "
                         "returned by net.init_fn")
    return tuple(params)[len(full.input_maps):]


def _prepare(net, x1, x2, params, name1="x1"):
    params = net._flat_params(params)
    a1 = check_inputs(net._flatten(x1), name1)
    check_params(net, params, a1.shape[1])     # before x2: x1 against the params
    a2 = None if x2 is None else check_inputs(net._flatten(x2), "x2", a1.shape[1])
    return a1, a2, _as_float(net.layers, params)


def _as_float(layers, params):
    """Dense parameters as float64 arrays, through parallel branches."""
    def conv(layer, p):
        if isinstance(layer, Dense):
            return (np.asarray(p[0], dtype=np.float64),
                    None if p[1] is None else np.asarray(p[1], dtype=np.float64))
        if isinstance(layer, parallel):
            return tuple(_as_float(branch, bp) for branch, bp in zip(layer.branches, p))
        return ()
    return tuple(conv(layer, p) for layer, p in zip(layers, params))


def value_and_grad(net, params, x, cotangent_fn):
    """Output F = f(x; params) and the gradient of a loss L(F) with respect to
    the parameters, given ``cotangent_fn(F) = ∂L/∂F`` (reverse mode, exact).
    The gradient has the structure of ``init_fn``'s params."""
    net = _as_network(net)
    _check_layers(net)
    a, _, params = _prepare(net, x, None, params)
    with np.errstate(over="ignore", invalid="ignore"):
        f, inputs = _forward(net.layers, params, a)
        no_overflow("outputs", f)
        grads = _vjp(net.layers, params, inputs, np.asarray(cotangent_fn(f), dtype=np.float64))
    no_overflow("gradients", *_leaves(grads))
    return f, grads


def _vjp(layers, params, inputs, cotangent):
    """Jᵀ v: the parameters' cotangent (the structure of ``params``) of the
    output cotangent v, by back-propagation from the forward pass ``inputs``."""
    got = {}

    def visit(key, layer, c, s, h, delta):
        gW = np.swapaxes(h, -1, -2) @ delta
        got[key] = (gW * c if c != 1.0 else gW,
                    None if layer.b_std is None else s * delta.sum(axis=0))

    _backward(layers, params, inputs, cotangent, visit, 0)

    def nested(layers, ps, key):   # Dense layers before the first get no signal: 0
        return tuple(
            got.get(key + (i,), (np.zeros_like(p[0]),
                                 None if p[1] is None else np.zeros_like(p[1])))
            if isinstance(layer, Dense) else
            tuple(nested(branch, bp, key + (i, b))
                  for b, (branch, bp) in enumerate(zip(layer.branches, p)))
            if isinstance(layer, parallel) else ()
            for i, (layer, p) in enumerate(zip(layers, ps)))
    return nested(layers, params, ())


def _forward_jvp(layers, params, tangents, h, dh):
    """(f, ∂f[t]): the output and its derivative along the parameter tangent
    ``tangents`` (the structure of ``params``), in forward mode; ``dh`` is
    the tangent of the input ``h``."""
    for layer, p, dp in zip(layers, params, tangents):
        if isinstance(layer, Dense):
            (W, b), (dW, db) = p, dp
            c, s = layer.coefs(W.shape[-2])
            h, dh = c * (h @ W), c * (dh @ W + h @ dW)
            if b is not None:
                h, dh = h + s * b, dh + s * db
        elif isinstance(layer, Activation):
            h, dh = layer.fn(h), layer.dfn(h) * dh
        elif isinstance(layer, LayerNorm):
            # y = (h - μ)/σ: ∂y = (∂c - y mean(y ∂c)) / σ, ∂c = ∂h - mean ∂h
            cen = h - h.mean(axis=-1, keepdims=True)
            sigma = np.sqrt((cen * cen).mean(axis=-1, keepdims=True) + layer.eps)
            h = cen / sigma
            dcen = dh - dh.mean(axis=-1, keepdims=True)
            dh = (dcen - h * (h * dcen).mean(axis=-1, keepdims=True)) / sigma
        elif isinstance(layer, parallel):
            pairs = [_forward_jvp(branch, bp, bt, hb, db) for branch, bp, bt, hb, db
                     in zip(layer.branches, p, dp, h, dh)]
            h, dh = [f for f, _ in pairs], [d for _, d in pairs]
        elif isinstance(layer, FanInProd):
            dh = sum(d * np.prod([g for j, g in enumerate(h) if j != b], axis=0)
                     for b, d in enumerate(dh))
            h = layer._apply((), h)
        elif isinstance(layer, _BRANCHING):   # linear: FanOut, FanInSum/Concat, Scale
            h, dh = layer._apply((), h), layer._apply((), dh)
    return h, dh


def _difference(layers, p, p0):
    """p - p0 for parameters of ``layers`` (bias-free Dense layers: None)."""
    def sub(layer, a, b):
        if isinstance(layer, Dense):
            return a[0] - b[0], None if a[1] is None else a[1] - b[1]
        if isinstance(layer, parallel):
            return tuple(_difference(branch, ba, bb)
                         for branch, ba, bb in zip(layer.branches, a, b))
        return ()
    return tuple(sub(layer, a, b) for layer, a, b in zip(layers, p, p0))


def linearize(f, params):
    """neural-tangents' ``nt.linearize``: ``f_lin(p, x)`` = f(params, x) +
    J(x) (p − params), the network ``f`` (a network or its ``apply_fn``)
    expanded to first order in its parameters around ``params``.  Exact: the
    Jacobian-vector product runs forward through the layers (no Jacobian).
    Gradient descent on the MSE of ``f_lin`` follows the empirical NTK's
    dynamics (``predict.gradient_descent_mse``; Lee et al. 2019)."""
    full = _as_network(f)
    net = full.body
    _check_layers(net)
    params0 = _body_params(full, params)

    def f_lin(p, x, *args, **kwargs):
        if np.ndim(x) == 1:     # one point, as apply_fn takes it
            return f_lin(p, np.asarray(x)[None])[0]
        x, _, p = _through_input_maps(full, x, None, p)
        a, _, p = _prepare(net, x, None, p, "x")
        p0 = _prepare(net, x, None, params0, "x")[2]
        with np.errstate(over="ignore", invalid="ignore"):
            f0, df = _forward_jvp(net.layers, p0, _difference(net.layers, p, p0), a,
                                  np.zeros_like(a))
            f = f0 + df
        return no_overflow("linearized outputs", f)[0]
    return f_lin


def empirical_ntk_vp_fn(f, x1, x2, params, **apply_fn_kwargs):
    """neural-tangents' ``nt.empirical_ntk_vp_fn``: ``ntk_vp_fn(v)`` = Θ v =
    J(x1) J(x2)ᵀ v for cotangents v of the shape of f(x2) (N2, k), with the
    shape of f(x1) (``x2=None``: x1): the untraced NTK (summed over outputs,
    not averaged) times v, without forming Θ or a Jacobian — one
    back-propagation at x2 and one forward-mode pass at x1, memory
    O((N1 + N2)·width + params) (Novak et al. 2022, "NTK-vector products").
    ``apply_fn_kwargs`` are accepted and unused, as by ``apply_fn``."""
    full = _as_network(f)
    net = full.body
    _check_layers(net)
    x1, x2, params = _through_input_maps(full, x1, x2, params)
    a1, a2, p = _prepare(net, x1, x2, params)
    a2 = a1 if a2 is None else a2
    f2, inputs = _forward(net.layers, p, a2)

    def ntk_vp_fn(cotangents):
        v = real_array("cotangents", cotangents, finite=True)
        if v.shape != f2.shape:
            raise ValueError(f"cotangents must have the shape of f(x2), {f2.shape}, "
                             f"got {v.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            tangent = _vjp(net.layers, p, inputs, v)
            out = _forward_jvp(net.layers, p, tangent, a1, np.zeros_like(a1))[1]
        return no_overflow("NTK-vector products", out)[0]
    return ntk_vp_fn


# --------------------------------------------------------------------------
# public empirical kernel functions (neural-tangents signatures)
def _output_mode(trace_axes, diagonal_axes):
    """neural-tangents' ``trace_axes`` / ``diagonal_axes`` for outputs of shape
    (N, k): "trace" (trace_axes=(-1,), the default: one (N1, N2) kernel, the
    mean over channels), "full" (trace_axes=(): (N1, N2, k, k)) or "diagonal"
    (trace_axes=(), diagonal_axes=(-1,): (N1, N2, k), channel j with j)."""
    def channel(name, value):
        axes = (value,) if isinstance(value, (int, np.integer)) else value
        try:
            axes = tuple(axes)
        except TypeError:
            axes = (None,)
        if any(isinstance(a, bool) or a not in (1, -1) for a in axes):
            raise ValueError(f"{name}: outputs have shape (N, k), so only the channel axis "
                             f"-1 (or 1) can be named (axis 0 is the batch axis), got {value!r}")
        return bool(axes)
    trace, diagonal = channel("trace_axes", trace_axes), channel("diagonal_axes", diagonal_axes)
    if trace and diagonal:
        raise ValueError("trace_axes and diagonal_axes both name the channel axis: "
                         "pass diagonal_axes=(-1,) with trace_axes=()")
    return "trace" if trace else "diagonal" if diagonal else "full"


def empirical_kernel_fn(net, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                        implementation=None):
    """``kernel_fn(x1, x2=None, get=None, params=...)``: empirical NNGP/NTK of the
    finite network ``net`` (or its ``apply_fn``) with parameters ``params``
    (from ``net.init_fn``).  Returns an array for a string ``get``, else a
    ``Kernel`` namedtuple, like ``net.kernel``: (N1, N2) traced over the k
    outputs (default), (N1, N2, k, k) for ``trace_axes=()``, (N1, N2, k) with
    ``diagonal_axes=(-1,)`` as well (neural-tangents' layouts).  ``vmap_axes``
    and ``implementation`` are neural-tangents' options for its Jacobian
    contractions, accepted and unused: the per-layer Gram formula needs neither."""
    full = _as_network(net)
    net = full.body        # leading input maps (Fourier features) act on the data
    _check_layers(net)
    mode = _output_mode(trace_axes, diagonal_axes)
    _check_implementation(implementation)

    def kernel_fn(x1, x2=None, get=None, params=None, **apply_fn_kwargs):
        # (neural-tangents passes apply_fn_kwargs on to apply_fn; the networks
        # here are deterministic, train-mode Dropout refused: they change nothing)
        names, single = parse_get(get)
        x1, x2, params = _through_input_maps(full, x1, x2, params)
        a1, a2, p = _prepare(net, x1, x2, params)
        res = _kernels(net, p, a1, a2, names, mode)
        return res[names[0]] if single else _kernel_type(names)(*(res[g] for g in names))

    return kernel_fn


def empirical_ntk_fn(net, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                     implementation=None):
    """``ntk_fn(x1, x2, params)``: Θ(x, x') = (1/k) Σ_j ∇_θ f_j(x)·∇_θ f_j(x'),
    exact, via per-layer Gram matrices (see the module docstring); output
    layouts and options as in :func:`empirical_kernel_fn`."""
    fn = empirical_kernel_fn(net, trace_axes, diagonal_axes, vmap_axes, implementation)
    return lambda x1, x2, params, **apply_fn_kwargs: fn(x1, x2, "ntk", params)


def empirical_nngp_fn(net, trace_axes=(-1,), diagonal_axes=()):
    """``nngp_fn(x1, x2, params)``: K(x, x') = (1/k) f(x)·f(x') (layouts as in
    :func:`empirical_kernel_fn`)."""
    fn = empirical_kernel_fn(net, trace_axes, diagonal_axes)
    return lambda x1, x2, params, **apply_fn_kwargs: fn(x1, x2, "nngp", params)


# --------------------------------------------------------------------------
# Monte Carlo
def _stack(param_list, layers):
    """Parameters of several networks stacked along a leading axis (W: (B, n,
    m), b: (B, 1, m)), through parallel branches."""
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            W = np.stack([p[i][0] for p in param_list])
            b = None if layer.b_std is None else np.stack([p[i][1] for p in param_list])[:, None, :]
            out.append((W, b))
        elif isinstance(layer, parallel):
            out.append(tuple(_stack([p[i][b] for p in param_list], branch)
                             for b, branch in enumerate(layer.branches)))
        else:
            out.append(())
    return tuple(out)


def _auto_batch(net, n1, n2, d, mode="trace"):
    """Networks per batch keeping temporaries near ``_MAX_ENTRIES`` doubles:
    parameters, activations, back-propagated signals (all k channels at once
    when untraced, see ``_ntk``) and the kernels in the layout of ``mode``."""
    widths = [d] + [layer.width for layer in _dense_layers(net.layers)]
    k = max(widths) if _branched(net) else widths[-1]   # (an upper bound with branches)
    n_params = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    channels = min(k, 64) if mode == "trace" else k
    outputs = {"trace": 1, "diagonal": k, "full": k * k}[mode]
    per_sample = (2 * n_params + (n1 + n2) * (sum(widths) * 3 + channels * max(widths))
                  + 4 * n1 * n2 * outputs)
    return int(max(1, min(256, _MAX_ENTRIES // max(per_sample, 1))))


def sample_kernels(net, x1, x2, names, n_samples, seed, batch_size=None, mode="trace",
                   stops=()):
    """Yields {name: (B, N1, N2, ...)} empirical kernels (output layout of
    ``mode``) of independent random networks, in batches that also end after
    each count in ``stops``.  Sample s is drawn from the s-th child of
    ``np.random.SeedSequence(seed)``, so results do not depend on ``batch_size``."""
    net = _as_network(net)
    _check_layers(net)
    n_samples = count("n_samples", n_samples, 1)
    a1 = check_inputs(x1, "x1")
    a2 = None if x2 is None else check_inputs(x2, "x2", a1.shape[1])
    if batch_size is None:
        batch_size = _auto_batch(net, a1.shape[0], a1.shape[0] if a2 is None else a2.shape[0],
                                 a1.shape[1], mode)
    batch_size = count("batch_size", batch_size, 1)
    for params in param_batches(net, a1.shape[1], n_samples, seed, batch_size, stops):
        yield _kernels(net, params, a1[None], None if a2 is None else a2[None], names, mode)


def param_batches(net, d_in, n_samples, seed, batch_size, stops=()):
    """Yields parameters of independent random networks stacked along a leading
    axis (W: (B, n, m), b: (B, 1, m)), at most ``batch_size`` at a time and
    ending after each count in ``stops``; network s uses the s-th child of
    ``np.random.SeedSequence(seed)``."""
    children = np.random.SeedSequence(seed).spawn(n_samples)
    ends = sorted(set(range(batch_size, n_samples, batch_size)) | {n_samples}
                  | {int(n) for n in stops if 0 < n < n_samples})
    for s0, s1 in zip([0] + ends[:-1], ends):
        plist = [net.init_fn(np.random.default_rng(c), (-1, d_in))[1] for c in children[s0:s1]]
        yield _stack(plist, net.layers)


def _running_moments(net, x1, x2, names, counts, seed, batch_size, mode):
    """Yields (n, {name: _Moments}) once the first n samples are in, for each n
    of the increasing ``counts``; x1, x2 are checked, mapped inputs."""
    moments = {g: _Moments() for g in names}
    if len(x1) == 0 or (x2 is not None and len(x2) == 0):
        shape = (len(x1), len(x1 if x2 is None else x2))
        for g in names:   # nothing to estimate: mean and standard error 0
            moments[g].add(np.zeros((2,) + shape))
        for n in counts:
            yield n, moments
        return
    pending = list(counts)
    for batch in sample_kernels(net, x1, x2, names, counts[-1], seed, batch_size, mode,
                                stops=counts):
        for g in names:
            moments[g].add(batch[g])
        while pending and moments[names[0]].n == pending[0]:
            yield pending.pop(0), moments


class _Moments:
    """Running mean and sum of squared deviations (Chan et al. 1979 merge), of
    the samples divided by a power of two per entry (the first batch's
    largest magnitude, rounded up): exact scaling, so the same numbers as
    without it, but squares that cannot overflow for entries up to ~1e308."""

    def __init__(self):
        self.n, self._mean, self._m2, self._scale = 0, 0.0, 0.0, 1.0

    def add(self, batch):
        if self.n == 0:
            top = np.abs(batch).max(axis=0)
            self._scale = np.exp2(np.ceil(np.log2(np.where(top > 0, top, 1.0))))
        batch = batch / self._scale
        nb = batch.shape[0]
        mb = batch.mean(axis=0)
        m2b = ((batch - mb) ** 2).sum(axis=0)
        if self.n == 0:
            self.n, self._mean, self._m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2b + delta * delta * (self.n * nb / n)
        self.n = n

    @property
    def mean(self):
        return self._mean * self._scale

    def stderr(self):
        return self._scale * np.sqrt(self._m2 / (self.n - 1) / self.n)


def monte_carlo_kernel_fn(*args, **kwargs):
    """Monte Carlo estimate of the expected empirical kernels over random
    initialisations, in either of two forms.

    ``monte_carlo_kernel_fn(net, n_samples, seed=0, batch_size=None)``:
    ``kernel_fn(x1, x2=None, get=None)`` returns ``MonteCarloKernel(mean,
    stderr, n_samples)``; ``stderr`` is the standard error of the mean,
    √(s²/n) with the unbiased sample variance s² (n_samples ≥ 2).

    neural-tangents' ``monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples,
    batch_size=0, device_count=-1, store_on_device=True, trace_axes=(-1,),
    diagonal_axes=(), vmap_axes=None, implementation=None)``: ``kernel_fn(x1,
    x2=None, get=None)`` returns the means alone, in the layouts of
    :func:`empirical_kernel_fn`; with ``n_samples`` a list of counts, a
    generator of the means after each count.  ``key`` is an int or a JAX PRNG
    key's value; ``init_fn`` and ``apply_fn`` must come from the same network;
    the options after ``n_samples`` other than the axes are accepted and unused.

    ``batch_size`` networks (first form; None: chosen to keep temporaries near
    128 MiB) are evaluated together: memory is O(batch · N · width + N1 · N2)
    whatever ``n_samples`` is, and results do not depend on it.
    """
    if (len(args) >= 2 and callable(args[1])) or "apply_fn" in kwargs or "key" in kwargs:
        return _nt_monte_carlo_kernel_fn(*args, **kwargs)
    return _monte_carlo_kernel_fn(*args, **kwargs)


def _monte_carlo_kernel_fn(net, n_samples, seed=0, batch_size=None):
    full = _as_network(net)
    _check_layers(full.body)
    n_samples = count("n_samples", n_samples, 2)
    seed = entropy("seed", seed)
    if batch_size is not None:
        count("batch_size", batch_size, 1)

    def kernel_fn(x1, x2=None, get=None):
        names, single = parse_get(get)
        x1, x2 = _map_inputs(full, x1, x2)
        _, moments = next(_running_moments(full.body, x1, x2, names, [n_samples], seed,
                                           batch_size, "trace"))
        mean = [moments[g].mean for g in names]
        se = [moments[g].stderr() for g in names]
        if single:
            return MonteCarloKernel(mean[0], se[0], n_samples)
        kt = _kernel_type(names)
        return MonteCarloKernel(kt(*mean), kt(*se), n_samples)

    return kernel_fn


def _nt_monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples, batch_size=0, device_count=-1,
                              store_on_device=True, trace_axes=(-1,), diagonal_axes=(),
                              vmap_axes=None, implementation=None):
    full = _as_network(apply_fn)
    if _as_network(init_fn) is not full:
        raise ValueError("init_fn and apply_fn must belong to the same network "
                         "(init_fn, apply_fn, kernel_fn = net)")
    _check_layers(full.body)
    mode = _output_mode(trace_axes, diagonal_axes)
    _check_implementation(implementation)
    key = entropy("key", key)
    count("batch_size", batch_size, 0)      # neural-tangents' options: checked, unused
    count("device_count", device_count, -1)
    flag("store_on_device", store_on_device)
    several = not isinstance(n_samples, (int, np.integer))
    try:
        counts = list(n_samples) if several else [n_samples]
    except TypeError:
        raise TypeError(f"n_samples must be an int or an iterable of ints, got "
                        f"{type(n_samples).__name__}") from None
    counts = [count("n_samples", n, 1) for n in counts]
    if not counts or counts != sorted(set(counts)):
        raise ValueError(f"n_samples must be a non-empty increasing list of counts, got {counts}")

    def means(x1, x2, names, single):
        for _, moments in _running_moments(full.body, x1, x2, names, counts, key, None, mode):
            mean = [moments[g].mean for g in names]
            yield mean[0] if single else _kernel_type(names)(*mean)

    def kernel_fn(x1, x2=None, get=None):
        names, single = parse_get(get)
        x1, x2 = _map_inputs(full, x1, x2)    # checked now, not when the generator runs
        gen = means(x1, x2, names, single)
        return gen if several else next(gen)

    return kernel_fn
