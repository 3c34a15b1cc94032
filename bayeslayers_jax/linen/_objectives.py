r"""The linen ELBO: run a ``flax.linen`` model once (``mutable=['kl']``) and score its outputs.

The normalization and the likelihoods are those of :mod:`bayeslayers_jax.losses`
(:func:`~bayeslayers_jax.neg_elbo`, :func:`~bayeslayers_jax.elbo_from_outputs`); this module
only gathers the model's outputs, its KL (or negative log prior) and its learned noise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bayeslayers_jax.linen._ensemble import is_ensemble
from bayeslayers_jax.linen._noise import has_learned_noise, learned_noise_var
from bayeslayers_jax.linen._variables import total_kl, without_kl
from bayeslayers_jax.losses._classification import DEFAULT_LOGIT_SAMPLES
from bayeslayers_jax.losses._elbo import (
    as_inputs,
    check_elbo_options,
    elbo_from_outputs,
    ensemble_elbo_from_outputs,
    neg_log_prior,
)
from bayeslayers_jax.losses._regression import check_noise_var

__all__ = ["elbo_loss", "make_elbo_loss_fn"]


def _resolve_noise(model, variables, likelihood, noise_var):
    """The noise variance the likelihood uses: the given one or the model's learned one."""
    learned = learned_noise_var(model, variables)
    if likelihood != "gaussian":
        if learned is not None:
            raise ValueError(
                f"a LearnedNoise model has a Gaussian observation noise, but likelihood={likelihood!r}"
            )
        if noise_var is not None:
            raise ValueError(f"noise_var is only used by likelihood='gaussian', got likelihood={likelihood!r}")
        return None
    if learned is not None:
        if noise_var is not None:
            raise ValueError(
                "the model learns its noise (LearnedNoise): pass noise_var=None, got "
                f"noise_var={noise_var!r}"
            )
        return learned
    check_noise_var(noise_var)  # up front, before the forward pass
    return noise_var


