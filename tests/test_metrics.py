"""Metrics against values computed by hand (in the test) and against scikit-learn's AUROC.

Tolerances: the hand-computed cases are exact in float64, so they are compared to 1e-12
(a few ulps of the sums involved).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bayeslayers_jax.metrics import (
    entropy_ood_auroc,
    accuracy,
    auroc,
    brier_score,
    calibration_error,
    categorical_nll,
    expected_calibration_error,
    interval_coverage,
    mixture_categorical_nll,
    mixture_regression_nll,
    mutual_information,
    predictive_entropy,
    regression_nll,
    rmse,
)

TOL = 1e-12


def f64(x):
    return jnp.asarray(x, jnp.float64)


def test_regression_nll_by_hand():
    y, mean, var = f64([0.0, 1.0]), f64([0.0, 0.0]), f64([1.0, 4.0])
    expected = (0.5 * math.log(2 * math.pi) + (0.5 * math.log(8 * math.pi) + 1.0 / 8.0)) / 2
    assert abs(float(regression_nll(y, mean, var)) - expected) <= TOL


def test_rmse_by_hand():
    assert abs(float(rmse(f64([1.0, 2.0, 3.0]), f64([1.0, 0.0, 3.0]))) - math.sqrt(4.0 / 3.0)) <= TOL


def test_interval_coverage_by_hand():
    # 95% interval of N(0, 1) is [-1.95996, 1.95996]: 0, 1.9 and 1.95 are inside, -2 and 3 not.
    y = f64([0.0, 1.9, 1.95, -2.0, 3.0])
    cov = interval_coverage(y, jnp.zeros(5, jnp.float64), jnp.ones(5, jnp.float64), 0.95)
    assert abs(float(cov) - 3.0 / 5.0) <= TOL
    # 50% interval of N(1, 4): 1 +- 2 * 0.67449 = [-0.349, 2.349]: 0 and 2 inside, 3 not.
    y = f64([0.0, 2.0, 3.0, -1.0])
    cov = interval_coverage(y, jnp.ones(4, jnp.float64), 4 * jnp.ones(4, jnp.float64), 0.5)
    assert abs(float(cov) - 0.5) <= TOL
    with pytest.raises(ValueError, match="level"):
        interval_coverage(y, y, y, 1.0)


def test_calibration_error_extremes_and_calibrated():
    y = f64([0.5, -1.0, 2.0, 0.1])
    # Variance huge: every interval covers everything, coverage 1 at each level p:
    # CE = mean(1 - p) over p = 0.05..0.95 = 1 - 0.5 = 0.5.
    ce_jit = jax.jit(calibration_error)
    ce = ce_jit(y, jnp.zeros(4, jnp.float64), jnp.full(4, 1e12, jnp.float64))
    assert abs(float(ce) - 0.5) <= TOL
    # Variance tiny: nothing covered, CE = mean(p) = 0.5.
    ce = ce_jit(y, jnp.zeros(4, jnp.float64), jnp.full(4, 1e-12, jnp.float64))
    assert abs(float(ce) - 0.5) <= TOL
    # Standard-normal quantiles y_i = Phi^-1((i + 1/2)/n) under N(0, 1): the empirical coverage
    # of each central interval is within 1/n of its level, so CE <= 1/n.
    n = 1000
    from scipy.special import ndtri

    yq = f64(ndtri((np.arange(n) + 0.5) / n))
    ce = jax.jit(calibration_error)(yq, jnp.zeros(n, jnp.float64), jnp.ones(n, jnp.float64))
    assert float(ce) <= 1.0 / n
    # Custom levels: only 0.5 with y all inside -> |1 - 0.5| = 0.5.
    ce = calibration_error(f64([0.0]), f64([0.0]), f64([1.0]), levels=[0.5])
    assert abs(float(ce) - 0.5) <= TOL


def test_classification_metrics_by_hand():
    probs = f64([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    labels = jnp.asarray([0, 1, 1])
    assert abs(float(accuracy(probs, labels)) - 2.0 / 3.0) <= TOL
    nll = -(math.log(0.7) + math.log(0.8) + math.log(0.4)) / 3
    assert abs(float(categorical_nll(probs, labels)) - nll) <= TOL
    brier = ((0.3**2 + 0.3**2) + (0.2**2 + 0.2**2) + (0.6**2 + 0.6**2)) / 3
    assert abs(float(brier_score(probs, labels)) - brier) <= TOL
    # A confident mistake (p_true = 0) gives a large finite NLL, not inf.
    assert np.isfinite(float(categorical_nll(f64([[1.0, 0.0]]), jnp.asarray([1]))))


def test_ece_by_hand():
    # 10 bins. Confidences 0.95 (right), 0.95 (wrong) -> bin 9: acc 0.5, conf 0.95, gap 0.45;
    # 0.65 (right), 0.62 (right) -> bin 6: acc 1, conf 0.635, gap 0.365;
    # 1.0 (right) -> last bin closed: bin 9 becomes acc 2/3, conf (0.95+0.95+1)/3.
    probs = f64([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.62, 0.38]])
    labels = jnp.asarray([0, 1, 1, 0])
    expected = 0.5 * 0.45 + 0.5 * 0.365
    assert abs(float(expected_calibration_error(probs, labels, num_bins=10)) - expected) <= TOL
    probs5 = jnp.concatenate([probs, f64([[1.0, 0.0]])])
    labels5 = jnp.asarray([0, 1, 1, 0, 0])
    expected5 = 3 / 5 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3) + 2 / 5 * 0.365
    got5 = jax.jit(expected_calibration_error, static_argnames="num_bins")(probs5, labels5, num_bins=10)
    assert abs(float(got5) - expected5) <= TOL
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(probs, labels, num_bins=0)


def test_entropy_and_mutual_information_by_hand():
    ent = jax.jit(predictive_entropy)(f64([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(ent), [math.log(4), 0.0], atol=TOL)
    # Example 0: two confident samples that disagree: H(mean) = log 2, mean H = 0 -> MI = log 2.
    # Example 1: two identical samples -> MI = 0.
    samples = f64([[[1.0, 0.0], [0.3, 0.7]], [[0.0, 1.0], [0.3, 0.7]]])  # (S=2, B=2, K=2)
    mi_jit = jax.jit(mutual_information)
    mi = mi_jit(samples)
    np.testing.assert_allclose(np.asarray(mi), [math.log(2), 0.0], atol=TOL)
    # Example with partial disagreement: samples (0.9, 0.1) and (0.5, 0.5).
    h = lambda p: -sum(q * math.log(q) for q in p if q > 0)  # noqa: E731
    expected = h([0.7, 0.3]) - (h([0.9, 0.1]) + h([0.5, 0.5])) / 2
    mi = mi_jit(f64([[[0.9, 0.1]], [[0.5, 0.5]]]))
    assert abs(float(mi[0]) - expected) <= TOL
    with pytest.raises(ValueError, match="prob_samples"):
        mutual_information(f64([0.5, 0.5]))


def test_auroc_by_hand_and_against_sklearn():
    # Positives {3, 2}, negatives {1, 2}: pairs (3,1) (3,2) (2,1) win, (2,2) ties -> 3.5 / 4.
    scores = f64([3.0, 2.0, 1.0, 2.0])
    pos = jnp.asarray([True, True, False, False])
    assert abs(float(auroc(scores, pos)) - 0.875) <= TOL
    assert abs(float(auroc(-scores, pos)) - 0.125) <= TOL
    # Random scores with many ties, against scikit-learn's independent implementation.
    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, 500).astype(np.float64)
    lab = rng.random(500) < 0.3 + 0.02 * s
    got = jax.jit(auroc)(f64(s), jnp.asarray(lab))
    assert abs(float(got) - roc_auc_score(lab, s)) <= TOL
    with pytest.raises(ValueError, match="1-D"):
        auroc(f64([[1.0]]), jnp.asarray([[True]]))


def test_shape_and_type_errors():
    with pytest.raises(ValueError, match="shape"):
        regression_nll(f64([1.0]), f64([1.0, 2.0]), f64([1.0]))
    with pytest.raises(ValueError, match="probs"):
        accuracy(f64([[0.5, 0.5]]), jnp.asarray([0, 1]))
    with pytest.raises(TypeError, match="labels"):
        brier_score(f64([[0.5, 0.5]]), f64([0.0]))


@pytest.mark.parametrize("bad_label", [3, 7, -1])
def test_labels_out_of_range_raise_when_concrete_and_give_nan_when_traced(bad_label):
    probs = f64([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = jnp.array([2, bad_label])
    for fn in (accuracy, categorical_nll, brier_score, expected_calibration_error):
        with pytest.raises(ValueError, match=rf"labels must lie in \[0, 3\).*{bad_label}"):
            fn(probs, labels)
        assert np.isnan(jax.jit(fn)(probs, labels)), fn.__name__
        assert np.isfinite(jax.jit(fn)(probs, jnp.array([2, 0]))), fn.__name__


def test_ece_of_an_empty_input_raises():
    with pytest.raises(ValueError, match="at least one example"):
        expected_calibration_error(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32))


def test_regression_metrics_never_broadcast():
    y, mean, var = f64([1.0, 2.0]), f64([[1.0], [2.0]]), f64([[1.0], [1.0]])
    for fn, args in ((regression_nll, (y, mean, var)), (rmse, (y, mean)),
                     (interval_coverage, (y, mean, var)), (calibration_error, (y, mean, var))):
        with pytest.raises(ValueError, match=r"\(2,\).*\(2, 1\).*y\[\.\.\., None\]"):
            fn(*args)
    with pytest.raises(ValueError, match=r"`mean` \(2,\), `var` \(2, 1\)"):
        regression_nll(f64([1.0, 2.0]), f64([1.0, 2.0]), var)


# --- mixture NLL of sampled and ensemble predictives ------------------------------------

def _mixture_nll_mp(y, means, var):
    """-mean_i log(1/S sum_s N(y_i | means[s, i], var[s, i])) in mpmath (30 digits)."""
    import mpmath as mp

    mp.mp.dps = 30
    total = mp.mpf(0)
    S, n = means.shape[0], y.size
    for i in range(n):
        dens = mp.fsum(mp.npdf(mp.mpf(float(y.flat[i])), mp.mpf(float(means[s].flat[i])),
                               mp.sqrt(mp.mpf(float(var[s].flat[i])))) for s in range(S))
        total += -mp.log(dens / S)
    return float(total / n)


def test_mixture_regression_nll_by_hand():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 2))
    means = rng.normal(size=(5, 4, 2)) * 3
    var = rng.uniform(0.01, 2.0, (5, 4, 2))
    np.testing.assert_allclose(
        mixture_regression_nll(jnp.asarray(y), jnp.asarray(means), jnp.asarray(var)),
        _mixture_nll_mp(y, means, var), rtol=1e-12)
    # a shared noise variance (scalar or y's shape), and one far-away component (log-sum-exp stability)
    np.testing.assert_allclose(
        mixture_regression_nll(jnp.asarray(y), jnp.asarray(means), 0.3),
        _mixture_nll_mp(y, means, np.full(means.shape, 0.3)), rtol=1e-12)
    far = means.copy()
    far[:] = 40.0
    far[0] = y
    np.testing.assert_allclose(
        mixture_regression_nll(jnp.asarray(y), jnp.asarray(far), jnp.asarray(var[0])),
        _mixture_nll_mp(y, far, np.broadcast_to(var[0], far.shape)), rtol=1e-12)
    # S = 1 is regression_nll
    np.testing.assert_allclose(mixture_regression_nll(jnp.asarray(y), jnp.asarray(means[:1]), jnp.asarray(var[:1])),
                               regression_nll(jnp.asarray(y), jnp.asarray(means[0]), jnp.asarray(var[0])), rtol=1e-12)


def test_mixture_regression_nll_shapes_and_nan():
    with pytest.raises(ValueError, match=r"means must have shape \(S,\) \+ y.shape"):
        mixture_regression_nll(jnp.zeros((4, 1)), jnp.zeros((3, 4)), 1.0)
    with pytest.raises(ValueError, match="var must have shape"):
        mixture_regression_nll(jnp.zeros((4, 1)), jnp.zeros((3, 4, 1)), jnp.ones((4,)))
    means = jnp.zeros((3, 2)).at[1, 0].set(jnp.nan)
    assert np.isnan(mixture_regression_nll(jnp.zeros(2), means, 1.0))


def test_mixture_categorical_nll_by_hand():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5, 3)) * 4
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = np.array([0, 2, 1, 1, 0])
    expected = -np.mean(np.log(probs[:, np.arange(5), labels].mean(axis=0)))
    np.testing.assert_allclose(mixture_categorical_nll(jnp.asarray(probs), jnp.asarray(labels)), expected, rtol=1e-12)
    np.testing.assert_allclose(categorical_nll(jnp.asarray(probs.mean(0)), jnp.asarray(labels)), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="labels"):
        mixture_categorical_nll(jnp.asarray(probs), jnp.asarray(labels) + 5)
    assert np.isnan(jax.jit(mixture_categorical_nll)(jnp.asarray(probs), jnp.asarray(labels) + 5))


def test_entropy_ood_auroc_equals_sklearn_on_numpy_entropies():
    rng = np.random.default_rng(0)
    logits_in = rng.normal(size=(40, 5)) * 3.0  # confident
    logits_ood = rng.normal(size=(30, 5))  # less so, overlapping
    p_in = np.exp(logits_in) / np.exp(logits_in).sum(1, keepdims=True)
    p_ood = np.exp(logits_ood) / np.exp(logits_ood).sum(1, keepdims=True)
    entropy = lambda p: -np.sum(p * np.log(p), axis=1)  # noqa: E731
    expected = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[entropy(p_in), entropy(p_ood)])
    assert 0.6 < expected < 1.0  # a non-trivial case
    assert float(entropy_ood_auroc(jnp.asarray(p_in), jnp.asarray(p_ood))) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="probs_ood"):
        entropy_ood_auroc(jnp.asarray(p_in), jnp.asarray(p_ood[:, :4]))
