"""Check the built website: every internal link and anchor resolves, and nothing loads from the net.

    python docs/check_links.py build/site

Every ``href`` and ``src`` in every page that points inside the site must name an existing file
(and, with ``#anchor``, an element with that id); a ``src`` or stylesheet ``href`` on another host
(a CDN) is an error, since the site must work offline. Exits 1 and lists the problems.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.links.append((tag, key, a[key]))


def check(site: Path) -> list[str]:
    site = site.resolve()
    # _static/ holds theme template fragments, not pages
    pages = {p: _Page() for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts}
    for path, page in pages.items():
        page.feed(path.read_text(encoding="utf-8"))
    problems = []
    for path, page in pages.items():
        where = path.relative_to(site)
        for tag, attr, url in page.links:
            parts = urlsplit(url)
            if parts.scheme in ("mailto", "data", "javascript"):
                continue
            if parts.scheme or url.startswith("//"):
                loads = attr == "src" or (tag == "link" and attr == "href")
                if loads:
                    problems.append(f"{where}: <{tag} {attr}={url!r}> loads from the network (the site must work offline)")
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{where}: broken link {url!r} (no file {target})")
                continue
            anchor = unquote(parts.fragment)
            if anchor and target in pages and anchor not in pages[target].ids:
                problems.append(f"{where}: link {url!r}: no element with id {anchor!r} in {target.name}")
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "build/site")
    if not (site / "index.html").exists():
        print(f"{site}/index.html is missing: run `make site` first", file=sys.stderr)
        return 1
    problems = check(site)
    pages = sum(1 for p in site.rglob("*.html") if "_static" not in p.parts)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"check_links: {pages} pages, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