def elbo_loss(
    model,
    variables,
    x,
    y,
    *,
    num_train_examples,
    key=None,
    likelihood="gaussian",
    noise_var=None,
    kl_weight=1.0,
    map=False,
    probit_method="pairwise",
    clt_categorical="mc",
    num_logit_samples=DEFAULT_LOGIT_SAMPLES,
):
    r"""Negative ELBO per training example (:func:`neg_elbo`) of a model on a minibatch.

    Runs ``model.apply(variables, x, ...)`` once with ``mutable=['kl']``:

    * a model returning a tuple ``(mean, var)`` (CLT types) gets the expected NLL under its
      Gaussian outputs: closed form for ``'gaussian'`` (:func:`expected_gaussian_nll`) and
      ``'heteroscedastic'``
      (:func:`~bayeslayers_jax.expected_heteroscedastic_gaussian_nll`); Monte Carlo
      over the output logits for ``'categorical'``
      (:func:`~bayeslayers_jax.expected_categorical_nll_mc`, the default
      ``clt_categorical='mc'``) and ``'bernoulli'``
      (:func:`~bayeslayers_jax.expected_bernoulli_nll_mc`), with
      ``num_logit_samples`` draws from a key folded from ``key``. Those two raise a
      ``ValueError`` without a ``key`` (never a silent fallback); ``clt_categorical='bound'``
      (:func:`expected_categorical_nll_bound`, deterministic, a bound that loosens as the
      logit variance grows) or ``'probit'`` (:func:`probit_categorical_nll`) need none;
    * a model returning one array (BBB, LR) is sampled once with ``rngs={'sample': key}``
      (one weight sample per minibatch, as in Blundell et al. 2015) and gets the likelihood
      of that sample: :func:`gaussian_nll`, :func:`categorical_nll_from_logits`,
      :func:`~bayeslayers_jax.heteroscedastic_gaussian_nll` or
      :func:`~bayeslayers_jax.bernoulli_nll_from_logits`;
    * ``map=True`` runs the means only and replaces the KL by :func:`neg_log_prior`
      (MAP training: the negative log posterior per example).

    **Learned noise**: a :class:`~bayeslayers_jax.LearnedNoise` model (or an ensemble of
    them) carries its Gaussian noise in ``params['noise_log_std']``; leave ``noise_var=None``
    and the loss uses ``exp(2 * noise_log_std)``, so its gradient trains the noise with the
    weights. Mind the double-counting trap when reporting intervals (:class:`~bayeslayers_jax.LearnedNoise`).

    Any ``'kl'`` collection already in ``variables`` is dropped first, so stale KL values
    never add up. Targets must have exactly the output's shape (``'gaussian'``,
    ``'bernoulli'``; a ``BayesianMLP`` with one output has outputs ``(B, 1)``, so ``(B,)``
    targets raise: use ``y[:, None]``), the output's shape with half its last axis
    (``'heteroscedastic'``: ``2 D`` outputs, ``D`` means then ``D`` log-variances, for ``D``
    targets; an odd width raises), or the logits' shape without the class axis
    (``'categorical'``).

    **Ensembles** (:class:`~bayeslayers_jax.Ensemble`): each member ``m`` gets its own
    per-example negative ELBO :math:`\mathcal{L}_m` (its own NLL and its own KL over ``N``),
    and the loss is their *sum*

    .. math::
        \mathcal{L} = \sum_{m=1}^{M} \mathcal{L}_m, \qquad
        \frac{\partial\mathcal{L}}{\partial\theta_m} = \frac{\partial\mathcal{L}_m}{\partial\theta_m},

    so every member's gradient is exactly what it would get trained alone (elementwise
    optimizers such as Adam then train the members independently; a global-norm clip would
    couple them). The targets ``y`` are shared (the member's target shape) or stacked per
    member (a leading axis of length ``M``); any other shape raises. Monte Carlo logit
    draws are independent between members.

    Args:
      model: a ``flax.linen`` module built from this package's layers (e.g. ``BayesianMLP``),
        a :class:`~bayeslayers_jax.LearnedNoise` of one, or an
        :class:`~bayeslayers_jax.Ensemble` of such (or of plain Flax) modules.
      variables: its variables (``'params'`` and ``'prior'``).
      x: inputs, shape ``(B, ...)``; a tuple is unpacked into several positional inputs
        (``(state, action)`` for a :class:`~bayeslayers_jax.BayesianCritic`).
      y: targets: real values of the output's shape (``'gaussian'``), of half its width
        (``'heteroscedastic'``), 0/1 values of the output's shape (``'bernoulli'``), or
        integer labels in ``[0, K)`` of shape ``(B,)`` (``'categorical'``).
      num_train_examples: ``N``, the training-set size.
      key: PRNG key: the ``'sample'`` stream of sampling models (unless ``map``), and the
        logit draws of CLT ``'categorical'`` (with ``'mc'``) and ``'bernoulli'``.
      likelihood: ``'gaussian'``, ``'categorical'``, ``'heteroscedastic'`` or ``'bernoulli'``.
      noise_var: observation-noise variance ``> 0`` for ``'gaussian'``; ``None`` for a
        :class:`~bayeslayers_jax.LearnedNoise` model (and for the other likelihoods).
      kl_weight: KL weight for annealing.
      map: train the MAP (means-only) model.
      probit_method: see :func:`probit_log_softmax` (with ``clt_categorical='probit'``).
      clt_categorical: ``'mc'`` (default), ``'bound'`` or ``'probit'``: the categorical
        likelihood of CLT outputs.
      num_logit_samples: logit draws of the Monte Carlo expectations (default
        :data:`~bayeslayers_jax.DEFAULT_LOGIT_SAMPLES` = 32, justified there).

    Returns:
      ``(loss, aux)`` with ``aux = {'nll': mean NLL, 'kl': KL (or the negative log prior)}``;
      for an ensemble ``aux['nll']`` and ``aux['kl']`` have shape ``(M,)`` (one per member)
      and ``aux['loss']`` holds the members' losses :math:`\mathcal{L}_m`.

    Raises:
      ValueError: targets whose shape differs from the output's (no broadcasting), a
        concrete ``noise_var`` that is not finite and > 0 (or given with a learned noise, or
        with another likelihood), concrete labels outside ``[0, K)`` or binary targets other
        than 0/1 (traced ones give a NaN loss), an unknown ``likelihood``, a Monte Carlo
        likelihood without ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from bayeslayers_jax import BayesianMLP, Ensemble, LearnedNoise, elbo_loss
      >>> x, y = jnp.ones((8, 3)), jnp.zeros((8, 1))
      >>> model = BayesianMLP((16, 1), layer_type='clt')
      >>> v = model.init(jax.random.key(0), x)
      >>> loss, aux = elbo_loss(model, v, x, y, num_train_examples=100, noise_var=0.1)
      >>> loss.shape, sorted(aux)
      ((), ['kl', 'nll'])
      >>> ens = Ensemble(model, 3)
      >>> ve = ens.init(jax.random.key(0), x)
      >>> loss, aux = elbo_loss(ens, ve, x, y, num_train_examples=100, noise_var=0.1)
      >>> aux['nll'].shape, aux['kl'].shape, bool(jnp.isclose(loss, aux['loss'].sum()))
      ((3,), (3,), True)
      >>> noisy = LearnedNoise(model)  # the noise is a parameter: no noise_var
      >>> vn = noisy.init(jax.random.key(0), x)
      >>> grads = jax.grad(lambda p: elbo_loss(noisy, {**vn, 'params': p}, x, y, num_train_examples=100)[0])(vn['params'])
      >>> grads['noise_log_std'].shape
      (1,)
      >>> clf = BayesianMLP((16, 4), layer_type='clt')  # CLT classifier: Monte Carlo over the logits
      >>> vc = clf.init(jax.random.key(0), x)
      >>> loss, _ = elbo_loss(clf, vc, x, jnp.zeros(8, int), num_train_examples=100,
      ...                     likelihood='categorical', key=jax.random.key(1))
      >>> bool(jnp.isfinite(loss))
      True
    """
    check_elbo_options(likelihood, clt_categorical, num_logit_samples)
    noise = _resolve_noise(model, variables, likelihood, noise_var)
    variables = without_kl(variables)
    kwargs: dict[str, Any] = {"map": True} if map else {}
    if key is not None and not map:
        kwargs["rngs"] = {"sample": key}
    out, state = model.apply(variables, *as_inputs(x), mutable=["kl"], **kwargs)
    options = dict(
        num_train_examples=num_train_examples, likelihood=likelihood, kl_weight=kl_weight,
        key=key, probit_method=probit_method, clt_categorical=clt_categorical,
        num_logit_samples=num_logit_samples,
    )
    if not is_ensemble(model):
        if map:
            kl = neg_log_prior(variables["params"], variables.get("prior", {}))
        else:
            kl = total_kl(state.get("kl", {}))
        return elbo_from_outputs(out, y, kl, noise_var=noise, **options)
    size = model.size
    if map:
        kl = jax.vmap(neg_log_prior)(variables["params"], variables.get("prior", {}))
    elif jax.tree_util.tree_leaves(state.get("kl", {})):
        kl = total_kl(state["kl"], per_member=True)
    else:  # no Bayesian layer (a deep ensemble of plain modules, CLT-Det): no KL
        kl = jnp.zeros((size,), jax.tree_util.tree_leaves(out)[0].dtype)
    noise_axis = 0 if has_learned_noise(model) else None
    return ensemble_elbo_from_outputs(out, y, kl, noise_var=noise, noise_axis=noise_axis, **options)


