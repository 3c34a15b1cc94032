"""Root pytest configuration: docstring examples run under JAX's default configuration.

``tests/conftest.py`` switches on float64 and strict dtype and rank promotion for the test
files, process-wide, when pytest collects ``tests/``. The ``Examples:`` in the package's
docstrings (collected by ``--doctest-modules``, see ``pyproject.toml``) show what a user
sees, so each doctest runs inside JAX's context managers for the defaults: float32
(``jax_enable_x64=False``), standard dtype promotion and allowed rank promotion, whatever
else the session collected.
"""

import jax
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _default_jax_config_for_doctests(request):
    if not isinstance(request.node, DoctestItem):
        yield
        return
    with (
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        yield
