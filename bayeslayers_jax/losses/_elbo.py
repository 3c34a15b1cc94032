r"""The negative ELBO from a model's outputs and KL: one normalization, any front end.

Everything here takes what a model returned (an array, or ``(mean, var)`` for CLT) and its
KL; running the model is the front ends' business (:func:`bayeslayers_jax.linen.elbo_loss`,
:func:`bayeslayers_jax.nnx.elbo_loss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from bayeslayers_jax.losses._common import float_array
from bayeslayers_jax.losses._classification import (
    DEFAULT_LOGIT_SAMPLES,
    bernoulli_nll_from_logits,
    categorical_nll_from_logits,
    expected_bernoulli_nll_mc,
    expected_categorical_nll_bound,
    expected_categorical_nll_mc,
    probit_categorical_nll,
)
from bayeslayers_jax.losses._regression import (
    check_noise_var,
    expected_gaussian_nll,
    expected_heteroscedastic_gaussian_nll,
    gaussian_nll,
    heteroscedastic_gaussian_nll,
    split_heteroscedastic,
)

__all__ = [
    "neg_elbo",
    "neg_log_prior",
    "elbo_from_outputs",
    "ensemble_elbo_from_outputs",
    "as_inputs",
    "check_elbo_options",
    "LIKELIHOODS",
]

LIKELIHOODS = ("gaussian", "categorical", "heteroscedastic", "bernoulli")


def neg_elbo(nll, kl, num_train_examples, kl_weight=1.0):
    r"""Negative ELBO per training example: ``mean(nll) + kl_weight * kl / num_train_examples``.

    .. math::
        \mathcal{L} = \frac{1}{B}\sum_{i=1}^{B}\mathrm{NLL}_i + \beta\,\frac{\mathrm{KL}}{N}

    Args:
      nll: per-example negative log-likelihoods of the minibatch, shape ``(B,)`` (or any
        shape: it is averaged over all elements).
      kl: the model's total KL divergence ``KL(q || p)`` (a scalar, e.g. from
        :func:`bayeslayers_jax.total_kl`).
      num_train_examples: ``N``, the size of the whole training set (not of the batch).
      kl_weight: ``beta``, the KL weight for annealing (1 = the ELBO).

    Returns:
      The scalar loss. Multiplying it by ``N`` gives ``-ELBO`` (in expectation over batches).

    References:
      Blundell et al. 2015, "Weight Uncertainty in Neural Networks" (eq. 8 and the minibatch
      weighting of section 3.4); Graves 2011, "Practical Variational Inference for Neural
      Networks".

    Examples:
      >>> import jax.numpy as jnp
      >>> print(round(float(neg_elbo(jnp.array([1.0, 3.0]), 50.0, num_train_examples=100)), 4))  # 2 + 50/100
      2.5
    """
    if not isinstance(num_train_examples, jax.core.Tracer) and num_train_examples <= 0:
        raise ValueError(f"num_train_examples must be positive, got {num_train_examples!r}")
    nll = float_array(nll)
    kl = jnp.asarray(kl, nll.dtype)
    if kl.ndim != 0:
        raise ValueError(f"kl must be a scalar (the model's total KL), got shape {kl.shape}")
    return jnp.mean(nll) + kl_weight * kl / num_train_examples


def neg_log_prior(params, prior):
    r"""Gaussian negative log prior density of the *mean* parameters (the MAP regularizer).

    .. math::
        -\log p(\mu) = \sum \frac{(\mu - \mu_0)^2}{2\sigma_0^2} + \text{const}

    over every ``weight_mu`` and ``bias_mu`` in ``params``, with the prior
    ``weight_mean``/``weight_std`` (``bias_mean``/``bias_std``) of the same layer from the
    ``'prior'`` collection; the constant is dropped. Training a model in MAP mode on
    ``neg_elbo(nll, neg_log_prior(params, prior), N)`` maximizes the posterior density, i.e.
    it is L2 weight decay of strength ``1 / (2 sigma_0^2 N)`` per example. Parameters of
    layers without a prior (``CLTLinearDet``) contribute nothing.

    Args:
      params: the ``'params'`` collection of a model built from this package's layers.
      prior: its ``'prior'`` collection.

    Returns:
      A scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {'layer': {'weight_mu': jnp.array([[2.0]]), 'bias_mu': jnp.array([0.0])}}
      >>> prior = {'layer': {'weight_mean': 0.0, 'weight_std': 1.0, 'bias_mean': 0.0, 'bias_std': 1.0}}
      >>> print(float(neg_log_prior(params, prior)))  # 2^2 / 2
      2.0
    """
    flat_params = traverse_util.flatten_dict(params)
    flat_prior = traverse_util.flatten_dict(prior) if prior else {}
    total = jnp.zeros(())
    for path, value in flat_params.items():
        name = path[-1]
        if name not in ("weight_mu", "bias_mu"):
            continue
        kind = name[: -len("_mu")]
        mean_path = path[:-1] + (f"{kind}_mean",)
        std_path = path[:-1] + (f"{kind}_std",)
        if mean_path not in flat_prior and std_path not in flat_prior:
            continue  # a layer without a prior (CLTLinearDet): no regularizer
        if mean_path not in flat_prior or std_path not in flat_prior:
            raise ValueError(
                f"prior must hold both {'/'.join(map(str, mean_path))} and "
                f"{'/'.join(map(str, std_path))} for the parameter {'/'.join(map(str, path))}"
            )
        mu0 = jnp.asarray(flat_prior[mean_path], value.dtype)
        std0 = jnp.asarray(flat_prior[std_path], value.dtype)
        term = jnp.square(value - mu0) / (2 * jnp.square(std0))
        total = total.astype(term.dtype) + jnp.sum(term)
    return total


def as_inputs(x):
    """The positional inputs of ``model.apply``: a tuple ``x`` is unpacked, anything else is one input.

    This is how :func:`elbo_loss` and :func:`bayeslayers_jax.predictive` pass inputs to models
    with several of them, e.g. ``x = (state, action)`` for a
    :class:`~bayeslayers_jax.BayesianCritic`.
    """
    return x if isinstance(x, tuple) else (x,)


_CLT_CATEGORICAL = ("mc", "bound", "probit")


#: ``jax.random.fold_in`` salt of the logit-sampling key, so it never equals the model's
#: ``'sample'`` key.
_LOGIT_KEY_SALT = 0x10617


def _output_nll(out, y, key, noise_var, cfg):
    """Per-example NLL of one model output: the expectation for ``(mean, var)``, else a sample's."""
    likelihood = cfg["likelihood"]
    if isinstance(out, tuple):
        mean, var = out
        if likelihood == "gaussian":
            return expected_gaussian_nll(y, mean, var, noise_var)
        if likelihood == "heteroscedastic":
            return expected_heteroscedastic_gaussian_nll(y, mean, var)
        if likelihood == "bernoulli":
            if var is None:
                return bernoulli_nll_from_logits(y, mean)
            return expected_bernoulli_nll_mc(y, mean, var, key=key, num_samples=cfg["num_logit_samples"])
        if var is None:
            return categorical_nll_from_logits(y, mean)
        if cfg["clt_categorical"] == "mc":
            return expected_categorical_nll_mc(y, mean, var, key=key, num_samples=cfg["num_logit_samples"])
        if cfg["clt_categorical"] == "bound":
            return expected_categorical_nll_bound(y, mean, var)
        return probit_categorical_nll(y, mean, var, cfg["probit_method"])
    if likelihood == "gaussian":
        return gaussian_nll(y, out, noise_var)
    if likelihood == "heteroscedastic":
        return heteroscedastic_gaussian_nll(y, out)
    if likelihood == "bernoulli":
        return bernoulli_nll_from_logits(y, out)
    return categorical_nll_from_logits(y, out)