def make_elbo_loss_fn(model, variables, *, num_train_examples, has_aux=False, **elbo_kwargs):
    """``loss_fn(params, batch, key)`` for optimizers: :func:`elbo_loss` with the rest fixed.

    The non-trainable collections of ``variables`` (``'prior'``; any ``'kl'`` is dropped) are
    closed over; ``batch`` is ``(x, y)``. This is the form :func:`bayeslayers_jax.parallel.train_step`
    and :func:`bayeslayers_jax.parallel.data_parallel_train_step` expect.

    Args:
      model: the network.
      variables: its variables (only the non-``'params'`` collections are used).
      num_train_examples: ``N``.
      has_aux: return ``(loss, aux)`` instead of the loss.
      **elbo_kwargs: ``likelihood``, ``noise_var``, ``kl_weight``, ``map``, ``probit_method``,
        ``clt_categorical``, ``num_logit_samples`` of :func:`elbo_loss`.

    Returns:
      ``loss_fn(params, batch, key) -> loss`` (or ``(loss, aux)``).

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from bayeslayers_jax import BayesianMLP, Ensemble, train_step
      >>> x, y = jnp.ones((8, 3)), jnp.zeros((8, 1))
      >>> model = Ensemble(BayesianMLP((16, 1), layer_type='clt'), 2)  # stacked priors work too
      >>> v = model.init(jax.random.key(0), x)
      >>> loss_fn = make_elbo_loss_fn(model, v, num_train_examples=100, noise_var=0.1)
      >>> opt = optax.adam(1e-2)
      >>> step = jax.jit(train_step(loss_fn, opt))
      >>> params, opt_state, loss = step(v['params'], opt.init(v['params']), (x, y), jax.random.key(1))
      >>> loss.shape
      ()
    """
    unknown = set(elbo_kwargs) - {"likelihood", "noise_var", "kl_weight", "map", "probit_method",
                                  "clt_categorical", "num_logit_samples"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments for elbo_loss: {sorted(unknown)}")
    others = {name: col for name, col in variables.items() if name not in ("params", "kl")}

    def loss_fn(params, batch, key):
        x, y = batch
        loss, aux = elbo_loss(model, {**others, "params": params}, x, y, key=key,
                              num_train_examples=num_train_examples, **elbo_kwargs)
        return (loss, aux) if has_aux else loss

    return loss_fn
