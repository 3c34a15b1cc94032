"""Sphinx configuration of the bayeslayers-jax documentation (built strict: ``-W``)."""

project = "bayeslayers-jax"
author = "The bayeslayers-jax authors"
copyright = "2026, The bayeslayers-jax authors"

extensions = [
    "myst_nb",  # Markdown guides (MyST) and the notebooks, rendered with their stored outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings
    "sphinx.ext.mathjax",
    "sphinx.ext.autosummary",
]

nb_execution_mode = "off"  # the test suite executes the notebooks; the site shows their outputs
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings' Args name the types
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: no second description of dataclass fields
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "notebooks/README.md"]
html_theme = "alabaster"
# ref.python: a field name (prior_mean) documented on two classes is an ambiguous target.
suppress_warnings = ["myst.header", "ref.python"]
