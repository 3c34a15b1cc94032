"""bayeslayers-jax: Bayesian neural-network layers for JAX and Flax.

The package is one math and two front ends:

* :mod:`bayeslayers_jax.core`: the pure functions (moments, CLT propagation, sampling, KL);
* :mod:`bayeslayers_jax.losses`: likelihoods and the negative ELBO, for any front end;
* :mod:`bayeslayers_jax.linen`: the ``flax.linen`` layers, MLP, ensembles, critics, ELBO;
* :mod:`bayeslayers_jax.nnx`: the ``flax.nnx`` twins (opt-in: ``import bayeslayers_jax.nnx``);
* the workflows on top: :mod:`~bayeslayers_jax.prediction`, :mod:`~bayeslayers_jax.metrics`,
  :mod:`~bayeslayers_jax.training`, :mod:`~bayeslayers_jax.parallel`,
  :mod:`~bayeslayers_jax.porting`.

Every public name of ``core``, ``losses``, ``linen`` and the workflows is also here, once.
"""

from bayeslayers_jax import core as core
from bayeslayers_jax import linen as linen
from bayeslayers_jax import losses as losses

# core: the pure math
from bayeslayers_jax.core import *  # noqa: F403
from bayeslayers_jax.core import __all__ as _core_all

# losses: likelihoods and the ELBO
from bayeslayers_jax.losses import *  # noqa: F403
from bayeslayers_jax.losses import __all__ as _losses_all

# linen: the flax.linen front end
from bayeslayers_jax.linen import *  # noqa: F403
from bayeslayers_jax.linen import __all__ as _linen_all

# workflows
from bayeslayers_jax.metrics import accuracy as accuracy
from bayeslayers_jax.metrics import auroc as auroc
from bayeslayers_jax.metrics import entropy_ood_auroc as entropy_ood_auroc
from bayeslayers_jax.metrics import brier_score as brier_score
from bayeslayers_jax.metrics import calibration_error as calibration_error
from bayeslayers_jax.metrics import categorical_nll as categorical_nll
from bayeslayers_jax.metrics import expected_calibration_error as expected_calibration_error
from bayeslayers_jax.metrics import interval_coverage as interval_coverage
from bayeslayers_jax.metrics import mixture_categorical_nll as mixture_categorical_nll
from bayeslayers_jax.metrics import mixture_regression_nll as mixture_regression_nll
from bayeslayers_jax.metrics import mutual_information as mutual_information
from bayeslayers_jax.metrics import predictive_entropy as predictive_entropy
from bayeslayers_jax.metrics import regression_nll as regression_nll
from bayeslayers_jax.metrics import rmse as rmse
from bayeslayers_jax.parallel import batch_mesh as batch_mesh
from bayeslayers_jax.parallel import data_parallel_train_step as data_parallel_train_step
from bayeslayers_jax.parallel import ensemble_mesh as ensemble_mesh
from bayeslayers_jax.parallel import replicate as replicate
from bayeslayers_jax.parallel import shard_batch as shard_batch
from bayeslayers_jax.parallel import shard_ensemble as shard_ensemble
from bayeslayers_jax.porting import port_objectrl_layer as port_objectrl_layer
from bayeslayers_jax.porting import port_objectrl_mlp as port_objectrl_mlp
from bayeslayers_jax.prediction import ClassPredictive as ClassPredictive
from bayeslayers_jax.prediction import Predictive as Predictive
from bayeslayers_jax.prediction import calibrated_noise_var as calibrated_noise_var
from bayeslayers_jax.prediction import detect_mode as detect_mode
from bayeslayers_jax.prediction import predictive as predictive
from bayeslayers_jax.prediction import predictive_probs as predictive_probs
from bayeslayers_jax.training import FitResult as FitResult
from bayeslayers_jax.training import fit as fit
from bayeslayers_jax.training import train_step as train_step

__version__ = "0.2.0"

_workflow_all = [
    "accuracy",
    "auroc",
    "entropy_ood_auroc",
    "brier_score",
    "calibration_error",
    "categorical_nll",
    "expected_calibration_error",
    "interval_coverage",
    "mixture_categorical_nll",
    "mixture_regression_nll",
    "mutual_information",
    "predictive_entropy",
    "regression_nll",
    "rmse",
    "batch_mesh",
    "data_parallel_train_step",
    "ensemble_mesh",
    "replicate",
    "shard_batch",
    "shard_ensemble",
    "port_objectrl_layer",
    "port_objectrl_mlp",
    "ClassPredictive",
    "Predictive",
    "calibrated_noise_var",
    "detect_mode",
    "predictive",
    "predictive_probs",
    "FitResult",
    "fit",
    "train_step",
]

__all__ = ["__version__", "core", "losses", "linen", *_core_all, *_losses_all, *_linen_all, *_workflow_all]
