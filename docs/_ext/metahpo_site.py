"""Sphinx extension behind ``make site``: turns the committed, executed notebooks into pages.

Before Sphinx reads anything (``config-inited``) it writes the generated sources, all git-ignored:

- ``chapters/NN_name.ipynb``: a copy of every ``notebooks/NN_*.ipynb`` (a glob, never a list),
  outputs untouched (nothing is re-executed), with a "this chapter uses" box that links every
  library object its code cells call to the API reference, and each ipywidgets output replaced by
  a note that the control is live in JupyterLab (the cell's static figure stays);
- ``exercises/NN_name.ipynb``: the assignments, as learners get them;
- ``api/<module>.rst``: one autodoc page per public module or package of ``metahpo_lib``;
- ``_course_map.md``: the table on the home page, one row per chapter.

While writing the pages (``doctree-resolved``) it also links inline code in the chapters' text
that names a documented object (```hypergrad.implicit```, ```inner.GD(lr=0.2)```) to its entry.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import logging
import shutil
import uuid
from pathlib import Path

from docutils import nodes
from sphinx.pycode import ModuleAnalyzer
from sphinx.errors import PycodeError

PACKAGE = "metahpo_lib"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "```{admonition} Live in JupyterLab\n:class: tip widget-note\n"
    "This cell shows interactive controls (sliders) when you run it in JupyterLab (`make lab`): "
    "moving them redraws the figure. This website shows the static figure printed above them.\n```"
)
GENERATED = ("chapters", "exercises", "api", "_course_map.md")

#: Docstring markup problems in the library that the build reports but does not fail on, each a
#: (where, what) pair of substrings of the warning. Fix the docstring, then delete its line here.
KNOWN_DOCSTRING_PROBLEMS: list[tuple[str, str]] = []  # (where, message) pairs to let through; keep it empty


# ----------------------------------------------------------------------------- the API's names
def _public_modules() -> list[str]:
    """Public modules and packages of the library, e.g. ``metahpo_lib.hypergrad.implicit``."""
    pkg = importlib.import_module(PACKAGE)
    names = [m.name for m in pkgutil.walk_packages(pkg.__path__, PACKAGE + ".")]
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def _attr_docs(module_name: str) -> dict[str, list[str]]:
    """The ``#:`` doc comments of a module's top-level names."""
    try:
        docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except PycodeError:
        return {}
    return {name: list(lines) for (scope, name), lines in docs.items() if scope == ""}


def _members(module) -> list[str]:
    """The public names of a module: ``__all__``, else its own functions and classes and its
    constants with a ``#:`` doc comment."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    documented = _attr_docs(module.__name__)
    return [n for n, obj in vars(module).items() if not n.startswith("_")
            and ((inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__
                 or n in documented)]


def _kind(obj) -> str:
    return "function" if inspect.isfunction(obj) else "class" if inspect.isclass(obj) else "data"


ALIASES: dict[str, str] = {}  # where an object is defined -> where the reference documents it


def api_layout() -> dict[str, dict]:
    """For each API page (a top-level module or package): its sections and documented names.

    A package documents the names it exports (``__all__``); each of its submodules then gets a
    section with its docstring and the public names the package does not export. Returns
    ``{page: {"sections": [(module, members, no_index)], "names": {qualified name: full name}}}``.
    """
    pages: dict[str, dict] = {}
    for name in _public_modules():
        top = name.split(".")[1]
        page = pages.setdefault(top, {"sections": [], "names": {}})
        module = importlib.import_module(name)
        members = _members(module)
        if name != f"{PACKAGE}.{top}":  # a submodule of a package: what the package does not export
            package = importlib.import_module(f"{PACKAGE}.{top}")
            exported = {id(getattr(package, n, None)): f"{package.__name__}.{n}" for n in _members(package)}
            for n in members:
                if id(getattr(module, n, None)) in exported:
                    ALIASES[f"{name}.{n}"] = exported[id(getattr(module, n))]
            members = [n for n in members if id(getattr(module, n, None)) not in exported]
            # ``hypergrad.implicit`` is both a function (exported) and a submodule: index one only
            clash = getattr(package, name.rsplit(".", 1)[1], module) is not module
            page["sections"].append((name, members, clash))
        else:
            page["sections"].insert(0, (name, members, False))
        for n in members:
            full = f"{name}.{n}"
            page["names"][full[len(PACKAGE) + 1:]] = full
    return pages


def _data_rst(module, name: str, value, docs: list[str]) -> list[str]:
    """A constant: its value when short, and its ``#:`` comment (found where it is defined)."""
    out = [f".. py:data:: {name}", f"   :module: {module}"]
    if len(repr(value)) <= 100:
        out.append(f"   :value: {value!r}")
    else:
        out.append(f"   :type: {type(value).__name__}")
    return out + ["", *(f"   {line}" for line in docs), ""]


