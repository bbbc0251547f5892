"""PyTorch bridge: map an ``nn.Sequential`` MLP to its infkernel network, and
compute a torch model's empirical NTK with ``torch.func``.

torch is optional (``pip install infkernel[torch]``) and imported lazily.

A ``torch.nn.Linear(n, m)`` computes y = x Wᵀ + b with W, b trained directly:
neural-tangents' *standard* parameterization (Sohl-Dickstein et al. 2020).
Its default initialisation is kaiming_uniform with a = √5, i.e.
W ~ U(±1/√n), b ~ U(±1/√n): Var W = 1/(3n), Var b = 1/(3n), so
``Dense(m, W_std=1/√3, b_std=1/√(3n), parameterization="standard")``.  The
analytic kernels depend on the weights only through these variances; the
finite network's preactivations become Gaussian as the widths (and, for the
first layer, the input dimension) grow, whatever the weight distribution.
"""
import math

import numpy as np

from ._checks import count
from .activations import Gelu, LeakyRelu, Relu
from .activations_numeric import Elu, Mish, Selu, Sigmoid, Silu, Softplus, Tanh
from .layers import Dense, Dropout, Flatten, Identity, Layer, LayerNorm, serial

__all__ = ["from_torch", "torch_params", "empirical_ntk_torch"]

#: Variance factor of torch's default ``nn.Linear`` initialisation:
#: U(±1/√n) has variance 1/(3n).
_DEFAULT_W_STD = 1.0 / math.sqrt(3.0)


def _torch():
    try:
        import torch
    except ImportError:   # pragma: no cover - depends on the environment
        raise ImportError("the PyTorch bridge needs torch: pip install infkernel[torch] "
                          "(or pip install torch)") from None
    return torch


def _flatten(module, nn):
    if isinstance(module, nn.Sequential):
        out = []
        for child in module:
            out.extend(_flatten(child, nn))
        return out
    return [module]


def _layer(m, nn):
    """The infkernel layer of a torch module other than Linear, or a string
    saying why there is none."""
    simple = {nn.ReLU: Relu, nn.Tanh: Tanh, nn.Sigmoid: Sigmoid, nn.SiLU: Silu,
              nn.SELU: Selu, nn.Mish: Mish, nn.Identity: Identity}
    if type(m) in simple:
        return simple[type(m)]()
    if isinstance(m, nn.GELU):
        return Gelu(approximate=(m.approximate == "tanh"))
    if isinstance(m, nn.LeakyReLU):
        return LeakyRelu(float(m.negative_slope))
    if isinstance(m, nn.ELU):
        return Elu(float(m.alpha))
    if isinstance(m, nn.Softplus):
        return Softplus() if m.beta == 1 else "only beta=1 is supported"
    if isinstance(m, nn.Flatten):
        return Flatten() if m.start_dim == 1 and m.end_dim == -1 else \
            "only start_dim=1, end_dim=-1 (all but the batch axis) is supported"
    if isinstance(m, nn.Dropout):      # torch's p is the drop probability
        return Dropout(1.0 - m.p, "train" if m.training else "test") if m.p < 1 else \
            "p=1 drops everything"
    if isinstance(m, nn.LayerNorm):
        if m.elementwise_affine:
            return ("its affine weight and bias are trained and add to the NTK; use "
                    "elementwise_affine=False")
        if len(m.normalized_shape) != 1:
            return "only the last axis can be normalised"
        return LayerNorm(eps=float(m.eps))
    return None


_SUPPORTED = ("Linear, ReLU, LeakyReLU, GELU, Tanh, Sigmoid, SiLU, ELU, SELU, Softplus, Mish, "
              "Identity, Flatten, Dropout, LayerNorm(elementwise_affine=False) (inside "
              "nn.Sequential)")


