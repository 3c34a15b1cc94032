"""Tests of the Flax NNX front end (bayeslayers_jax/nnx.py).

Ground truths: the flax.linen twins (same parameters and, with ``rng=key``, the same key:
the two front ends call the same pure functions, so outputs agree to float64 rounding,
asserted at 1e-12 and in practice bit for bit), uniform-distribution moments for the
initializers (5 standard errors), and a known regression function for the training run.
"""

import json
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bayeslayers_jax as bl
from bayeslayers_jax import nnx as bnnx

F64 = jnp.float64
TOL = 1e-12
LINEN = {"bbb": bl.BBBLinear, "lr": bl.LRLinear, "clt": bl.CLTLinear, "cltdet": bl.CLTLinearDet}
SAMPLING = ("bbb", "lr")
CLT = ("clt", "cltdet")


def _x(shape=(5, 3), seed=1):
    return jax.random.normal(jax.random.key(seed), shape, F64)


def _close(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=TOL)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)


def _randomize(module, seed=7):
    """Random rho (std in [e^-3, e^-1]) and non-zero prior means: every term of the math is exercised."""
    keys = iter(jax.random.split(jax.random.key(seed), 2))
    for name in ("weight_rho", "bias_rho"):
        if hasattr(module, name):
            v = getattr(module, name)
            v.set_value(jax.random.uniform(next(keys), v.shape, v.dtype, -3.0, -1.0))
    return module


def _pair(kind, in_features=3, out_features=4, *, seed=0, **kw):
    """An NNX layer (random rho) and its linen twin's variables holding the same values."""
    layer = bnnx.LAYER_TYPES[kind](in_features, out_features, param_dtype=F64, rngs=nnx.Rngs(seed), **kw)
    if kind != "cltdet":
        _randomize(layer, seed + 3)
    linen = LINEN[kind](out_features, param_dtype=F64, **kw)
    return layer, linen, bnnx.to_linen(layer)


LAYER_CASES = [
    ("bbb", {}),
    ("bbb", {"use_bias": False, "use_softplus": True}),
    ("lr", {}),
    ("lr", {"use_bias": False, "prior_mean": 0.3, "prior_std": 0.5}),
    ("clt", {"is_input": True}),
    ("clt", {"act": "crelu"}),
    ("clt", {"is_output": True, "use_softplus": True}),
    ("cltdet", {}),
    ("cltdet", {"act": "crelu", "use_bias": False}),
]


@pytest.mark.parametrize("kind,kw", LAYER_CASES)
def test_layer_equals_linen_for_the_same_parameters_and_key(kind, kw):
    layer, linen, variables = _pair(kind, **kw)
    x = _x()
    assert sorted(variables["params"]) == sorted(linen.init(jax.random.key(0), x)["params"])
    if kind in SAMPLING:
        key = jax.random.key(11)
        _close(layer(x, rng=key), linen.apply(variables, x, rng=key))
        _close(layer(x, map=True), linen.apply(variables, x, map=True))
    else:
        var = jnp.abs(_x(seed=2))
        _close(layer(x, var), linen.apply(variables, x, var))
        _close(layer(x, map=True), linen.apply(variables, x, map=True))
        if kw.get("is_input") or kind == "cltdet":
            _close(layer(x), linen.apply(variables, x))
    if kind != "cltdet":
        _close(layer.kl(), linen.apply(variables, method="kl"))
        _close(layer.std(), linen.apply(variables, method="std"))
        _close(layer.var(), linen.apply(variables, method="var"))
    _close(layer.mean(), linen.apply(variables, method="mean"))


@pytest.mark.parametrize("kind", list(LINEN))
def test_from_linen_loads_linen_init_and_to_linen_gives_it_back(kind):
    x = _x()
    linen = LINEN[kind](4, param_dtype=F64, **({"is_input": True} if kind == "clt" else {}))
    variables = linen.init(jax.random.key(3), x)
    layer = bnnx.LAYER_TYPES[kind](3, 4, param_dtype=F64, rngs=nnx.Rngs(0),
                                   **({"is_input": True} if kind == "clt" else {}))
    bnnx.from_linen(layer, variables)
    _close(bnnx.to_linen(layer), dict(variables))
    kwargs = {"rng": jax.random.key(5)} if kind in SAMPLING else {}
    _close(layer(x, **kwargs), linen.apply(variables, x, **kwargs))


