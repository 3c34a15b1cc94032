"""Evaluation metrics for predictive distributions (regression and classification).

Every function is a pure ``jax.numpy`` function of arrays: jit-compatible, no Python
loops over data, no host round trips. Conventions:

* Regression metrics take the targets ``y`` and a Gaussian predictive distribution given
  by its ``mean`` and ``var`` (the *total* predictive variance, epistemic plus observation
  noise, e.g. ``Predictive.total_var`` from :func:`bayeslayers_jax.predictive`). All three
  arrays have the same shape; averages run over **all elements** (one element is one
  scalar target).
* Classification metrics take class probabilities ``probs`` of shape ``(..., K)`` (the
  predictive mean probabilities) and integer ``labels`` of shape ``(...)`` in ``[0, K)``;
  averages run over all examples. Concrete labels outside ``[0, K)`` raise ``ValueError``;
  traced ones (under ``jit``) make the metric NaN.
* Shapes must match exactly: nothing is broadcast (a ``(B,)`` target against a ``(B, 1)``
  mean raises ``ValueError`` naming both shapes).
* Per-example uncertainty scores (:func:`predictive_entropy`, :func:`mutual_information`)
  return one value per example, ready for :func:`auroc` in out-of-distribution detection.

Logarithms are natural (nats).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtri, xlogy

from bayeslayers_jax._checks import as_float_array, check_labels, check_same_shape, check_target_shape

__all__ = [
    "regression_nll",
    "mixture_regression_nll",
    "mixture_categorical_nll",
    "rmse",
    "interval_coverage",
    "calibration_error",
    "accuracy",
    "categorical_nll",
    "brier_score",
    "expected_calibration_error",
    "predictive_entropy",
    "mutual_information",
    "auroc",
    "entropy_ood_auroc",
]


def _float_dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _check_probs_labels(probs, labels):
    """Checks the shapes; returns the labels (clipped into range) and whether all are valid."""
    probs_shape, labels_shape = jnp.shape(probs), jnp.shape(labels)
    if len(probs_shape) < 1 or probs_shape[:-1] != labels_shape:
        raise ValueError(
            "probs must have shape labels.shape + (num_classes,), got "
            f"probs.shape={probs_shape} and labels.shape={labels_shape}"
        )
    labels, valid = check_labels(labels, probs_shape[-1])
    return labels, jnp.all(valid)


def _regression_shapes(y, mean, var=None):
    check_target_shape("y", y, "mean", mean)
    if var is not None:
        check_same_shape(mean=mean, var=var)


def _check_level(level):
    """Checks concrete levels (Python or NumPy values) at trace time; traced ones pass through."""
    if isinstance(level, jax.core.Tracer):
        return
    level_arr = np.asarray(level)
    if np.any((level_arr <= 0) | (level_arr >= 1)):
        raise ValueError(f"level must lie in (0, 1), got {level}")


def regression_nll(y, mean, var):
    r"""Mean Gaussian negative log predictive density.

    .. math::
        \mathrm{NLL} = \frac{1}{n}\sum_i \tfrac12\log(2\pi\sigma_i^2)
        + \frac{(y_i - \mu_i)^2}{2\sigma_i^2}

    Args:
      y: targets.
      mean: predictive means, the shape of ``y``.
      var: total predictive variances (``> 0``), the shape of ``y``.

    Returns:
      A scalar, the average over all elements, in nats.

    References:
      Hernandez-Lobato & Adams 2015, "Probabilistic Backpropagation for Scalable Learning
      of Bayesian Neural Networks" (test log-likelihood on UCI regression).

    Examples:
      >>> import jax.numpy as jnp
      >>> y, mean, var = jnp.array([0.0, 1.0]), jnp.array([0.0, 0.0]), jnp.array([1.0, 1.0])
      >>> print(round(float(regression_nll(y, mean, var)), 4))  # 0.5 log(2 pi) + (0 + 1/2) / 2
      1.1689
    """
    _regression_shapes(y, mean, var)
    dtype = _float_dtype(y, mean, var)
    y, mean, var = (jnp.asarray(a, dtype) for a in (y, mean, var))
    return jnp.mean(0.5 * jnp.log(2 * jnp.pi * var) + 0.5 * jnp.square(y - mean) / var)


def mixture_regression_nll(y, means, var):
    r"""Mean NLL of an equally weighted Gaussian mixture: a sampled or ensemble predictive.

    .. math::
        \mathrm{NLL} = -\frac1n\sum_i \log\Big(\frac1S\sum_{s=1}^S
        \mathcal N\big(y_i \mid \mu_{s,i}, \sigma^2_{s,i}\big)\Big),

    computed as a log-mean-exp over the components (stable for any spread). The components
    are the Monte Carlo samples of a BBB/LR predictive (``Predictive.samples`` with the noise
    variance: the exact predictive density of the sampled weights, not its Gaussian moment
    match :func:`regression_nll`), the members of an ensemble (their means and total
    variances), or the samples of a heteroscedastic model (each with its own
    :math:`e^{s}`). One element of ``y`` is one scalar target (the mixture is per target, as
    in :func:`regression_nll`).

    Args:
      y: targets.
      means: component means, shape ``(S,) + y.shape``.
      var: component variances ``> 0``: shape ``means.shape`` (one per component), or
        ``y.shape`` or ``()`` (the same for every component, e.g. a noise variance); no
        other shape is broadcast.

    Returns:
      A scalar, the average over all elements of ``y``, in nats.

    References:
      Lakshminarayanan, Pritzel & Blundell 2017, "Simple and Scalable Predictive Uncertainty
      Estimation using Deep Ensembles"; Gal & Ghahramani 2016, "Dropout as a Bayesian
      Approximation" (the log-mean-exp test log-likelihood of sampled predictions).

    Examples:
      >>> import jax.numpy as jnp
      >>> y, means = jnp.array([0.0]), jnp.array([[-1.0], [1.0]])
      >>> print(round(float(mixture_regression_nll(y, means, 1.0)), 4))  # both components at distance 1: 0.5 log(2 pi) + 1/2
      1.4189
      >>> print(round(float(regression_nll(y, jnp.array([0.0]), jnp.array([2.0]))), 4))  # the moment match differs
      1.2655
    """
    y, means, var = as_float_array("y", y), as_float_array("means", means), as_float_array("var", var)
    means_shape, y_shape = tuple(jnp.shape(means)), tuple(jnp.shape(y))
    if len(means_shape) < 1 or means_shape[1:] != y_shape:
        raise ValueError(
            f"means must have shape (S,) + y.shape = (S,) + {y_shape}, got means.shape={means_shape}"
        )
    var_shape = tuple(jnp.shape(var))
    if var_shape not in (means_shape, y_shape, ()):
        raise ValueError(
            f"var must have shape {means_shape} (per component), {y_shape} or () (shared), got {var_shape}"
        )
    dtype = _float_dtype(y, means, var)
    y, means, var = (jnp.asarray(a, dtype) for a in (y, means, var))
    var = jnp.broadcast_to(var, means_shape)
    log_pdf = -0.5 * jnp.log(2 * jnp.pi * var) - 0.5 * jnp.square(y[None] - means) / var
    return -jnp.mean(logsumexp(log_pdf, axis=0) - jnp.log(means_shape[0]))


def mixture_categorical_nll(prob_samples, labels):
    r"""Mean NLL of the equally weighted mixture of sampled class probabilities (log-mean-exp).

    .. math::
        \mathrm{NLL} = -\frac1n\sum_i \log\Big(\frac1S\sum_{s=1}^S p^{(s)}_{i, y_i}\Big),

    evaluated as ``logsumexp(log p) - log S`` over the samples (weight samples, logit
    samples of a CLT model, or ensemble members, e.g. ``ClassPredictive.prob_samples``).
    Mathematically it is :func:`categorical_nll` of the averaged probabilities; the log-space
    form keeps precision when the true class's probabilities are tiny in most samples.
    Probabilities are floored at ``finfo.tiny`` as in :func:`categorical_nll`.

    Args:
      prob_samples: shape ``(S,) + labels.shape + (K,)``.
      labels: integer labels in ``[0, K)``.

    Returns:
      A scalar, in nats.

    Examples:
      >>> import jax.numpy as jnp
      >>> samples = jnp.array([[[0.9, 0.1]], [[0.5, 0.5]]])  # two samples, one example
      >>> print(round(float(mixture_categorical_nll(samples, jnp.array([1]))), 4))  # -log((0.1 + 0.5) / 2)
      1.204
    """
    prob_samples = as_float_array("prob_samples", prob_samples)
    shape = tuple(jnp.shape(prob_samples))
    if len(shape) < 2:
        raise ValueError(f"prob_samples must have shape (S,) + labels.shape + (K,), got {shape}")
    labels, valid = _check_probs_labels(prob_samples[0], labels)
    dtype = _float_dtype(prob_samples)
    prob_samples = jnp.asarray(prob_samples, dtype)
    p_true = jax.vmap(_label_probs, in_axes=(0, None))(prob_samples, labels)
    log_p = jnp.log(jnp.maximum(p_true, jnp.finfo(dtype).tiny))
    nll = -jnp.mean(logsumexp(log_p, axis=0) - jnp.log(shape[0]))
    return jnp.where(valid, nll, jnp.nan)


def rmse(y, mean):
    r"""Root mean squared error :math:`\sqrt{\frac1n\sum_i (y_i - \mu_i)^2}` over all elements.

    Examples:
      >>> import jax.numpy as jnp
      >>> print(round(float(rmse(jnp.array([1.0, -1.0]), jnp.array([0.0, 0.0]))), 4))
      1.0
    """
    _regression_shapes(y, mean)
    dtype = _float_dtype(y, mean)
    return jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(y, dtype) - jnp.asarray(mean, dtype))))


def interval_coverage(y, mean, var, level=0.95):
    r"""Fraction of targets inside the central Gaussian predictive interval of ``level``.

    The interval is :math:`\mu \pm z\sigma` with :math:`z = \Phi^{-1}((1 + \text{level})/2)`
    (``z = 1.95996...`` for 95%); the end points count as inside.

    Args:
      y: targets.
      mean: predictive means, the shape of ``y``.
      var: total predictive variances, the shape of ``y``.
      level: nominal coverage in ``(0, 1)``.

    Returns:
      A scalar in ``[0, 1]``; a calibrated model gives ``level``.

    Examples:
      >>> import jax.numpy as jnp
      >>> y = jnp.array([0.0, 1.0, 3.0])
      >>> print(round(float(interval_coverage(y, jnp.zeros(3), jnp.ones(3), level=0.95)), 4))
      0.6667
    """
    _regression_shapes(y, mean, var)
    _check_level(level)
    dtype = _float_dtype(y, mean, var)
    y, mean, var = (jnp.asarray(a, dtype) for a in (y, mean, var))
    z = ndtri((1 + jnp.asarray(level, dtype)) / 2)
    inside = jnp.abs(y - mean) <= z * jnp.sqrt(var)
    return jnp.mean(inside.astype(dtype))


def calibration_error(y, mean, var, levels=None):
    r"""Regression calibration error: mean absolute gap between nominal and empirical coverage.

    .. math::
        \mathrm{CE} = \frac{1}{L}\sum_{l=1}^{L}
        \left|\,\mathrm{coverage}(p_l) - p_l\,\right|

    where :math:`\mathrm{coverage}(p)` is :func:`interval_coverage` at level :math:`p`
    (central intervals). By default the levels are ``0.05, 0.10, ..., 0.95`` (19 levels).
    It is 0 for a perfectly calibrated Gaussian predictive (in the large-sample limit) and at
    most the mean of ``max(p, 1 - p)`` over the levels (``14/19 = 0.737`` for the defaults).

    Args:
      y: targets.
      mean: predictive means, the shape of ``y``.
      var: total predictive variances, the shape of ``y``.
      levels: 1-D array of nominal levels in ``(0, 1)``; ``None`` for the 19 defaults.

    Returns:
      A scalar in ``[0, 1)``.

    References:
      Kuleshov, Fenner & Ermon 2018, "Accurate Uncertainties for Deep Learning Using
      Calibrated Regression" (calibration of regression via coverage of quantiles).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> y = jax.random.normal(jax.random.key(0), (20000,))
      >>> bool(calibration_error(y, jnp.zeros_like(y), jnp.ones_like(y)) < 0.02)  # calibrated
      True
      >>> bool(calibration_error(y, jnp.zeros_like(y), 0.01 * jnp.ones_like(y)) > 0.3)  # overconfident
      True
    """
    _regression_shapes(y, mean, var)
    dtype = _float_dtype(y, mean, var)
    if levels is None:
        levels = np.arange(1, 20) / 20
    if np.ndim(levels) != 1:
        raise ValueError(f"levels must be 1-D, got shape {np.shape(levels)}")
    _check_level(levels)
    levels = jnp.asarray(levels, dtype)
    y, mean, var = (jnp.asarray(a, dtype) for a in (y, mean, var))
    z = ndtri((1 + levels) / 2)  # (L,)
    standardized = (jnp.abs(y - mean) / jnp.sqrt(var)).reshape(-1)  # (n,)
    inside = standardized[None, :] <= z[:, None]
    coverage = jnp.mean(inside.astype(dtype), axis=1)
    return jnp.mean(jnp.abs(coverage - levels))


def accuracy(probs, labels):
    """Fraction of examples whose most probable class (``argmax`` of ``probs``) is the label.

    ``probs`` may also be logits: only their ordering matters.

    Examples:
      >>> import jax.numpy as jnp
      >>> probs = jnp.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
      >>> print(round(float(accuracy(probs, jnp.array([0, 1, 1]))), 4))
      0.6667
    """
    labels, valid = _check_probs_labels(probs, labels)
    dtype = _float_dtype(probs)
    return jnp.where(valid, jnp.mean((jnp.argmax(probs, axis=-1) == labels).astype(dtype)), jnp.nan)


def _label_probs(probs, labels):
    return jnp.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]


def categorical_nll(probs, labels):
    r"""Mean negative log probability of the true class, :math:`-\frac1n\sum_i\log p_{i,y_i}`.

    Probabilities are floored at the dtype's smallest normal number (``finfo.tiny``) so that a
    confident mistake gives a large finite value instead of ``inf``.

    Examples:
      >>> import jax.numpy as jnp
      >>> probs = jnp.array([[0.5, 0.5], [0.25, 0.75]])
      >>> print(round(float(categorical_nll(probs, jnp.array([0, 1]))), 4))  # (log 2 + log 4/3) / 2
      0.4904
    """
    labels, valid = _check_probs_labels(probs, labels)
    dtype = _float_dtype(probs)
    probs = jnp.asarray(probs, dtype)
    p_true = _label_probs(probs, labels)
    return jnp.where(valid, -jnp.mean(jnp.log(jnp.maximum(p_true, jnp.finfo(dtype).tiny))), jnp.nan)


def brier_score(probs, labels):
    r"""Multi-class Brier score, :math:`\frac1n\sum_i\sum_k (p_{ik} - [y_i = k])^2`.

    Summed over classes, averaged over examples: 0 for a perfect confident classifier, 2 for
    a confident wrong one (Brier 1950's original multi-class form).

    References:
      Brier 1950, "Verification of forecasts expressed in terms of probability".

    Examples:
      >>> import jax.numpy as jnp
      >>> probs = jnp.array([[1.0, 0.0], [0.5, 0.5]])
      >>> print(round(float(brier_score(probs, jnp.array([0, 1]))), 4))  # (0 + 0.5) / 2
      0.25
    """
    labels, valid = _check_probs_labels(probs, labels)
    dtype = _float_dtype(probs)
    probs = jnp.asarray(probs, dtype)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=dtype)
    return jnp.where(valid, jnp.mean(jnp.sum(jnp.square(probs - one_hot), axis=-1)), jnp.nan)


def expected_calibration_error(probs, labels, num_bins=15):
    r"""Expected calibration error of the top-class confidence with equal-width bins.

    The confidence :math:`c_i = \max_k p_{ik}` falls in bin
    :math:`b = \min(\lfloor c_i M\rfloor, M - 1)` of ``M = num_bins`` equal-width bins of
    ``[0, 1]`` (bins are ``[b/M, (b+1)/M)``, the last one closed). Then

    .. math::
        \mathrm{ECE} = \sum_{b} \frac{n_b}{n}\,\left|\mathrm{acc}_b - \mathrm{conf}_b\right|

    with :math:`\mathrm{acc}_b` the accuracy and :math:`\mathrm{conf}_b` the mean confidence of
    the examples in bin ``b`` (empty bins contribute 0).

    Args:
      probs: class probabilities, shape ``labels.shape + (K,)``.
      labels: integer labels.
      num_bins: number of equal-width bins (a positive Python int).

    Returns:
      A scalar in ``[0, 1]``.

    References:
      Naeini, Cooper & Hauskrecht 2015, "Obtaining Well Calibrated Probabilities Using
      Bayesian Binning"; Guo et al. 2017, "On Calibration of Modern Neural Networks".

    Examples:
      >>> import jax.numpy as jnp
      >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2]])
      >>> print(round(float(expected_calibration_error(probs, jnp.array([0, 1]))), 4))  # |1-.9|/2 + |0-.8|/2
      0.45
    """
    labels, valid = _check_probs_labels(probs, labels)
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    if jnp.size(labels) == 0:
        raise ValueError(
            f"expected_calibration_error needs at least one example, got labels of shape "
            f"{jnp.shape(labels)}"
        )
    dtype = _float_dtype(probs)
    probs = jnp.asarray(probs, dtype).reshape(-1, jnp.shape(probs)[-1])
    labels = jnp.asarray(labels).reshape(-1)
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(dtype)
    bins = jnp.clip(jnp.floor(confidence * num_bins).astype(jnp.int32), 0, num_bins - 1)
    # Per-bin sums of (correct - confidence): |sum| / n = (n_b / n) |acc_b - conf_b|.
    gap = jax.ops.segment_sum(correct - confidence, bins, num_segments=num_bins)
    return jnp.where(valid, jnp.sum(jnp.abs(gap)) / labels.shape[0], jnp.nan)


def predictive_entropy(probs):
    r"""Entropy of the predictive distribution, :math:`-\sum_k p_k \log p_k` (nats), per example.

    Uses :math:`0 \log 0 = 0`. Returns an array of shape ``probs.shape[:-1]``; it is at most
    :math:`\log K`.

    Examples:
      >>> import jax.numpy as jnp
      >>> h = predictive_entropy(jnp.array([[0.5, 0.5], [1.0, 0.0]]))
      >>> print(round(float(h[0]), 4), abs(float(h[1])))  # log 2 and 0
      0.6931 0.0
    """
    probs = jnp.asarray(probs, _float_dtype(probs))
    if probs.ndim < 1:
        raise ValueError(f"probs must have a class axis, got shape {probs.shape}")
    return -jnp.sum(xlogy(probs, probs), axis=-1)


def mutual_information(prob_samples):
    r"""Mutual information between the prediction and the weights (epistemic uncertainty).

    From Monte Carlo samples :math:`p^{(s)}` of the class probabilities (one per weight sample),

    .. math::
        \mathrm{MI} = H\!\left[\tfrac1S\textstyle\sum_s p^{(s)}\right]
        - \tfrac1S\textstyle\sum_s H\!\left[p^{(s)}\right] \;\ge 0,

    the "BALD" score: total predictive entropy minus the expected (aleatoric) entropy.

    Args:
      prob_samples: array of shape ``(S, ..., K)``, sample axis first.

    Returns:
      An array of shape ``prob_samples.shape[1:-1]`` (per example).

    References:
      Houlsby, Huszar, Ghahramani & Lengyel 2011, "Bayesian Active Learning for
      Classification and Preference Learning"; Gal 2016, "Uncertainty in Deep Learning".

    Examples:
      >>> import jax.numpy as jnp
      >>> agree = jnp.array([[[0.5, 0.5]], [[0.5, 0.5]]])     # two samples that agree: MI 0
      >>> disagree = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # confident and opposite: MI log 2
      >>> print(mutual_information(agree).round(4), mutual_information(disagree).round(4))
      [0.] [0.6931]
    """
    prob_samples = jnp.asarray(prob_samples, _float_dtype(prob_samples))
    if prob_samples.ndim < 2:
        raise ValueError(
            f"prob_samples must have shape (S, ..., K), got shape {prob_samples.shape}"
        )
    total = predictive_entropy(jnp.mean(prob_samples, axis=0))
    aleatoric = jnp.mean(predictive_entropy(prob_samples), axis=0)
    # The difference is >= 0 by concavity of the entropy; clip round-off below zero.
    return jnp.maximum(total - aleatoric, 0)


def auroc(scores, is_positive):
    r"""Area under the ROC curve from scores, rank based (Mann-Whitney U), ties count one half.

    .. math::
        \mathrm{AUROC} = P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)
        = \frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-}

    where :math:`R_+` is the sum of the (tie-averaged, 1-based) ranks of the positives.
    For out-of-distribution detection, the positives are the OOD examples and the score is an
    uncertainty (entropy, mutual information): 1 separates perfectly, 0.5 is chance.
    Runs in :math:`O(n\log n)` (one sort and two searches), jit-compatible; the result is
    NaN when one class is empty.

    Args:
      scores: 1-D array of scores, higher meaning "more positive".
      is_positive: 1-D boolean (or 0/1 integer) array of the same shape.

    Returns:
      A scalar in ``[0, 1]``.

    References:
      Hanley & McNeil 1982, "The meaning and use of the area under a receiver operating
      characteristic (ROC) curve".

    Examples:
      >>> import jax.numpy as jnp
      >>> print(float(auroc(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1]))))
      0.75
    """
    scores = jnp.asarray(scores)
    is_positive = jnp.asarray(is_positive)
    if scores.ndim != 1 or is_positive.shape != scores.shape:
        raise ValueError(
            "scores and is_positive must be 1-D of one shape, got "
            f"scores.shape={scores.shape}, is_positive.shape={is_positive.shape}"
        )
    dtype = _float_dtype(scores)
    scores = scores.astype(dtype)
    positive = is_positive.astype(bool)
    sorted_scores = jnp.sort(scores)
    lower = jnp.searchsorted(sorted_scores, scores, side="left")
    upper = jnp.searchsorted(sorted_scores, scores, side="right")
    ranks = (lower + upper + 1).astype(dtype) / 2  # average 1-based rank within ties
    n_pos = jnp.sum(positive.astype(dtype))
    n_neg = scores.shape[0] - n_pos
    rank_sum = jnp.sum(jnp.where(positive, ranks, 0))
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def entropy_ood_auroc(probs, probs_ood):
    r"""Out-of-distribution detection by predictive entropy: :func:`auroc` with OOD positive.

    The score is :func:`predictive_entropy` of each example's predictive probabilities; the
    in-distribution examples (``probs``) are the negatives, the OOD ones (``probs_ood``) the
    positives: 1 when every OOD example is more uncertain than every in-distribution one.

    Args:
      probs: ``(N, K)`` predictive probabilities of in-distribution inputs.
      probs_ood: ``(M, K)`` predictive probabilities of OOD inputs.

    Returns:
      A scalar in ``[0, 1]`` (0.5 is chance).

    Examples:
      >>> import jax.numpy as jnp
      >>> sure, unsure = jnp.array([[0.9, 0.1]]), jnp.array([[0.5, 0.5]])
      >>> print(float(entropy_ood_auroc(sure, unsure)))
      1.0
    """
    probs, probs_ood = jnp.asarray(probs), jnp.asarray(probs_ood)
    if probs.ndim != 2 or probs_ood.ndim != 2 or probs.shape[1] != probs_ood.shape[1]:
        raise ValueError(
            "probs and probs_ood must be (N, K) and (M, K) with one K, got "
            f"probs.shape={probs.shape}, probs_ood.shape={probs_ood.shape}"
        )
    entropy = jnp.concatenate([predictive_entropy(probs), predictive_entropy(probs_ood)])
    is_ood = jnp.concatenate([jnp.zeros(probs.shape[0], bool), jnp.ones(probs_ood.shape[0], bool)])
    return auroc(entropy, is_ood)