def _modules(module):
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    mods = _flatten(module, nn)
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            continue
        layer = _layer(m, nn)
        if not isinstance(layer, Layer):
            why = f" ({layer})" if isinstance(layer, str) else ""
            raise TypeError(f"from_torch: layer {i} ({m.__class__.__name__}: {m!r}) is not "
                            f"supported{why}; supported: {_SUPPORTED}")
    linear = [(i, m) for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("from_torch: the module has no nn.Linear layer")
    for (_, a), (j, b) in zip(linear, linear[1:]):
        if b.in_features != a.out_features:
            raise ValueError(f"from_torch: layer {j} ({b!r}) takes {b.in_features} features but "
                             f"the Linear layer before it gives {a.out_features}")
    return mods, nn


def _check_default_init(i, m, W, b, fan_in):
    """A ValueError unless layer ``i``'s weights and biases look drawn from
    torch's default U(±1/√fan_in): within the bound, biases not all zero, and
    mean squares within 6 standard errors of 1/(3 fan_in) (for U(±a), x² has
    mean a²/3 and standard deviation 0.894 a²/3: no false alarm in practice,
    and zeroed or rescaled initialisations of more than ~30 values caught)."""
    a2 = 1.0 / fan_in
    why = None
    for name, v in (("weight", W), ("bias", b)):
        if v is None or v.size == 0:
            continue
        big = np.abs(v).max()
        z = (np.mean(v * v) - a2 / 3) / (0.894 * a2 / 3 / math.sqrt(v.size))
        if big > math.sqrt(a2) * (1 + 1e-6):
            why = f"|{name}| up to {big:.3g} > 1/sqrt(fan_in) = {math.sqrt(a2):.3g}"
        elif big == 0:
            why = f"all {name} entries are 0"
        elif abs(z) > 6:
            why = (f"the {name} entries' mean square {np.mean(v * v):.3g} is {abs(z):.0f} "
                   f"standard errors from 1/(3 fan_in) = {a2 / 3:.3g}")
        if why:
            raise ValueError(f"from_torch: layer {i} ({m!r}): {why}, so it does not have "
                             "torch's default initialisation: pass scale='measured'")


def from_torch(module, scale="default"):
    """The infkernel network equivalent to a torch MLP.

    Args:
      module: an ``nn.Sequential`` (possibly nested) of ``nn.Linear`` and the
        modules listed in ``_SUPPORTED`` (activations without a closed form,
        such as Tanh, map to infkernel's certified quadrature duals; Dropout
        follows the module's train/eval state).
      scale: ``"default"``: torch's default ``nn.Linear`` initialisation,
        W_std = 1/√3, b_std = 1/√(3·fan_in) (exact variances of U(±1/√fan_in));
        the current weights and biases are checked to look drawn from
        U(±1/√fan_in) (within the bound, mean squares near 1/(3 fan_in), biases
        not all zero), which a custom initialisation breaks.  ``"measured"``: variances
        estimated from the module's current parameters, W_std² = fan_in·mean(W²),
        b_std² = mean(b²), for custom zero-mean initialisations (noisy for
        small layers: one output unit gives b_std = |b|).
        A Linear layer with frozen parameters (``requires_grad=False``) is
        refused: a Dense layer's NTK counts its W and b.

    Returns:
      an ``ik.serial`` network with standard-parameterization ``Dense`` layers,
      whose ``input_dim`` is the first Linear's in_features (other input
      widths are refused).
    """
    if scale not in ("default", "measured"):
        raise ValueError(f"from_torch: scale must be 'default' or 'measured', got {scale!r}")
    mods, nn = _modules(module)
    layers = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            frozen = [n for n, v in m.named_parameters() if not v.requires_grad]
            if frozen:
                raise ValueError(
                    f"from_torch: layer {i} ({m!r}) has frozen parameters ({', '.join(frozen)}"
                    " with requires_grad=False), which training leaves out of the NTK, while "
                    "a Dense layer trains its W and b (the NNGP does not depend on it): "
                    "call module.requires_grad_(True) for the mapping")
            W = m.weight.detach().cpu().double().numpy()
            b = None if m.bias is None else m.bias.detach().cpu().double().numpy()
            fan_in = m.in_features
            if scale == "default":
                _check_default_init(i, m, W, b, fan_in)
                w_std, b_std = _DEFAULT_W_STD, (None if b is None else 1 / math.sqrt(3 * fan_in))
            else:
                w_std = math.sqrt(fan_in * float(np.mean(W * W)))
                b_std = None if b is None else math.sqrt(float(np.mean(b * b)))
            layers.append(Dense(m.out_features, W_std=w_std, b_std=b_std,
                                parameterization="standard"))
        else:
            layers.append(_layer(m, nn))
    net = serial(*layers)
    net.input_dim = next(m.in_features for m in mods if isinstance(m, nn.Linear))
    return net


def torch_params(module):
    """The module's current parameters in infkernel's layout (``W`` as
    (in, out) float64 arrays), for ``from_torch(module)``'s ``apply_fn`` and
    empirical kernels: ``net.apply_fn(torch_params(m), x) == m(x)``."""
    mods, nn = _modules(module)
    out = []
    for m in mods:
        if isinstance(m, nn.Linear):
            out.append((m.weight.detach().cpu().double().numpy().T.copy(),
                        None if m.bias is None else m.bias.detach().cpu().double().numpy().copy()))
        else:
            out.append(())
    return tuple(out)


def empirical_ntk_torch(module, x1, x2=None, chunk_size=64):
    """Empirical NTK of a torch model, traced over outputs as neural-tangents
    does: Θ(x, x') = (1/k) Σ_j Σ_p ∂f_j(x)/∂θ_p ∂f_j(x')/∂θ_p, over the
    trainable parameters θ (``requires_grad``; frozen ones are not trained,
    so they are not in the NTK) and the k entries of each example's output
    (any shape: (N,), (N, k), (N, a, b), ...).

    Per-example Jacobians come from ``torch.func.vmap(jacrev(...))`` on
    ``chunk_size`` inputs at a time; all are kept, (N1 + N2)·k·P numbers (N·k·P
    for x2=None).  Works for any module applied to (N, d) inputs, not only
    the ones ``from_torch`` maps; inputs may be NumPy arrays or tensors (any
    device, requires_grad or not).  Computed in the module's dtype; returns a
    float64 NumPy (N1, N2) array.
    """
    torch = _torch()
    from torch.func import functional_call, jacrev, vmap
    from .kernel import check_inputs

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    a1 = check_inputs(x1, "x1")
    a2 = None if x2 is None else check_inputs(x2, "x2", a1.shape[1])
    chunk_size = count("chunk_size", chunk_size)
    varying = [m for m in module.modules() if m.training and isinstance(
        m, (torch.nn.Dropout, torch.nn.AlphaDropout, torch.nn.modules.batchnorm._BatchNorm))]
    if varying:
        raise TypeError(f"empirical NTKs need a fixed function of each input; {varying[0]!r} "
                        "is in train mode (dropout draws new masks on every call, batch "
                        "normalisation uses the batch's statistics): call module.eval()")
    params = {k: v.detach() for k, v in module.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("module has no trainable parameters (requires_grad), so its NTK "
                         "is 0")
    ref = next(iter(params.values()))
    n1, n2 = a1.shape[0], (a1 if a2 is None else a2).shape[0]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2))
    try:
        with torch.no_grad():
            module(torch.as_tensor(a1[:1], dtype=ref.dtype, device=ref.device))
    except Exception as exc:
        raise ValueError(f"module cannot be applied to x1 of shape {a1.shape}: "
                         f"{type(exc).__name__}: {exc}") from None

    def f(p, x):    # one example's output, flattened: its k entries
        return functional_call(module, p, (x[None],))[0].reshape(-1)

    jac_fn = vmap(jacrev(f), in_dims=(None, 0))

    def jacobian(a):
        t = torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
        blocks = []
        for s in range(0, t.shape[0], chunk_size):
            with torch.no_grad():
                j = jac_fn(params, t[s:s + chunk_size])
            blocks.append(torch.cat([v.reshape(v.shape[0], v.shape[1], -1)
                                     for v in j.values()], dim=-1))
        return torch.cat(blocks)          # (N, k, P)

    J1 = jacobian(a1)
    J2 = J1 if a2 is None else jacobian(a2)
    k = J1.shape[1]
    ntk = torch.einsum("akp,bkp->ab", J1, J2) / k
    return ntk.detach().cpu().double().numpy()
