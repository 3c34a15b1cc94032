"""Objectives: the ELBO normalization on a hand-computed case, the closed-form expected
log-likelihood against Monte Carlo, and the probit approximation's stated accuracy.

Tolerances: hand-computed float64 values to 1e-12 relative; Monte Carlo within 4 standard
errors (SE estimated from the samples); probit bounds as stated in
``bayeslayers_jax.probit_log_softmax`` (plus 4 Monte Carlo SE where the truth is
Monte Carlo).
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import BayesianMLP
from bayeslayers_jax import (
    categorical_nll_from_logits,
    elbo_loss,
    expected_categorical_nll_bound,
    expected_gaussian_log_likelihood,
    expected_gaussian_nll,
    gaussian_nll,
    make_elbo_loss_fn,
    neg_elbo,
    neg_log_prior,
    probit_categorical_nll,
    probit_log_softmax,
    probit_softmax,
)


def f64(x):
    return jnp.asarray(x, jnp.float64)


def test_neg_elbo_by_hand():
    # mean(1, 2, 3) + 0.5 * 10 / 5 = 2 + 1 = 3.
    assert abs(float(neg_elbo(f64([1.0, 2.0, 3.0]), f64(10.0), 5, kl_weight=0.5)) - 3.0) <= 1e-15
    with pytest.raises(ValueError, match="num_train_examples"):
        neg_elbo(f64([1.0]), f64(1.0), 0)
    with pytest.raises(ValueError, match="kl"):
        neg_elbo(f64([1.0]), f64([1.0, 2.0]), 3)


def test_gaussian_nll_by_hand():
    y = f64([[1.0, 0.0], [2.0, 2.0]])
    pred = f64([[0.0, 0.0], [2.0, 0.0]])
    got = gaussian_nll(y, pred, 4.0)
    c = 0.5 * math.log(8 * math.pi)
    expected = [c + 1 / 8 + c, c + c + 4 / 8]  # summed over the event axis
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="noise_var"):
        gaussian_nll(y, pred, None)
    with pytest.raises(ValueError, match="same shape"):
        gaussian_nll(y, pred[:, :1], 1.0)


def test_expected_log_likelihood_against_monte_carlo():
    m, v, y, s2 = f64([0.3, -1.2, 2.0]), f64([0.5, 2.0, 0.1]), f64([1.0, 0.0, 2.5]), 0.7
    n = 200_000

    @jax.jit
    def monte_carlo(key):
        f = m[None] + jnp.sqrt(v)[None] * jax.random.normal(key, (n, 3), jnp.float64)
        ll = -0.5 * jnp.log(2 * jnp.pi * s2) - 0.5 * (y[None] - f) ** 2 / s2
        return jnp.mean(ll, 0), jnp.std(ll, 0) / math.sqrt(n)

    mc, se = monte_carlo(jax.random.key(0))
    got = jax.vmap(lambda a, b, c: expected_gaussian_log_likelihood(a, b, c, s2))(y, m, v)
    assert np.all(np.abs(np.asarray(got - mc)) <= 4 * np.asarray(se))
    # Per example: summed over the event axis; var=None is the plain likelihood.
    two = expected_gaussian_nll(y[None], m[None], v[None], s2)
    assert two.shape == (1,) and abs(float(two[0]) + float(jnp.sum(got))) <= 1e-12
    plain = expected_gaussian_nll(y[None], m[None], None, s2)
    assert abs(float(plain[0]) - float(gaussian_nll(y[None], m[None], s2)[0])) <= 1e-12


def _single_clt_layer_case(layer_type):
    """A 2 -> 1 network of one layer with hand-set parameters (float64)."""
    model = BayesianMLP(features=(1,), layer_type=layer_type, param_dtype=jnp.float64)
    x = f64([[1.0, 2.0], [-0.5, 0.0], [0.3, -1.0], [2.0, 1.0]])
    y = f64([[0.0], [1.0], [-1.0], [0.5]])
    variables = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    w_mu, w_std = np.array([[0.5], [-1.0]]), np.array([[1.0], [0.5]])
    b_mu, b_std = np.array([0.2]), np.array([0.3])
    params = {"layers_0": {"weight_mu": f64(w_mu), "weight_rho": f64(np.log(w_std)),
                           "bias_mu": f64(b_mu), "bias_rho": f64(np.log(b_std))}}
    variables = {**variables, "params": params}
    # KL(N(mu, s^2) || N(0, 1)) = -log s + (s^2 + mu^2) / 2 - 1/2, summed over all 3 weights.
    kl = sum(-math.log(s) + (s * s + mu * mu) / 2 - 0.5
             for mu, s in zip([0.5, -1.0, 0.2], [1.0, 0.5, 0.3]))
    xn = np.asarray(x)
    mean = xn @ w_mu + b_mu
    var = (xn**2) @ (w_std**2) + b_std**2
    return model, variables, x, y, kl, mean, var


def test_elbo_scaling_clt_by_hand():
    model, variables, x, y, kl, mean, var = _single_clt_layer_case("clt")
    s2 = 0.25
    nll = 0.5 * np.log(2 * np.pi * s2) + ((np.asarray(y) - mean) ** 2 + var) / (2 * s2)
    # A batch of 4 out of N = 7 training examples: mean NLL over the batch + KL / 7.
    loss, aux = elbo_loss(model, variables, x, y, num_train_examples=7, noise_var=s2)
    assert abs(float(loss) - (nll.mean() + kl / 7)) <= 1e-12 * abs(float(loss))
    assert abs(float(aux["kl"]) - kl) <= 1e-12 * kl
    # Full batch (N = 4): N * loss = sum NLL + KL = -ELBO.
    full, _ = elbo_loss(model, variables, x, y, num_train_examples=4, noise_var=s2)
    assert abs(4 * float(full) - (nll.sum() + kl)) <= 1e-12 * (nll.sum() + kl)
    # KL annealing: beta = 0.1 removes 0.9 KL / N.
    annealed, _ = elbo_loss(model, variables, x, y, num_train_examples=7, noise_var=s2, kl_weight=0.1)
    assert abs(float(loss - annealed) - 0.9 * kl / 7) <= 1e-12
    # A stale 'kl' collection in the variables is ignored (no double counting).
    stale = {**variables, "kl": {"layers_0": {"kl": (f64(1e6),)}}}
    again, _ = elbo_loss(model, stale, x, y, num_train_examples=7, noise_var=s2)
    assert float(again) == float(loss)
    # The optimizer-ready closure gives the same value.
    fn = make_elbo_loss_fn(model, variables, num_train_examples=7, noise_var=s2)
    assert float(fn(variables["params"], (x, y), None)) == float(loss)


def test_elbo_sampled_and_map_by_hand():
    model, variables, x, y, kl, mean, _ = _single_clt_layer_case("bbb")
    key = jax.random.key(5)
    out = model.apply(variables, x, rngs={"sample": key})
    s2 = 0.5
    nll = 0.5 * np.log(2 * np.pi * s2) + (np.asarray(y) - np.asarray(out)) ** 2 / (2 * s2)
    loss, aux = elbo_loss(model, variables, x, y, key=key, num_train_examples=10, noise_var=s2)
    assert abs(float(loss) - (nll.mean() + kl / 10)) <= 1e-12 * abs(float(loss))
    # MAP: the means, and the Gaussian log prior sum(mu^2 / 2) (prior N(0, 1)) instead of the KL.
    prior_term = (0.5**2 + 1.0 + 0.2**2) / 2
    assert abs(float(neg_log_prior(variables["params"], variables["prior"])) - prior_term) <= 1e-14
    nll_map = 0.5 * np.log(2 * np.pi * s2) + (np.asarray(y) - mean) ** 2 / (2 * s2)
    loss_map, _ = elbo_loss(model, variables, x, y, num_train_examples=10, noise_var=s2, map=True)
    assert abs(float(loss_map) - (nll_map.mean() + prior_term / 10)) <= 1e-12
    with pytest.raises(ValueError, match="likelihood"):
        elbo_loss(model, variables, x, y, num_train_examples=10, likelihood="poisson")


def _gauss_hermite_sigmoid(m, s, n=200):
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / weights.sum()
    return (weights * (1 / (1 + np.exp(-(m[..., None] + s[..., None] * nodes))))).sum(-1)


def test_probit_binary_error_bound():
    # Two classes: 'pairwise' is MacKay's probit for the logit difference d ~ N(m1 - m2, v1 + v2).
    # Stated bound: |error| <= 0.02 (measured maximum 0.016) for m in [-10, 10], sd in [0, 10].
    m = np.linspace(-10, 10, 81)
    sd = np.linspace(0, 10, 41)
    mm, ss = np.meshgrid(m, sd, indexing="ij")
    # Split the difference over the two logits, and the variance unevenly.
    mean = f64(np.stack([mm / 2, -mm / 2], -1))
    var = f64(np.stack([0.3 * ss**2, 0.7 * ss**2], -1))
    approx = np.asarray(probit_softmax(mean, var))[..., 0]
    truth = _gauss_hermite_sigmoid(mm, ss)
    err = np.abs(approx - truth)
    assert err.max() <= 0.02
    assert err[:, 0].max() <= 1e-12  # exact without variance


@pytest.mark.parametrize("num_classes, bound_pairwise, bound_scaled", [(3, 0.02, 0.16), (10, 0.06, 0.15)])
def test_probit_multiclass_against_monte_carlo(num_classes, bound_pairwise, bound_scaled):
    # Stated (measured on 200 configurations): max error 0.016 (K = 3) and 0.056 (K = 10) for
    # 'pairwise', 0.16 and 0.14 for 'scaled', with means in [-5, 5] and stds in [0, 1].
    rng = np.random.default_rng(1)
    configs, n = 30, 20_000
    mean = f64(rng.uniform(-5, 5, (configs, num_classes)))
    std = f64(rng.uniform(0, 1, (configs, num_classes)))

    @jax.jit
    def monte_carlo(key):
        eps = jax.random.normal(key, (n, configs, num_classes), jnp.float64)
        probs = jax.nn.softmax(mean[None] + std[None] * eps, axis=-1)
        return jnp.mean(probs, 0), jnp.std(probs, 0) / math.sqrt(n)

    mc, se = monte_carlo(jax.random.key(2))
    for method, bound in (("pairwise", bound_pairwise), ("scaled", bound_scaled)):
        approx = jax.jit(probit_softmax, static_argnums=2)(mean, std**2, method)
        np.testing.assert_allclose(np.asarray(jnp.sum(approx, -1)), 1.0, rtol=1e-12)
        assert np.all(np.abs(np.asarray(approx - mc)) <= bound + 4 * np.asarray(se)), method


def test_probit_categorical_nll():
    mean = f64([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]])
    var = f64([[0.5, 1.0, 2.0], [0.1, 0.0, 3.0]])
    labels = jnp.asarray([2, 0])
    nll = probit_categorical_nll(labels, mean, var)
    expected = -np.log(np.asarray(probit_softmax(mean, var)))[[0, 1], [2, 0]]
    np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-12)
    # Zero variance: plain softmax cross-entropy, by hand.
    xent = [math.log(sum(math.exp(v) for v in row)) - row[lab]
            for row, lab in zip([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]], [2, 0])]
    for method in ("pairwise", "scaled"):
        np.testing.assert_allclose(
            np.asarray(probit_categorical_nll(labels, mean, jnp.zeros_like(var), method)), xent,
            rtol=1e-12)
    np.testing.assert_allclose(np.asarray(categorical_nll_from_logits(labels, mean)), xent, rtol=1e-12)
    with pytest.raises(ValueError, match="method"):
        probit_log_softmax(mean, var, "exact")
    with pytest.raises(TypeError, match="labels"):
        probit_categorical_nll(f64([2.0, 0.0]), mean, var)


def test_expected_categorical_nll_bound_brackets_the_monte_carlo_expectation():
    """lse(m) <= E[lse(f)] <= lse(m + v/2): the bound is above the expected NLL by at most max(v)/2."""
    rng = np.random.default_rng(3)
    n = 100_000
    for _ in range(4):
        mean = jnp.asarray(rng.normal(0, 2, (1, 5)))
        var = jnp.asarray(rng.uniform(0, 2, (1, 5)))
        label = jnp.asarray([int(rng.integers(5))])
        bound = float(expected_categorical_nll_bound(label, mean, var)[0])
        f = mean + jnp.sqrt(var) * jax.random.normal(jax.random.key(int(rng.integers(1 << 30))), (n, 5))
        nll = -jax.nn.log_softmax(f, axis=-1)[:, int(label[0])]
        mc, se = float(jnp.mean(nll)), float(jnp.std(nll)) / np.sqrt(n)
        assert mc - 4 * se <= bound <= mc + float(jnp.max(var)) / 2 + 4 * se, (mc, se, bound)
    # Zero variance: exactly the softmax cross-entropy.
    logits = jnp.asarray(rng.normal(size=(3, 4)))
    labels = jnp.asarray([0, 3, 1])
    np.testing.assert_allclose(
        expected_categorical_nll_bound(labels, logits, jnp.zeros_like(logits)),
        categorical_nll_from_logits(labels, logits),
        rtol=1e-14,
    )
    with pytest.raises(ValueError, match="`mean` and `var`"):
        expected_categorical_nll_bound(labels, logits, jnp.zeros((3, 5)))


# ----------------------------------------------------------------------------- ensembles
import flax.linen as nn  # noqa: E402

from bayeslayers_jax import Ensemble, member  # noqa: E402

M = 3


class _DenseNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8, param_dtype=jnp.float64)(x))
        return nn.Dense(2, param_dtype=jnp.float64)(h)


def _ensemble_case(kind):
    if kind == "dense":
        return _DenseNet(), {}
    layer_type, map_ = {"clt": ("clt", False), "cltdet": ("cltdet", False), "lr_map": ("lr", True),
                        "clt_map": ("clt", True)}[kind]
    return BayesianMLP((8, 2), layer_type=layer_type, param_dtype=jnp.float64), {"map": map_}


@pytest.mark.parametrize("kind", ["clt", "cltdet", "lr_map", "clt_map", "dense"])
@pytest.mark.parametrize("shared_targets", [True, False])
def test_ensemble_loss_and_gradient_equal_each_member_alone(kind, shared_targets):
    """The ensemble loss is the sum of the members' losses and member m's gradient is exactly
    the gradient it gets trained alone (float64, 1e-10 relative)."""
    module, kwargs = _ensemble_case(kind)
    ens = Ensemble(module, M)
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (6, 4), jnp.float64)
    y = jax.random.normal(ky, (6, 2) if shared_targets else (M, 6, 2), jnp.float64)
    v = ens.init(jax.random.key(1), x)
    common = dict(num_train_examples=50, noise_var=0.3, kl_weight=0.7, **kwargs)

    def ens_loss(params):
        return elbo_loss(ens, {**v, "params": params}, x, y, **common)

    (loss, aux), grads = jax.value_and_grad(ens_loss, has_aux=True)(v["params"])
    assert aux["nll"].shape == aux["kl"].shape == aux["loss"].shape == (M,)
    np.testing.assert_allclose(loss, jnp.sum(aux["loss"]), rtol=1e-14)
    for m in range(M):
        vm = member(v, m)
        ym = y if shared_targets else y[m]

        def alone(params):
            return elbo_loss(module, {**vm, "params": params}, x, ym, **common)

        (loss_m, aux_m), grads_m = jax.value_and_grad(alone, has_aux=True)(vm["params"])
        np.testing.assert_allclose(aux["loss"][m], loss_m, rtol=1e-10)
        np.testing.assert_allclose(aux["nll"][m], aux_m["nll"], rtol=1e-10)
        np.testing.assert_allclose(aux["kl"][m], aux_m["kl"], rtol=1e-10, atol=1e-300)
        for g_ens, g_alone in zip(jax.tree_util.tree_leaves(member(grads, m)), jax.tree_util.tree_leaves(grads_m)):
            np.testing.assert_allclose(g_ens, g_alone, rtol=1e-10, atol=1e-14)


def test_ensemble_categorical_loss_equals_members_alone():
    module = BayesianMLP((8, 3), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(module, M)
    x = jax.random.normal(jax.random.key(0), (6, 4), jnp.float64)
    labels = jnp.array([0, 1, 2, 2, 1, 0])
    v = ens.init(jax.random.key(1), x)
    loss, aux = elbo_loss(ens, v, x, labels, num_train_examples=50, likelihood="categorical",
                          clt_categorical="bound")
    alone = [elbo_loss(module, member(v, m), x, labels, num_train_examples=50, likelihood="categorical",
                       clt_categorical="bound")[0]
             for m in range(M)]
    np.testing.assert_allclose(loss, sum(alone), rtol=1e-12)
    np.testing.assert_allclose(aux["loss"], jnp.stack(alone), rtol=1e-12)


def test_ensemble_sampling_loss_uses_each_members_own_noise():
    """LR ensemble: the per-member losses differ from each other even with identical members
    (independent noise per member) and the total is their sum."""
    module = BayesianMLP((8, 1), layer_type="lr", param_dtype=jnp.float64)
    ens = Ensemble(module, 2)
    x = jax.random.normal(jax.random.key(0), (16, 4), jnp.float64)
    v = ens.init(jax.random.key(1), x)
    v = jax.tree.map(lambda a: jnp.stack([a[0], a[0]]), v)
    v["params"] = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 2.0 if "rho" in jax.tree_util.keystr(p) else a, v["params"])
    loss, aux = elbo_loss(ens, v, x, jnp.zeros((16, 1)), num_train_examples=50, noise_var=0.1,
                          key=jax.random.key(2))
    assert abs(float(aux["nll"][0] - aux["nll"][1])) > 1e-6
    np.testing.assert_allclose(aux["kl"][0], aux["kl"][1], rtol=1e-14)
    np.testing.assert_allclose(loss, jnp.sum(aux["loss"]), rtol=1e-14)


def test_make_elbo_loss_fn_with_stacked_priors_matches_elbo_loss():
    module = BayesianMLP((8, 1), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(module, M)
    x = jax.random.normal(jax.random.key(0), (6, 4), jnp.float64)
    y = jnp.zeros((6, 1), jnp.float64)
    v = ens.init(jax.random.key(1), x)
    loss_fn = make_elbo_loss_fn(ens, v, num_train_examples=50, noise_var=0.3, has_aux=True)
    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(v["params"], (x, y), jax.random.key(2))
    ref, _ = elbo_loss(ens, v, x, y, num_train_examples=50, noise_var=0.3)
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    assert aux["kl"].shape == (M,)
    assert grads["layers_0"]["weight_mu"].shape == (M, 4, 8)


def test_ensemble_target_shape_errors_name_both_shapes():
    module = BayesianMLP((8, 1), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(module, M)
    x = jnp.ones((6, 4), jnp.float64)
    v = ens.init(jax.random.key(1), x)
    for bad in [(6,), (M, 6), (2, 6, 1), (6, 1, 1)]:
        with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}.*\(3, 6, 1\)"):
            elbo_loss(ens, v, x, jnp.zeros(bad), num_train_examples=10, noise_var=0.1)


def test_target_output_shape_mismatch_raises_with_a_fix():
    """(B,) targets against (B, 1) outputs (and the reverse, and a stray member axis) raise."""
    module = BayesianMLP((8, 1), layer_type="clt", param_dtype=jnp.float64)
    x = jnp.ones((6, 4), jnp.float64)
    v = module.init(jax.random.key(1), x)
    with pytest.raises(ValueError, match=r"\(6,\).*\(6, 1\).*y\[\.\.\., None\]"):
        elbo_loss(module, v, x, jnp.zeros(6), num_train_examples=10, noise_var=0.1)
    with pytest.raises(ValueError, match=r"\(6, 1\).*\(6,\)"):
        gaussian_nll(jnp.zeros((6, 1)), jnp.zeros(6), 1.0)
    with pytest.raises(ValueError, match=r"\(6, 1\).*\(3, 6, 1\).*ensemble"):
        gaussian_nll(jnp.zeros((6, 1)), jnp.zeros((3, 6, 1)), 1.0)
    with pytest.raises(ValueError, match=r"\(3, 6, 1\).*\(6, 1\)"):
        expected_gaussian_nll(jnp.zeros((3, 6, 1)), jnp.zeros((6, 1)), None, 1.0)


@pytest.mark.parametrize("noise_var", [0.0, -1.0, float("nan"), float("inf")])
def test_noise_var_must_be_positive_and_finite(noise_var):
    module = BayesianMLP((8, 1), layer_type="clt", param_dtype=jnp.float64)
    x = jnp.ones((6, 4), jnp.float64)
    v = module.init(jax.random.key(1), x)
    with pytest.raises(ValueError, match="noise_var"):
        elbo_loss(module, v, x, jnp.zeros((6, 1)), num_train_examples=10, noise_var=noise_var)
    with pytest.raises(ValueError, match="noise_var"):
        gaussian_nll(jnp.zeros((2, 1)), jnp.zeros((2, 1)), noise_var)
    with pytest.raises(ValueError, match="noise_var"):
        expected_gaussian_nll(jnp.zeros((2, 1)), jnp.zeros((2, 1)), None, jnp.asarray(noise_var))


def test_noise_var_traced_is_not_checked_and_propagates_nan():
    nll = jax.jit(lambda s: gaussian_nll(f64([[1.0]]), f64([[0.0]]), s))(f64(float("nan")))
    assert np.isnan(nll[0])


@pytest.mark.parametrize("bad_label", [3, 7, -1])
def test_labels_out_of_range_raise_when_concrete_and_are_nan_when_traced(bad_label):
    logits = jnp.zeros((2, 3), jnp.float64)
    labels = jnp.array([0, bad_label])
    for fn in (
        lambda lab: categorical_nll_from_logits(lab, logits),
        lambda lab: probit_categorical_nll(lab, logits, jnp.ones_like(logits)),
        lambda lab: expected_categorical_nll_bound(lab, logits, jnp.ones_like(logits)),
    ):
        with pytest.raises(ValueError, match=rf"labels must lie in \[0, 3\).*{bad_label}"):
            fn(labels)
        traced = jax.jit(fn)(labels)
        assert np.isfinite(traced[0]) and np.isnan(traced[1])
    module = BayesianMLP((8, 3), layer_type="lr", param_dtype=jnp.float64)
    x = jnp.ones((2, 4), jnp.float64)
    v = module.init(jax.random.key(1), x)
    with pytest.raises(ValueError, match="labels"):
        elbo_loss(module, v, x, labels, num_train_examples=10, likelihood="categorical", map=True)
    loss = jax.jit(lambda lab: elbo_loss(module, v, x, lab, num_train_examples=10,
                                         likelihood="categorical", map=True)[0])(labels)
    assert np.isnan(loss)
