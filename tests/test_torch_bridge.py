"""PyTorch bridge: structure mapping, exact empirical NTK, and the wide limit."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install infkernel[torch])")
nn = torch.nn

import infkernel as ik  # noqa: E402
from infkernel.empirical import empirical_ntk_fn  # noqa: E402
from infkernel.torch_bridge import empirical_ntk_torch, from_torch, torch_params  # noqa: E402

#: z-score bound, as in test_empirical.py (Bonferroni over ~30 comparisons
#: here: P(max |Z| > 5) < 2e-5 for a correct mapping).
K_SE = 5.0


def test_from_torch_maps_structure_and_default_scale():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 7), nn.ReLU(),
                      nn.Sequential(nn.Linear(7, 5, bias=False), nn.LeakyReLU(0.2)),
                      nn.GELU(), nn.Identity(), nn.Linear(5, 2))
    net = from_torch(m)
    kinds = [type(layer).__name__ if not isinstance(layer, ik.Activation) else layer.name
             for layer in net.layers]
    assert kinds == ["Dense", "ABRelu", "Dense", "ABRelu", "Gelu", "Identity", "Dense"]
    d0, d1, d2 = net.layers[0], net.layers[2], net.layers[6]
    assert d0.parameterization == "standard" and d0.out_dim == 7
    assert math.isclose(d0.W_std, 1 / math.sqrt(3)) and math.isclose(d0.b_std, 1 / 3)
    assert d1.b_std is None and math.isclose(d2.b_std, 1 / math.sqrt(15))
    assert net.layers[3].params == (0.2, 1.0)


def test_measured_scale_and_custom_init():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 1))
    with torch.no_grad():
        nn.init.normal_(m[0].weight, std=2.0 / math.sqrt(400))
        nn.init.normal_(m[0].bias, std=0.5)
    with pytest.raises(ValueError, match="scale='measured'"):
        from_torch(m)
    d = from_torch(m, scale="measured").layers[0]
    # 120000 weights: relative s.e. of the std estimate ≈ 1/√(2·120000) ≈ 0.2 %
    assert abs(d.W_std - 2.0) < 0.02 and abs(d.b_std - 0.5) < 0.1


@pytest.mark.parametrize("act", [nn.ReLU, nn.GELU, lambda: nn.LeakyReLU(0.3), nn.Identity])
def test_empirical_ntk_torch_equals_structured_ntk(act):
    """torch.func Jacobians and the structured formula give the same NTK to
    rounding (float64 module: 1e-12 relative)."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(3, 9), act(), nn.Linear(9, 6, bias=False), act(),
                      nn.Linear(6, 2)).double()
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    net, p = from_torch(m), torch_params(m)
    np.testing.assert_allclose(net.apply_fn(p, x1), m(torch.tensor(x1)).detach().numpy(),
                               rtol=0, atol=1e-14)
    ref = empirical_ntk_torch(m, x1, x2, chunk_size=2)
    np.testing.assert_allclose(empirical_ntk_fn(net)(x1, x2, p), ref, rtol=0,
                               atol=1e-12 * np.abs(ref).max())
    sym = empirical_ntk_torch(m, x1)
    np.testing.assert_allclose(sym, sym.T, rtol=0, atol=1e-14 * np.abs(sym).max())


@pytest.mark.parametrize("act", [nn.ReLU, nn.GELU])
def test_mapped_model_matches_analytic_kernel_on_average(act):
    """One hidden layer of torch-default-initialised models (uniform weights):
    averaged over 150 initialisations, the empirical NNGP f(x)f(x') and NTK
    match the analytic kernels of ``from_torch(model)`` within K_SE s.e.  The
    input dimension is 256 so that the first layer's uniform-weight
    preactivations are Gaussian to O(1/d) ≈ 0.4 % of the dual, below the
    ~1.5 % standard error."""
    d, width, n = 256, 256, 150
    x = np.random.default_rng(0).normal(size=(3, d))
    nngps, ntks = [], []
    for s in range(n):
        torch.manual_seed(s)
        m = nn.Sequential(nn.Linear(d, width), act(), nn.Linear(width, 1)).double()
        f = m(torch.tensor(x)).detach().numpy()
        nngps.append(f @ f.T)
        ntks.append(empirical_ntk_torch(m, x))
    a = from_torch(m).kernel(x, x)
    for emp, ana in ((nngps, a.nngp), (ntks, a.ntk)):
        emp = np.array(emp)
        se = emp.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.max(np.abs(emp.mean(axis=0) - ana) / se) < K_SE


