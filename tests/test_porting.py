"""Tests of the ObjectRL porting functions (bayeslayers_jax/porting.py).

ObjectRL state dicts are built here as NumPy arrays in PyTorch layout (weights ``(out,
in)``); the ground truth is a NumPy re-implementation of ObjectRL's forward pass
(``F.linear(x, W, b) = x @ W.T + b``) and the closed-form KL, independent of the Flax code.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import (
    BayesianMLP,
    BBBLinear,
    CLTLinear,
    CLTLinearDet,
    LRLinear,
    port_objectrl_layer,
    port_objectrl_mlp,
    total_kl,
)

F64 = jnp.float64
EPS64 = float(np.finfo(np.float64).eps)


def _torch_layer_state(rng, n_in, n_out, prior=None, bias=True):
    state = {
        "weight_mu": rng.normal(size=(n_out, n_in)) / np.sqrt(n_in),
        "weight_rho": rng.uniform(-3.0, -1.0, size=(n_out, n_in)),
    }
    if bias:
        state["bias_mu"] = rng.normal(size=(n_out,)) * 0.1
        state["bias_rho"] = rng.uniform(-3.0, -1.0, size=(n_out,))
    if prior is not None:
        state["prior_mean"], state["prior_std"] = prior
    return state


def _np_kl(m, s, mp, sp):
    return np.log(sp / s) + (s**2 + (m - mp) ** 2) / (2 * sp**2) - 0.5


def _relu(x):
    return np.maximum(x, 0.0)


def _crelu(x):
    return np.concatenate([_relu(x), _relu(-x)], -1)


@pytest.mark.parametrize("cls", [BBBLinear, LRLinear, CLTLinear])
def test_port_single_layer_transposes_and_keeps_the_reference_kl(cls):
    rng = np.random.default_rng(0)
    state = _torch_layer_state(rng, 5, 3, prior=(np.array([0.1]), np.array([0.5])))
    layer = cls(3, param_dtype=F64) if cls is not CLTLinear else cls(3, is_input=True, is_output=True, param_dtype=F64)
    v = port_objectrl_layer(state, layer)
    np.testing.assert_array_equal(v["params"]["weight_mu"], state["weight_mu"].T)
    np.testing.assert_array_equal(v["params"]["weight_rho"], state["weight_rho"].T)
    np.testing.assert_array_equal(v["params"]["bias_rho"], state["bias_rho"])
    assert v["prior"]["weight_std"].shape == () and float(v["prior"]["bias_std"]) == 0.5
    x = rng.normal(size=(4, 5))
    out = layer.apply(v, x, map=True)
    out = out[0] if cls is CLTLinear else out
    np.testing.assert_allclose(out, x @ state["weight_mu"].T + state["bias_mu"], rtol=1e-13, atol=1e-14)
    # ObjectRL's KL(): the same scalar prior for weights and bias, std = exp(rho).
    expected = _np_kl(state["weight_mu"], np.exp(state["weight_rho"]), 0.1, 0.5).sum()
    expected += _np_kl(state["bias_mu"], np.exp(state["bias_rho"]), 0.1, 0.5).sum()
    assert abs(float(layer.apply(v, method="kl")) - expected) <= 1e-12 * expected
    # The ported variables have the structure and dtypes init gives.
    init = layer.init(jax.random.key(0), x)
    assert jax.tree.structure(init) == jax.tree.structure(v)
    assert [a.shape for a in jax.tree.leaves(init)] == [a.shape for a in jax.tree.leaves(v)]
    assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(v))


def test_port_weight_shaped_prior_and_no_prior_buffers():
    rng = np.random.default_rng(1)
    pm, ps = rng.normal(size=(3, 5)), rng.uniform(0.5, 2.0, size=(3, 5))
    state = _torch_layer_state(rng, 5, 3, prior=(pm, ps))
    v = port_objectrl_layer(state, BBBLinear(3, param_dtype=F64))
    np.testing.assert_array_equal(v["prior"]["weight_mean"], pm.T)
    np.testing.assert_array_equal(v["prior"]["weight_std"], ps.T)
    assert float(v["prior"]["bias_mean"]) == 0.0 and float(v["prior"]["bias_std"]) == 1.0  # the layer's own
    # Without prior buffers the layer's configured prior is used; float32 by default.
    state = _torch_layer_state(rng, 5, 3, bias=False)
    v = port_objectrl_layer({"fc." + k: a for k, a in state.items()}, LRLinear(3, use_bias=False, prior_std=0.3), prefix="fc.")
    assert set(v["params"]) == {"weight_mu", "weight_rho"} and float(v["prior"]["weight_std"]) == np.float32(0.3)
    assert v["params"]["weight_mu"].dtype == jnp.float32


def test_port_cltdet_drops_the_unused_rho_and_prior_of_objectrl():
    rng = np.random.default_rng(2)
    state = _torch_layer_state(rng, 5, 3, prior=(np.zeros(1), np.ones(1)))
    layer = CLTLinearDet(3, act="crelu", param_dtype=F64)
    v = port_objectrl_layer(state, layer)
    assert set(v) == {"params"} and set(v["params"]) == {"weight_mu", "bias_mu"}
    x = rng.normal(size=(4, 5))
    mean, var = layer.apply(v, x)
    assert var is None
    np.testing.assert_allclose(mean, _crelu(x @ state["weight_mu"].T + state["bias_mu"]), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt", "cltdet"])
@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_port_objectrl_bayesian_mlp(layer_type, act):
    """ObjectRL's BayesianMLP(dim_in=4, dim_out=2, depth=3, width=6): nn.Sequential indices
    count the activation modules for BBB/LR (0, 2, 4), not for CLT (0, 1, 2)."""
    rng = np.random.default_rng(3)
    widen = 2 if act == "crelu" else 1
    dims = [(4, 6), (6 * widen, 6), (6 * widen, 2)]
    indices = [0, 2, 4] if layer_type in ("bbb", "lr") else [0, 1, 2]
    layers = [_torch_layer_state(rng, i, o, prior=(np.zeros(1), np.ones(1))) for i, o in dims]
    state = {f"model.{idx}.{k}": a for idx, st in zip(indices, layers) for k, a in st.items()}
    model = BayesianMLP((6, 6, 2), layer_type=layer_type, act=act, param_dtype=F64)
    v = port_objectrl_mlp(state, model)
    x = rng.normal(size=(5, 4))
    out = model.apply(v, x, map=True)
    out = out[0] if layer_type.startswith("clt") else out
    h = x
    for k, st in enumerate(layers):
        h = h @ st["weight_mu"].T + st["bias_mu"]
        if k < 2:
            h = _relu(h) if act == "relu" else _crelu(h)
    np.testing.assert_allclose(out, h, rtol=1e-12, atol=1e-13)
    if layer_type != "cltdet":
        expected = sum(
            _np_kl(st[m], np.exp(st[r]), 0.0, 1.0).sum() for st in layers for m, r in (("weight_mu", "weight_rho"), ("bias_mu", "bias_rho"))
        )
        _, kl_state = model.apply(v, x, map=True, mutable=["kl"])
        assert abs(float(total_kl(kl_state)) - expected) <= 1e-12 * expected
    # Keys without a prefix (a bare nn.Sequential) work too.
    bare = port_objectrl_mlp({k[len("model."):]: a for k, a in state.items()}, model)
    for a, b in zip(jax.tree.leaves(bare), jax.tree.leaves(v)):
        np.testing.assert_array_equal(a, b)


def test_port_errors():
    rng = np.random.default_rng(4)
    state = _torch_layer_state(rng, 5, 3)
    layer = BBBLinear(3)
    missing = {k: a for k, a in state.items() if k != "bias_rho"}
    with pytest.raises(ValueError, match=r"missing keys \['bias_rho'\]"):
        port_objectrl_layer(missing, layer)
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_sigma'\]"):
        port_objectrl_layer({**state, "weight_sigma": state["weight_rho"]}, layer)
    with pytest.raises(ValueError, match=r"'weight_mu' has shape \(3, 5\), expected \(4, in_features\)"):
        port_objectrl_layer(state, BBBLinear(4))
    with pytest.raises(ValueError, match=r"'bias_rho' has shape \(2,\), expected \(3,\)"):
        port_objectrl_layer({**state, "bias_rho": np.zeros(2)}, layer)
    with pytest.raises(ValueError, match="prior_std.*> 0"):
        port_objectrl_layer({**state, "prior_mean": np.zeros(1), "prior_std": np.zeros(1)}, layer)
    with pytest.raises(ValueError, match="prior_mean.*expected a scalar"):
        port_objectrl_layer({**state, "prior_mean": np.zeros((5, 3))}, layer)
    with pytest.raises(ValueError, match="do not start with prefix"):
        port_objectrl_layer(state, layer, prefix="model.0.")
    with pytest.raises(TypeError, match="layer must be"):
        port_objectrl_layer(state, BayesianMLP((3,)))
    model = BayesianMLP((3, 2), layer_type="bbb")
    second = _torch_layer_state(rng, 3, 2)
    good = {**{f"model.0.{k}": a for k, a in state.items()}, **{f"model.2.{k}": a for k, a in second.items()}}
    port_objectrl_mlp(good, model)
    with pytest.raises(ValueError, match="holds 1 layers"):
        port_objectrl_mlp({f"model.0.{k}": a for k, a in state.items()}, model)
    with pytest.raises(ValueError, match="mix several prefixes"):
        port_objectrl_mlp({**good, "net.2.weight_mu": second["weight_mu"]}, model)
    with pytest.raises(ValueError, match="not of the form"):
        port_objectrl_mlp({**good, "weight_mu": state["weight_mu"]}, model)
    with pytest.raises(ValueError, match=r"has 3 inputs, but the previous layer gives 6 \(act='crelu'\)"):
        port_objectrl_mlp(good, BayesianMLP((3, 2), layer_type="bbb", act="crelu"))
    with pytest.raises(TypeError, match="model must be a BayesianMLP"):
        port_objectrl_mlp(good, BBBLinear(3))


def test_port_rejects_a_list_or_non_str_keys_naming_the_argument():
    """A list of pairs (or the arrays alone) is not a state dict: TypeError naming
    ``state_dict``, not an AttributeError from deep inside."""
    rng = np.random.default_rng(5)
    state = _torch_layer_state(rng, 5, 3)
    model = BayesianMLP((3,), layer_type="bbb")
    for bad in (list(state.items()), list(state.values()), None):
        with pytest.raises(TypeError, match=r"state_dict must be a dict.*got (list|NoneType)"):
            port_objectrl_layer(bad, BBBLinear(3))
        with pytest.raises(TypeError, match=r"state_dict must be a dict.*got (list|NoneType)"):
            port_objectrl_mlp(bad, model)
    with pytest.raises(TypeError, match=r"state_dict keys must be str, got 0 \(int\)"):
        port_objectrl_mlp({0: state["weight_mu"]}, model)
    with pytest.raises(TypeError, match=r"prefix must be a str"):
        port_objectrl_layer(state, BBBLinear(3), prefix=None)


def test_port_mlp_keys_that_parse_to_one_entry_raise_naming_both():
    """``model.0.weight_mu`` and ``model.00.weight_mu`` both parse to layer index 0: an
    error naming both keys, never "the last one wins"."""
    rng = np.random.default_rng(6)
    state = {f"model.0.{k}": a for k, a in _torch_layer_state(rng, 5, 3).items()}
    model = BayesianMLP((3,), layer_type="bbb")
    port_objectrl_mlp(state, model)  # the clean dict ports
    other = rng.normal(size=(3, 5))
    with pytest.raises(ValueError, match=r"'model\.0\.weight_mu' and 'model\.00\.weight_mu' both name entry 'weight_mu' of layer index 0"):
        port_objectrl_mlp({**state, "model.00.weight_mu": other}, model)
