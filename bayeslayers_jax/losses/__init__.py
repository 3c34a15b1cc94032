r"""The losses sub-package: likelihoods by task and the negative ELBO, for any front end.

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

Modules (private; every name is re-exported here and at the package's top level):
``_regression`` (Gaussian and heteroscedastic), ``_classification`` (categorical and
Bernoulli, probit, Monte Carlo over logits), ``_elbo`` (:func:`neg_elbo`,
:func:`elbo_from_outputs`, :func:`neg_log_prior`).
"""

from bayeslayers_jax.losses._calibration import fit_noise_var as fit_noise_var
from bayeslayers_jax.losses._classification import DEFAULT_LOGIT_SAMPLES as DEFAULT_LOGIT_SAMPLES
from bayeslayers_jax.losses._classification import bernoulli_nll_from_logits as bernoulli_nll_from_logits
from bayeslayers_jax.losses._classification import categorical_nll_from_logits as categorical_nll_from_logits
from bayeslayers_jax.losses._classification import expected_bernoulli_nll_mc as expected_bernoulli_nll_mc
from bayeslayers_jax.losses._classification import expected_categorical_nll_bound as expected_categorical_nll_bound
from bayeslayers_jax.losses._classification import expected_categorical_nll_mc as expected_categorical_nll_mc
from bayeslayers_jax.losses._classification import probit_categorical_nll as probit_categorical_nll
from bayeslayers_jax.losses._classification import probit_log_softmax as probit_log_softmax
from bayeslayers_jax.losses._classification import probit_softmax as probit_softmax
from bayeslayers_jax.losses._elbo import elbo_from_outputs as elbo_from_outputs
from bayeslayers_jax.losses._elbo import ensemble_elbo_from_outputs as ensemble_elbo_from_outputs
from bayeslayers_jax.losses._elbo import neg_elbo as neg_elbo
from bayeslayers_jax.losses._elbo import neg_log_prior as neg_log_prior
from bayeslayers_jax.losses._regression import expected_gaussian_log_likelihood as expected_gaussian_log_likelihood
from bayeslayers_jax.losses._regression import expected_gaussian_nll as expected_gaussian_nll
from bayeslayers_jax.losses._regression import expected_heteroscedastic_gaussian_nll as expected_heteroscedastic_gaussian_nll
from bayeslayers_jax.losses._regression import gaussian_nll as gaussian_nll
from bayeslayers_jax.losses._regression import heteroscedastic_gaussian_nll as heteroscedastic_gaussian_nll
from bayeslayers_jax.losses._regression import split_heteroscedastic as split_heteroscedastic

__all__ = [
    "neg_elbo",
    "elbo_from_outputs",
    "ensemble_elbo_from_outputs",
    "neg_log_prior",
    "gaussian_nll",
    "expected_gaussian_log_likelihood",
    "expected_gaussian_nll",
    "split_heteroscedastic",
    "heteroscedastic_gaussian_nll",
    "expected_heteroscedastic_gaussian_nll",
    "categorical_nll_from_logits",
    "probit_log_softmax",
    "probit_softmax",
    "probit_categorical_nll",
    "expected_categorical_nll_bound",
    "DEFAULT_LOGIT_SAMPLES",
    "expected_categorical_nll_mc",
    "bernoulli_nll_from_logits",
    "expected_bernoulli_nll_mc",
    "fit_noise_var",
]
