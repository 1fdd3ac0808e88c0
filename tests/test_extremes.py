"""No public argument can panic or abort the interpreter (see ``extremes.py``)."""

import subprocess
import sys
from pathlib import Path


def test_extreme_arguments_raise_python_exceptions_and_never_panic_or_abort(tmp_path):
    driver = Path(__file__).with_name("extremes.py")
    # Its own working directory: relative lake paths it tries land there.
    run = subprocess.run(
        [sys.executable, str(driver)], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "no panic, no abort" in run.stdout
    assert "PanicException" not in output and "panicked" not in output, output[-5000:]
