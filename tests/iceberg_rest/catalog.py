"""Apache Iceberg's reference REST catalog, for the tests of ``catalog="rest"``.

The server is ``org.apache.iceberg:iceberg-open-api`` (its self-contained jar: Jetty, the
REST adapter, a JDBC catalog and sqlite-jdbc), started by ``LoopbackRestCatalog.java`` so
that it listens on 127.0.0.1 only, with its catalog in a SQLite file and its warehouse in a
local directory. The jar is resolved from Maven Central into ``$STOCKSTREAM_CACHE`` (never the
checkout) and the launcher compiled there with ``javac``::

    python tests/iceberg_rest/catalog.py resolve

Needs ``java``/``javac`` (17+) and, the first time, ``mvn`` with access to Maven Central.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kafka"))
from broker import _die_with_parent, _java, free_port  # noqa: E402

VERSION = "1.10.1"
LAUNCHER = HERE / "LoopbackRestCatalog.java"


def cache_dir() -> Path:
    """``iceberg-rest-<version>`` in ``$STOCKSTREAM_CACHE`` (``~/.cache/stockstream``)."""
    base = os.environ.get("STOCKSTREAM_CACHE")
    folder = Path(base) if base else Path.home() / ".cache" / "stockstream"
    return folder / f"iceberg-rest-{VERSION}"


def resolve(quiet: bool = True) -> tuple[Path, Path]:
    """The server's jar and the folder of the compiled launcher, fetched and built once
    (a file lock serialises concurrent callers)."""
    cache = cache_dir()
    jar = cache / f"iceberg-open-api-{VERSION}.jar"
    digest = hashlib.sha256(LAUNCHER.read_bytes()).hexdigest()[:10]
    classes = cache / f"launcher-{digest}"
    if jar.exists() and (classes / "LoopbackRestCatalog.class").exists():
        return jar, classes
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not jar.exists():
            mvn = os.environ.get("MVN") or shutil.which("mvn")
            if not mvn:
                raise RuntimeError("Maven (mvn) is needed to fetch the Iceberg REST catalog")
            cmd = [
                mvn, "-B", "-Dstyle.color=never", f"-Dmaven.repo.local={cache / 'm2'}",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
                f"-Dartifact=org.apache.iceberg:iceberg-open-api:{VERSION}:jar",
                f"-DoutputDirectory={cache}",
            ]  # fmt: skip
            if quiet:
                cmd.insert(2, "-q")
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0 or not jar.exists():
                raise RuntimeError(f"fetching {jar.name} failed: {proc.stdout[-3000:]}")
            shutil.rmtree(cache / "m2", ignore_errors=True)  # the jar is all that is needed
        if not (classes / "LoopbackRestCatalog.class").exists():
            javac = shutil.which("javac")
            if not javac:
                raise RuntimeError("javac (a JDK 17+) is needed to build the REST catalog launcher")
            tmp = cache / f"{classes.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(
                [javac, "-d", str(tmp), "-cp", str(jar), str(LAUNCHER)],
                check=True,
                capture_output=True,
            )
            os.rename(tmp, classes)
    return jar, classes


class RestCatalog:
    """A running REST catalog whose warehouse is ``warehouse`` (a local directory)."""

    def __init__(self, warehouse: Path):
        jar, classes = resolve()
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        warehouse.mkdir(parents=True, exist_ok=True)
        self.log = open(warehouse.parent / "rest-catalog.log", "wb")
        self.proc = subprocess.Popen(
            [
                _java(), "-Xmx256m", "-XX:+UseSerialGC", "-cp", f"{jar}:{classes}",
                "LoopbackRestCatalog", str(self.port), warehouse.as_uri(),
                str(warehouse.parent / "rest-catalog.db"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/v1/config", timeout=2) as r:
                    json.load(r)
                return
            except OSError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.log.name
                    raise RuntimeError(f"the REST catalog did not start: see {log}") from e
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["resolve"]:
        print(*resolve(quiet=False))
    else:
        sys.exit(__doc__)
