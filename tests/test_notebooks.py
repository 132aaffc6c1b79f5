"""notebooks/*.ipynb: committed stripped and valid (fast); executed top to bottom (slow).

The slow lane runs each notebook the way ``make notebooks`` does
(``notebooks/execute.py``: a fresh kernel, a time limit per cell), on the plain CPU: the
kernel does not inherit the fake 8-device ``XLA_FLAGS`` the test session sets.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "dense_quickstart",
    "splade_inspection",
    "memory_efficient_training",
    "sharding_tour",
}


def _load_execute():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute = _load_execute()


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # conftest's 8 fake devices; sharding_tour sets its own
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_the_four_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_stripped_and_valid(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs or execution counts; commit notebooks "
        "stripped: python notebooks/execute.py --strip"
    )
    assert nb.metadata.kernelspec.name == "python3"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "JAXIR_GIT_URL" in first_code.source  # the install cell comes first
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_strip_outputs(tmp_path):
    nb = new_notebook(cells=[new_markdown_cell("# t"), new_code_cell("1 + 1")])
    nb.cells[1].outputs = [new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells[1].execution_count = 1
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    assert execute.strip_outputs(path) is True
    stripped = nbformat.read(path, as_version=4)
    assert stripped.cells[1].outputs == [] and stripped.cells[1].execution_count is None
    assert execute.strip_outputs(path) is False


def test_a_failing_cell_is_named(tmp_path):
    nb = new_notebook(
        cells=[new_markdown_cell("# t"), new_code_cell("x = 1"), new_code_cell("x / 0")],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(execute.NotebookError) as info:
        execute.execute_notebook(path, timeout=60, env=_kernel_env())
    message = str(info.value)
    assert message.startswith(f"{path}: cell 2 (code cell 2: 'x / 0') raised ZeroDivisionError")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    seconds = execute.execute_notebook(path, timeout=300, out_dir=tmp_path, env=_kernel_env())
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    images = sum(
        "image/png" in o.get("data", {})
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert images >= 1 or path.stem == "sharding_tour", f"{path.name} drew no plot"
    print(f"{path.name}: {seconds:.0f} s")
