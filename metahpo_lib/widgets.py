"""Slider widgets for the notebooks: a static figure for a reader without a kernel, live sliders
for a learner who runs the cell (every chapter; notebook 00 says how they work).

:func:`sliders` draws the figure once at the sliders' starting values and marks it as a static
picture, then shows the live sliders (``ipywidgets.interactive``). A notebook opened but not yet
run shows that static figure and one plain sentence where the widget goes, instead of the widget's
``interactive(children=(FloatSlider(...`` fallback text.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt

__all__ = ["STATIC_NOTE", "FALLBACK_TEXT", "sliders"]

#: written in the corner of the static figure
STATIC_NOTE = "static picture at the starting values; run this cell for the sliders"
#: what an unrun notebook shows where the live sliders go
FALLBACK_TEXT = "Sliders appear here when you run this cell (the figure above is a static picture)."


class _LiveSliders:
    """An ``ipywidgets.interactive`` whose plain-text form is :data:`FALLBACK_TEXT`."""

    def __init__(self, widget):
        self.widget = widget

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data or {})
        data["text/plain"] = FALLBACK_TEXT
        return (data, bundle[1]) if isinstance(bundle, tuple) else data

    def __repr__(self) -> str:
        return FALLBACK_TEXT


def _check_controls(draw, controls) -> None:
    if not callable(draw):
        raise TypeError(f"draw must be a function of the slider values, got {type(draw).__name__}")
    if not controls:
        raise ValueError("sliders needs at least one control, e.g. x=ipywidgets.FloatSlider(min=0, max=1)")
    for name, control in controls.items():
        if not hasattr(control, "value"):
            raise TypeError(f"control {name!r} must be an ipywidgets control with a .value (e.g. FloatSlider), "
                            f"got {type(control).__name__}")


def sliders(draw: Callable[..., None], **controls):
    """Show ``draw(**values)`` once as a static figure at the controls' starting values, then live
    sliders that redraw it (every chapter's widget cell).

    ``draw`` makes one matplotlib figure from keyword arguments named like ``controls`` and does
    not call ``plt.show()``. Returns None (so a cell ending with it prints nothing more).

    >>> import ipywidgets
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from metahpo_lib.widgets import sliders
    >>> def draw(slope):
    ...     plt.plot([0, 1], [0, slope])
    >>> import contextlib, io
    >>> shown = io.StringIO()
    >>> with contextlib.redirect_stdout(shown):  # outside Jupyter the widget prints its plain text
    ...     sliders(draw, slope=ipywidgets.FloatSlider(value=1.0, min=-2, max=2))
    >>> "Sliders appear here when you run this cell" in shown.getvalue()
    True
    >>> plt.close("all")
    """
    import ipywidgets
    from IPython.display import display

    _check_controls(draw, controls)
    draw(**{name: control.value for name, control in controls.items()})
    # just above the figure's top edge: notebooks save figures with a tight bounding box, so the
    # note widens the picture instead of covering a title, a label or a legend
    plt.gcf().text(0.995, 1.0, STATIC_NOTE, ha="right", va="bottom", fontsize=7, color="0.45")
    plt.show()

    def live(**values):
        draw(**values)
        plt.show()

    display(_LiveSliders(ipywidgets.interactive(live, **controls)))
