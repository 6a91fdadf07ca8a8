"""The data scientists' notebooks run top to bottom on a small synthetic store, and are kept
without outputs in git."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
ROOT = Path(__file__).parents[1]


def test_both_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_explore_metrics.ipynb",
                                           "02_retrain_and_compare.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code), (
        f"{path.name} holds outputs; clear them before committing")


@pytest.mark.integration
@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, fleet_dataset, mlflow_store, monkeypatch):
    import ray

    monkeypatch.setenv("AIOPS_DATA", str(fleet_dataset))
    monkeypatch.setenv("AIOPS_MODEL_NAME", "notebook-test")
    # The kernel attaches to the session's Ray instead of starting a second one.
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed: {error}")
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.stem.startswith("02"):
        text = "".join(o.get("text", "") for o in outputs)
        assert "version 1:" in text and "champion" in text
