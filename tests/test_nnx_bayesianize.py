"""Tests of the NNX ``bayesianize``: an ``nnx`` model whose Linear/Conv become the package's layers.

Ground truths: the original deterministic model (MAP with the same means, MOPED), the KL
closed form in numpy, a numpy Monte Carlo of weight draws, and the linen ``bayesianize`` of
the same model with the same parameters and per-layer keys (float64 throughout).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayeslayers_jax as bl
import bayeslayers_jax._layer_core as layer_core
from bayeslayers_jax import nnx as bnx
from bayeslayers_jax.linen._bayesianize import bayesianize as linen_bayesianize

F64 = jnp.float64
EPS = float(np.finfo(np.float64).eps)
BAYES = (bnx.BBBLinear, bnx.LRLinear, bnx.FlipoutLinear, bnx.BBBConv, bnx.LRConv, bnx.FlipoutConv)


class MLP(nnx.Module):
    """linear1, relu, a list of two Linear layers (relu between)."""

    def __init__(self, rngs, widths=(4, 6, 5, 2)):
        a, b, c, d = widths
        self.linear1 = nnx.Linear(a, b, param_dtype=F64, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(b, c, param_dtype=F64, rngs=rngs),
                                nnx.Linear(c, d, param_dtype=F64, rngs=rngs)])

    def __call__(self, x):
        x = jax.nn.relu(self.linear1(x))
        return self.layers[1](jax.nn.relu(self.layers[0](x)))


class CNN(nnx.Module):
    """Conv, BatchNorm, relu, Dropout, Conv (strided, grouped, VALID), mean pool, Linear."""

    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 4, (3, 3), param_dtype=F64, rngs=rngs)
        self.bn = nnx.BatchNorm(4, param_dtype=F64, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, (2, 2), strides=2, padding="VALID", feature_group_count=2,
                              use_bias=False, param_dtype=F64, rngs=rngs)
        self.head = nnx.Linear(4, 3, param_dtype=F64, rngs=rngs)

    def __call__(self, x):
        x = self.drop(jax.nn.relu(self.bn(self.conv1(x))))
        return self.head(jnp.mean(jax.nn.relu(self.conv2(x)), axis=(1, 2)))


class LinenMLP(nn.Module):
    """The MLP's linen twin (layers named as the NNX attributes with '_' for '/')."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(nn.Dense(6, param_dtype=F64, name="linear1")(x))
        x = jax.nn.relu(nn.Dense(5, param_dtype=F64, name="layers_0")(x))
        return nn.Dense(2, param_dtype=F64, name="layers_1")(x)


def _x(shape=(5, 4), seed=0):
    return jax.random.normal(jax.random.key(seed), shape, F64)


def _cnn(seed=0):
    """A CNN with non-trivial BatchNorm statistics, in eval mode (running averages, no dropout)."""
    net = CNN(nnx.Rngs(seed))
    k1, k2 = jax.random.split(jax.random.key(seed + 100))
    net.bn.mean.set_value(jax.random.normal(k1, (4,), F64))
    net.bn.var.set_value(jax.random.uniform(k2, (4,), F64, 0.5, 2.0))
    return net


def _eval(model, **kw):
    return nnx.view(model, deterministic=True, use_running_average=True, **kw)


# One compiled program per model structure (cheaper than eager op-by-op compiles of the convs).
_run = nnx.jit(lambda model, x: model(x))


def _converted(model):
    return {"/".join(map(str, p)): m for p, m in nnx.iter_graph(model) if isinstance(m, BAYES)}


def _with_means(original, bmodel):
    """A clone of the deterministic model whose kernels/biases are bmodel's means."""
    det = nnx.clone(original)
    plain = {"/".join(map(str, p)): m for p, m in nnx.iter_graph(det) if type(m) in (nnx.Linear, nnx.Conv)}
    for path, layer in _converted(bmodel).items():
        plain[path].kernel.set_value(layer.weight_mu[...])
        if layer.use_bias:
            plain[path].bias.set_value(layer.bias_mu[...])
    return det


