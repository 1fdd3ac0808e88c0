"""Every notebook runs top to bottom in a fresh kernel on the embedded defaults."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path, tmp_path, monkeypatch):
    for name in ("STOCKSTREAM_BOOTSTRAP_SERVERS", "STOCKSTREAM_LAKE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.stem != "01_producer":
        # The lake went into the kernel's directory, not the checkout.
        assert list((tmp_path / "lake").rglob("*.parquet"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:6] == [
        "01_producer.ipynb",
        "02_consumer_to_s3.ipynb",
        "03_crawl_and_query.ipynb",
        "04_realtime_analytics.ipynb",
        "05_iceberg.ipynb",
        "06_asof_join.ipynb",
    ]
