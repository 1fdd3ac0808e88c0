"""The built wheel installs into a clean virtual environment, imports, and runs a notebook."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

WHEELS = os.environ.get("STOCKSTREAM_WHEEL_DIR")
NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "01_producer.ipynb"


@pytest.fixture(scope="module")
def wheel():
    found = sorted(Path(WHEELS).glob("stockstream-*.whl")) if WHEELS else []
    if not found:
        if os.environ.get("CI"):
            pytest.fail("no wheel: run through `make test` (which builds it with `make wheel-dev`)")
        pytest.skip("no wheel built; `make wheel-dev` builds one")
    return found[-1]


def test_wheel_installs_imports_and_runs_a_notebook(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{wheel}[notebook]", "nbclient"], check=True, timeout=900)

    run = subprocess.run(
        [
            str(python),
            "-c",
            "import stockstream as ss; print(ss.__version__, ss.BUNDLED_CSV.exists())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert run.stdout.split() == ["0.1.0", "True"]
    cli = subprocess.run(
        [str(venv / "bin" / "stockstream"), "--help"], capture_output=True, text=True, check=True
    )
    assert "crawl" in cli.stdout and "query" in cli.stdout

    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKSTREAM_")}
    env["MPLBACKEND"] = "agg"
    # The notebook, plus a last cell saying which installation its kernel imported.
    script = (
        "import nbformat, sys\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "nb.cells.append(nbformat.v4.new_code_cell('print(ss.__file__)'))\n"
        "NotebookClient(nb, timeout=120, kernel_name='python3',\n"
        "               resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
        "print(nb.cells[-1].outputs[0].text.strip())\n"
    )
    ran = subprocess.run(
        [str(python), "-c", script, str(NOTEBOOK), str(tmp_path)],
        check=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ran.stdout.strip().splitlines()[-1].startswith(str(venv))
