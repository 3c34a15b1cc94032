"""Test configuration: float64 available, strict dtype and rank promotion.

Like Equinox's suite, we run with ``jax_numpy_dtype_promotion='strict'`` and
``jax_numpy_rank_promotion='raise'`` so that silent up-casts and silent broadcasting
in library code are caught; warnings are errors (see ``pyproject.toml``).
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