def _assert_close(a, b, ulps=8):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=0, atol=ulps * EPS * max(1.0, float(np.max(np.abs(b)))))


# ------------------------------------------------------------------------ structure, MAP
@pytest.mark.parametrize("method", ["bbb", "lr", "flipout"])
def test_new_model_types_and_map_equals_original_with_same_means(method):
    net, x = MLP(nnx.Rngs(0)), _x()
    before = nnx.to_pure_dict(nnx.state(net))
    bnet = bnx.bayesianize(net, method, rngs=nnx.Rngs(params=1, sample=2))
    kinds = {"bbb": bnx.BBBLinear, "lr": bnx.LRLinear, "flipout": bnx.FlipoutLinear}
    assert {p: type(m) for p, m in _converted(bnet).items()} == {
        "linear1": kinds[method], "layers/0": kinds[method], "layers/1": kinds[method]}
    # the user's model is untouched (types and values)
    assert type(net.linear1) is nnx.Linear and type(net.layers[0]) is nnx.Linear
    jax.tree_util.tree_map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(net)), before)
    out = nnx.view(bnet, map=True)(x)
    _assert_close(out, _with_means(net, bnet)(x), ulps=0)  # same ops: bit for bit
    assert bnet(x).shape == out.shape and not np.allclose(bnet(x), out)  # sampling by default


def test_cnn_with_batchnorm_dropout_in_eval_mode():
    net, x = _cnn(), _x((2, 6, 6, 3))
    bnet = bnx.bayesianize(net, "lr", rngs=nnx.Rngs(params=1, sample=2))
    conv2 = bnet.conv2
    assert type(conv2) is bnx.LRConv and conv2.weight_mu.shape == (2, 2, 2, 4) and not conv2.use_bias
    assert (conv2.strides, conv2.padding, conv2.feature_group_count) == (2, "VALID", 2)
    assert type(bnet.bn) is nnx.BatchNorm and type(bnet.drop) is nnx.Dropout
    out = _run(_eval(bnet, map=True), x)
    _assert_close(out, _run(_eval(_with_means(net, bnet)), x))
    draws = np.stack([_run(_eval(bnet), x) for _ in range(2)])
    assert np.isfinite(draws).all() and not np.allclose(draws[0], draws[1])


def test_shared_layer_stays_shared_and_root_layer():
    class Tied(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 3, param_dtype=F64, rngs=rngs)
            self.b = self.a

        def __call__(self, x):
            return self.b(jax.nn.relu(self.a(x)))

    bnet = bnx.bayesianize(Tied(nnx.Rngs(0)), "bbb", rngs=nnx.Rngs(1))
    assert type(bnet.a) is bnx.BBBLinear and bnet.a is bnet.b
    assert bnx.total_kl(bnet) == bnet.a.kl()  # counted once
    layer = bnx.bayesianize(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), "flipout", rngs=nnx.Rngs(1))
    assert type(layer) is bnx.FlipoutLinear


def test_include_exclude():
    net, rngs = MLP(nnx.Rngs(0)), nnx.Rngs(1)
    assert set(_converted(bnx.bayesianize(net, include="layers/*", rngs=rngs))) == {"layers/0", "layers/1"}
    assert set(_converted(bnx.bayesianize(net, exclude="linear1", rngs=rngs))) == {"layers/0", "layers/1"}
    assert set(_converted(bnx.bayesianize(net, include=["linear1", "1"], rngs=rngs))) == {"linear1", "layers/1"}
    cnn = bnx.bayesianize(_cnn(), include=nnx.Conv, rngs=rngs)
    assert set(_converted(cnn)) == {"conv1", "conv2"} and type(cnn.head) is nnx.Linear