def _defining_docs(value, package: str, name: str) -> list[str]:
    for sub in _public_modules():
        if sub.startswith(package + ".") and getattr(importlib.import_module(sub), name, None) is value:
            return _attr_docs(sub).get(name, [])
    return _attr_docs(package).get(name, [])


def _api_rst(top: str, sections) -> str:
    title = f"{PACKAGE}.{top}"
    out = [title, "=" * len(title), ""]
    for module, members, no_index in sections:
        mod = importlib.import_module(module)
        if module != f"{PACKAGE}.{top}":
            head = module
            out += [head, "-" * len(head), ""]
        code = [n for n in members if _kind(getattr(mod, n)) != "data"]
        data = [n for n in members if _kind(getattr(mod, n)) == "data"]
        out.append(f".. automodule:: {module}")
        if no_index:  # the module's name is taken by a function: index its members one by one
            out += ["   :no-index:", ""]
            out += [line for n in code for line in (f".. auto{_kind(getattr(mod, n))}:: {module}.{n}", "")]
        else:
            if code:
                out += [f"   :members: {', '.join(code)}", "   :undoc-members:"]
            out.append("")
        for n in data:
            out += _data_rst(module, n, getattr(mod, n), _defining_docs(getattr(mod, n), module, n))
    return "\n".join(out)


