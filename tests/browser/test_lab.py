"""The course in JupyterLab, started exactly as ``make lab`` starts it (127.0.0.1, a token):
notebook 00 opens, Run All on a chapter with a slider finishes with no error output, dragging the
slider with the mouse redraws the plot, and the browser console shows no errors.

The server gets a throw-away settings folder with autosave off, so running a chapter never
writes to the committed notebook (checked at the end)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, SCREENSHOTS, Console

# the chapters with a slider widget; the test runs the first (chapter 01, about a minute)
WIDGET_CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
                         if "sliders(" in p.read_text(encoding="utf-8"))
# an unsolved exercise notebook: Run All must show every exercise's state, one plain line each
UNSOLVED = ROOT / "exercises" / "02_finite_differences.ipynb"
RUN_ALL_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``make lab`` in the repository, on a free port with a known token; yields its base URL."""
    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)  # no "get Jupyter news?" prompt and no request for it (no network here)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ, JUPYTER_TOKEN=token, JUPYTER_PORT=str(port), BROWSER="true",
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(["make", "lab"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM) if proc.poll() is None else None
                pytest.fail(f"`make lab` did not serve {base}:\n{(tmp / 'lab.log').read_text()[-3000:]}")
            time.sleep(1)
    yield base, token
    os.killpg(proc.pid, signal.SIGTERM)  # make and the Jupyter server it started (its own session)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.console = Console(page)
    yield page
    context.close()


def _wait_kernel_idle(page, timeout_s: float) -> None:
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook", timeout=60_000)
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
        .some(e => /Idle/.test(e.textContent))""", timeout=timeout_s * 1000)


def test_notebook_00_opens(lab, page):
    base, token = lab
    page.goto(f"{base}/?token={token}")  # `make lab`'s default_url: notebook 00
    page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
    page.wait_for_function("""() => [...document.querySelectorAll('.lm-TabBar-tab.lm-mod-current')]
        .some(t => t.textContent.includes('00_start_here.ipynb'))""", timeout=60_000)
    _wait_kernel_idle(page, 120)
    page.wait_for_timeout(1000)
    page.screenshot(path=SCREENSHOTS / "lab-00_start_here.png")
    assert page.locator(".jp-Notebook .jp-Cell").count() > 3
    assert not page.console.errors, page.console.errors


@pytest.mark.skipif(not WIDGET_CHAPTERS, reason="no chapter uses metahpo_lib.widgets.sliders")
def test_run_all_and_move_a_slider(lab, page):
    base, token = lab
    notebook = WIDGET_CHAPTERS[0]
    digest = hashlib.sha256(notebook.read_bytes()).hexdigest()
    page.goto(f"{base}/lab/tree/notebooks/{notebook.name}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
    page.wait_for_function(f"""() => [...document.querySelectorAll('.lm-TabBar-tab.lm-mod-current')]
        .some(t => t.textContent.includes('{notebook.name}'))""", timeout=60_000)
    _wait_kernel_idle(page, 120)

    # Run > Run All Cells, with the mouse, as a learner does
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
        return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
    }""", timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
    _wait_kernel_idle(page, 60)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [errors.nth(i).inner_text()[:500] for i in range(errors.count())]
    assert not [t for t in texts if "Traceback" in t or "Error" in t], f"error output after Run All: {texts}"
    assert cells.count() > 3

    slider = page.locator(".widget-interact .widget-slider").first
    slider.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    figure = page.locator(".widget-interact .jp-OutputArea-output img").first
    figure.wait_for(timeout=60_000)
    before = figure.get_attribute("src")
    page.screenshot(path=SCREENSHOTS / f"lab-{notebook.stem}-before.png")
    handle = slider.locator(".noUi-handle, .ui-slider-handle").first
    box = handle.bounding_box()
    assert box, "the slider handle is not on screen"
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y, steps=8)
    page.mouse.up()
    page.wait_for_function("""before => {
        const img = document.querySelector('.widget-interact .jp-OutputArea-output img');
        return img && img.getAttribute('src') !== before;
    }""", arg=before, timeout=60_000)
    _wait_kernel_idle(page, 60)  # the last redraw is in
    page.wait_for_timeout(1000)
    page.screenshot(path=SCREENSHOTS / f"lab-{notebook.stem}-after.png")

    assert not page.console.errors, page.console.errors
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == digest, f"{notebook} was written by the test"


def _open(page, base: str, token: str, relpath: str) -> None:
    page.goto(f"{base}/lab/tree/{relpath}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
    name = relpath.rsplit("/", 1)[-1]
    page.wait_for_function(f"""() => [...document.querySelectorAll('.lm-TabBar-tab.lm-mod-current')]
        .some(t => t.textContent.includes('{name}'))""", timeout=60_000)
    _wait_kernel_idle(page, 120)


def test_run_all_on_unsolved_exercises_shows_every_state(lab, page):
    """Run All on a fresh exercise notebook runs to the end: each self-check says in one line that its
    exercise is not written yet (no traceback), and the cells after the first check still run."""
    base, token = lab
    digest = hashlib.sha256(UNSOLVED.read_bytes()).hexdigest()
    _open(page, base, token, f"exercises/{UNSOLVED.name}")
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
        return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
    }""", timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
    _wait_kernel_idle(page, 60)
    page.screenshot(path=SCREENSHOTS / f"lab-{UNSOLVED.stem}-unsolved.png", full_page=True)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    # textContent, not innerText: JupyterLab does not lay out cells scrolled out of view
    texts = [errors.nth(i).text_content() for i in range(errors.count())]
    checks = sum('"grade": true' in json.dumps(c.get("metadata", {}))
                 for c in json.loads(UNSOLVED.read_text(encoding="utf-8"))["cells"])
    not_written = [t for t in texts if "is not written yet" in t]
    assert len(not_written) == checks, texts
    assert not [t for t in texts if "Traceback" in t], texts
    assert hashlib.sha256(UNSOLVED.read_bytes()).hexdigest() == digest, f"{UNSOLVED} was written by the test"