# ------------------------------------------------------------------------------ KL, grads
def test_kl_matches_closed_form_in_numpy():
    net = MLP(nnx.Rngs(0))
    bnet = bnx.bayesianize(net, "bbb", prior_mean=0.1, prior_std=0.5, init_std=0.05, rngs=nnx.Rngs(1))
    keys = iter(jax.random.split(jax.random.key(3), 16))
    for layer in _converted(bnet).values():
        np.testing.assert_array_equal(np.asarray(layer.weight_rho[...]), np.log(0.05))
        for name in ("weight_rho", "bias_rho"):  # random rho: every term of the KL matters
            v = getattr(layer, name)
            v.set_value(jax.random.uniform(next(keys), v.shape, F64, -3.0, -0.5))
    expected = 0.0
    for layer in _converted(bnet).values():
        for kind in ("weight", "bias"):
            mu, std = np.asarray(getattr(layer, f"{kind}_mu")[...]), np.exp(np.asarray(getattr(layer, f"{kind}_rho")[...]))
            expected += np.sum(np.log(0.5 / std) + (std**2 + (mu - 0.1) ** 2) / (2 * 0.5**2) - 0.5)
    np.testing.assert_allclose(float(bnx.total_kl(bnet)), expected, rtol=1e-12)


def test_gradients_reach_every_mu_and_rho_and_elbo_loss():
    net, x = _cnn(), _x((4, 6, 6, 3))
    y = jnp.array([0, 1, 2, 0])
    bnet = _eval(bnx.bayesianize(net, "flipout", init_std=0.1, rngs=nnx.Rngs(params=1, sample=2)))

    def loss_fn(model):
        return bnx.elbo_loss(model, x, y, num_train_examples=100, likelihood="categorical")

    (loss, aux), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(bnet)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(float(aux["kl"]), float(bnx.total_kl(bnet)), rtol=1e-12)
    flat = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(grads)}
    for path, layer in _converted(bnet).items():
        for name in ("weight_mu", "weight_rho") + (("bias_mu", "bias_rho") if layer.use_bias else ()):
            g = np.asarray(flat[f"{path}/{name}"][...])
            assert np.isfinite(g).all() and np.any(g != 0), f"{path}/{name}"


def test_sampled_mean_matches_monte_carlo_of_weight_draws():
    """One converted layer ('lr', std 0.3) and a relu after it: the mean over n draws of the
    bayesianized model vs a numpy Monte Carlo with W ~ N(mu, std^2), within 4 standard errors."""
    n, net = 4000, MLP(nnx.Rngs(0))
    x = _x((3, 4))
    bnet = bnx.bayesianize(net, "lr", include="linear1", init_std=0.3, rngs=nnx.Rngs(params=1, sample=2))
    # LR noise is independent per example: n copies of each input are n independent draws.
    draws = np.asarray(bnet(jnp.repeat(x, n, axis=0))).reshape(3, n, 2).transpose(1, 0, 2)
    rng = np.random.default_rng(0)
    lin = bnet.linear1
    mu_w, mu_b = np.asarray(lin.weight_mu[...]), np.asarray(lin.bias_mu[...])
    w = mu_w + 0.3 * rng.standard_normal((n,) + mu_w.shape)
    b = mu_b + 0.3 * rng.standard_normal((n,) + mu_b.shape)
    h = np.maximum(np.einsum("ei,nio->neo", np.asarray(x), w) + b[:, None], 0.0)

    def dense(layer, h):
        return h @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])

    ref = dense(bnet.layers[1], np.maximum(dense(bnet.layers[0], h), 0.0))
    se = np.sqrt(draws.var(0, ddof=1) / n + ref.var(0, ddof=1) / n)
    z = np.abs(draws.mean(0) - ref.mean(0)) / se
    z_map = np.abs(np.asarray(nnx.view(bnet, map=True)(x)) - ref.mean(0)) / se
    print(f"max |z| {z.max():.2f}; MAP vs MC mean: max |z| {z_map.max():.1f}")
    assert z.max() < 4.0
    assert z_map.max() > 4.0  # the test has power: the sampled mean is not the MAP output


