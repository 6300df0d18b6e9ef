"""The slider helper: a static figure plus live sliders whose plain-text form is one sentence."""

import contextlib
import io

import ipywidgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from metahpo_lib import widgets  # noqa: E402


def test_static_figure_then_fallback_sentence():
    drawn = []

    def draw(a, n):
        drawn.append((a, n))
        plt.plot([0, 1], [0, a])

    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        assert widgets.sliders(draw, a=ipywidgets.FloatSlider(value=0.5), n=ipywidgets.IntSlider(value=3)) is None
    assert drawn[0] == (0.5, 3)                      # the static picture, at the starting values
    assert widgets.FALLBACK_TEXT in shown.getvalue()
    assert "interactive(children" not in shown.getvalue()
    plt.close("all")


def test_bad_input():
    with pytest.raises(TypeError, match="draw must be a function"):
        widgets.sliders(3, a=ipywidgets.FloatSlider())
    with pytest.raises(ValueError, match="at least one control"):
        widgets.sliders(lambda: None)
    with pytest.raises(TypeError, match="control 'a' must be an ipywidgets control"):
        widgets.sliders(lambda a: None, a=0.5)


def test_committed_notebooks_show_no_widget_fallback_text():
    """An opened, not yet run notebook shows the static picture and one sentence, never
    ``interactive(children=(FloatSlider(...``."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bad = []
    for path in sorted([*root.glob("notebooks/*.ipynb"), *root.glob("solutions/*.ipynb")]):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if "application/vnd.jupyter.widget-view+json" in data:
                    text = "".join(data.get("text/plain", ""))
                    if text != widgets.FALLBACK_TEXT:
                        bad.append(f"{path.name} cell {i}: {text[:60]!r}")
    assert not bad, "widget cells not drawn with metahpo_lib.widgets.sliders:\n" + "\n".join(bad)
