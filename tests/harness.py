"""Real processes for integration tests: a Prometheus server (Debian's package) with optional
backfilled history, and the exporter's own CLI. Loopback only, free ports from the OS,
bounded waits, and every process stopped on teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.simulation import Target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> object:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})"
    )


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} is not installed: run `make test` (it installs Debian's prometheus)"
        )
    return path


def scrape_config(fixture_address: str, targets: Iterable[Target], interval: int) -> dict:
    """A Prometheus scrape configuration with one job per target job name."""
    jobs: dict[str, dict] = {}
    for target in targets:
        job = jobs.setdefault(
            target.job,
            {
                "job_name": target.job,
                "honor_labels": target.honor_labels,
                "scrape_interval": f"{interval}s",
                "scrape_timeout": f"{interval}s",
                "static_configs": [],
            },
        )
        job["static_configs"].append(
            {
                "targets": [fixture_address],
                "labels": {**target.labels, "__metrics_path__": target.path},
            }
        )
    return {
        "global": {"scrape_interval": f"{interval}s", "evaluation_interval": f"{interval}s"},
        "scrape_configs": list(jobs.values()),
    }


def promtool(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Debian's promtool with `args`, its output captured."""
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def promtool_backfill(source: Path, data: Path, timeout: float) -> None:
    """Turn an OpenMetrics history file into TSDB blocks in `data`, for a Prometheus to serve
    from its start."""
    data.mkdir(parents=True, exist_ok=True)
    result = promtool(
        "tsdb", "create-blocks-from", "openmetrics", str(source), str(data), timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {result.stderr[-2000:]}")


class PrometheusServer:
    """A real Prometheus on 127.0.0.1 scraping `targets` every `scrape_interval` seconds.

    Backfilled history should use the same step: Prometheus extrapolates rates at a window's
    edges from the mean sample spacing, so mixed spacings bias rates by a few percent."""

    def __init__(
        self,
        workdir: Path,
        fixture_address: str,
        targets: Iterable[Target],
        backfill: str | None = None,
        scrape_interval: int = 2,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data = workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "prometheus.log"
        config = scrape_config(fixture_address, targets, scrape_interval)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        if backfill is not None:
            self._backfill(backfill)

    def _backfill(self, text: str) -> None:
        source = self.workdir / "history.om"
        source.write_text(text)
        promtool_backfill(source, self.data, timeout=120)

    def start(self) -> PrometheusServer:
        self.process = spawn(
            [
                require_binary("prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
            ],
            self.log_path,
        )
        wait_until(self._ready, 60, "Prometheus to become ready")
        return self

    def _ready(self) -> bool:
        check_alive(self.process, self.log_path, "Prometheus")
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def query(self, expr: str) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for_series(self, expr: str, count: int, timeout: float = 30) -> None:
        wait_until(lambda: len(self.query(expr)) >= count, timeout, f"{count} series of {expr}")


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a process in its own session (so stop_process ends its children too), with stdout
    and stderr appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, env=env)


def check_alive(process: subprocess.Popen | None, log_path: Path, what: str) -> None:
    """Fail at once, with the end of its log, when a process we wait for has exited."""
    if process is not None and process.poll() is not None:
        raise AssertionError(f"{what} exited: " + log_path.read_text()[-2000:])


def start_demo(port: int, log_path: Path) -> subprocess.Popen:
    """`llm-carbon-exporter demo` on 127.0.0.1:`port`, waited for until it printed figures."""
    process = spawn(
        [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}"], log_path
    )
    try:
        wait_until(
            lambda: check_alive(process, log_path, "the demo") or "J/tok" in log_path.read_text(),
            60,
            "the demo's first figures",
        )
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


class VictoriaMetricsServer(PrometheusServer):
    """Debian's single-node VictoriaMetrics scraping the same targets, with the same history
    imported, as a second Prometheus-compatible upstream."""

    def _backfill(self, text: str) -> None:
        self._history = text  # imported over HTTP once the server runs

    def start(self) -> VictoriaMetricsServer:
        self.data.mkdir(parents=True, exist_ok=True)
        self.process = spawn(
            [
                require_binary("victoria-metrics"),
                f"-storageDataPath={self.data}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-promscrape.config={self.config_path}",
                "-retentionPeriod=100y",
                "-search.latencyOffset=1s",
                "-search.disableCache",
                "-promscrape.config.strictParse=false",
                "-loggerLevel=ERROR",
            ],
            self.log_path,
        )
        wait_until(self._healthy, 60, "VictoriaMetrics to start")
        history = getattr(self, "_history", None)
        if history is not None:
            lines = []
            for line in history.splitlines():
                if not line or line.startswith("#"):
                    continue
                head, ts = line.rsplit(" ", 1)
                lines.append(f"{head} {round(float(ts) * 1000)}")
            response = requests.post(
                f"{self.url}/api/v1/import/prometheus", data="\n".join(lines).encode(), timeout=120
            )
            response.raise_for_status()
            requests.get(f"{self.url}/internal/force_flush", timeout=30).raise_for_status()
        return self

    def _healthy(self) -> bool:
        check_alive(self.process, self.log_path, "VictoriaMetrics")
        return requests.get(f"{self.url}/health", timeout=2).status_code == 200


class ExporterProcess:
    """`llm-carbon-exporter serve` as a real subprocess on a free loopback port."""

    def __init__(self, workdir: Path, config: dict, args: Iterable[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"exporter-{self.port}.yaml"
        config = {
            **config,
            "exporter": {"listen": f"127.0.0.1:{self.port}", **config.get("exporter", {})},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"exporter-{self.port}.log"
        self.args = list(args)
        self.process: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> ExporterProcess:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_URL"}
        self.process = spawn(
            [
                sys.executable,
                "-m",
                "exporter",
                "serve",
                "--config",
                str(self.config_path),
                *self.args,
            ],
            self.log_path,
            env=env,
        )
        wait_until(self._listening, 30, "the exporter to listen")
        if wait_ready:
            wait_until(self.ready, 60, "the exporter's first good cycle")
        return self

    def _listening(self) -> bool:
        check_alive(self.process, self.log_path, "the exporter")
        return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def ready(self) -> bool:
        return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200

    def stop(self) -> None:
        stop_process(self.process)

    def metrics_text(self) -> str:
        response = requests.get(f"{self.url}/metrics", timeout=5)
        response.raise_for_status()
        return response.text

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return parse_samples(self.metrics_text())

    def log(self) -> str:
        return self.log_path.read_text()


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def pick(
    samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> list[tuple[dict[str, str], float]]:
    return [
        (lab, value)
        for n, lab, value in samples
        if n == name and all(lab.get(k) == v for k, v in labels.items())
    ]


def one(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, f"expected one {name} {labels}, found {found}"
    return found[0][1]


@contextlib.contextmanager
def running(*things: PrometheusServer | ExporterProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in reversed(things):
            thing.stop()


class StaticPages(ThreadingHTTPServer):
    """Serves `pages[path]` on a free loopback port: a body (status 200), or a (status, body)
    pair; `other` (404 by default) for a path it does not have. Change `pages` between
    requests."""

    daemon_threads = True

    def __init__(
        self, pages: dict[str, str | tuple[int, str]], other: tuple[int, str] = (404, "")
    ) -> None:
        self.pages = pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                page = self.pages.get(handler.path, other)
                status, text = page if isinstance(page, tuple) else (200, page)
                body = text.encode()
                handler.send_response(status)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
