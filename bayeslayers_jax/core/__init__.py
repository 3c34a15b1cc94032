"""The pure math of the package: arrays in, arrays out; no Flax module, no variables.

Conventions shared by every function here:

* kernels use Flax's layout ``(in_features, features)`` (convolutions:
  ``(*kernel_size, in_features // groups, features)``, channels last);
* moment functions take the *standard deviation* ``sigma`` and return ``(mean, var)``;
  ``var=None`` means a deterministic input, ``weight_var=None`` deterministic weights;
* NaN in any input propagates to what depends on it; concrete bad values (a negative
  variance or std, complex input) raise ``ValueError``/``TypeError`` naming the argument;
* keys are explicit, the first positional argument of every sampling function.

Each topic is one private module (``_moments``, ``_clt``, ``_sampling``, ...); this file is the
public face, re-exported once more at the package's top level.
"""

from bayeslayers_jax.core._activations import leaky_relu_moments as leaky_relu_moments
from bayeslayers_jax.core._activations import exp_moments as exp_moments
from bayeslayers_jax.core._activations import elu_moments as elu_moments
from bayeslayers_jax.core._activations_probit import probit_moments as probit_moments
from bayeslayers_jax.core._activations_probit import erf_moments as erf_moments
from bayeslayers_jax.core._activations_probit import gelu_moments as gelu_moments
from bayeslayers_jax.core._activations_smooth import sigmoid_moments as sigmoid_moments
from bayeslayers_jax.core._activations_smooth import tanh_moments as tanh_moments
from bayeslayers_jax.core._activations_smooth import silu_moments as silu_moments
from bayeslayers_jax.core._activations_smooth import softplus_moments as softplus_moments
from bayeslayers_jax.core._structure import max_moments as max_moments
from bayeslayers_jax.core._structure import min_moments as min_moments
from bayeslayers_jax.core._structure import max_pool_moments as max_pool_moments
from bayeslayers_jax.core._structure_norm import layer_norm_moments as layer_norm_moments
from bayeslayers_jax.core._structure_norm import dropout_moments as dropout_moments
from bayeslayers_jax.core._clt import clt_conv_moments as clt_conv_moments
from bayeslayers_jax.core._clt import clt_linear_moments as clt_linear_moments
from bayeslayers_jax.core._clt_pallas import clt_dense_relu_fused as clt_dense_relu_fused
from bayeslayers_jax.core._gaussian import normal_cdf as normal_cdf
from bayeslayers_jax.core._gaussian import normal_pdf as normal_pdf
from bayeslayers_jax.core._kl import kl_normal as kl_normal
from bayeslayers_jax.core._kl import kl_normal_from_log_std as kl_normal_from_log_std
from bayeslayers_jax.core._moments import crelu_moments as crelu_moments
from bayeslayers_jax.core._moments import neg_relu_moments as neg_relu_moments
from bayeslayers_jax.core._moments import relu_moments as relu_moments
from bayeslayers_jax.core._pooling import avg_pool_moments as avg_pool_moments
from bayeslayers_jax.core._pooling import flatten_moments as flatten_moments
from bayeslayers_jax.core._propagate import propagate_moments as propagate_moments
from bayeslayers_jax.core._sampling import flipout as flipout
from bayeslayers_jax.core._sampling import flipout_conv as flipout_conv
from bayeslayers_jax.core._sampling import local_reparameterization as local_reparameterization
from bayeslayers_jax.core._sampling import local_reparameterization_conv as local_reparameterization_conv
from bayeslayers_jax.core._sampling import safe_sqrt as safe_sqrt
from bayeslayers_jax.core._sampling import sample_weights as sample_weights
from bayeslayers_jax.core._transforms import inv_softplus as inv_softplus
from bayeslayers_jax.core._transforms import rho_to_log_std as rho_to_log_std
from bayeslayers_jax.core._transforms import rho_to_std as rho_to_std
from bayeslayers_jax.core._transforms import softplus as softplus

__all__ = [
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
    "clt_conv_moments",
    "clt_dense_relu_fused",
    "sample_weights",
    "local_reparameterization",
    "local_reparameterization_conv",
    "flipout",
    "flipout_conv",
    "safe_sqrt",
    "kl_normal",
    "kl_normal_from_log_std",
    "avg_pool_moments",
    "flatten_moments",
    "propagate_moments",
    "leaky_relu_moments",
    "exp_moments",
    "elu_moments",
    "probit_moments",
    "erf_moments",
    "gelu_moments",
    "sigmoid_moments",
    "tanh_moments",
    "silu_moments",
    "softplus_moments",
    "max_moments",
    "min_moments",
    "max_pool_moments",
    "layer_norm_moments",
    "dropout_moments",
]
