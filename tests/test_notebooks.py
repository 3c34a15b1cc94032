"""Executes every notebook in ``notebooks/`` with small sizes, so that they never rot.

Each notebook reads its sizes from its first code cell, which honours the environment variable
``BAYESLAYERS_NOTEBOOK_SMOKE=1`` (few training steps, few samples, small grids). The notebooks run
in a separate ``python3`` kernel whose kernel spec is written here, pointing at this test process's
own interpreter (``sys.executable``): the kernel then imports the same installed package, whatever
kernel specs the machine or the virtual environment holds.

Besides "no cell raised", each notebook's result tables (Markdown outputs of the cells tagged
``results-table``, ``mc-table``, ``net-table``, ``tail-table``, ``auroc-table``) are parsed and
checked: a row per method, numbers in their ranges, and the statistical statements the notebooks
make (Monte Carlo z-scores within 5 standard errors where the moments are exact; the naive ReLU
variance formula goes negative where ``relu_moments`` does not).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01_quickstart_regression.ipynb", "02_moment_functions.ipynb", "03_classification_ood.ipynb",
            "04_nnx_quickstart.ipynb")
METHODS = ("MAP", "BBB", "LR", "CLT")
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def kernel_manager_class(tmp_path_factory):
    """A kernel manager whose only kernel spec, ``python3``, runs ipykernel with this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec_dir = root / "python3"
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test interpreter)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))

    class TestKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return KernelSpecManager(kernel_dirs=[str(root)])

    assert TestKernelManager(kernel_name="python3").kernel_spec.argv[0] == sys.executable
    return TestKernelManager


def _execute(path, kernel_manager_class, workdir):
    nb = nbformat.read(path, as_version=4)
    num_code = len(_code_cells(nb))
    start = time.perf_counter()

    def progress(cell, cell_index, **_):
        # One line per executed code cell: live with ``pytest -s``, else in a failure's report.
        if cell.cell_type == "code":
            done = sum(c.cell_type == "code" for c in nb.cells[: cell_index + 1])
            print(f"[{path.stem} +{time.perf_counter() - start:.1f}s] code cell {done}/{num_code} done",
                  flush=True)

    # The client owns the kernel manager it creates, so it shuts the kernel down and closes its
    # sockets when the notebook is done.
    client = NotebookClient(nb, kernel_name="python3", kernel_manager_class=kernel_manager_class,
                            timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(workdir)}},
                            on_cell_executed=progress)
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs(nb, output_type=None):
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if output_type is None or out.output_type == output_type:
                yield out


def _num_images(nb):
    return sum("image/png" in out.get("data", {}) for out in _outputs(nb))


