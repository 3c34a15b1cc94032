r"""Training objectives: the negative ELBO with one explicit normalization, and likelihoods.

**The one normalization used everywhere in this package.** For a training set of ``N``
examples and a minibatch of ``B`` of them, the loss minimized is the negative ELBO *per
training example*:

.. math::
    \mathcal{L} = \frac{1}{B}\sum_{i \in \text{batch}} \mathrm{NLL}_i
    \;+\; \beta\,\frac{\mathrm{KL}(q\,\|\,p)}{N}

(:func:`neg_elbo`), an unbiased estimate of ``-ELBO / N``. ``beta`` (``kl_weight``, default
1) is for KL annealing; ``beta = 1`` is the true ELBO. Dividing the *whole* ELBO by ``N`` keeps
the loss on the scale of one example's NLL, independent of the batch size, so learning rates
transfer; dividing the KL by the number of *batches* (another common convention) gives the
same gradient only when ``B`` divides ``N`` and the NLL is summed, which is where the issue
trackers' confusion comes from. The NLL is *summed* over the output (event) axes of one
example and *averaged* over examples.

Likelihoods (all per example, shape ``(batch,)``: the first axis is the batch axis and every
other axis is summed):

* :func:`gaussian_nll`: ``-log N(y | f, s^2)`` of a sampled (BBB, LR) or MAP output ``f``.
* :func:`expected_gaussian_nll`: ``-E_{f ~ N(m, v)}[log N(y | f, s^2)]`` in closed form, for
  the ``(mean, var)`` of a CLT network: CLT networks train without any sampling.
* :func:`probit_softmax` / :func:`probit_categorical_nll`: the probit approximation of the
  expected softmax for CLT classifiers.

:func:`elbo_loss` puts it together for any model built from this package's layers, and for
an :class:`~bayeslayers_jax.Ensemble` of them (the sum of the members' losses).

**Shapes never broadcast.** Targets must have exactly the output's shape (labels: the logits'
shape without the class axis); anything else raises ``ValueError`` naming both shapes. A
``BayesianMLP`` with one output gives ``(B, 1)``: pass ``y[:, None]``, not ``(B,)`` targets.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from bayeslayers_jax._checks import check_concrete_real, check_same_shape, check_target_shape
from bayeslayers_jax.ensemble import is_ensemble
from bayeslayers_jax.likelihoods import (
    DEFAULT_LOGIT_SAMPLES,
    _float,
    _label_nll,
    _per_example_sum,
    bernoulli_nll_from_logits,
    expected_bernoulli_nll_mc,
    expected_categorical_nll_mc,
    expected_heteroscedastic_gaussian_nll,
    heteroscedastic_gaussian_nll,
    split_heteroscedastic,
)
from bayeslayers_jax.layers import total_kl, without_kl
from bayeslayers_jax.noise import has_learned_noise, learned_noise_var

__all__ = [
    "neg_elbo",
    "gaussian_nll",
    "expected_gaussian_log_likelihood",
    "expected_categorical_nll_bound",
    "expected_gaussian_nll",
    "probit_softmax",
    "probit_log_softmax",
    "probit_categorical_nll",
    "categorical_nll_from_logits",
    "neg_log_prior",
    "elbo_loss",
    "elbo_from_outputs",
    "make_elbo_loss_fn",
]

_PROBIT_METHODS = ("pairwise", "scaled")
_LIKELIHOODS = ("gaussian", "categorical", "heteroscedastic", "bernoulli")


def _check_noise_var(noise_var):
    if noise_var is None:
        raise ValueError("noise_var is required for a Gaussian likelihood, got None")
    check_concrete_real("noise_var", noise_var, "positive")


def _noise_var(noise_var, shape, dtype):
    _check_noise_var(noise_var)
    noise_var = jnp.asarray(noise_var, dtype)
    try:
        return jnp.broadcast_to(noise_var, shape)
    except ValueError:
        raise ValueError(
            f"noise_var of shape {noise_var.shape} does not broadcast to the targets' shape {shape}"
        ) from None


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
    nll = _float(nll)
    kl = jnp.asarray(kl, nll.dtype)
    if kl.ndim != 0:
        raise ValueError(f"kl must be a scalar (the model's total KL), got shape {kl.shape}")
    return jnp.mean(nll) + kl_weight * kl / num_train_examples


def gaussian_nll(y, pred, noise_var):
    r"""Per-example Gaussian negative log-likelihood of a point (sampled or MAP) prediction.

    .. math::
        -\log\mathcal{N}(y \mid f, s^2) = \tfrac12\log(2\pi s^2) + \frac{(y - f)^2}{2 s^2},

    summed over every axis but the first.

    Args:
      y: targets, shape ``(B, ...)``.
      pred: network output ``f`` (one weight sample, or the MAP output), ``y``'s shape.
      noise_var: observation-noise variance ``s^2 > 0``, a scalar or broadcastable to ``y``.

    Returns:
      Array of shape ``(B,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> y, f = jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [0.0]])
      >>> print([round(float(e), 4) for e in gaussian_nll(y, f, noise_var=1.0)])  # 0.5 log(2 pi) + (y - f)^2 / 2
      [1.4189, 0.9189]
    """
    check_target_shape("y", y, "pred", pred)
    pred = _float(pred)
    y = _float(y, pred.dtype)
    s2 = _noise_var(noise_var, y.shape, pred.dtype)
    nll = 0.5 * jnp.log(2 * jnp.pi * s2) + 0.5 * jnp.square(y - pred) / s2
    return _per_example_sum(nll)


def expected_gaussian_log_likelihood(y, mean, var, noise_var):
    r"""Closed-form expected Gaussian log-likelihood under a Gaussian output, per example.

    For a network output :math:`f \sim \mathcal{N}(m, v)` (the CLT moments) and observation
    noise :math:`y \mid f \sim \mathcal{N}(f, s^2)`,

    .. math::
        \mathbb{E}_{f\sim\mathcal{N}(m, v)}\left[\log\mathcal{N}(y\mid f, s^2)\right]
        = -\tfrac12\log(2\pi s^2) - \frac{(y - m)^2 + v}{2 s^2},

    exact (no approximation beyond the Gaussian output), summed over every axis but the first.
    With ``var = 0`` (or ``None``, MAP mode) it is the plain Gaussian log-likelihood.

    Args:
      y: targets, shape ``(B, ...)``.
      mean: output means ``m``, ``y``'s shape.
      var: output variances ``v >= 0``, ``y``'s shape, or ``None`` for zero.
      noise_var: ``s^2 > 0``, a scalar or broadcastable to ``y``.

    Returns:
      Array of shape ``(B,)``.

    References:
      Wu et al. 2019, "Deterministic Variational Inference for Robust Bayesian Neural
      Networks" (section 3, the Gaussian expected log-likelihood); Haussmann et al. 2019,
      "Sampling-Free Variational Inference of Bayesian Neural Networks by Variance
      Backpropagation".

    Examples:
      >>> import jax.numpy as jnp
      >>> y, m, v = jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[1.0]])
      >>> print([round(float(e), 4) for e in expected_gaussian_log_likelihood(y, m, v, noise_var=1.0)])  # -0.5 log(2 pi) - (1 + 1) / 2
      [-1.9189]
    """
    check_target_shape("y", y, "mean", mean)
    mean = _float(mean)
    y = _float(y, mean.dtype)
    if var is None:
        var = jnp.zeros_like(mean)
    else:
        check_same_shape(var=var, mean=mean)
        var = jnp.asarray(var, mean.dtype)
    s2 = _noise_var(noise_var, y.shape, mean.dtype)
    ell = -0.5 * jnp.log(2 * jnp.pi * s2) - 0.5 * (jnp.square(y - mean) + var) / s2
    return _per_example_sum(ell)


def expected_gaussian_nll(y, mean, var, noise_var):
    """``-expected_gaussian_log_likelihood(y, mean, var, noise_var)`` (per example).

    Examples:
      >>> import jax.numpy as jnp
      >>> y, m = jnp.array([[1.0]]), jnp.array([[0.0]])
      >>> print([round(float(e), 4) for e in expected_gaussian_nll(y, m, jnp.array([[1.0]]), noise_var=1.0)])
      [1.9189]
    """
    return -expected_gaussian_log_likelihood(y, mean, var, noise_var)


def probit_log_softmax(mean, var, method="pairwise"):
    r"""Log of the probit approximation of :math:`\mathbb{E}_{f\sim\mathcal{N}(m,\mathrm{diag}\,v)}[\mathrm{softmax}(f)]`.

    Two approximations, both exact as ``v -> 0`` and both built on MacKay's probit
    approximation :math:`\mathbb{E}[\sigma(f)] \approx \sigma(m/\sqrt{1 + \pi v/8})` of the
    logistic-Gaussian integral (Spiegelhalter & Lauritzen 1990; MacKay 1992), whose error is
    below 0.02 everywhere (measured maximum 0.0160, see below):

    * ``'pairwise'`` (default; the mean-field approximation of Lu, Ie & Sha 2020): with
      :math:`p_k = 1 / \sum_j \exp(-(m_k - m_j)/\sqrt{1 + \pi(v_k + v_j)/8})`, then
      renormalized over ``k``. For two classes it *is* MacKay's probit for the logit
      difference (variance :math:`v_1 + v_2`), so it inherits the binary bound.
    * ``'scaled'`` (the textbook form):
      :math:`\mathrm{softmax}_k\left(m_k/\sqrt{1 + \pi v_k/8}\right)`. Cheaper (``O(K)`` rather
      than ``O(K^2)`` per example) but much less accurate when the variances differ between
      classes.

    Accuracy, measured as the maximum absolute error in a class probability against Monte
    Carlo (200 random configurations each, means uniform in [-5, 5], stds uniform in
    [0, s_max]):

    ============  =====  ============  ============
    ``s_max``     ``K``  pairwise      scaled
    ============  =====  ============  ============
    1             3      0.016         0.16
    1             10     0.056         0.14
    3             3      0.061         0.39
    3             10     0.18          0.52
    ============  =====  ============  ============

    (mean errors 0.004 to 0.07 for ``'pairwise'``). Binary (``K = 2``) ``'pairwise'``: at most
    0.016 on ``m in [-10, 10]``, ``sqrt(v) in [0, 10]`` (Gauss-Hermite ground truth).
    ``tests/test_objectives.py`` tests these bounds.

    Args:
      mean: logit means, shape ``(..., K)``.
      var: logit variances ``>= 0``, ``mean``'s shape (``None``: zero, plain log-softmax).
      method: ``'pairwise'`` or ``'scaled'``.

    Returns:
      Log-probabilities of shape ``(..., K)`` (they normalize exactly).

    References:
      Spiegelhalter & Lauritzen 1990, "Sequential updating of conditional probabilities on
      directed graphical structures"; MacKay 1992, "The evidence framework applied to
      classification networks"; Lu, Ie & Sha 2020, "Mean-Field Approximation to
      Gaussian-Softmax Integral with Application to Uncertainty Estimation".

    Examples:
      >>> import jax.numpy as jnp
      >>> log_p = probit_log_softmax(jnp.array([2.0, 0.0]), jnp.array([0.0, 0.0]))
      >>> print([round(float(e), 4) for e in jnp.exp(log_p)])  # zero variance: the softmax
      [0.8808, 0.1192]
      >>> p = jnp.exp(probit_log_softmax(jnp.array([2.0, 0.0]), jnp.array([10.0, 10.0])))
      >>> bool(p[0] < 0.8808)  # logit variance pulls the probabilities towards 1/K
      True
    """
    if method not in _PROBIT_METHODS:
        raise ValueError(f"method must be one of {_PROBIT_METHODS}, got {method!r}")
    mean = _float(mean)
    if mean.ndim < 1:
        raise ValueError(f"mean must have a class axis, got shape {mean.shape}")
    if var is None:
        return jax.nn.log_softmax(mean, axis=-1)
    check_same_shape(var=var, mean=mean)
    var = jnp.asarray(var, mean.dtype)
    c = jnp.pi / 8
    if method == "scaled":
        return jax.nn.log_softmax(mean * jax.lax.rsqrt(1 + c * var), axis=-1)
    # z[..., k, j] = (m_j - m_k) / sqrt(1 + c (v_k + v_j)); log p_k = -logsumexp_j z[..., k, j].
    diff = mean[..., None, :] - mean[..., :, None]
    scale = jax.lax.rsqrt(1 + c * (var[..., :, None] + var[..., None, :]))
    log_p = -jax.nn.logsumexp(diff * scale, axis=-1)
    return jax.nn.log_softmax(log_p, axis=-1)


def probit_softmax(mean, var, method="pairwise"):
    """``exp(probit_log_softmax(mean, var, method))``: approximate expected class probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> print([round(float(e), 4) for e in probit_softmax(jnp.array([0.0, 0.0]), jnp.array([1.0, 3.0]))])
      [0.5, 0.5]
    """
    return jnp.exp(probit_log_softmax(mean, var, method))


def probit_categorical_nll(labels, mean, var, method="pairwise"):
    r"""Per-example negative log of the probit-approximate predictive probability of the label.

    .. math::
        -\log \tilde p_{y}, \qquad
        \tilde p \approx \mathbb{E}_{f\sim\mathcal{N}(m, \mathrm{diag}\,v)}[\mathrm{softmax}(f)]

    This is the categorical counterpart of :func:`expected_gaussian_nll` for CLT classifiers.
    Note that it is the NLL of the (approximate) *predictive* distribution, not the expected
    NLL: by Jensen :math:`-\log\mathbb{E}[p_y] \le \mathbb{E}[-\log p_y]`, so with it the
    loss of :func:`neg_elbo` is not a strict bound on ``-ELBO`` (it is the usual
    sampling-free surrogate, exact for ``v = 0``).

    Args:
      labels: integer class labels, shape ``(B,)`` (or ``mean.shape[:-1]``).
      mean: logit means, shape ``labels.shape + (K,)``.
      var: logit variances, ``mean``'s shape, or ``None`` (plain softmax cross-entropy).
      method: see :func:`probit_log_softmax`.

    Returns:
      Array of shape ``(B,)`` (extra example axes are summed).

    Examples:
      >>> import jax.numpy as jnp
      >>> nll = probit_categorical_nll(jnp.array([0]), jnp.array([[2.0, 0.0]]), jnp.zeros((1, 2)))
      >>> print([round(float(e), 4) for e in nll])  # -log softmax([2, 0])[0]
      [0.1269]
    """
    log_p = probit_log_softmax(mean, var, method)
    return _label_nll(labels, log_p)


def expected_categorical_nll_bound(labels, mean, var):
    r"""Sampling-free upper bound on the expected softmax cross-entropy of Gaussian logits.

    .. math::
        \mathbb{E}_{f\sim\mathcal{N}(m, \mathrm{diag}\,v)}\big[-\log \mathrm{softmax}(f)_y\big]
        \le \log\sum_k e^{m_k + v_k/2} - m_y

    by Jensen's inequality, :math:`\mathbb{E}[\log\sum_k e^{f_k}] \le
    \log\sum_k \mathbb{E}[e^{f_k}]`, with the log-normal mean
    :math:`\mathbb{E}[e^{f_k}] = e^{m_k + v_k/2}`. Unlike :func:`probit_categorical_nll` it
    bounds the expected NLL from above, so :func:`neg_elbo` built on it bounds ``-ELBO``, and
    it penalizes logit variance: CLT classifiers trained with it fit the data instead of
    staying near the prior. It is exact (the cross-entropy) for ``v = 0``.

    Args:
      labels: integer class labels, shape ``(B,)`` (or ``mean.shape[:-1]``).
      mean: logit means, shape ``labels.shape + (K,)``.
      var: logit variances, ``mean``'s shape, or ``None`` (plain softmax cross-entropy).

    Returns:
      Array of shape ``(B,)`` (extra example axes are summed).

    Examples:
      >>> import jax.numpy as jnp
      >>> labels, m = jnp.array([0]), jnp.array([[2.0, 0.0]])
      >>> print([round(float(e), 4) for e in expected_categorical_nll_bound(labels, m, jnp.zeros((1, 2)))])  # v = 0: cross-entropy
      [0.1269]
      >>> print([round(float(e), 4) for e in expected_categorical_nll_bound(labels, m, jnp.ones((1, 2)))])  # log(e^2.5 + e^0.5) - 2
      [0.6269]
    """
    mean = _float(mean)
    if var is None:
        return categorical_nll_from_logits(labels, mean)
    var = _float(var, mean.dtype)
    check_same_shape(mean=mean, var=var)
    shifted = mean + 0.5 * var
    log_norm = jax.nn.logsumexp(shifted, axis=-1, keepdims=True)
    # -log softmax(m + v/2)_y - v_y/2 = logsumexp(m + v/2) - m_y
    return _label_nll(labels, shifted - log_norm - 0.5 * var)


def categorical_nll_from_logits(labels, logits):
    """Per-example softmax cross-entropy ``-log softmax(logits)[label]`` (sampled/MAP outputs).

    Examples:
      >>> import jax.numpy as jnp
      >>> print([round(float(e), 4) for e in categorical_nll_from_logits(jnp.array([1, 0]), jnp.zeros((2, 4)))])  # log 4
      [1.3863, 1.3863]
    """
    return _label_nll(labels, jax.nn.log_softmax(_float(logits), axis=-1))


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


def _as_inputs(x):
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


def _check_elbo_options(likelihood, clt_categorical, num_logit_samples):
    if likelihood not in _LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
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
      num_train_examples, likelihood, noise_var, kl_weight, probit_method,
        clt_categorical: as in :func:`elbo_loss`.

    Returns:
      ``(loss, {'nll': mean NLL, 'kl': kl})``.

    Examples:
      >>> import jax.numpy as jnp
      >>> out, y = jnp.zeros((2, 1)), jnp.ones((2, 1))
      >>> loss, aux = elbo_from_outputs(out, y, jnp.asarray(50.0), num_train_examples=100, noise_var=1.0)
      >>> print(round(float(loss), 4))  # 0.5 log(2 pi) + 1/2 + 50/100
      1.9189
    """
    _check_elbo_options(likelihood, clt_categorical, num_logit_samples)
    if likelihood == "gaussian":
        _check_noise_var(noise_var)
    logit_key = None if key is None else jax.random.fold_in(key, _LOGIT_KEY_SALT)
    cfg = dict(likelihood=likelihood, probit_method=probit_method, clt_categorical=clt_categorical,
               num_logit_samples=num_logit_samples)
    nll = _output_nll(out, y, logit_key, noise_var, cfg)
    loss = neg_elbo(nll, kl, num_train_examples, kl_weight)
    return loss, {"nll": jnp.mean(nll), "kl": jnp.asarray(kl).astype(loss.dtype)}


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
    _check_noise_var(noise_var)  # up front, before the forward pass
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
      (:func:`~bayeslayers_jax.likelihoods.expected_heteroscedastic_gaussian_nll`); Monte Carlo
      over the output logits for ``'categorical'``
      (:func:`~bayeslayers_jax.likelihoods.expected_categorical_nll_mc`, the default
      ``clt_categorical='mc'``) and ``'bernoulli'``
      (:func:`~bayeslayers_jax.likelihoods.expected_bernoulli_nll_mc`), with
      ``num_logit_samples`` draws from a key folded from ``key``. Those two raise a
      ``ValueError`` without a ``key`` (never a silent fallback); ``clt_categorical='bound'``
      (:func:`expected_categorical_nll_bound`, deterministic, a bound that loosens as the
      logit variance grows) or ``'probit'`` (:func:`probit_categorical_nll`) need none;
    * a model returning one array (BBB, LR) is sampled once with ``rngs={'sample': key}``
      (one weight sample per minibatch, as in Blundell et al. 2015) and gets the likelihood
      of that sample: :func:`gaussian_nll`, :func:`categorical_nll_from_logits`,
      :func:`~bayeslayers_jax.likelihoods.heteroscedastic_gaussian_nll` or
      :func:`~bayeslayers_jax.likelihoods.bernoulli_nll_from_logits`;
    * ``map=True`` runs the means only and replaces the KL by :func:`neg_log_prior`
      (MAP training: the negative log posterior per example).

    **Learned noise**: a :class:`~bayeslayers_jax.LearnedNoise` model (or an ensemble of
    them) carries its Gaussian noise in ``params['noise_log_std']``; leave ``noise_var=None``
    and the loss uses ``exp(2 * noise_log_std)``, so its gradient trains the noise with the
    weights. Mind the double-counting trap when reporting intervals (:mod:`bayeslayers_jax.noise`).

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
        :data:`~bayeslayers_jax.likelihoods.DEFAULT_LOGIT_SAMPLES` = 32, justified there).

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
    _check_elbo_options(likelihood, clt_categorical, num_logit_samples)
    noise = _resolve_noise(model, variables, likelihood, noise_var)
    variables = without_kl(variables)
    kwargs: dict[str, Any] = {"map": True} if map else {}
    if key is not None and not map:
        kwargs["rngs"] = {"sample": key}
    out, state = model.apply(variables, *_as_inputs(x), mutable=["kl"], **kwargs)
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
    return _ensemble_elbo(out, y, kl, noise_var=noise, noise_axis=noise_axis, **options)


def _ensemble_elbo(out, y, kl, *, noise_var=None, noise_axis=None, key=None, **options):
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
