"""Sphinx configuration of the course website (``make site``; see docs/README.md)."""

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

project = "metahpo"
author = "the metahpo authors"
copyright = "the metahpo authors, MIT licence"
html_title = "metahpo · meta-learning for HPO"

extensions = [
    "myst_nb",                  # notebooks and MyST markdown pages
    "sphinx.ext.autodoc",       # the API reference, from the docstrings (their >>> examples included)
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",   # MathJax 3 from a PyPI package, copied into _static: no CDN
    "metahpo_site",             # docs/_ext: pages generated from notebooks/, exercises/, metahpo_lib
]

# the committed notebooks are shown as they are: nothing is executed
nb_execution_mode = "off"
nb_ipywidgets_js = {}           # no widget JavaScript from a CDN; widgets get a static note instead
nb_output_stderr = "remove"     # progress bars and warnings of the run that produced the outputs
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "README.md", "_course_map.md", "screenshot-*.png", "**/.ipynb_checkpoints"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
add_module_names = False

# every cross-reference must resolve (the build runs with -W): only names outside the course's
# library, which have no page here (no intersphinx: the build is offline), are let through
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|optuna|sklearn|pandas|matplotlib|collections|typing|types|abc|os|pathlib"
               r"|concurrent|multiprocessing|random|nn|jupyter_client|nbformat|nbclient|functools|dataclasses|enum|argparse)(\..*)?"),
    (r"py:.*", r"(Tensor|Callable|Iterable|Iterator|Sequence|Mapping|Any|Path|Generator|Number|np\.ndarray"
               r"|Module|NamedTuple|optional|callable|array-like|int|float|str|bool|dict|list|tuple|None)"),
]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["metahpo.css"]
html_theme_options = {
    "repository_url": "",
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
# an explicit colour mode: without one pydata-sphinx-theme logs "invalid theme mode" to the console
html_context = {"default_mode": "light"}