# ---------------------------------------------------------------------------------- MOPED
@pytest.mark.parametrize("prior_std", [None, 0.3])
def test_moped_is_exact(prior_std):
    net, x = _cnn(), _x((2, 6, 6, 3))
    net.conv1.kernel[0, 0, 0, 0] = 0.0  # the std floor
    bnet = bnx.bayesianize(net, "bbb", moped=True, moped_delta=0.2, moped_prior=prior_std is not None,
                           moped_prior_std=prior_std, rngs=nnx.Rngs(params=1, sample=2))
    for path in ("conv1", "conv2", "head"):
        layer, orig = getattr(bnet, path), getattr(net, path)
        w = np.asarray(orig.kernel[...])
        np.testing.assert_array_equal(np.asarray(layer.weight_mu[...]), w)
        np.testing.assert_array_equal(np.asarray(layer.weight_rho[...]), np.log(np.maximum(0.2 * np.abs(w), 1e-8)))
        if prior_std is None:
            assert float(layer.weight_mean[...]) == 0.0 and float(layer.weight_std[...]) == 1.0
        else:
            np.testing.assert_array_equal(np.asarray(layer.weight_mean[...]), w)
            np.testing.assert_array_equal(np.asarray(layer.weight_std[...]), np.full(w.shape, prior_std))
        if orig.use_bias:
            np.testing.assert_array_equal(np.asarray(layer.bias_mu[...]), np.asarray(orig.bias[...]))
    assert float(bnet.conv1.weight_rho[0, 0, 0, 0]) == np.log(1e-8)
    np.testing.assert_array_equal(np.asarray(_run(_eval(bnet, map=True), x)), np.asarray(_run(_eval(net), x)))


# --------------------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    net, rngs = MLP(nnx.Rngs(0)), nnx.Rngs(1)
    with pytest.raises(ValueError, match="no nnx.Linear/nnx.Conv to convert in BatchNorm"):
        bnx.bayesianize(nnx.BatchNorm(3, rngs=rngs), rngs=rngs)
    with pytest.raises(ValueError, match="no nnx.Linear/nnx.Conv to convert"):
        bnx.bayesianize(net, include=nnx.Conv, rngs=rngs)
    with pytest.raises(ValueError, match=r"include pattern 'encoder/\*' matches no"):
        bnx.bayesianize(net, include="encoder/*", rngs=rngs)
    with pytest.raises(ValueError, match="exclude pattern 'linear9' matches no"):
        bnx.bayesianize(net, exclude="linear9", rngs=rngs)
    with pytest.raises(ValueError, match="method must be one of"):
        bnx.bayesianize(net, "mc", rngs=rngs)
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs"):
        bnx.bayesianize(net, rngs=0)
    with pytest.raises(ValueError, match="prior_std"):
        bnx.bayesianize(net, prior_std=-1.0, rngs=rngs)
    net.layers[0] = nnx.Linear(6, 5, precision="highest", param_dtype=F64, rngs=rngs)
    with pytest.raises(ValueError, match="precision='highest' of the Linear 'layers/0'"):
        bnx.bayesianize(net, rngs=rngs)
    assert set(_converted(bnx.bayesianize(net, exclude="layers/0", rngs=rngs))) == {"linear1", "layers/1"}
    cnn = _cnn()
    cnn.conv1 = nnx.Conv(3, 4, (3, 3), mask=jnp.ones((3, 3, 3, 4)), param_dtype=F64, rngs=rngs)
    with pytest.raises(ValueError, match="mask=.* of the Conv 'conv1'"):
        bnx.bayesianize(cnn, rngs=rngs)

    class InTuple(nnx.Module):
        def __init__(self, rngs):
            self.pair = nnx.data((nnx.Linear(2, 2, rngs=rngs), nnx.Linear(2, 2, rngs=rngs)))

    with pytest.raises(ValueError, match="tuple at 'pair'"):
        bnx.bayesianize(InTuple(rngs), rngs=rngs)
    with pytest.raises(ValueError, match="got no PRNG key"):  # no 'sample' stream, no key
        bnx.bayesianize(MLP(nnx.Rngs(0)), rngs=nnx.Rngs(1))(_x())


