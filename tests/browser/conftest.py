"""Browser tests: a headless Chromium reads the course website and runs a chapter in JupyterLab.

They run only under ``make test-browser`` (which sets ``METAHPO_BROWSER_TESTS=1`` and builds the
site first); a plain ``pytest`` / ``make test`` does not collect them. Playwright drives Debian's
``chromium`` package (``apt-get install chromium``), never a browser of its own download; without
one every test is skipped and says why. Screenshots go to ``build/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

if not os.environ.get("METAHPO_BROWSER_TESTS"):
    collect_ignore_glob = ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """``$CHROMIUM``, else Debian's chromium on the PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: make test-browser installs it")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install -y chromium, or set CHROMIUM=/path/to/chrome); "
                    "Playwright's own browser download is not used")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # noqa: BLE001 - say why and skip: the browser cannot start here
            pytest.skip(f"Chromium at {path} does not start under Playwright: {e}")
        yield b
        b.close()


class Console:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page, ignore: tuple[str, ...] = ()):
        self.errors: list[str] = []
        self.ignore = ignore
        page.on("console", lambda m: m.type == "error" and self._add(f"console: {m.text} ({m.location})"))
        page.on("pageerror", lambda e: self._add(f"uncaught: {e}"))

    def _add(self, text: str) -> None:
        if not any(i in text for i in self.ignore):
            self.errors.append(text)