# ----------------------------------------------------------------------------- chapter analysis
def _library_names(sources: list[str]) -> list[str]:
    """Qualified names (``hypergrad.implicit``) of the library objects these code cells use."""
    aliases: dict[str, str] = {}  # local name -> qualified name under metahpo_lib
    trees = []
    for src in sources:
        # IPython magics and shell escapes are not Python: blank them out
        clean = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
        try:
            trees.append(ast.parse(clean))
        except SyntaxError:
            continue
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
                base = node.module[len(PACKAGE) + 1:] if "." in node.module else ""
                for a in node.names:
                    aliases[a.asname or a.name] = f"{base}.{a.name}".strip(".")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(PACKAGE + ".") and a.asname:
                        aliases[a.asname] = a.name[len(PACKAGE) + 1:]
    used: list[str] = []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in aliases:
                used.append(aliases[node.id])
            elif isinstance(node, ast.Attribute):
                chain, inner = [node.attr], node.value
                while isinstance(inner, ast.Attribute):
                    chain.insert(0, inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id in aliases:
                    for k in range(1, len(chain) + 1):
                        used.append(".".join([aliases[inner.id], *chain[:k]]))
    return list(dict.fromkeys(used))


def _title(nb: dict) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "?"


def _first_sentence(nb: dict) -> str:
    """The first sentence of the first paragraph after the title (the course map's summary)."""
    text = "".join(nb["cells"][0]["source"]) if nb["cells"] else ""
    paras = [p for p in re.split(r"\n\s*\n", text) if p.strip() and not p.lstrip().startswith("#")]
    if not paras:
        return ""
    para = " ".join(paras[0].split())
    m = re.match(r"(.+?[.!?:])(\s|$)", para)
    return (m.group(1) if m else para).replace("|", "\\|")


def _questions(root: Path) -> dict[str, str]:
    """The course map of CONTRIBUTING.md: notebook name -> the question it answers."""
    path = root / "CONTRIBUTING.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    rows = re.findall(r"^\|\s*\d\d\s*\|\s*`(\d\d_\w+)`\s*\|\s*(.+?)\s*\|\s*$", text, flags=re.M)
    return {name: question for name, question in rows}


def _links(names: list[str], documented: dict[str, str]) -> list[str]:
    return [f"{{py:obj}}`{n} <{documented[n]}>`" for n in names if n in documented]


# ----------------------------------------------------------------------------- generation
def _chapter(src: Path, documented: dict[str, str]) -> tuple[dict, list[str]]:
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb["metadata"].pop("widgets", None)  # no widget JavaScript (and no CDN) on the website
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    uses = _links(_library_names(code), documented)
    cells = []
    for cell in nb["cells"]:
        outputs = cell.get("outputs", [])
        live = [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
        if live:
            cell["outputs"] = [o for o in outputs if o not in live]
        cells.append(cell)
        if live:
            cells.append(_markdown(WIDGET_NOTE, after=cell.get("id", str(len(cells)))))
    box = ["```{admonition} This chapter uses\n:class: seealso chapter-uses\n",
           (", ".join(uses) if uses else "no library function") + ".\n",
           f"\nRun it yourself: `notebooks/{src.name}` in JupyterLab (`make lab`). "]
    if (src.parents[1] / "exercises" / src.name).exists():
        box.append(f"Its exercises: {{doc}}`/exercises/{src.stem}` (see {{doc}}`/exercises`).")
    box.append("\n```")
    cells.insert(1, _markdown("".join(box)))
    nb["cells"] = cells
    return nb, uses


def _markdown(source: str, after: str = "") -> dict:
    # a stable id, unique within the page (one widget note after each widget cell)
    return {"cell_type": "markdown", "id": uuid.uuid5(uuid.NAMESPACE_URL, after + source).hex[:12], "metadata": {},
            "source": source}


def _exercise(src: Path) -> dict:
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb["metadata"].pop("widgets", None)
    note = ("```{admonition} An assignment\n:class: note\n"
            f"Open `exercises/{src.name}` in JupyterLab (`make lab`), replace each "
            "`raise NotImplementedError()` with your code and run the self-check below it. "
            f"How grading works: {{doc}}`/exercises`. The lecture: {{doc}}`/chapters/{src.stem}`.\n```")
    nb["cells"].insert(1, _markdown(note))
    return nb


def generate(app, config) -> None:
    """Write the generated sources into the Sphinx source folder (docs/)."""
    docs = Path(app.srcdir)
    root = docs.parent
    for name in GENERATED:
        path = docs / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    layout = api_layout()
    documented = {q: f for page in layout.values() for q, f in page["names"].items()}
    app.env_documented = documented  # read by link_inline_code and resolve_short_names
    app.env_aliases = dict(ALIASES)
    app.env_sections = {m: (f"api/{top}", nodes.make_id(m))
                        for top, page in layout.items() for m, _, _ in page["sections"]}
    (docs / "api").mkdir()
    for top, page in layout.items():
        (docs / "api" / f"{top}.rst").write_text(_api_rst(top, page["sections"]), encoding="utf-8")
    (docs / "chapters").mkdir()
    (docs / "exercises").mkdir()
    questions = _questions(root)
    rows = ["| # | chapter | the question it answers | library | exercises |", "|---|---|---|---|---|"]
    for src in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb, uses = _chapter(src, documented)
        (docs / "chapters" / src.name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
        ex = root / "exercises" / src.name
        if ex.exists():
            (docs / "exercises" / src.name).write_text(json.dumps(_exercise(ex), indent=1), encoding="utf-8")
        title = _title(nb).split("·", 1)[-1].strip()
        mods = list(dict.fromkeys(u.split("`")[1].split(" <")[0].split(".")[0] for u in uses))
        lib = ", ".join(f"{{doc}}`{m} </api/{m}>`" for m in mods if m in layout)
        exercise = f"{{doc}}`exercises </exercises/{src.stem}>`" if ex.exists() else ""
        rows.append(f"| {src.name[:2]} | {{doc}}`{title} </chapters/{src.stem}>` | {questions.get(src.stem) or _first_sentence(nb)} "
                    f"| {lib} | {exercise} |")
    (docs / "_course_map.md").write_text("\n".join(rows) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- inline links
_CALL = re.compile(r"^(?:metahpo_lib\.)?([A-Za-z_][\w.]*?)(?:\(.*\))?$")


def plain_known_problems(app, doctree, docname) -> None:
    """Show the text of a known docstring problem (``|θ|``) as written, not as a red error link."""
    if KNOWN_SEEN:
        for node in list(doctree.findall(nodes.problematic)):
            node.replace_self(nodes.inline(node.astext(), node.astext(), ids=node["ids"]))


def link_inline_code(app, doctree, docname) -> None:
    """In chapter pages, make ``hypergrad.implicit`` (inline code naming an API object) a link."""
    if not docname.startswith(("chapters/", "exercises/")):
        return
    documented = getattr(app, "env_documented", {})
    for lit in list(doctree.findall(nodes.literal)):
        if isinstance(lit.parent, nodes.reference):
            continue
        m = _CALL.match(lit.astext().strip())
        if not m or m.group(1) not in documented:
            continue
        full = documented[m.group(1)]
        page = "api/" + m.group(1).split(".")[0]
        uri = app.builder.get_relative_uri(docname, page) + "#" + full
        ref = nodes.reference("", "", internal=True, refuri=uri, reftitle=full)
        ref += lit.deepcopy()
        lit.replace_self(ref)


def resolve_short_names(app, env, node, contnode):
    """Resolve ``:func:`make_sampler``` written in ``hpo/studies.py`` to ``hpo.make_sampler``.

    A library docstring names an object as its own module sees it; the reference documents it
    where the package exports it (``hypergrad.implicit_default_solve`` for ``default_solve`` in
    ``hypergrad/implicit.py``), and a method's docstring may name an attribute of a base class.
    The one indexed object with that name in the same top-level package is the one meant.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module") or ""
    top = module.split(".")[1] if module.count(".") >= 1 else ""
    if node["reftype"] == "mod":
        full = target if target.startswith(PACKAGE) else f"{module}.{target}"
        if full not in getattr(app, "env_sections", {}):
            return None
        page, anchor = app.env_sections[full]
        uri = app.builder.get_relative_uri(node["refdoc"], page) + "#" + anchor
        return nodes.reference("", "", contnode, internal=True, refuri=uri, reftitle=full)
    objects = env.get_domain("py").objects
    names = {k: k for k, entry in objects.items() if not entry.aliased and "._" not in k} | {a: f for a, f in getattr(app, "env_aliases", {}).items() if f in objects}
    fulls = {f for k, f in names.items() if k == target or k.endswith("." + target)}
    same = {f for f in fulls if f.startswith(f"{PACKAGE}.{top}.")}
    pick = same or fulls
    exported = names.get(f"{PACKAGE}.{top}.{target}")
    if len(pick) > 1 and exported:  # the package's own function beats a method of the same name
        pick = {exported}
    if len(pick) > 1 and node.get("py:class"):  # an attribute of a base class of the current class
        cls = _import(f"{module}.{node['py:class']}")
        bases = {f"{b.__module__}.{b.__qualname__}" for b in getattr(cls, "__mro__", ())}
        pick = {f for f in pick if any(_canonical(f.rsplit(".", 1)[0]) == b for b in bases)}
    if len(pick) != 1:
        return None
    full = pick.pop()
    docname = objects[full].docname
    uri = app.builder.get_relative_uri(node["refdoc"], docname) + "#" + objects[full].node_id
    return nodes.reference("", "", contnode, internal=True, refuri=uri, reftitle=full)


def _import(dotted: str):
    """The object named ``a.b.C`` (module then attributes), or None."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p, None)
        return obj
    return None


def _canonical(dotted: str) -> str:
    obj = _import(dotted)
    return f"{obj.__module__}.{obj.__qualname__}" if inspect.isclass(obj) else dotted


class _KnownProblems(logging.Filter):
    def filter(self, record) -> bool:
        where = str(getattr(record, "location", "") or "")
        text = record.getMessage()
        if any(w in where and m in text for w, m in KNOWN_DOCSTRING_PROBLEMS):
            KNOWN_SEEN.append(f"{where}: {text}")
            return False
        return True


KNOWN_SEEN: list[str] = []


def report_known(app, exc) -> None:
    if KNOWN_SEEN:
        print(f"metahpo_site: {len(set(KNOWN_SEEN))} known docstring problem(s) let through "
              "(see KNOWN_DOCSTRING_PROBLEMS in docs/_ext/metahpo_site.py)")


def setup(app):
    for handler in logging.getLogger("sphinx").handlers:
        handler.filters.insert(0, _KnownProblems())
    app.connect("config-inited", generate)
    app.connect("doctree-resolved", link_inline_code)
    app.connect("doctree-resolved", plain_known_problems)
    app.connect("missing-reference", resolve_short_names)
    app.connect("build-finished", report_known)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
