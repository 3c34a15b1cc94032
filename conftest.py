"""Root pytest configuration: docstring and README examples run under JAX's defaults.

``tests/conftest.py`` switches on float64 and strict dtype and rank promotion for the test
files, process-wide, when pytest collects ``tests/``. The ``Examples:`` in the package's
docstrings (collected by ``--doctest-modules``, see ``pyproject.toml``) and the README's code
blocks (``tests/test_readme.py``) show what a user sees, so they run inside JAX's context
managers for the defaults: float32 (``jax_enable_x64=False``), standard dtype promotion and
allowed rank promotion, whatever else the session collected. Warnings stay errors.
"""

import contextlib

import jax
import pytest
from _pytest.doctest import DoctestItem


@contextlib.contextmanager
def _jax_defaults():
    with (
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        yield


@pytest.fixture
def default_jax_config():
    """Runs the requesting test under JAX's default configuration (float32, standard promotion)."""
    with _jax_defaults():
        yield


@pytest.fixture(autouse=True)
def _doctests_under_default_jax_config(request):
    if isinstance(request.node, DoctestItem):
        with _jax_defaults():
            yield
    else:
        yield
