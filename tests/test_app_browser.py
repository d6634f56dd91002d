"""The web demo end to end in a real headless Chromium: `python scripts/app.py` on a free local port, two tabs
each asking for a comparison at once (both complete: the queue serves one sampling at a time), the images and
the strip fetched from the page and checked as PNGs, then a bad beta list (a one-line message in the page) and
a good request after it (the app keeps serving), and a model whose weights are missing (its download command, in
the menu and after a click). Every request the page makes stays on 127.0.0.1, and the app process connects to
nothing else either (an audit hook reports any other connection or name lookup).

Needs the app extra (gradio), Playwright's Python package and a Chromium binary (Debian's `chromium`; Playwright
is pointed at it and downloads nothing). Skipped with the reason when one is missing, except in CI (CI=true),
where .ci/run installs them. `SSG_APP_SCREENSHOT=assets/app/screenshot.png` also saves the README screenshot.
"""
from __future__ import annotations

import io
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DONE = "betas per scale"  # the status line of a finished comparison
# `python scripts/app.py ARGS` with an audit hook that reports every connection or name lookup leaving this machine
AUDITED = """
import runpy, sys
LOCAL = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
def outside(event, args):
    host = args[1][0] if event == "socket.connect" and isinstance(args[1], tuple) else \\
        args[0] if event == "socket.getaddrinfo" else None
    if host is not None and str(host) not in LOCAL:
        print("outside connection:", event, host, file=sys.stderr, flush=True)
sys.addaudithook(outside)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _missing_or_skip(what: str):
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"{what} (CI must run the browser test: .ci/run installs it)")
    pytest.skip(what)


def _chromium() -> str:
    for name in (os.environ.get("SSG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = name and shutil.which(name)
        if path:
            return path
    _missing_or_skip("no Chromium binary (apt-get install chromium, or set SSG_CHROMIUM)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app as a user starts it, on a free port; yields its URL."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        _missing_or_skip('gradio is not installed (pip install -e ".[app]")')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")),
               HF_HOME=str(tmp_path_factory.mktemp("hf_home")))  # an empty Hugging Face cache: no model but the demo
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", AUDITED, str(REPO / "scripts" / "app.py"), "--port", str(port),
                             "--device", "cpu"],
                            cwd=tmp_path_factory.mktemp("cwd"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    log: list[str] = []  # everything the app prints, for the test to read
    threading.Thread(target=lambda: [(lines.put(line), log.append(line)) for line in proc.stdout], daemon=True).start()
    seen, url = [], None
    try:
        while url is None and time.perf_counter() - t0 < 60:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if "http://" in line:
                url = line[line.index("http://"):].split()[0]
        assert url is not None, "the app printed no URL:\n" + "".join(seen)
        print(f"app started in {time.perf_counter() - t0:.1f} s: {url}")
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_or_skip("Playwright is not installed (pip install playwright)")
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=FLAGS)
        yield b
        b.close()


def _png(page, selector: str) -> np.ndarray:
    """Fetch the image an <img> shows and decode it; it must be a PNG."""
    from PIL import Image
    src = page.locator(f"{selector} img").first.get_attribute("src")
    body = page.request.get(src).body()
    assert body[:8] == b"\x89PNG\r\n\x1a\n", f"{selector}: not a PNG ({body[:8]!r})"
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _wait_pictures(page, timeout_s: float = 30) -> None:
    """Until the browser has loaded and decoded both images, the strip and the plot."""
    page.wait_for_function(
        """() => ['#baseline', '#ssg', '#strip', '#plot'].every(sel => {
               const img = document.querySelector(sel + ' img');
               return img && img.complete && img.naturalWidth > 0; })""", timeout=timeout_s * 1000)


def _fill(page, selector: str, text: str) -> None:
    page.locator(f"{selector} textarea, {selector} input").first.fill(text)


def _wait_status(page, text: str, timeout_s: float = 90, selector: str = "#status") -> str:
    page.wait_for_function("([sel, t]) => document.querySelector(sel)?.innerText.includes(t)",
                           arg=[selector, text], timeout=timeout_s * 1000)
    return page.inner_text(selector)


def test_two_tabs_images_strip_plot_then_a_bad_input_in_a_real_browser(server, browser):
    server, log = server
    t0 = time.perf_counter()
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    tabs = [context.new_page(), context.new_page()]
    for tab, seed in zip(tabs, ("0", "7")):
        tab.goto(server, wait_until="networkidle")
        _fill(tab, "#classes", "0,1,2,3")
        _fill(tab, "#seed", seed)
    for tab in tabs:  # both at once: the second waits in the queue, then runs
        tab.click("#run")
    for tab in tabs:
        assert "error" not in _wait_status(tab, DONE)
        _wait_pictures(tab)

    first, second = tabs
    base, ssg, strip = _png(first, "#baseline"), _png(first, "#ssg"), _png(first, "#strip")
    for img in (base, ssg, strip):
        assert img.std() > 20, "a flat picture"
    assert base.shape == ssg.shape and not np.array_equal(base, ssg), "baseline and SSG are the same picture"
    assert strip.shape[:2] == (2 * 128 + 3 * 4, 6 * 128 + 7 * 4)  # 2 rows x 6 scales of 128 px cells, 4 px gaps
    assert not np.array_equal(_png(second, "#baseline"), base), "the second tab got the first tab's picture"
    shot = os.environ.get("SSG_APP_SCREENSHOT")
    if shot:
        _save_screenshot(first, REPO / shot)

    # a mistake: one line in the page, no images; then the app still serves
    _fill(first, "#betas", "0, 0.5")
    first.click("#run")
    message = _wait_status(first, "error:")
    assert "beta list has 2 values but the model samples 6 scales" in message and "\n" not in message.strip()
    assert first.locator("#baseline img").count() == 0
    _fill(first, "#betas", "")
    first.click("#run")
    _wait_status(first, DONE)
    _wait_pictures(first)
    assert _png(first, "#ssg").std() > 20

    # a model whose weights are not here (empty cache): the menu says so, a click says how to get them
    first.locator("#model input").click()
    first.locator("ul[role=listbox] li", has_text="HART").click()
    assert "not downloaded" in _wait_status(first, "scripts/download.py --model hart-0.7b", selector="#model-status")
    assert first.locator("#prompt").is_visible() and not first.locator("#classes").is_visible()
    first.click("#run")
    message = _wait_status(first, "error:")
    assert "hart-0.7b is not downloaded" in message and "python scripts/download.py --model hart-0.7b" in message

    outside = sorted({u for u in requests if not u.startswith(server.rstrip("/")) and not u.startswith("data:")})
    assert outside == [], f"the page reached outside the app: {outside[:5]}"
    assert not [line for line in log if "outside connection" in line], "".join(log)[-2000:]  # nor did the server
    print(f"browser test body: {time.perf_counter() - t0:.1f} s")
    context.close()


def _save_screenshot(page, path: Path) -> None:
    """The README screenshot: the page as it is now, in 256 colours (a small PNG)."""
    from PIL import Image
    page.bring_to_front()  # a background tab is not painted
    page.wait_for_timeout(500)  # the components' fade-in
    img = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