# --------------------------------------------------------------------------- linen parity
def _linen_pair(method, seed=0):
    """The linen bayesianized MLP (random rho) and the NNX one loaded with the same variables."""
    x = _x()
    lb = linen_bayesianize(LinenMLP(), method, prior_mean=0.1, prior_std=0.7)
    v = lb.init(jax.random.key(seed), x)
    v = {**v, "params": jax.tree_util.tree_map_with_path(
        lambda p, a: jax.random.uniform(jax.random.key(len(jax.tree_util.keystr(p))), a.shape, F64, -3, -1)
        if "rho" in jax.tree_util.keystr(p) else a, v["params"])}
    nb = bnx.bayesianize(MLP(nnx.Rngs(1)), method, prior_mean=0.1, prior_std=0.7, rngs=nnx.Rngs(params=2, sample=3))
    target = nb.model if method == "clt" else nb
    flat = {"layers_0": target.layers[0], "layers_1": target.layers[1], "linear1": target.linear1}
    for name, layer in flat.items():
        for var in ("weight_mu", "weight_rho", "bias_mu", "bias_rho"):
            getattr(layer, var).set_value(v["params"][name][var])
        for var in ("weight_mean", "weight_std", "bias_mean", "bias_std"):
            getattr(layer, var).set_value(v["prior"][name][var])
    return x, lb, v, nb


@pytest.mark.parametrize("method", ["bbb", "lr", "flipout"])
def test_linen_parity_map_kl_and_samples_with_the_same_per_layer_keys(method, monkeypatch):
    """Compared, bit for bit in float64: the MAP outputs; each NNX layer called with the key
    and the input linen's layer got (``rng=key``, recorded at the layer core's
    ``sample_forward``, which both front ends call) against that layer's linen output; the
    whole NNX model with linen's per-layer keys replayed in call order against linen's
    output. The KL to 1e-12 (relative)."""
    x, lb, v, nb = _linen_pair(method)
    _assert_close(nnx.view(nb, map=True)(x), lb.apply(v, x, map=True), ulps=0)
    out, state = lb.apply(v, x, rngs={"sample": jax.random.key(5)}, mutable=["kl"])
    np.testing.assert_allclose(float(bnx.total_kl(nb)), float(bl.total_kl(state)), rtol=1e-12)
    calls, original = [], layer_core.sample_forward

    def record(forward, key, h, *args, **kwargs):
        y = original(forward, key, h, *args, **kwargs)
        calls.append((key, h, y))
        return y

    monkeypatch.setattr(layer_core, "sample_forward", record)
    lin_out = lb.apply(v, x, rngs={"sample": jax.random.key(5)})
    assert len(calls) == 3
    recorded, calls[:] = list(calls), []
    for layer, (key, h, y) in zip((nb.linear1, nb.layers[0], nb.layers[1]), recorded):
        _assert_close(layer(h, rng=key), y, ulps=0)
    keys = iter([key for key, _, _ in recorded])

    def replay(forward, key, h, *args, **kwargs):
        return original(forward, next(keys), h, *args, **kwargs)

    monkeypatch.setattr(layer_core, "sample_forward", replay)
    _assert_close(nb(x), lin_out, ulps=0)


def test_linen_parity_clt():
    """Moment propagation of the NNX model equals the linen 'clt' output bit for bit (the same
    propagate_moments rules on the same affine maps); MAP gives (out, None); KL to 1e-12."""
    x, lb, v, nb = _linen_pair("clt")
    mean, var = nb(x)
    lmean, lvar = lb.apply(v, x)
    _assert_close(mean, lmean, ulps=0)
    _assert_close(var, lvar, ulps=0)
    out, none = nb(x, map=True)
    assert none is None
    _assert_close(out, lb.apply(v, x, map=True)[0], ulps=0)
    _, state = lb.apply(v, x, mutable=["kl"])
    np.testing.assert_allclose(float(bnx.total_kl(nb)), float(bl.total_kl(state)), rtol=1e-12)