def test_init_distributions_match_linen():
    """Kernel and bias means U(-1/sqrt(in), 1/sqrt(in)) (mean 0, variance bound^2/3), rho = -4.6."""
    n_in, n_out = 400, 300
    layer = bnnx.BBBLinear(n_in, n_out, param_dtype=F64, rngs=nnx.Rngs(0))
    bound = 1 / np.sqrt(n_in)
    for w in (np.asarray(layer.weight_mu[...]).ravel(), np.asarray(layer.bias_mu[...])):
        n = w.size
        assert np.all(np.abs(w) <= bound)
        # mean: sd bound/sqrt(3n); variance: sd of (w^2 - bound^2/3) is bound^2 * sqrt(4/45) / sqrt(n)
        assert abs(w.mean()) < 5 * bound / np.sqrt(3 * n)
        assert abs(np.mean(w**2) - bound**2 / 3) < 5 * bound**2 * np.sqrt(4 / 45) / np.sqrt(n)
    assert np.all(np.asarray(layer.weight_rho[...]) == bl._layer_core.INIT_RHO)
    assert np.all(np.asarray(layer.bias_rho[...]) == bl._layer_core.INIT_RHO)
    assert layer.weight_mu.dtype == F64
    assert bnnx.BBBLinear(2, 3, rngs=nnx.Rngs(0)).weight_mu.dtype == jnp.float32  # the default param_dtype


MLP_CASES = [(t, a) for t in ("bbb", "lr", "clt", "cltdet") for a in ("relu", "crelu")]


@pytest.mark.parametrize("layer_type,act", MLP_CASES)
def test_mlp_equals_linen_for_the_same_parameters_and_key(layer_type, act):
    x = _x((6, 3))
    linen = bl.BayesianMLP((5, 4, 2), layer_type=layer_type, act=act, param_dtype=F64)
    variables = linen.init(jax.random.key(1), x)
    model = bnnx.BayesianMLP(3, (5, 4, 2), layer_type=layer_type, act=act, param_dtype=F64, rngs=nnx.Rngs(0))
    for layer in model.layers:
        if layer_type != "cltdet":
            _randomize(layer)
    variables = bnnx.to_linen(model)  # random rho, the NNX model's values
    _close(bnnx.to_linen(bnnx.from_linen(model, variables)), variables)
    key = jax.random.key(4)
    _close(model(x, rng=key), linen.apply(variables, x, rng=key))
    _close(model(x, map=True), linen.apply(variables, x, map=True))
    if layer_type in CLT:
        var = jnp.abs(_x((6, 3), seed=3))
        _close(model(x, var), linen.apply(variables, x, var))
    _, state = linen.apply(variables, x, rng=key, mutable=["kl"])
    _close(bnnx.total_kl(model), bl.total_kl(state))


def test_ported_objectrl_mlp_serves_both_front_ends():
    def objectrl_layer(n_in, n_out, seed):
        r = np.random.default_rng(seed)
        return {"weight_mu": r.normal(size=(n_out, n_in)), "weight_rho": r.uniform(-4, -2, (n_out, n_in)),
                "bias_mu": r.normal(size=n_out), "bias_rho": r.uniform(-4, -2, n_out),
                "prior_mean": np.zeros(1), "prior_std": np.full(1, 0.5)}

    sd = {f"model.{i}.{k}": a for i, layer in ((0, objectrl_layer(3, 4, 0)), (2, objectrl_layer(4, 1, 1)))
          for k, a in layer.items()}
    linen = bl.BayesianMLP((4, 1), layer_type="lr", param_dtype=F64)
    variables = bl.port_objectrl_mlp(sd, linen)
    model = bnnx.from_linen(bnnx.BayesianMLP(3, (4, 1), param_dtype=F64, rngs=nnx.Rngs(0)), variables)
    x, key = _x((7, 3)), jax.random.key(9)
    _close(model(x, rng=key), linen.apply(variables, x, rng=key))
    _close(bnnx.total_kl(model), linen.apply(variables, x, rng=key, mutable=["kl"])[1]["kl"]["layers_0"]["kl"]
           + linen.apply(variables, x, rng=key, mutable=["kl"])[1]["kl"]["layers_1"]["kl"])


