"""Notebook 04 in JupyterLab, run in a real headless Chromium (Debian's, driven by
Playwright): the live chart receives points while the job runs, and once the job stopped it
shows one marker per alert that ``analytics.alerts()`` returns for its symbol."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "04_realtime_analytics.ipynb"
CHART = ".jp-OutputArea-output .stockstream-chart"


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of notebook 04: (url, token, log)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium on this machine: `make test` installs Debian's chromium package")
    pytest.importorskip("playwright.sync_api", reason="`make test` installs playwright")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKSTREAM_")}
    for name in ("CONFIG", "DATA", "RUNTIME"):
        env[f"JUPYTER_{name}_DIR"] = str(tmp_path / f"jupyter-{name.lower()}")
    for name in ("SETTINGS", "WORKSPACES"):
        env[f"JUPYTERLAB_{name}_DIR"] = str(tmp_path / f"lab-{name.lower()}")
    env["MPLBACKEND"] = "agg"
    port, token = free_port(), uuid.uuid4().hex
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not start within 90 s"
                time.sleep(0.5)
        yield url, token, tmp_path / "lab.log"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


def test_notebook_04_shows_the_live_chart_and_its_alerts_in_a_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token, log = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            # "Run All" before the kernel is up opens a kernel dialog and runs nothing.
            page.wait_for_function(
                """() => {
                    const k = document.querySelector('.jp-NotebookPanel-toolbar .jp-KernelName');
                    const bar = document.querySelector('#jp-main-statusbar');
                    return k && !/No Kernel/.test(k.textContent)
                        && bar && /\\| Idle/.test(bar.textContent);
                }""",
                timeout=120_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # While the job runs, the chart takes points from it.
            page.wait_for_function(
                f"() => Number(document.querySelector('{CHART}')?.dataset.points) > 100",
                timeout=120_000,
            )
            said = page.wait_for_selector(
                ".jp-OutputArea-output >> text=/IXIC: \\d+ alerts on the chart/",
                timeout=300_000,
            )
            alerts = int(re.search(r"IXIC: (\d+) alerts", said.text_content()).group(1))
            page.wait_for_function(
                f"() => document.querySelectorAll('{CHART} .stockstream-alert').length"
                f" === {alerts}",
                timeout=30_000,
            )
            chart = page.query_selector(CHART)
            assert int(chart.get_attribute("data-alerts")) == alerts > 0
            assert not page.query_selector(".jp-OutputArea-output [data-mime-type*='error']")
            chart.scroll_into_view_if_needed()
            shot = tmp_path / "live-chart.png"
            chart.screenshot(path=str(shot))
            # `STOCKSTREAM_SCREENSHOTS=docs` keeps the picture the README shows.
            keep = os.environ.get("STOCKSTREAM_SCREENSHOTS")
            if keep:
                shutil.copy(shot, Path(keep) / shot.name)
        finally:
            browser.close()
