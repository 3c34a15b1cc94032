"""bayeslayers-jax: Bayesian neural-network layers for JAX and Flax.

Pure functions (this file re-exports them) hold the math; the ``flax.linen`` modules wrap them.
"""

from bayeslayers_jax.clt import clt_linear_moments
from bayeslayers_jax.gaussian import normal_cdf, normal_pdf
from bayeslayers_jax.kl import kl_normal
from bayeslayers_jax.moments import crelu_moments, neg_relu_moments, relu_moments
from bayeslayers_jax.sampling import local_reparameterization, sample_weights
from bayeslayers_jax.transforms import inv_softplus, rho_to_std, softplus

# Public names of the other modules are imported below this line.
from bayeslayers_jax.layers import BBBLinear, CLTLinear, CLTLinearDet, LRLinear, crelu, total_kl
from bayeslayers_jax.mlp import BayesianMLP
from bayeslayers_jax.porting import port_objectrl_layer, port_objectrl_mlp

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # pure functional core
    "softplus",
    "inv_softplus",
    "rho_to_std",
    "normal_pdf",
    "normal_cdf",
    "relu_moments",
    "neg_relu_moments",
    "crelu_moments",
    "clt_linear_moments",
    "sample_weights",
    "local_reparameterization",
    "kl_normal",
    # other modules' public names follow
    # flax.linen layers and the MLP
    "BBBLinear",
    "LRLinear",
    "CLTLinear",
    "CLTLinearDet",
    "crelu",
    "total_kl",
    "BayesianMLP",
    "port_objectrl_layer",
    "port_objectrl_mlp",
]
