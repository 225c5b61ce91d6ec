"""Regenerate docs/screenshots/canvas.png: the main window with the example sweep graph.

Run under Xvfb (`xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
scripts/screenshot_canvas.py`) or offscreen (`QT_QPA_PLATFORM=offscreen .venv/bin/python
scripts/screenshot_canvas.py`). Uses a throw-away data directory, so no user settings change.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots" / "canvas.png"


def main() -> int:
    os.environ.setdefault("TUNEGRAPH_HOME", tempfile.mkdtemp(prefix="tunegraph-shot-"))
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import QtCore, QtWidgets

    from app.duplicate import deep_duplicate
    from app.main_window import MainWindow
    from app.settings_store import SettingsStore
    from app.theme import apply_theme

    app = QtWidgets.QApplication(["tunegraph"])
    apply_theme(app)
    window = MainWindow(settings=SettingsStore(Path(os.environ["TUNEGRAPH_HOME"]) / "ui.ini"))
    window.resize(1600, 980)
    window.show()
    window.open_initial()
    canvas = window.canvas
    # a third module duplicated from the first with a larger LoRA rank: shows the lineage line
    copy = deep_duplicate(canvas, canvas.node_by_name("support lr 1e-3"))
    lora = copy.connected_input_nodes()[copy.get_input("lora_config")][0]
    canvas.set_param(lora, "r", 16)
    canvas.set_param(lora, "alpha", 32)
    canvas.rename(copy, "support r16")
    canvas.recompile()
    canvas.select([canvas.node_by_name("support chats")])
    preview = window.preview
    deadline = QtCore.QDeadlineTimer(60_000)
    while (preview.timer.isActive() or preview.process.is_running()) and not deadline.hasExpired():
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
    canvas.select([copy])
    window.fit_view()
    for _ in range(20):
        app.processEvents()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(OUT))
    print(f"wrote {OUT}")
    canvas.graph.undo_stack().setClean()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
