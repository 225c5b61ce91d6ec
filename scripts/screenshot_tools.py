"""Regenerate docs/screenshots/chat_side_by_side.png and docs/screenshots/library.png.

Builds the tiny test model, two runs with different adapters ("support bot r8", "support bot r16")
and exports them (adapter ZIP + Q4_K_M GGUF bundle, the first also merged), all in a throw-away
data directory; then two models answer the same prompt side by side and the library lists the
artifacts. Needs the training stack (torch, peft) for the export; takes about a minute.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_tools.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
RUNS = (("20261122-101500-a1b2c3", "support bot r8", 0, True),
        ("20261122-103000-d4e5f6", "support bot r16", 7, False))


def export_runs(home: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from engine.events import EventLog
    from engine.export.pipeline import export_run
    from engine.spec import ExportSpec
    from engine.models.tiny import build_tiny_model
    from tests.test_export import make_run

    base = home / "tiny-base"
    build_tiny_model(base)
    for run_id, name, seed, merged in RUNS:
        run_dir = make_run(home / "runs" / run_id, base, name=name)
        if seed:  # a different adapter, so the two columns answer differently
            weights = run_dir / "adapter" / "adapter_model.safetensors"
            tensors = load_file(weights)
            torch.manual_seed(seed)
            for key, value in tensors.items():
                if "lora_B" in key:
                    tensors[key] = torch.randn_like(value) * 0.08
            save_file(tensors, weights)
        with EventLog(run_dir / "events.jsonl") as log:
            export_run(run_dir, ExportSpec(gguf=True, quant="Q4_K_M", merged=merged), log)


def wait_for(signal, ms: int = 120000) -> None:
    from PySide6 import QtCore

    loop = QtCore.QEventLoop()
    signal.connect(loop.quit)
    QtCore.QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> int:
    home = Path(os.environ.setdefault("TUNEGRAPH_HOME", tempfile.mkdtemp(prefix="tg-shot-")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    export_runs(home)

    from PySide6 import QtWidgets

    from app.chat_pane import ChatPane
    from app.library_tab import LibraryTab
    from app.theme import apply_theme
    from app.tools import gguf_of_run

    app = QtWidgets.QApplication(["tunegraph"])
    apply_theme(app)
    OUT.mkdir(parents=True, exist_ok=True)

    pane = ChatPane(n_threads=1)
    pane.resize(1280, 620)
    pane.show()
    for run_id, *_ in RUNS:
        column = pane.add_model(gguf_of_run(run_id))
        wait_for(column.idle)
    pane.system.setText("You are a friendly support agent for a broadband provider.")
    pane.temperature.setValue(0.0)
    pane.max_tokens.setValue(40)
    pane.save_set("support basics", ["Hello, can you help me with my bill?",
                                     "My router keeps restarting.",
                                     "What is the price of the new plan?"])
    for prompt in ("Hello, can you help me with my bill?", "My router keeps restarting."):
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
