"""Regenerate docs/screenshots/run_panel.png and compare.png from real runs of the example.

Trains the example sweep for real (scripts/example_runs.py: `make demo`'s two tiny-llama runs on
the CPU, about a minute on 2 cores) in a throw-away data folder, then opens the app's main window
on that folder and shoots
- run_panel.png: the run panel with both completed runs, "support lr 5e-3" expanded (its real loss,
  eval loss, grad-norm and learning-rate curves);
- compare.png: the two runs compared (curves, config diff: learning rate 1e-3 vs 5e-3).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_runs.py
    .venv/bin/python scripts/screenshot_runs.py --home DIR   # train in / reuse DIR, keep it
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"

from scripts.example_runs import shoot_main  # noqa: E402

EXPANDED = "support lr 5e-3"


def settle(app, seconds: float, until=None) -> bool:
    """Process events for `seconds` or until `until()` holds; returns whether it held."""
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        if until and until():
            return True
        time.sleep(0.02)
    return bool(until and until())


def shoot(home: Path, runs: list[dict]) -> None:
    os.environ["TUNEGRAPH_HOME"] = str(home)
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import QtCore, QtWidgets

    from app.main_window import MainWindow
    from app.settings_store import SettingsStore
    from app.theme import apply_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
    apply_theme(app)
    window = MainWindow(settings=SettingsStore(home / "ui.ini"), offer_engine_setup=False)
    window.resize(1500, 1040)
    window.show()
    views = window.run_views
    ids = [r["id"] for r in runs]
    if not settle(app, 20, lambda: all(i in views.panel.rows for i in ids)):
        raise SystemExit("the run panel did not list the example runs")
    vertical = QtCore.Qt.Orientation.Vertical
    views.panel_dock.raise_()
    window.resizeDocks([views.panel_dock], [900], vertical)  # the panel gets the window's height
    expanded = next(r["id"] for r in runs if r["name"] == EXPANDED)
    views.panel.rows[expanded].set_expanded(True)
    views.panel.split.setSizes([60, 2000])  # nothing is active: History gets the room
    settle(app, 3.0)
    OUT.mkdir(parents=True, exist_ok=True)
    views.panel.grab().save(str(OUT / "run_panel.png"))

    compare = views.open_compare(ids)
    window.resizeDocks([views.views_dock], [900], vertical)
    steps = [r["step"] for r in runs]
    if not settle(app, 20, lambda: bool(compare.stats) and compare.point_counts() == steps):
        raise SystemExit(f"the compare view did not draw {steps} points")
    settle(app, 1.0)
    views.tabs.grab().save(str(OUT / "compare.png"))
    window.shutdown()
    window.close()
    print(f"wrote {OUT / 'run_panel.png'} and {OUT / 'compare.png'}")


def main(argv: list[str] | None = None) -> int:
    return shoot_main(shoot, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
