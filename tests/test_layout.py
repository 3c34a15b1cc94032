"""The floor plan as statements: module sizes and the direction of imports (read with ``ast``).

Dependence runs one way: ``core`` (pure math) <- ``losses`` <- the shared layer rules (``_layer_core``, ...)
<- the front ends ``linen`` and ``nnx`` (never each other) <- the workflows on top.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "bayeslayers_jax"
MODULES = sorted(PACKAGE.rglob("*.py"))

# The layer rules both front ends share (top-level private modules, no front end imported).
SHARED_RULES = ("bayeslayers_jax._layer_core", "bayeslayers_jax._layer_config", "bayeslayers_jax._mlp_core",
                "bayeslayers_jax._bayesianize_rules")
SHARED_FILES = [m.split(".")[-1] + ".py" for m in SHARED_RULES] + ["_checks.py"]

# What each floor may import from the package (a prefix of the imported module's name).
ALLOWED = {
    "core": ("bayeslayers_jax._checks", "bayeslayers_jax.core"),
    "losses": ("bayeslayers_jax._checks", "bayeslayers_jax.core", "bayeslayers_jax.losses"),
    "linen": ("bayeslayers_jax._checks", "bayeslayers_jax.core", "bayeslayers_jax.losses",
              *SHARED_RULES, "bayeslayers_jax.linen"),
    "nnx": ("bayeslayers_jax._checks", "bayeslayers_jax.core", "bayeslayers_jax.losses",
            *SHARED_RULES, "bayeslayers_jax.nnx"),
}


def _floor(path):
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else None


def _package_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bayeslayers_jax"):
            if node.module == "bayeslayers_jax":  # `from bayeslayers_jax import _layer_core as core`
                for alias in node.names:
                    yield f"bayeslayers_jax.{alias.name}"
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bayeslayers_jax"):
                    yield alias.name


@pytest.mark.parametrize("path", [p for p in MODULES if _floor(p) in ALLOWED], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_floors(path):
    allowed = ALLOWED[_floor(path)]
    bad = [m for m in _package_imports(path) if not m.startswith(allowed)]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: only {allowed} are below it"


def test_no_module_over_about_500_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in MODULES}
    # "About 500": the largest modules (the propagate rules, the metrics) sit near 530 today.
    assert {name: n for name, n in sizes.items() if n > 550} == {}


def test_shared_rules_do_not_import_a_front_end():
    for name in SHARED_FILES:
        if not (PACKAGE / name).exists():
            continue
        mods = list(_package_imports(PACKAGE / name))
        assert not [m for m in mods if m.startswith(("bayeslayers_jax.linen", "bayeslayers_jax.nnx"))], name
