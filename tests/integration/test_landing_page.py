"""The landing page, loaded in a real headless Chromium (Debian's chromium)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import (
    ExporterProcess,
    PrometheusServer,
    free_port,
    running,
    start_demo,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise AssertionError("chromium is not installed: run `make test` (it installs it)")
    return path


def render(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    process = start_demo(port, tmp_path_factory.mktemp("demo") / "demo.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def test_landing_page_shows_the_per_model_table(demo: str, tmp_path: Path) -> None:
    result = render(f"{demo}/", tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<h1>llm-carbon-exporter</h1>" in dom
    rows = re.findall(r"<tr>(.*?)</tr>", dom, flags=re.S)
    cells = [[html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row)] for row in rows]
    header, body = cells[0], cells[1:]
    assert header[:2] == ["namespace", "model"] and "J/tok" in header
    models = {row[1]: dict(zip(header, row, strict=True)) for row in body}
    assert len(models) == 6
    glm = models["zai-org/GLM-4.7-FP8"]
    assert 0.3 < float(glm["J/tok"]) < 0.6
    assert models["meta-llama/Llama-3.1-8B-Instruct"]["J/tok"] == "-"
    assert "inactive" in models["meta-llama/Llama-3.1-8B-Instruct"]["notes"]
    # Which power reading: the NYU node's dcgm-exporter has no energy counter.
    assert "power from the power gauge" in models["MiniMaxAI/MiniMax-M2.5"]["notes"]
    assert "power" not in glm["notes"]
    # One model in two grid regions, and the notes that say why figures look as they do.
    assert models["Qwen/Qwen3.5-397B-A17B-FP8"]["region"] == "CAMX,MROW"
    assert models["MiniMaxAI/MiniMax-M2.5"]["region"] == "NYCW"
    notes = re.findall(r'<ul class="why">(.*?)</ul>', dom, flags=re.S)[0]
    assert "moonshotai/Kimi-K2.5</b>: " in notes and "underutilized: " in notes
    assert 'href="/metrics"' in dom and '<span id="status">current</span>' in dom
    assert 'href="/methodology"' in dom and 'href="/troubleshooting"' in dom
    assert "diagnose" in dom and 'id="reason"' not in dom


@pytest.mark.parametrize("name", ["methodology", "troubleshooting"])
def test_landing_page_links_the_documents_it_serves(demo: str, name: str) -> None:
    response = requests.get(f"{demo}/{name}", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    source = Path(__file__).resolve().parents[2] / "docs" / f"{name}.md"
    note, _, document = response.content.partition(b"\n\n")
    assert document == source.read_bytes()  # the repository's document, packaged
    assert f"docs/{name}.md of llm-carbon-exporter".encode() in note
    assert b"relative links name files in the docs/ folder" in note


def test_with_the_upstream_down_the_page_says_why_within_one_interval(tmp_path: Path) -> None:
    interval = 2
    prometheus = PrometheusServer(tmp_path / "prometheus", "127.0.0.1:1", []).start()
    exporter = ExporterProcess(
        tmp_path,
        {
            # Credentials in the URL: the page must say why without them.
            "prometheus": {"url": f"http://reader:hunter2@127.0.0.1:{prometheus.port}"},
            "exporter": {"interval": f"{interval}s"},
        },
    )
    with running(prometheus, exporter.start()):
        assert "Connection refused" not in requests.get(f"{exporter.url}/", timeout=5).text
        prometheus.stop()
        down_at = time.monotonic()
        wait_until(
            lambda: "Connection refused" in requests.get(f"{exporter.url}/", timeout=5).text,
            interval + 3,
            "the landing page to say the upstream refuses connections",
        )
        assert time.monotonic() - down_at <= interval + 1  # the next cycle, not a later one
        result = render(f"{exporter.url}/", tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert '<span id="status">not current</span>' in dom
    reason = re.findall(r'<div class="reason" id="reason">(.*?)</div>', dom, flags=re.S)[0]
    assert f"prometheus: cannot connect to http://&lt;redacted&gt;@127.0.0.1:{prometheus.port}" in (
        reason
    )
    assert "Connection refused" in reason and "llm-carbon-exporter diagnose" in reason
    assert 'href="/troubleshooting"' in reason
    assert "hunter2" not in dom


def test_landing_page_renders_to_a_screenshot(demo: str, tmp_path: Path) -> None:
    shot = tmp_path / "landing.png"
    result = render(
        f"{demo}/", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,700"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a real render, not a blank page
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_head_answers_like_get_without_a_body(demo: str) -> None:
    for path in ("/", "/metrics", "/healthz", "/readyz", "/methodology", "/troubleshooting"):
        get = requests.get(f"{demo}{path}", timeout=5)
        head = requests.head(f"{demo}{path}", timeout=5)
        assert head.status_code == get.status_code == 200, path
        assert head.headers["Content-Type"] == get.headers["Content-Type"], path
        assert head.content == b"", path
    # The connection stays usable after a HEAD (no stray body in the stream).
    with requests.Session() as session:
        assert session.head(f"{demo}/healthz", timeout=5).status_code == 200
        assert session.get(f"{demo}/healthz", timeout=5).text == "ok\n"


def test_gzip_only_where_the_scraper_accepts_it(demo: str) -> None:
    for header, zipped in (("gzip", True), ("gzip;q=0", False), ("identity", False), ("*", True)):
        response = requests.get(
            f"{demo}/metrics", headers={"Accept-Encoding": header}, timeout=5, stream=True
        )
        assert (response.headers.get("Content-Encoding") == "gzip") is zipped, header
        response.close()


def test_endpoints_do_not_change_state(demo: str) -> None:
    before = requests.get(f"{demo}/", timeout=5).text.count("<tr>")
    for path in ("/", "/metrics", "/healthz", "/readyz", "/methodology"):
        for method in ("post", "put", "delete", "patch"):
            response = getattr(requests, method)(f"{demo}{path}", timeout=5)
            assert response.status_code == 405, (method, path)
            assert response.headers["Allow"] == "GET, HEAD"
    assert requests.get(f"{demo}/", timeout=5).text.count("<tr>") == before
    assert requests.get(f"{demo}/nope", timeout=5).status_code == 404
    assert requests.get(f"{demo}/readyz", timeout=5).status_code == 200