def _table(nb, tag):
    """Rows (lists of stripped cell strings) of the Markdown table shown by the cell tagged ``tag``."""
    cells = [c for c in _code_cells(nb) if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    texts = [out["data"]["text/markdown"] for out in cells[0].outputs if "text/markdown" in out.get("data", {})]
    assert len(texts) == 1, f"the cell tagged {tag!r} must display one Markdown table, got {len(texts)}"
    lines = [ln.strip() for ln in texts[0].splitlines() if ln.strip().startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    header, separator, body = rows[0], rows[1], rows[2:]
    assert all(set(c) <= set("-:") for c in separator)
    assert all(len(r) == len(header) for r in body)
    return header, body


def _float(text):
    value = float(text.rstrip("%"))
    assert math.isfinite(value), text
    return value


def _check_regression(nb):
    header, body = _table(nb, "results-table")
    assert [r[0] for r in body] == list(METHODS)
    for name, nll, rmse, cov_in, cov_out, ms in body:
        _float(nll)
        # A constant predictor has RMSE sqrt(E[x**6] + 9) = sqrt(4**6 / 7 + 9) = 24.4 on x ~ U[-4, 4];
        # even the smoke run's 40 Adam steps fit the cubic's trend to well under half of that.
        assert 0 < _float(rmse) < 12.0, (name, rmse)
        assert 0 <= _float(cov_in) <= 1 and 0 <= _float(cov_out) <= 1, (name, cov_in, cov_out)
        assert _float(ms) > 0
    assert _num_images(nb) >= 2


def _check_moments(nb):
    # relu / relu(-x) moments against Monte Carlo: exact formulas, so every z is a standard normal
    # draw; |z| < 5 fails by chance with probability < 20 * 6e-7.
    header, body = _table(nb, "mc-table")
    assert len(body) == 10
    z_cols = [i for i, h in enumerate(header) if h == "z"]
    assert len(z_cols) == 2
    for row in body:
        for i in z_cols:
            assert abs(_float(row[i])) < 5, row
    # One hidden layer with a deterministic input: the CLT mean and variance are exact.
    header, body = _table(nb, "net-table")
    z_cols = [i for i, h in enumerate(header) if h == "z"]
    exact = [r for r in body if "exact" in r[0]]
    approx = [r for r in body if "approx" in r[0]]
    assert len(exact) == 4 and len(approx) == 4
    for row in exact:
        for i in z_cols:
            assert abs(_float(row[i])) < 5, row
    for row in approx:
        assert _float(row[header.index("var (CLT)")]) > 0
    # The tail sweep: ours never NaN/negative, and accurate where the truth is a normal number: the
    # log-space and continued-fraction evaluation loses a few hundred to ~2000 ulps in the transition
    # region a ~ -3 (measured: 280 ulps float32, 1850 ulps float64), so the bound is 4096 ulps. The
    # naive erf-based formula goes negative in both precisions, with relative errors above 1.
    header, body = _table(nb, "tail-table")
    rows = {r[0]: r for r in body}
    assert set(rows) == {f"{m}, {d}" for m in ("relu_moments", "naive formula", "naive formula with ndtr")
                         for d in ("float32", "float64")}
    for dtype, eps in (("float32", 2.0**-23), ("float64", 2.0**-52)):
        _, bad, neg, err_mean, err_var, _ = rows[f"relu_moments, {dtype}"]
        assert int(bad) == 0 and int(neg) == 0
        assert _float(err_mean) < 4096 * eps and _float(err_var) < 4096 * eps, (dtype, err_mean, err_var)
        assert int(rows[f"naive formula, {dtype}"][2]) > 0
        assert _float(rows[f"naive formula, {dtype}"][4]) > 1.0
    assert _num_images(nb) >= 3


def _check_classification(nb):
    header, body = _table(nb, "auroc-table")
    assert [r[0] for r in body] == list(METHODS)
    for name, acc, nll, ece, auroc_ent, auroc_mi in body:
        # 5 balanced classes: chance is 0.2; even 30 smoke steps get far above it.
        assert 0.5 < _float(acc) <= 1, (name, acc)
        assert _float(nll) > 0 and 0 <= _float(ece) <= 1
        assert 0 <= _float(auroc_ent) <= 1
        if name == "MAP":
            assert auroc_mi.startswith("n/a")
        else:
            assert 0 <= _float(auroc_mi) <= 1, (name, auroc_mi)
    assert _num_images(nb) >= 2


def _check_nnx_quickstart(nb):
    _check_regression(nb)
    # The trained NNX models converted to linen: the same CLT predictive (the same pure functions on the
    # same parameters: exactly 0 difference) and, for the same key, the same BBB sample.
    text = "".join(out.get("text", "") for out in _outputs(nb, "stream"))
    assert "max |mean difference| 0.0  max |var difference| 0.0" in text
    assert "BBB sample with the same key, linen == NNX: True" in text


CHECKS = {
    "01_quickstart_regression.ipynb": _check_regression,
    "02_moment_functions.ipynb": _check_moments,
    "03_classification_ood.ipynb": _check_classification,
    "04_nnx_quickstart.ipynb": _check_nnx_quickstart,
}


def test_notebooks_present():
    names = [p.name for p in NOTEBOOKS]
    assert names == sorted(EXPECTED) and set(CHECKS) == set(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_outputs(path):
    """The committed notebooks were executed in order at full size and show their results."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), counts
    assert not list(_outputs(nb, "error"))
    smoke = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(smoke) == 1 and "SMOKE=False" in "".join(o.get("text", "") for o in smoke[0].outputs)
    CHECKS[path.name](nb)
    assert path.stat().st_size < 1_500_000


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_manager_class, tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESLAYERS_NOTEBOOK_SMOKE", "1")
    nb = _execute(path, kernel_manager_class, tmp_path)
    smoke = [c for c in _code_cells(nb) if "parameters" in c.metadata.get("tags", [])]
    assert "SMOKE=True" in "".join(o.get("text", "") for o in smoke[0].outputs)
    for out in _outputs(nb, "stream"):
        assert out.name != "stderr" or "Warning" not in out.text, out.text
    CHECKS[path.name](nb)
