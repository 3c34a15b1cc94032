"""``fit``: epochs visit every example once (up to the remainder), shuffling depends on the
key only, the loss decreases, a custom loss works, errors name the argument.

Exact checks (integers, float64 identities to 1e-12), plus a decreasing loss on a problem
whose optimum is far below the initial loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayeslayers_jax import BayesianMLP, Ensemble, fit


def _data(n=40):
    x = jnp.linspace(-1, 1, n, dtype=jnp.float64)[:, None]
    return x, 3 * x


def test_every_example_is_visited_once_per_epoch():
    # A custom loss whose gradient counts the examples: params['count'][i] gains 1 whenever
    # example i is in a batch (SGD with lr -1 on loss = sum of counts at the batch indices).
    n, batch = 40, 8
    x = jnp.arange(n)[:, None]
    y = jnp.zeros((n, 1))

    def loss_fn(params, data, key):
        xb, _ = data
        return jnp.sum(jnp.take(params["count"], xb[:, 0])), {}

    res = fit(None, {"params": {"count": jnp.zeros(n)}}, x, y, epochs=3, batch_size=batch,
              optimizer=optax.sgd(-1.0), key=jax.random.key(0), loss_fn=loss_fn)
    np.testing.assert_array_equal(res.params["count"], np.full(n, 3.0))
    # with a remainder, each epoch leaves n mod batch examples out, a different set each time
    res = fit(None, {"params": {"count": jnp.zeros(n)}}, x, y, epochs=1, batch_size=7,
              optimizer=optax.sgd(-1.0), key=jax.random.key(0), loss_fn=loss_fn)
    assert sorted(np.unique(res.params["count"]).tolist()) == [0.0, 1.0]
    assert int(res.params["count"].sum()) == 35


def test_fit_elbo_decreases_and_is_reproducible():
    x, y = _data()
    model = BayesianMLP((16, 1), layer_type="lr", param_dtype=jnp.float64)
    v = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    seen = []
    kwargs = dict(epochs=30, batch_size=10, optimizer=optax.adam(1e-2), key=jax.random.key(2), noise_var=0.01)
    res = fit(model, v, x, y, callback=lambda e, h: seen.append((e, h["loss"])), **kwargs)
    assert set(res.history) == {"loss", "nll", "kl"} and res.history["loss"].shape == (30,)
    assert float(res.history["loss"][-1]) < 0.1 * float(res.history["loss"][0])
    assert [e for e, _ in seen] == list(range(30)) and isinstance(seen[0][1], float)
    again = fit(model, v, x, y, **kwargs)
    for a, b in zip(jax.tree_util.tree_leaves(res.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(a, b)


def test_fit_ensemble_history_has_member_axis():
    x, y = _data()
    ens = Ensemble(BayesianMLP((8, 1), layer_type="clt", param_dtype=jnp.float64), 3)
    v = ens.init(jax.random.key(0), x)
    res = fit(ens, v, x, y, epochs=2, batch_size=20, optimizer=optax.adam(1e-2), key=jax.random.key(1),
              noise_var=0.1)
    assert res.history["loss"].shape == (2,) and res.history["member_loss"].shape == (2, 3)
    np.testing.assert_allclose(res.history["member_loss"].sum(-1), res.history["loss"], rtol=1e-12)


def test_fit_errors():
    x, y = _data()
    model = BayesianMLP((1,), layer_type="clt", param_dtype=jnp.float64)
    v = model.init(jax.random.key(0), x)
    common = dict(optimizer=optax.adam(1e-2), key=jax.random.key(0), noise_var=0.1)
    with pytest.raises(ValueError, match="batch_size must be at most"):
        fit(model, v, x, y, epochs=1, batch_size=41, **common)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, v, x, y, epochs=0, batch_size=4, **common)
    with pytest.raises(ValueError, match="leading"):
        fit(model, v, x, y[:-1], epochs=1, batch_size=4, **common)
    with pytest.raises(TypeError, match="optimizer"):
        fit(model, v, x, y, epochs=1, batch_size=4, optimizer="adam", key=jax.random.key(0), noise_var=0.1)
