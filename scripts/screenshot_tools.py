"""Regenerate docs/screenshots/chat_side_by_side.png and docs/screenshots/library.png from real
runs of the example.

Trains and exports the example sweep for real (scripts/example_runs.py: `make demo`'s two
tiny-llama runs on the CPU, each exported as adapter ZIP and Q4_K_M GGUF bundle; about a minute on
2 cores) in a throw-away data folder, then
- chat_side_by_side.png: the chat pane with the two exported GGUFs answering the same two
  held-out prompts of the runs' samples, greedy, with the dataset's system prompt;
- library.png: the library tab listing the artifacts those exports registered.

The tiny model starts from random weights and trains for one epoch, so its answers are not
sentences: the picture shows the pane with what these runs really answer.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_tools.py
    .venv/bin/python scripts/screenshot_tools.py --home DIR   # train in / reuse DIR, keep it
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
DATASET = ROOT / "resources" / "datasets" / "support_chats.jsonl"

from scripts.example_runs import shoot_main  # noqa: E402


def wait_for(signal, ms: int = 120000) -> None:
    from PySide6 import QtCore

    loop = QtCore.QEventLoop()
    signal.connect(loop.quit)
    QtCore.QTimer.singleShot(ms, loop.quit)
    loop.exec()


def system_prompt() -> str:
    """The system message the example's dataset trains with (its first row's)."""
    with DATASET.open(encoding="utf-8") as f:
        first = json.loads(f.readline())
    return next(m["content"] for m in first["messages"] if m["role"] == "system")


def shoot(home: Path, runs: list[dict]) -> None:
    os.environ["TUNEGRAPH_HOME"] = str(home)
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import QtWidgets

    from app.chat_pane import ChatPane
    from app.library_tab import LibraryTab
    from app.theme import apply_theme
    from app.tools import gguf_of_run

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
    apply_theme(app)
    OUT.mkdir(parents=True, exist_ok=True)

    pane = ChatPane(n_threads=1)
    pane.resize(1280, 620)
    pane.show()
    for run in runs:
        gguf = gguf_of_run(run["id"])
        if gguf is None:
            raise SystemExit(f"run {run['name']} exported no GGUF")
        column = pane.add_model(gguf)
        wait_for(column.idle)
    pane.system.setText(system_prompt())
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(40)
    prompts = [s["prompt"] for s in runs[0]["samples"]]  # held-out rows of the dataset
    pane.save_set("held-out samples", prompts)
    for prompt in prompts[:2]:
        pane.ask(prompt)
        wait_for(pane.all_idle)
    pane.status.setText("")
    app.processEvents()
    pane.grab().save(str(OUT / "chat_side_by_side.png"))
    pane.close_all()

    library = LibraryTab()
    library.resize(1100, 330)
    library.show()
    library.table.selectRow(0)
    app.processEvents()
    library.grab().save(str(OUT / "library.png"))
    library.shutdown()
    print(f"wrote {OUT / 'chat_side_by_side.png'} and {OUT / 'library.png'}")


def main(argv: list[str] | None = None) -> int:
    return shoot_main(shoot, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