def test_from_linen_rejects_mismatched_variables():
    model = bnnx.BayesianMLP(3, (4, 1), rngs=nnx.Rngs(0))
    good = bnnx.to_linen(model)
    missing = {"params": good["params"], "prior": {"layers_0": good["prior"]["layers_0"]}}
    with pytest.raises(ValueError, match=r"missing entries \['layers_1/bias_mean'"):
        bnnx.from_linen(model, missing)
    wide = bl.BayesianMLP((5, 1)).init(jax.random.key(0), jnp.ones((1, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"'layers_0/bias_mu' has shape \(5,\), the model's has \(4,\)"):
        bnnx.from_linen(model, wide)


# ---------------------------------------------------------------------- keys and map
def test_streams_rules():
    x = _x()
    make = lambda: bnnx.LRLinear(3, 4, param_dtype=F64, rngs=nnx.Rngs(params=0, sample=1))  # noqa: E731
    a, b = make(), make()
    y1, y2 = a(x), a(x)
    assert not np.allclose(y1, y2)  # each call draws a new key
    _close((b(x), b(x)), (y1, y2))  # the same seeds give the same draws
    # rngs= at the call and rng= (the key itself)
    key = jax.random.key(3)
    _close(a(x, rngs=nnx.Rngs(sample=key)), a(x, rng=nnx.Rngs(sample=key).sample()))
    # a default-only Rngs gives no stream: the error, never the 'default' stream
    c = bnnx.LRLinear(3, 4, param_dtype=F64, rngs=nnx.Rngs(0))
    assert c.rngs is None
    with pytest.raises(ValueError, match="got no PRNG key"):
        c(x)
    with pytest.raises(ValueError, match="got no PRNG key"):
        c(x, rngs=nnx.Rngs(0))
    assert c(x, map=True).shape == (5, 4)
    with pytest.raises(ValueError, match="got no PRNG key"):  # rngs at the call without 'sample': no fallback
        a(x, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="pass a key as rng="):
        a(x, rngs=key)


def test_map_attribute_call_and_view():
    x = _x()
    model = bnnx.BayesianMLP(3, (4, 2), layer_type="bbb", param_dtype=F64, rngs=nnx.Rngs(0))
    ref = model(x, map=True)
    _close(nnx.view(model, map=True)(x), ref)  # no key needed
    model.map = True
    _close(model(x), ref)
    assert not np.allclose(model(x, map=False, rng=jax.random.key(0)), ref)  # the call wins
    layer = bnnx.BBBLinear(3, 4, map=True, param_dtype=F64, rngs=nnx.Rngs(0))
    assert layer(x).shape == (5, 4)


# ------------------------------------------------------------------------- errors
def _linen_errors(kind, bad):
    layer_kw = {"is_input": True} if kind == "clt" else {}
    x = _x()
    if bad == "config":
        return lambda **kw: LINEN[kind](kw.pop("out_features", 4), **kw)
    layer = LINEN[kind](4, param_dtype=F64, **layer_kw)
    v = layer.init(jax.random.key(0), x)
    return lambda *a, method=None, **kw: layer.apply(v, *a, method=method, **kw)


def _nnx_errors(kind, bad):
    layer_kw = {"is_input": True} if kind == "clt" else {}
    if bad == "config":
        return lambda **kw: bnnx.LAYER_TYPES[kind](3, kw.pop("out_features", 4), rngs=nnx.Rngs(0), **kw)
    layer = bnnx.LAYER_TYPES[kind](3, 4, param_dtype=F64, rngs=nnx.Rngs(0), **layer_kw)
    return lambda *a, method=None, **kw: (getattr(layer, method) if method else layer)(*a, **kw)


ERROR_CASES = [
    # (kinds, "config" or "call", kwargs/args, error, match)
    (list(LINEN), "config", dict(out_features=0), ValueError, "features must be a positive int, got 0"),
    (list(LINEN), "config", dict(out_features=2.0), TypeError, "features must be a positive int, got 2.0"),
    (list(LINEN), "config", dict(map="yes"), TypeError, "map must be a bool or None"),
    (["bbb", "clt"], "config", dict(prior_std=-1.0), ValueError, "prior_std"),
    (["lr"], "config", dict(prior_std=np.ones((3, 4))), ValueError, "bias_prior_std must be given"),
    (["clt"], "config", dict(act="tanh"), ValueError, "act must be one of"),
    (["bbb"], "config", dict(rng_collection=3), TypeError, "rng_collection must be a str"),
    (list(LINEN), "call", (jnp.ones((5, 3), jnp.complex64),), TypeError, "complex"),
    (list(LINEN), "call", (jnp.ones(()),), ValueError, "at least one axis"),
    (list(LINEN), "call", (jnp.ones((5, 6)),), ValueError, "was initialized for 3 input features"),
    (CLT, "call", (jnp.ones((5, 3)), jnp.ones((5, 2))), ValueError, r"var must have mu's shape \(5, 3\)"),
    (SAMPLING, "call", (jnp.ones((5, 3)),), ValueError, "samples its weights but got no PRNG key"),
    (["cltdet"], "kl", (), ValueError, "has deterministic weights"),
]


@pytest.mark.parametrize("front", ["linen", "nnx"])
@pytest.mark.parametrize("case", range(len(ERROR_CASES)))
def test_same_errors_for_the_same_bad_input(front, case):
    kinds, bad, args, error, match = ERROR_CASES[case]
    for kind in kinds:
        make = (_linen_errors if front == "linen" else _nnx_errors)(kind, "config" if bad == "config" else "call")
        with pytest.raises(error, match=match) as info:
            if bad == "config":
                make(**args)
            elif bad == "kl":
                make(method="kl")
            else:
                make(*args)
        if front == "nnx" and bad != "config" and "PRNG" not in match:
            # the very message of linen (the key error names each front end's way to pass a key)
            with pytest.raises(error) as ref:
                ref_call = _linen_errors(kind, "call")
                ref_call(method="kl") if bad == "kl" else ref_call(*args)
            assert str(info.value) == str(ref.value)


def test_missing_variance_and_mlp_errors_match_linen():
    x = jnp.ones((5, 3))
    hidden = bl.CLTLinear(4, param_dtype=F64)
    with pytest.raises(ValueError) as ref:
        hidden.apply(hidden.init(jax.random.key(0), x), x)
    with pytest.raises(ValueError) as got:
        bnnx.CLTLinear(3, 4, param_dtype=F64, rngs=nnx.Rngs(0))(x)
    assert str(got.value) == str(ref.value) and "needs the input variance" in str(ref.value)
    for kw in (dict(layer_type="mlp"), dict(act="tanh"), dict(prior_std=np.ones(3)), dict(features=())):
        fields = {"features": (4, 1), **kw}
        with pytest.raises((ValueError, TypeError)) as ref:
            bl.BayesianMLP(**fields)
        with pytest.raises(type(ref.value)) as got:
            bnnx.BayesianMLP(3, rngs=nnx.Rngs(0), **fields)
        assert str(got.value) == str(ref.value)
    with pytest.raises(ValueError, match="var is only accepted by CLT layer types"):
        bnnx.BayesianMLP(3, (4, 1), param_dtype=F64, rngs=nnx.Rngs(0))(x, x, map=True)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        bnnx.BayesianMLP(0, (4, 1), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs"):
        bnnx.LRLinear(3, 4, rngs=jax.random.key(0))


def test_nan_propagates():
    layer = bnnx.CLTLinear(3, 4, is_input=True, param_dtype=F64, rngs=nnx.Rngs(0))
    x = _x().at[0, 0].set(jnp.nan)
    mean, var = layer(x)
    assert np.all(np.isnan(mean[0])) and np.all(np.isnan(var[0]))
    assert np.all(np.isfinite(mean[1:])) and np.all(np.isfinite(var[1:]))


# ------------------------------------------------------- transforms and serialization
@pytest.mark.parametrize("layer_type", ["bbb", "clt"])
def test_jit_vmap_grad(layer_type):
    x = _x((6, 3))
    model = bnnx.BayesianMLP(3, (8, 2), layer_type=layer_type, param_dtype=F64, rngs=nnx.Rngs(params=0, sample=1))
    key = jax.random.key(2)
    eager = model(x, rng=key)
    _close(nnx.jit(lambda m, x, k: m(x, rng=k))(model, x, key), eager)
    # vmap over examples (one example at a time, the same key) equals the batch: CLT is per example;
    # BBB draws one weight sample per call, the same for every example with the same key.
    per_example = nnx.jit(nnx.vmap(lambda m, xi: m(xi[None], rng=key), in_axes=(None, 0)))(model, x)
    _close(jax.tree.map(lambda a: a[:, 0], per_example), eager)
    # grad agrees with jax.grad of the linen twin, and covers the parameters only (not the prior)
    linen = bl.BayesianMLP((8, 2), layer_type=layer_type, param_dtype=F64)
    variables = bnnx.to_linen(model)
    out_sum = lambda out: jnp.sum(out[0] + out[1]) if isinstance(out, tuple) else jnp.sum(out)  # noqa: E731
    grads = nnx.jit(nnx.grad(lambda m: out_sum(m(x, rng=key)) + bnnx.total_kl(m)))(model)
    assert not jax.tree_util.tree_leaves(nnx.state(grads, bnnx.Prior))

    def linen_loss(params):
        out, state = linen.apply({**variables, "params": params}, x, rng=key, mutable=["kl"])
        return out_sum(out) + bl.total_kl(state)

    _close(nnx.to_pure_dict(nnx.state(grads, nnx.Param)), jax.jit(jax.grad(linen_loss))(variables["params"]))
    # the stream advances under nnx.jit as in eager mode
    twin = bnnx.BayesianMLP(3, (8, 2), layer_type=layer_type, param_dtype=F64, rngs=nnx.Rngs(params=0, sample=1))
    jitted = nnx.jit(lambda m, x: m(x))
    _close((jitted(twin, x), jitted(twin, x)), (model(x), model(x)))


def test_split_merge_state_and_pickle_roundtrip():
    x = _x()
    make = lambda seed: bnnx.BayesianMLP(3, (4, 2), layer_type="lr", param_dtype=F64,  # noqa: E731
                                         rngs=nnx.Rngs(params=seed, sample=seed + 1))
    model = make(0)
    graphdef, state = nnx.split(model)
    saved = pickle.dumps(nnx.to_pure_dict(state))  # a checkpoint: parameters, priors, stream state
    _close(nnx.merge(graphdef, state)(x, rng=jax.random.key(1)), model(x, rng=jax.random.key(1)))
    y_next = model(x)  # the stream's next draw
    # restore into a fresh model of other seeds: the same parameters and the same stream state
    graphdef, fresh = nnx.split(make(5))
    nnx.replace_by_pure_dict(fresh, pickle.loads(saved))
    _close(nnx.merge(graphdef, fresh)(x), y_next)
    params, priors, rest = nnx.split(model, nnx.Param, bnnx.Prior, ...)[1:]
    assert sorted(nnx.to_pure_dict(params)["layers_0"]) == ["bias_mu", "bias_rho", "weight_mu", "weight_rho"]
    assert sorted(nnx.to_pure_dict(priors)["layers_0"]) == ["bias_mean", "bias_std", "weight_mean", "weight_std"]


def test_prior_is_not_trained_and_can_be_replaced():
    x, y = _x((8, 3)), jnp.zeros((8, 1))
    model = bnnx.BayesianMLP(3, (4, 1), layer_type="clt", param_dtype=F64, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    before = nnx.to_pure_dict(nnx.state(model, bnnx.Prior))
    assert not jax.tree_util.tree_leaves(nnx.state(optimizer.opt_state, bnnx.Prior))
    grads = nnx.grad(lambda m: bnnx.elbo_loss(m, x, y, num_train_examples=8, noise_var=0.1)[0])(model)
    optimizer.update(model, grads)
    _close(nnx.to_pure_dict(nnx.state(model, bnnx.Prior)), before)
    # replacing a prior entry is linen's update_prior
    model.layers_1.weight_std.set_value(jnp.asarray(0.25, F64))
    linen_v = bl.update_prior(bnnx.to_linen(model), "layers_1", weight_std=0.25)
    linen = bl.BayesianMLP((4, 1), layer_type="clt", param_dtype=F64)
    _close(bnnx.total_kl(model), bl.total_kl(linen.apply(linen_v, x, mutable=["kl"])[1]))


# ------------------------------------------------------------------- ELBO and ensembles
@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt", "cltdet"])
@pytest.mark.parametrize("map", [False, True])
def test_elbo_equals_linen(layer_type, map):
    x, y = _x((8, 3)), _x((8, 2), seed=5)
    model = bnnx.BayesianMLP(3, (6, 2), layer_type=layer_type, param_dtype=F64, rngs=nnx.Rngs(0))
    linen = bl.BayesianMLP((6, 2), layer_type=layer_type, param_dtype=F64)
    variables = bnnx.to_linen(model)
    key = jax.random.key(8)
    got = bnnx.elbo_loss(model, x, y, num_train_examples=50, rng=key, noise_var=0.2, map=map)
    if layer_type in SAMPLING and not map:
        # linen's elbo_loss draws from the 'sample' stream; the same noise comes from rng=key
        out, state = linen.apply(variables, x, rng=key, mutable=["kl"])
        ref = bl.elbo_from_outputs(out, y, bl.total_kl(state), num_train_examples=50, noise_var=0.2)
    else:
        ref = bl.elbo_loss(linen, variables, x, y, num_train_examples=50, noise_var=0.2, map=map)
    _close(got, ref)
    with pytest.raises(ValueError, match="noise_var"):
        bnnx.elbo_loss(model, x, y, num_train_examples=50, rng=key, noise_var=-1.0)
    with pytest.raises(ValueError, match="do not broadcast|shape"):
        bnnx.elbo_loss(model, x, y[:, 0], num_train_examples=50, rng=key, noise_var=0.2)


def test_clt_classifier_elbo_draws_its_logit_samples_from_rng_as_linen():
    # CLT classification's default likelihood is Monte Carlo over the Gaussian logits: the
    # NNX loss takes its key from rng=, exactly as linen's elbo_loss takes it from key=.
    x, labels = _x((8, 3)), jnp.arange(8) % 3
    model = bnnx.BayesianMLP(3, (6, 3), layer_type="clt", param_dtype=F64, rngs=nnx.Rngs(0))
    linen = bl.BayesianMLP((6, 3), layer_type="clt", param_dtype=F64)
    key = jax.random.key(4)
    got = bnnx.elbo_loss(model, x, labels, num_train_examples=50, rng=key, likelihood="categorical")
    ref = bl.elbo_loss(linen, bnnx.to_linen(model), x, labels, num_train_examples=50,
                       likelihood="categorical", key=key)
    _close(got, ref)
    other = bnnx.elbo_loss(model, x, labels, num_train_examples=50, rng=jax.random.key(5),
                           likelihood="categorical")
    assert float(other[0]) != float(got[0])  # a new key, new logit samples
    with pytest.raises(ValueError, match="PRNG key"):
        bnnx.elbo_loss(model, x, labels, num_train_examples=50, likelihood="categorical")
    ens = bnnx.Ensemble(lambda rngs: bnnx.BayesianMLP(3, (6, 3), layer_type="clt", param_dtype=F64, rngs=rngs),
                        2, rngs=nnx.Rngs(0))
    loss, aux = bnnx.elbo_loss(ens, x, labels, num_train_examples=50, rng=key, likelihood="categorical")
    assert aux["loss"].shape == (2,) and bool(jnp.isfinite(loss))

def test_ensemble_members_differ_and_match_linen_ensemble():
    x = _x((8, 3))
    size = 3
    ens = bnnx.Ensemble(lambda r: bnnx.BayesianMLP(3, (6, 1), layer_type="bbb", param_dtype=F64, rngs=r),
                        size, rngs=nnx.Rngs(params=0, sample=1))
    w = ens.members.layers_0.weight_mu[...]
    assert w.shape == (size, 3, 6) and not np.allclose(w[0], w[1])
    y = ens(x)
    assert y.shape == (size, 8, 1) and not np.allclose(y[0], y[1])  # own streams per member
    linen = bl.Ensemble(bl.BayesianMLP((6, 1), layer_type="bbb", param_dtype=F64), size)
    variables = bnnx.to_linen(ens)
    assert variables["prior"]["layers_0"]["weight_std"].shape == (size,)
    key = jax.random.key(4)
    _close(ens(x, rng=key), linen.apply(variables, x, rng=key))
    _close(ens(x, map=True), linen.apply(variables, x, map=True))
    _close(ens.kl(per_member=True), bl.total_kl(linen.apply(variables, x, map=True, mutable=["kl"])[1], per_member=True))
    _close(bnnx.total_kl(ens), ens.kl())
    bnnx.from_linen(ens, linen.init(jax.random.key(9), x))  # stacked linen variables load too
    _close(bnnx.to_linen(ens)["params"], linen.init(jax.random.key(9), x)["params"])


def test_ensemble_runs_its_members_in_one_vectorized_call():
    """No Python loop over members: the traced ensemble holds one matmul per layer and pass, whatever its size."""
    x = _x((8, 3))

    def matmuls(size):
        ens = bnnx.Ensemble(lambda r: bnnx.BayesianMLP(3, (6, 1), layer_type="lr", param_dtype=F64, rngs=r),
                            size, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(ens)
        run = lambda state, key: nnx.merge(graphdef, state)(x, rng=key)  # noqa: E731
        return str(jax.make_jaxpr(run)(state, jax.random.key(0))).count("dot_general")

    assert matmuls(2) == matmuls(5) == 4  # LR: the mean and the variance matmul of 2 layers


@pytest.mark.parametrize("layer_type", ["bbb", "clt"])
def test_ensemble_loss_is_the_sum_of_member_losses(layer_type):
    x, y = _x((8, 3)), _x((8, 1), seed=5)
    size = 3
    ens = bnnx.Ensemble(lambda r: bnnx.BayesianMLP(3, (6, 1), layer_type=layer_type, param_dtype=F64, rngs=r),
                        size, rngs=nnx.Rngs(0))
    key = jax.random.key(2)
    loss, aux = bnnx.elbo_loss(ens, x, y, num_train_examples=40, rng=key, noise_var=0.3)
    assert aux["loss"].shape == (size,) and aux["nll"].shape == (size,) and aux["kl"].shape == (size,)
    np.testing.assert_allclose(loss, aux["loss"].sum(), rtol=1e-14)
    variables = bnnx.to_linen(ens)
    keys = jax.random.split(key, size)
    for i in range(size):  # the ground truth, one member at a time (the implementation has no loop)
        single = bnnx.BayesianMLP(3, (6, 1), layer_type=layer_type, param_dtype=F64, rngs=nnx.Rngs(0))
        bnnx.from_linen(single, bl.member(variables, i))
        member_loss, member_aux = bnnx.elbo_loss(single, x, y, num_train_examples=40, rng=keys[i], noise_var=0.3)
        _close((member_loss, member_aux["nll"], member_aux["kl"]), (aux["loss"][i], aux["nll"][i], aux["kl"][i]))
    if layer_type == "clt":  # no noise: the linen ensemble's loss itself
        linen = bl.Ensemble(bl.BayesianMLP((6, 1), layer_type="clt", param_dtype=F64), size)
        _close((loss, aux), bl.elbo_loss(linen, variables, x, y, num_train_examples=40, noise_var=0.3))
    # stacked targets (one set per member) are accepted; anything else raises
    bnnx.elbo_loss(ens, x, jnp.stack([y] * size), num_train_examples=40, rng=key, noise_var=0.3)
    with pytest.raises(ValueError, match="do not fit an Ensemble"):
        bnnx.elbo_loss(ens, x, y[:, 0], num_train_examples=40, rng=key, noise_var=0.3)


# ------------------------------------------------------------------------ training
def _toy(n, seed):
    """x ~ U[-1, 1], y = sin(3x) + N(0, 0.1^2)."""
    r = np.random.default_rng(seed)
    x = r.uniform(-1, 1, (n, 1))
    return jnp.asarray(x, F64), jnp.asarray(np.sin(3 * x) + 0.1 * r.standard_normal((n, 1)), F64)


def _adam_step(model, x, y):
    """One jitted Adam step on the ELBO (noise_var 0.01), the model and optimizer bound: ``step() -> (loss, aux)``."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss_fn = lambda m: bnnx.elbo_loss(m, x, y, num_train_examples=len(x), noise_var=0.01)  # noqa: E731
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction mixes int and float
            optimizer.update(model, grads)
        return loss, aux

    return nnx.cached_partial(step, model, optimizer)


@pytest.mark.slow
@pytest.mark.parametrize("layer_type", ["clt", "bbb"])
def test_training_run_fits_the_toy_regression(layer_type):
    """nnx.Optimizer + nnx.jit + nnx.value_and_grad on the ELBO; an Ensemble trains in the same step.

    The tolerance: the fit's RMSE to the noiseless sin(3x) on a test grid must be below 0.15. A
    constant predictor has RMSE 0.68 (sqrt of E[sin^2(3x)] = 0.5 - sin(6)/12 on U[-1, 1]), a
    linear one 0.37; 200 noisy points (noise std 0.1) pin a smooth 32-unit network to a few
    hundredths, so 0.15 fails any fit that missed the curvature but leaves room for the
    posterior's spread.
    """
    x, y = _toy(200, 0)
    x_test = jnp.linspace(-1, 1, 101, dtype=F64)[:, None]
    truth = jnp.sin(3 * x_test)
    model = bnnx.BayesianMLP(1, (32, 32, 1), layer_type=layer_type, param_dtype=F64,
                             rngs=nnx.Rngs(params=0, sample=1))
    step = _adam_step(model, x, y)
    losses = np.array([float(step()[0]) for _ in range(600)])
    assert np.all(np.isfinite(losses))
    assert losses[-50:].mean() < 0.5 * losses[:10].mean()
    pred = model(x_test)[0] if layer_type == "clt" else model(x_test, map=True)
    rmse = float(jnp.sqrt(jnp.mean((pred - truth) ** 2)))
    print(f"{layer_type}: loss {losses[:10].mean():.3f} -> {losses[-50:].mean():.3f}, RMSE {rmse:.4f}")
    assert rmse < 0.15, rmse


@pytest.mark.slow
def test_ensemble_trains_with_one_optimizer():
    x, y = _toy(100, 1)
    ens = bnnx.Ensemble(lambda r: bnnx.BayesianMLP(1, (16, 1), layer_type="clt", param_dtype=F64, rngs=r),
                        4, rngs=nnx.Rngs(0))
    step = _adam_step(ens, x, y)
    first = step()[1]["loss"]
    for _ in range(200):
        last = step()[1]["loss"]
    assert last.shape == (4,) and np.all(last < 0.5 * first)  # every member improved


# ------------------------------------------------------------------------ packaging
def test_import_bayeslayers_jax_does_not_import_nnx():
    """The NNX front end is opt-in: ``import bayeslayers_jax`` loads neither it nor ``flax.nnx``
    (beyond what ``flax.linen`` itself loads)."""

    def modules(code):
        out = subprocess.run([sys.executable, "-c", code + "; import json, sys; print(json.dumps(sorted(sys.modules)))"],
                             capture_output=True, text=True, check=True).stdout
        return set(json.loads(out))

    baseline = modules("import flax.linen, optax")
    package = modules("import bayeslayers_jax")
    assert "bayeslayers_jax.nnx" not in package
    assert ("flax.nnx" in package) == ("flax.nnx" in baseline)
    assert "bayeslayers_jax.nnx" in modules("import bayeslayers_jax.nnx")