def test_wide_model_ntk_close_to_analytic():
    """A single wide model (two hidden layers of 1024): its NTK concentrates,
    relative Frobenius error ~ C/√width with C ≈ 2 (measured ≈ 0.07); 0.2
    allows for seed-to-seed spread."""
    d, w = 128, 1024
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                      nn.Linear(w, 1)).double()
    x = np.random.default_rng(0).normal(size=(4, d))
    emp = empirical_ntk_torch(m, x)
    ana = from_torch(m).kernel(x, x, get="ntk")
    assert np.linalg.norm(emp - ana) / np.linalg.norm(ana) < 0.2


def test_more_modules_map_and_agree():
    """Tanh, SiLU, ELU, ... (certified quadrature duals), Flatten, LayerNorm
    without affine parameters and Dropout (train/eval state) map to their
    infkernel layers; in eval mode apply_fn reproduces the module exactly."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16),
                      nn.LayerNorm(16, elementwise_affine=False), nn.SiLU(), nn.Dropout(0.2),
                      nn.Linear(16, 8), nn.ELU(0.7), nn.Linear(8, 8), nn.Sigmoid(),
                      nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 8), nn.SELU(),
                      nn.Linear(8, 8), nn.Mish(), nn.Linear(8, 1)).double()
    net = from_torch(m)
    names = [type(l).__name__ if not isinstance(l, ik.Activation) else l.name
             for l in net.layers]
    assert names == ["Flatten", "Dense", "Tanh", "Dense", "LayerNorm", "Silu", "Dropout",
                     "Dense", "Elu", "Dense", "Sigmoid", "Dense", "Softplus", "Dense", "Selu",
                     "Dense", "Mish", "Dense"]
    assert net.layers[6].rate == pytest.approx(0.8) and net.layers[6].mode == "train"
    m.eval()
    x = np.random.default_rng(0).normal(size=(5, 3, 4))
    net = from_torch(m)
    assert net.layers[6].mode == "test"
    np.testing.assert_allclose(net.apply_fn(torch_params(m), x),
                               m(torch.as_tensor(x)).detach().numpy(), rtol=0, atol=1e-12)
    assert np.isfinite(net.kernel(x).ntk).all()


def test_unsupported_layers_are_named():
    with pytest.raises(TypeError, match=r"layer 1 \(Hardtanh"):
        from_torch(nn.Sequential(nn.Linear(2, 3), nn.Hardtanh(), nn.Linear(3, 1)))
    with pytest.raises(TypeError, match=r"layer 2 \(Conv1d"):
        from_torch(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Conv1d(1, 1, 1)))
    with pytest.raises(TypeError, match=r"LayerNorm.*elementwise_affine=False"):
        from_torch(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Linear(3, 1)))
    with pytest.raises(TypeError, match=r"Softplus.*beta=1"):
        from_torch(nn.Sequential(nn.Linear(2, 3), nn.Softplus(beta=2.0), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="no nn.Linear"):
        from_torch(nn.Sequential(nn.ReLU()))
    frozen = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    frozen[2].weight.requires_grad_(False)   # not trained: not in the NTK
    with pytest.raises(ValueError, match=r"layer 2 .* frozen parameters \(weight with"):
        from_torch(frozen)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch([nn.Linear(2, 3)])
    with pytest.raises(ValueError, match="scale"):
        from_torch(nn.Sequential(nn.Linear(2, 3)), scale="kaiming")
    with pytest.raises(ValueError, match="x2 has 3 features"):
        empirical_ntk_torch(nn.Linear(2, 1), np.ones((2, 2)), np.ones((2, 3)))
    dropping = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.3), nn.Linear(3, 1))
    with pytest.raises(TypeError, match="train mode .* module.eval"):
        empirical_ntk_torch(dropping, np.ones((2, 2)))
    empirical_ntk_torch(dropping.eval(), np.ones((2, 2)))


def _autograd_ntk(m, x1, x2):
    """Θ(x, x') = (1/k) Σ_j ∇θ f_j(x)·∇θ f_j(x') by plain autograd, one
    example and output entry at a time, over the trainable parameters."""
    params = [p for p in m.parameters() if p.requires_grad]

    def grads(x):
        out = m(torch.as_tensor(x[None], dtype=torch.float64))[0].reshape(-1)
        return torch.stack([torch.cat([g.reshape(-1) for g in
                                       torch.autograd.grad(o, params, retain_graph=True)])
                            for o in out])                    # (k, P)
    g1, g2 = [grads(x) for x in x1], [grads(x) for x in x2]
    k = g1[0].shape[0]
    return np.array([[float((a * b).sum()) / k for b in g2] for a in g1])


def test_empirical_ntk_torch_outputs_of_any_shape_and_trainable_parameters():
    """Outputs of shape (N,) and (N, 2, 3) are traced over all their entries
    (an (N, a, b) output was b times too large, an (N,) one crashed), and
    frozen parameters are left out; both against plain autograd."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((5, 4))
    for head, reshape in ((nn.Linear(6, 1), lambda t: t[:, 0]),
                          (nn.Linear(6, 6), lambda t: t.reshape(-1, 2, 3))):
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
                self.head = head

            def forward(self, t):
                return reshape(self.head(self.body(t)))
        m = Model().double()
        np.testing.assert_allclose(empirical_ntk_torch(m, x), _autograd_ntk(m, x, x),
                                   rtol=1e-12, atol=1e-14)
        m.body[0].weight.requires_grad_(False)
        np.testing.assert_allclose(empirical_ntk_torch(m, x, x[:2]), _autograd_ntk(m, x, x[:2]),
                                   rtol=1e-12, atol=1e-14)


