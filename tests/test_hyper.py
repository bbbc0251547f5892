"""Analytic hyperparameter gradients vs central finite differences.

Central differences with step h = 1e-5 have truncation error ~h²·|f'''| ~1e-10
and rounding error ~eps·|K|/h ~1e-11 relative; we allow 1e-6 relative to the
largest gradient entry.  Kernel values are compared with ``net.kernel`` at
1e-12 (both evaluate the same closed forms in float64), excluding pairs of
duplicated points for step-like activations, whose duals have an infinite
derivative at correlation 1 and so amplify rounding to ~sqrt(eps).
"""
import numpy as np
import pytest

import infkernel as ik
from infkernel import hyper as H

ACTS = [ik.Relu(), ik.LeakyRelu(0.2), ik.Erf(), ik.Gelu(), ik.Sin(1.2, 0.8, 0.3),
        ik.Rbf(0.7), ik.Exp(0.5, 0.4), ik.Gaussian(1.0, -0.6), ik.Sign(), ik.Monomial(3),
        ik.RectifiedMonomial(0), ik.RectifiedMonomial(2)]


@pytest.fixture(scope="module")
def x():
    x = np.random.default_rng(1).standard_normal((10, 3))
    x[5] = x[4]        # a duplicated point exercises the correlation-1 branch
    return x


def _fd(net, x, get, p, L, h=1e-5):
    idx = H.dense_layers(net)
    W = np.array([net.layers[i].W_std for i in idx])
    B = np.array([net.layers[i].b_std for i in idx])

    def k(s):
        W2, B2 = W.copy(), B.copy()
        (W2 if p < L else B2)[p % L] += s
        return H.with_hyperparameters(net, W2, B2).kernel(x, None, get)
    return (k(h) - k(-h)) / (2 * h)


@pytest.mark.parametrize("par", ["ntk", "standard"])
@pytest.mark.parametrize("act", ACTS, ids=repr)
def test_gradient_matches_finite_differences(act, par, x):
    net = ik.serial(ik.Dense(8, 1.3, 0.2, par), act, ik.Dense(8, 0.9, 0.3, par), act,
                    ik.Dense(1, 1.1, 0.1, par))
    mask = np.ones((10, 10), bool)
    mask[4, 5] = mask[5, 4] = False
    for get in ("nngp", "ntk"):
        K, dK = H.kernel_and_grad(net, x, get, shared=False)
        ref = net.kernel(x, None, get)
        assert np.abs(K - ref)[mask].max() <= 1e-12 * np.abs(ref).max()
        scale = np.abs(dK[:, mask]).max()
        for p in range(6):
            fd = _fd(net, x, get, p, 3)
            assert np.abs(fd - dK[p])[mask].max() <= 1e-6 * scale, (get, p)


def test_shared_gradient_is_sum_over_layers(x):
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Relu(), ik.Dense(1, 0.9, 0.3))
    _, d = H.kernel_and_grad(net, x, "ntk", shared=False)
    _, s = H.kernel_and_grad(net, x, "ntk", shared=True)
    assert np.allclose(s[0], d[:2].sum(0), rtol=1e-14, atol=0)
    assert np.allclose(s[1], d[2:].sum(0), rtol=1e-14, atol=0)


def test_log_marginal_likelihood_gradient(x):
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((15, 3))
    y = rng.standard_normal((15, 2))
    net = ik.serial(ik.Dense(8, 1.3, 0.2), ik.Erf(), ik.Dense(1, 0.9, 0.3))
    noise = 0.1
    lml, g = H.log_marginal_likelihood(net, xs, y, noise, eval_gradient=True)
    assert lml == pytest.approx(H.log_marginal_likelihood(net, xs, y, noise), rel=1e-12)
    h = 1e-6
    fd = [(H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3 + h, 0.25), xs, y, noise)
           - H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3 - h, 0.25), xs, y,
                                       noise)) / (2 * h)]
    lml2, g2 = H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25), xs, y, noise,
                                         eval_gradient=True)
    fd.append((H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25 + h), xs, y,
                                         noise)
               - H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25 - h), xs, y,
                                           noise)) / (2 * h))
    fd.append((H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25), xs, y,
                                         noise + h)
               - H.log_marginal_likelihood(H.with_hyperparameters(net, 1.3, 0.25), xs, y,
                                           noise - h)) / (2 * h))
    # step 1e-6 on an O(10) objective: rounding ~1e-16·10/1e-6 ~ 1e-9 absolute
    assert np.allclose(g2, fd, rtol=1e-5, atol=1e-6)


def test_fit_hyperparameters_increases_lml():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((40, 2))
    y = np.sin(2 * xs[:, :1]) + 0.05 * rng.standard_normal((40, 1))
    net = ik.serial(ik.Dense(8, 0.5, 0.5), ik.Relu(), ik.Dense(1, 0.5, 0.5))
    before = H.log_marginal_likelihood(net, xs, y, 1e-2)
    fitted, noise, lml = H.fit_hyperparameters(net, xs, y, noise=1e-2)
    assert lml > before
    assert lml == pytest.approx(H.log_marginal_likelihood(fitted, xs, y, noise), rel=1e-10)
