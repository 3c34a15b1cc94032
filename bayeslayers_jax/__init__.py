"""bayeslayers-jax: Bayesian neural-network layers for JAX and Flax.

Pure functions (this file re-exports them) hold the math; the ``flax.linen`` modules wrap them.
"""

from bayeslayers_jax.clt import clt_linear_moments
from bayeslayers_jax.gaussian import normal_cdf, normal_pdf
from bayeslayers_jax.kl import kl_normal, kl_normal_from_log_std
from bayeslayers_jax.moments import crelu_moments, neg_relu_moments, relu_moments
from bayeslayers_jax.sampling import local_reparameterization, sample_weights
from bayeslayers_jax.transforms import inv_softplus, rho_to_log_std, rho_to_std, softplus

# Public names of the other modules are imported below this line.
from bayeslayers_jax.layers import BBBLinear, CLTLinear, CLTLinearDet, LRLinear, crelu, total_kl, update_prior
from bayeslayers_jax.mlp import BayesianMLP
from bayeslayers_jax.ensemble import Ensemble, ensemble_size, is_ensemble, member
from bayeslayers_jax.critic import BayesianCritic, value_bound
from bayeslayers_jax.porting import port_objectrl_layer, port_objectrl_mlp
from bayeslayers_jax.metrics import (
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
from bayeslayers_jax.objectives import (
    categorical_nll_from_logits,
    elbo_loss,
    expected_categorical_nll_bound,
    expected_gaussian_log_likelihood,
    make_elbo_loss_fn,
    expected_gaussian_nll,
    gaussian_nll,
    neg_elbo,
    neg_log_prior,
    probit_categorical_nll,
    probit_log_softmax,
    probit_softmax,
)
from bayeslayers_jax.likelihoods import (
    DEFAULT_LOGIT_SAMPLES,
    bernoulli_nll_from_logits,
    expected_bernoulli_nll_mc,
    expected_categorical_nll_mc,
    expected_heteroscedastic_gaussian_nll,
    heteroscedastic_gaussian_nll,
    split_heteroscedastic,
)
from bayeslayers_jax.noise import LearnedNoise, fit_noise_var, has_learned_noise, learned_noise_var
from bayeslayers_jax.parallel import (
    batch_mesh,
    data_parallel_train_step,
    replicate,
    shard_batch,
    train_step,
)
from bayeslayers_jax.training import FitResult, fit
from bayeslayers_jax.predictive import (
    ClassPredictive,
    Predictive,
    calibrated_noise_var,
    detect_mode,
    predictive,
    predictive_probs,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # pure functional core
    "softplus",
    "inv_softplus",
    "rho_to_std",
    "rho_to_log_std",
    "normal_pdf",
    "normal_cdf",
    "relu_moments",
    "neg_relu_moments",
    "crelu_moments",
    "clt_linear_moments",
    "sample_weights",
    "local_reparameterization",
    "kl_normal",
    "kl_normal_from_log_std",
    # other modules' public names follow
    # flax.linen layers and the MLP
    "BBBLinear",
    "LRLinear",
    "CLTLinear",
    "CLTLinearDet",
    "crelu",
    "total_kl",
    "update_prior",
    "BayesianMLP",
    # ensembles and critics
    "Ensemble",
    "is_ensemble",
    "ensemble_size",
    "member",
    "BayesianCritic",
    "value_bound",
    "port_objectrl_layer",
    "port_objectrl_mlp",
    # training objectives, predictive distributions, metrics
    "neg_elbo",
    "elbo_loss",
    "make_elbo_loss_fn",
    "gaussian_nll",
    "expected_gaussian_log_likelihood",
    "expected_gaussian_nll",
    "expected_categorical_nll_bound",
    "probit_softmax",
    "probit_log_softmax",
    "probit_categorical_nll",
    "categorical_nll_from_logits",
    "neg_log_prior",
    # likelihoods beyond the homoscedastic Gaussian, learned observation noise
    "DEFAULT_LOGIT_SAMPLES",
    "expected_categorical_nll_mc",
    "bernoulli_nll_from_logits",
    "expected_bernoulli_nll_mc",
    "split_heteroscedastic",
    "heteroscedastic_gaussian_nll",
    "expected_heteroscedastic_gaussian_nll",
    "LearnedNoise",
    "has_learned_noise",
    "learned_noise_var",
    "fit_noise_var",
    "Predictive",
    "ClassPredictive",
    "predictive",
    "predictive_probs",
    "detect_mode",
    "calibrated_noise_var",
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
    # training loop
    "fit",
    "FitResult",
    # data-parallel training
    "batch_mesh",
    "replicate",
    "shard_batch",
    "train_step",
    "data_parallel_train_step",
]
