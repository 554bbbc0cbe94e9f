"""Open a finished run's results/report.html in headless Chromium, as a reader would.

The Snakemake 9 report is a single-page React app whose results are embedded as data
URIs; nothing shows in the page until a category and a result are clicked. So the test
drives the page over the Chrome DevTools Protocol (through a pipe, no extra packages):
it clicks the category of per-sample figures, opens every sample's figure and checks the
browser decoded a full-size PNG, then opens the summary table and reads its rows inside
the rendered frame. The browser has no network (a dead proxy), and every request it made
is recorded: the report must be self-contained.

Needs Debian's ``chromium``; installed here (apt-get, as root) when missing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Category names used in the report() calls of workflow/rules (see workflow/report/workflow.rst).
SUMMARY_CATEGORY = "Dataset summary"
SAMPLES_CATEGORY = "Per-sample figures"
SUMMARY_LABEL = "summary table"
#: The per-sample figure is 15 x 10.5 in at 100 dpi (remflow.figures.SAMPLE_FIGURE_SIZE_IN).
MIN_FIGURE_PX = (1400, 500)  # a one-row figure of an image without columns is lower (its aspect)


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get if missing (root only; else the test is skipped)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=900)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, env=env,
                   timeout=1800)
    assert CHROMIUM.exists(), "apt-get install chromium did not provide /usr/bin/chromium"
    return CHROMIUM


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out,
    messages are JSON separated by NUL bytes)."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.process = process
        self._to_browser = os.fdopen(to_browser, "wb", buffering=0)
        self._from_browser = os.fdopen(from_browser, "rb", buffering=0)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60) -> dict[str, Any]:
        """Send one command (to the attached page, if any) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        self._to_browser.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            event = self._read(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def evaluate(self, expression: str, *, context_id: int | None = None, timeout: float = 60) -> Any:
        """Run JavaScript in the page (or a frame's context) and return its JSON value; awaits promises."""
        params: dict[str, Any] = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        if context_id is not None:
            params["contextId"] = context_id
        result = self.send("Runtime.evaluate", params, timeout=timeout)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript failed: {json.dumps(result['exceptionDetails'])[:2000]}")
        return result["result"].get("value")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = self._from_browser.read(1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


@contextlib.contextmanager
def browser_session() -> Iterator[DevTools]:
    """Headless Chromium without network, driven over a pipe, one page attached."""
    chromium = ensure_chromium()
    profile = tempfile.mkdtemp(prefix="remflow-chromium-")
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()
    arguments = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={profile}",
        "--window-size=1920,1400", "--allow-file-access-from-files",
        # No network: any request for a resource outside the file fails.
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "about:blank",
    ]
    # bash puts our pipe ends on the file descriptors 3 and 4 that Chromium expects
    # (dash cannot redirect from descriptors above 9).
    process = subprocess.Popen(
        ["bash", "-c", f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write}', str(chromium), *arguments],
        pass_fds=(commands_read, replies_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(commands_read)
    os.close(replies_write)
    devtools = DevTools(process, commands_write, replies_read)
    try:
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        devtools.session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            devtools.send(f"{domain}.enable")
        yield devtools
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    with browser_session() as devtools:
        yield devtools


# JavaScript helpers loaded into the report page: find things as a reader does, by visible text.
PAGE_HELPERS = r"""
window.__remflow = {
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  async until(check, what, ms = 20000) {
    const end = Date.now() + ms;
    for (;;) {
      const value = check();
      if (value) return value;
      if (Date.now() > end) throw new Error("timed out waiting for " + what);
      await this.sleep(50);
    }
  },
  link(text) {
    return [...document.querySelectorAll("#app nav a")].find((element) => element.textContent.trim() === text);
  },
  clickText(text) {
    const link = this.link(text);
    if (!link) throw new Error("no link with text " + JSON.stringify(text));
    link.click();
  },
  async openCategory(name) {
    const home = document.querySelector("#app nav nav ol li a");  // breadcrumb home: back to the menu
    if (!this.link(name) && home) home.click();
    await this.until(() => this.link(name), "category " + name);
    this.clickText(name);
    return await this.until(() => document.querySelector("#app table tbody tr"), "result list of " + name);
  },
  rows() {
    return [...document.querySelectorAll("#app table tbody tr")].map((row) => ({
      labels: [...row.querySelectorAll("td")].slice(0, -1).map((cell) => cell.textContent.trim()),
      row,
    }));
  },
  async info(label, expected) {
    const entry = this.rows().find((candidate) => candidate.labels.includes(label));
    if (!entry) throw new Error("no result labelled " + JSON.stringify(label));
    entry.row.querySelectorAll("a")[1].click();  // the (i) button: caption and job details
    const text = () => document.querySelector("#app nav").innerText;
    return await this.until(() => text().includes(expected) && text(), expected + " in the caption of " + label);
  },
  async open(label) {
    const entry = this.rows().find((candidate) => candidate.labels.includes(label));
    if (!entry) throw new Error("no result labelled " + JSON.stringify(label));
    entry.row.querySelector("a").click();  // the eye button: show the result
  },
};
true
"""


def open_report(devtools: DevTools, report: Path) -> None:
    devtools.events.clear()
    devtools.send("Page.navigate", {"url": report.resolve().as_uri()})
    devtools.wait_for_event("Page.loadEventFired", timeout=120)
    devtools.evaluate(PAGE_HELPERS)
    devtools.evaluate("__remflow.until(() => document.querySelector('#app ul li'), 'the report menu').then(() => true)")


def show_figure(devtools: DevTools, label: str, filename: str) -> dict[str, Any]:
    """Click a result's eye button; wait for its image (data URI named ``filename``); return its decoded size."""
    return devtools.evaluate(f"""(async () => {{
        await __remflow.open({json.dumps(label)});
        const wanted = "filename=" + {json.dumps(filename)} + ";";
        const image = await __remflow.until(
            () => [...document.querySelectorAll("#app img")].find((shown) => shown.src.includes(wanted)),
            "the figure " + wanted);
        await image.decode();
        return {{width: image.naturalWidth, height: image.naturalHeight, mime: image.src.slice(5, 14)}};
    }})()""")


def summary_frame_rows(devtools: DevTools) -> list[dict[str, Any]]:
    """Open the summary table and read its rows from inside the frame the report renders it in."""
    devtools.evaluate(f"""(async () => {{
        await __remflow.open({json.dumps(SUMMARY_LABEL)});
        await __remflow.until(() => document.querySelector("#app iframe[src^='data:text/html']"), "summary frame");
        return true;
    }})()""")
    deadline = time.monotonic() + 30
    while True:
        tree = devtools.send("Page.getFrameTree")["frameTree"]
        children = [child["frame"] for child in tree.get("childFrames", [])]
        frames = [frame for frame in children if frame.get("url", "").startswith("data:text/html")]
        if frames:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the summary frame never loaded: {children}")
        time.sleep(0.1)
    world = devtools.send("Page.createIsolatedWorld", {"frameId": frames[0]["id"], "worldName": "remflow-test"})
    script = """(async () => {
        const end = Date.now() + 20000;
        while (!document.querySelector("#summary-table") && Date.now() < end) {
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
        return [...document.querySelectorAll("#summary-table tbody tr")].map((row) => ({
            sample: row.dataset.sample, cls: row.className,
            cells: [...row.querySelectorAll("td")].map((cell) => cell.textContent.trim()),
            visible: row.getBoundingClientRect().height > 0,
        }));
    })()"""
    return devtools.evaluate(script, context_id=world["executionContextId"])


def screenshot(devtools: DevTools, path: Path) -> None:
    data = devtools.send("Page.captureScreenshot", {"format": "png"})["data"]
    path.write_bytes(base64.b64decode(data))


def expected_samples(run_dir: Path) -> tuple[list[str], list[str]]:
    """Samples that must have a figure (all accepted ones) and those that must not (rejected)."""
    summary = pd.read_csv(run_dir / "results" / "summary.csv", keep_default_na=False)
    rejected = summary["status"].astype(str).str.startswith("rejected")
    return summary.loc[~rejected, "sample"].astype(str).tolist(), summary.loc[rejected, "sample"].astype(str).tolist()


def test_report_shows_every_sample_figure_and_the_summary_table(small_run: Path, browser: DevTools,
                                                                tmp_path: Path) -> None:
    report = small_run / "results" / "report.html"
    assert report.is_file() and report.stat().st_size > 100_000
    with_figure, rejected = expected_samples(small_run)
    assert with_figure, "the small run must have at least one accepted sample"
    open_report(browser, report)

    # The landing page is the workflow description, and its links open the results.
    description = browser.evaluate("document.querySelector('#app').innerText")
    assert "remflow restores every image" in description and "Configuration of this run" in description
    browser.evaluate(f"""(async () => {{
        [...document.querySelectorAll("#app a[href^='javascript:']")]
            .find((link) => link.textContent === {json.dumps(SAMPLES_CATEGORY)}).click();
        await __remflow.until(() => document.querySelector("#app table tbody tr"), "the sample list");
        return true;
    }})()""")

    # Every accepted sample is listed once with its figure, and the browser decodes a full-size PNG.
    listed = [entry[0] for entry in browser.evaluate("__remflow.rows().map((entry) => entry.labels)")]
    assert sorted(listed) == sorted(with_figure), listed
    assert not set(rejected) & set(listed), "rejected samples must have no figure"
    # Its caption (behind the (i) button) is rendered, with the sample's name filled in.
    caption = browser.evaluate(f"__remflow.info({json.dumps(with_figure[0])}, 'Bottom middle')")
    assert f"Sample {with_figure[0]}: raw vs restored" in caption, caption[:500]
    browser.evaluate(f"__remflow.openCategory({json.dumps(SAMPLES_CATEGORY)}).then(() => true)")
    for sample in with_figure:
        shown = show_figure(browser, sample, f"{sample}.png")
        assert shown["mime"] == "image/png", shown
        assert shown["width"] >= MIN_FIGURE_PX[0] and shown["height"] >= MIN_FIGURE_PX[1], shown
    screenshot(browser, tmp_path / "sample_view.png")

    # The summary table: one visible row per sample of summary.csv, rejected ones marked.
    browser.evaluate(f"__remflow.openCategory({json.dumps(SUMMARY_CATEGORY)}).then(() => true)")
    rows = summary_frame_rows(browser)
    screenshot(browser, tmp_path / "summary_view.png")
    assert sorted(row["sample"] for row in rows) == sorted(with_figure + rejected)
    assert all(row["visible"] for row in rows)
    for row in rows:
        assert row["cells"][0] == row["sample"]
        assert (row["cls"] == "rejected") == (row["sample"] in rejected), row

    # Self-contained: the browser asked for nothing but the report file and embedded data.
    requested = [event["params"]["request"]["url"] for event in browser.events
                 if event.get("method") == "Network.requestWillBeSent"]
    outside = [url for url in requested if not url.startswith(("file://", "data:", "about:", "blob:"))]
    assert not outside, f"the report fetched resources from outside the file: {outside[:5]}"
    failed = [event["params"] for event in browser.events if event.get("method") == "Network.loadingFailed"]
    assert not failed, failed[:3]


def open_index(devtools: DevTools, index: Path, timeout_s: float = 120) -> dict[str, Any]:
    """Open a sample index (results/index.html, or the one unpacked from report.zip); wait until
    the thumbnails on the first screen are decoded. Returns the timings and what the page shows."""
    devtools.events.clear()
    start = time.perf_counter()
    devtools.send("Page.navigate", {"url": index.resolve().as_uri()})
    devtools.wait_for_event("Page.loadEventFired", timeout=timeout_s)
    loaded = time.perf_counter() - start
    shown = devtools.evaluate("""(async () => {
        const visible = [...document.querySelectorAll("#samples img")]
            .filter((img) => img.getBoundingClientRect().top < window.innerHeight);
        await Promise.all(visible.map((img) => img.decode()));
        return {rows: document.querySelectorAll("#samples tbody tr").length, visible: visible.length,
                widths: visible.map((img) => img.naturalWidth)};
    })()""", timeout=timeout_s)
    return {"chromium_load_s": round(loaded, 3), "chromium_first_screen_s": round(time.perf_counter() - start, 3),
            "index_rows": shown["rows"], "thumbnails_on_first_screen": shown["visible"],
            "thumbnail_widths": sorted(set(shown["widths"]))}


def test_sample_index_and_zip_report_open_with_thumbnails_and_full_figures(small_run: Path, browser: DevTools,
                                                                           tmp_path: Path) -> None:
    """The report for datasets too big for report.html: results/report.zip, unpacked, opens
    index.html with one row per sample; thumbnails decode; a click opens the full figure."""
    import zipfile

    from conftest import run_snakemake

    run_snakemake(small_run, "--cores", "1", "results/report.zip")
    unpacked = tmp_path / "report"
    with zipfile.ZipFile(small_run / "results" / "report.zip") as archive:
        archive.extractall(unpacked)
    with_figure, rejected = expected_samples(small_run)
    shown = open_index(browser, unpacked / "index.html")
    assert shown["index_rows"] == len(with_figure) + len(rejected)
    assert shown["thumbnails_on_first_screen"] >= 1 and all(0 < w <= 360 for w in shown["thumbnail_widths"]), shown
    rows = browser.evaluate("""[...document.querySelectorAll("#samples tbody tr")].map((row) => ({
        sample: row.dataset.sample, cls: row.className,
        link: row.querySelector("a.figure") ? row.querySelector("a.figure").getAttribute("href") : null}))""")
    links = {row["sample"]: row["link"] for row in rows}
    assert all(links[sample] == f"figures/{sample}.png" for sample in with_figure), links
    assert all(links[sample] is None for sample in rejected)
    assert {row["sample"] for row in rows if row["cls"] == "rejected"} == set(rejected)
    # Follow one link as a reader clicks it: the browser shows the full-size figure.
    browser.evaluate(f"document.querySelector('tr[data-sample={json.dumps(with_figure[0])}] a.figure').click(); true")
    browser.wait_for_event("Page.loadEventFired", timeout=60)
    size = browser.evaluate("(() => { const img = document.querySelector('img');"
                            " return img ? [img.naturalWidth, img.naturalHeight] : null; })()")
    assert size and size[0] >= MIN_FIGURE_PX[0] and size[1] >= MIN_FIGURE_PX[1], size
    screenshot(browser, tmp_path / "figure_from_index.png")
    requested = [event["params"]["request"]["url"] for event in browser.events
                 if event.get("method") == "Network.requestWillBeSent"]
    assert all(url.startswith(("file://", "data:", "about:")) for url in requested), requested[:5]