def _per_member_target_shape(ref_shape, likelihood):
    """The target shape of one output of shape ``ref_shape`` under ``likelihood``."""
    if likelihood in ("gaussian", "bernoulli"):
        return tuple(ref_shape)
    if likelihood == "heteroscedastic":
        split_heteroscedastic(jnp.zeros(ref_shape[-1:]))  # the width must be even
        return tuple(ref_shape[:-1]) + (ref_shape[-1] // 2,)
    return tuple(ref_shape[:-1])


def _target_member_axis(y, out, likelihood, size):
    """``None`` if an ensemble's targets are shared by the members, ``0`` if stacked per member."""
    ref = out[0] if isinstance(out, tuple) else out
    per_member = _per_member_target_shape(tuple(ref.shape), likelihood)
    shared = per_member[1:]
    y_shape = tuple(jnp.shape(y))
    if y_shape == shared:
        return None
    if y_shape == per_member:
        return 0
    name = "logits" if likelihood == "categorical" else "outputs"
    raise ValueError(
        f"targets y of shape {y_shape} do not fit an Ensemble of {size} members with {name} of "
        f"shape {tuple(ref.shape)}: y must have shape {shared} (the same targets for every "
        f"member) or {per_member} (one set per member); nothing is broadcast"
    )


def check_elbo_options(likelihood, clt_categorical, num_logit_samples):
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if clt_categorical not in _CLT_CATEGORICAL:
        raise ValueError(f"clt_categorical must be one of {_CLT_CATEGORICAL}, got {clt_categorical!r}")
    if isinstance(num_logit_samples, bool) or not isinstance(num_logit_samples, int) or num_logit_samples < 1:
        raise ValueError(f"num_logit_samples must be a positive int, got {num_logit_samples!r}")


def elbo_from_outputs(
    out,
    y,
    kl,
    *,
    num_train_examples,
    likelihood="gaussian",
    noise_var=None,
    kl_weight=1.0,
    key=None,
    probit_method="pairwise",
    clt_categorical="mc",
    num_logit_samples=DEFAULT_LOGIT_SAMPLES,
):
    r"""Negative ELBO per training example (:func:`neg_elbo`) from one model's outputs and KL.

    The framework-agnostic half of :func:`elbo_loss`: whatever ran the model (``flax.linen``
    ``apply``, a ``flax.nnx`` module, a user's function), ``out`` is its output on the
    minibatch and ``kl`` its total KL (or, for MAP training, :func:`neg_log_prior`). A tuple
    ``(mean, var)`` gets the closed-form likelihood, one array a sample's, exactly as in
    :func:`elbo_loss` (whose arguments these are).

    Args:
      out: the model's output: an array (sampled or MAP) or ``(mean, var)`` (CLT).
      y: targets of the output's shape (``'gaussian'``) or labels (``'categorical'``).
      kl: the scalar KL (or negative log prior).
      num_train_examples: ``N``, as in :func:`~bayeslayers_jax.elbo_loss`; so are
        ``likelihood``, ``noise_var``, ``kl_weight``, ``probit_method`` and ``clt_categorical``.

    Returns:
      ``(loss, {'nll': mean NLL, 'kl': kl})``.

    Examples:
      >>> import jax.numpy as jnp
      >>> out, y = jnp.zeros((2, 1)), jnp.ones((2, 1))
      >>> loss, aux = elbo_from_outputs(out, y, jnp.asarray(50.0), num_train_examples=100, noise_var=1.0)
      >>> print(round(float(loss), 4))  # 0.5 log(2 pi) + 1/2 + 50/100
      1.9189
    """
    check_elbo_options(likelihood, clt_categorical, num_logit_samples)
    if likelihood == "gaussian":
        check_noise_var(noise_var)
    logit_key = None if key is None else jax.random.fold_in(key, _LOGIT_KEY_SALT)
    cfg = dict(likelihood=likelihood, probit_method=probit_method, clt_categorical=clt_categorical,
               num_logit_samples=num_logit_samples)
    nll = _output_nll(out, y, logit_key, noise_var, cfg)
    loss = neg_elbo(nll, kl, num_train_examples, kl_weight)
    return loss, {"nll": jnp.mean(nll), "kl": jnp.asarray(kl).astype(loss.dtype)}


def ensemble_elbo_from_outputs(out, y, kl, *, noise_var=None, noise_axis=None, key=None, **options):
    """An ensemble's loss from its stacked outputs and per-member KL ``(M,)``, for any front end.

    The sum of the members' :func:`elbo_from_outputs` (shared or per-member targets, see
    :func:`_target_member_axis`; one key per member, ``jax.random.split(key, M)``), with
    ``aux`` holding per-member ``'nll'``, ``'kl'`` and ``'loss'``.
    """
    size = jnp.shape(kl)[0]
    y_axis = _target_member_axis(y, out, options.get("likelihood", "gaussian"), size)
    keys = None if key is None else jax.random.split(key, size)

    def member(o, t, k, member_key, s2):
        return elbo_from_outputs(o, t, k, noise_var=s2, key=member_key, **options)

    in_axes = (0, y_axis, 0, None if keys is None else 0, noise_axis)
    losses, aux = jax.vmap(member, in_axes=in_axes)(out, y, kl, keys, noise_var)
    return jnp.sum(losses), {**aux, "loss": losses}