def test_bridge_inputs_and_checks():
    """Tensors that require grad, bfloat16 tensors are accepted (detached,
    widened); zeroed biases, non-chaining Linear layers, a wrong input width
    (empirical and analytic kernels) and BatchNorm in train mode are refused
    by name."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    ref = from_torch(m).kernel(x.numpy(), None, "ntk")
    np.testing.assert_array_equal(from_torch(m).kernel(x.clone().requires_grad_(), None, "ntk"),
                                  ref)
    np.testing.assert_array_equal(empirical_ntk_torch(m, x.clone().requires_grad_()),
                                  empirical_ntk_torch(m, x.numpy()))
    xb = x.to(torch.bfloat16)
    np.testing.assert_array_equal(from_torch(m).kernel(xb, None, "ntk"),
                                  from_torch(m).kernel(xb.double().numpy(), None, "ntk"))
    with torch.no_grad():
        nn.init.zeros_(m[0].bias)
    with pytest.raises(ValueError, match="layer 0 .*all bias entries are 0.*scale='measured'"):
        from_torch(m)
    wide = nn.Sequential(nn.Linear(50, 400), nn.ReLU(), nn.Linear(400, 1))
    with torch.no_grad():
        wide[0].weight.mul_(0.5)
    with pytest.raises(ValueError, match="mean square .* standard errors"):
        from_torch(wide)
    with pytest.raises(ValueError, match=r"layer 2 .*takes 7 features but the Linear layer "
                                         r"before it gives 8"):
        from_torch(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(7, 1)))
    with pytest.raises(ValueError, match=r"cannot be applied to x1 of shape \(4, 5\)"):
        empirical_ntk_torch(m, np.ones((4, 5)))
    with pytest.raises(ValueError, match="takes inputs of dimension 3, got points of dimension 5"):
        from_torch(m, scale="measured").kernel(np.ones((4, 5)))
    with pytest.raises(ValueError, match="takes inputs of dimension 3, got points of dimension 2"):
        from_torch(m, scale="measured").diag(np.ones((4, 2)))
    bn = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    with pytest.raises(TypeError, match="BatchNorm1d.*train mode.*module.eval"):
        empirical_ntk_torch(bn, x.numpy())
    assert empirical_ntk_torch(bn.eval(), x.numpy()).shape == (4, 4)
    assert empirical_ntk_torch(m, np.ones((0, 3))).shape == (0, 0)      # as net.kernel
    assert empirical_ntk_torch(m, x.numpy(), np.ones((0, 3))).shape == (4, 0)
    from infkernel.sklearn import NNGPRegressor
    from infkernel import hyper
    mapped = from_torch(m, scale="measured")
    for copy in (hyper.with_hyperparameters(mapped, 1.2, 0.1),
                 NNGPRegressor(network=mapped).fit(x.numpy(), np.ones(4)).network_):
        with pytest.raises(ValueError, match="takes inputs of dimension 3"):
            copy.kernel(np.ones((4, 7)))
    with pytest.raises(ValueError, match="takes inputs of dimension 3"):
        NNGPRegressor(network=mapped).fit(np.ones((4, 7)), np.ones(4))
