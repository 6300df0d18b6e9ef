"""The website (``make site``) in a real browser: every chapter page loads without console errors,
its math is typeset by the bundled MathJax, its figures are visible, its API links resolve, and
no page asks the network for anything."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import ROOT, SCREENSHOTS, Console

SITE = ROOT / "build" / "site"
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# text of the page outside code, outputs and typeset math: a `$` pair left there is raw LaTeX
RAW_MATH_JS = r"""() => {
  const skip = 'PRE,CODE,SCRIPT,STYLE,MJX-CONTAINER,TEXTAREA';
  const root = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {acceptNode(n) {
    for (let e = n.parentElement; e && e !== root; e = e.parentElement) {
      if (skip.includes(e.tagName) || e.classList.contains('cell_output')) return NodeFilter.FILTER_REJECT;
    }
    return NodeFilter.FILTER_ACCEPT;
  }});
  const hits = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.textContent.match(/\$[^$\s][^$]*\$|\\\(|\\\[|\\begin\{/);
    if (m) hits.push(n.textContent.trim().slice(0, 120));
  }
  return hits;
}"""


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").exists():
        pytest.fail("build/site/index.html is missing: `make test-browser` builds it (make site)")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def page(browser, site_url):
    """A page that may load nothing but the local site: any other request is refused and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.offsite = []
    local = urlsplit(site_url).netloc

    def route(r):
        if urlsplit(r.request.url).netloc == local:
            r.continue_()
        else:
            page.offsite.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.console = Console(page)
    yield page
    context.close()


def _notebook(name: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))


def _has_math(nb: dict) -> bool:
    return any(c["cell_type"] == "markdown" and re.search(r"\$[^$]+\$", "".join(c["source"])) for c in nb["cells"])


def _figures(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def _open(page, url: str) -> None:
    page.goto(url, wait_until="load")
    # MathJax typesets after load: wait for it when the page has it
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")


def test_every_notebook_has_a_page():
    assert CHAPTERS, "no notebooks/NN_*.ipynb found"
    missing = [c for c in CHAPTERS if not (SITE / "chapters" / f"{c}.html").exists()]
    assert not missing, f"chapters without a page in build/site/chapters/: {missing}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page(page, site_url, chapter):
    nb = _notebook(chapter)
    _open(page, f"{site_url}/chapters/{chapter}.html")
    page.screenshot(path=SCREENSHOTS / f"site-{chapter}.png")
    assert page.title() and "404" not in page.title()

    if _has_math(nb):
        assert page.locator("mjx-container").count() > 0, "the page has LaTeX but MathJax typeset none of it"
        assert page.locator("mjx-merror").count() == 0, "MathJax reports a TeX error on the page"
    raw = page.evaluate(RAW_MATH_JS)
    assert not raw, f"raw (untypeset) LaTeX in the text: {raw[:5]}"

    images = page.locator("main img")
    assert images.count() >= _figures(nb), f"{_figures(nb)} figures in the notebook, {images.count()} on the page"
    broken = page.evaluate("""() => [...document.querySelectorAll('main img')]
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))""")
    assert not broken, f"images that did not load: {broken}"
    if _figures(nb):
        first = images.first
        first.scroll_into_view_if_needed()
        box = first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, f"the first figure is not visible: {box}"
        page.screenshot(path=SCREENSHOTS / f"site-{chapter}-figure.png")

    api = sorted(set(page.evaluate(
        "() => [...document.querySelectorAll('main a[href*=\"api/\"]')].map(a => a.href)")))
    assert api, "the chapter links to no API entry (its 'This chapter uses' box is missing)"
    by_page: dict[str, set[str]] = {}
    for href in api:
        url, _, anchor = href.partition("#")
        by_page.setdefault(url, set()).add(anchor)
    for url, anchors in by_page.items():  # fetched by the browser's own HTTP client
        response = page.request.get(url)
        assert response.ok, f"{url}: HTTP {response.status}"
        html = response.text()
        missing = [a for a in anchors if a and f'id="{a}"' not in html]
        assert not missing, f"{url}: no entry for {missing}"

    assert not page.console.errors, f"console errors on {chapter}: {page.console.errors}"
    assert not page.offsite, f"requests to other hosts (the site must work offline): {page.offsite}"


@pytest.mark.parametrize("name", ["index", "exercises", "reference", "api/hypergrad"])
def test_other_pages(page, site_url, name):
    _open(page, f"{site_url}/{name}.html")
    page.screenshot(path=SCREENSHOTS / f"site-{name.replace('/', '-')}.png")
    if name == "index":
        links = page.locator("main table a[href*='chapters/']")
        assert links.count() >= len(CHAPTERS), "the course map does not link every chapter"
    if name == "api/hypergrad":
        assert page.locator("#metahpo_lib\\.hypergrad\\.implicit").count() == 1
        assert page.locator("main .doctest, main pre:has-text('>>>')").count() > 0, "no >>> examples shown"
    assert not page.evaluate(RAW_MATH_JS)
    assert not page.console.errors, page.console.errors
    assert not page.offsite, page.offsite
