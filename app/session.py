"""The session that survives a quit or a crash: the canvas autosaved to `<data dir>/session.json`.

Every edit (undo-stack change, property change, new path) restarts a short timer; when it fires
the graph, its file path and whether it has unsaved changes are written atomically (a temporary
file in the same folder, flushed to disk, then renamed over the old one), so a crash at any moment
leaves either the previous draft or the new one, never half a file. At the next start
`MainWindow.open_initial` reads the draft back (`read_draft`). The quit prompt's line about runs
that keep training counts them in the store (`live_run_count`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore

SESSION_FILE = "session.json"
SESSION_VERSION = 1
AUTOSAVE_DELAY_MS = 400


@dataclass
class Draft:
    """What the last session left: the graph dict, its file (None: Untitled), whether it was
    opened as an example, and whether it had changes not saved to that file."""

    graph: dict
    path: Path | None
    template: bool
    dirty: bool
    saved_at: float


def write_draft(file: Path, draft: Draft) -> None:
    """Write `draft` to `file` atomically (temporary file, fsync, rename)."""
    data = {
        "version": SESSION_VERSION,
        "path": str(draft.path) if draft.path else None,
        "template": draft.template,
        "dirty": draft.dirty,
        "saved_at": draft.saved_at,
        "graph": draft.graph,
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def read_draft(file: Path) -> Draft | None:
    """The draft in `file`, or None when there is none or it cannot be read (a session file
    from another version, or damaged by hand, is ignored rather than blocking the start)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != SESSION_VERSION:
        return None
    graph = data.get("graph")
    if not isinstance(graph, dict):
        return None
    path = data.get("path")
    return Draft(
        graph=graph,
        path=Path(path) if path else None,
        template=bool(data.get("template")),
        dirty=bool(data.get("dirty")),
        saved_at=float(data.get("saved_at") or 0),
    )


class Autosave(QtCore.QObject):
    """Writes the canvas to `file` shortly after every edit, once `start()` was called (so the
    empty canvas of a window being built never overwrites the last session's draft)."""

    written = QtCore.Signal(str)  # the file, after each write

    def __init__(self, canvas, file: Path, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.canvas = canvas
        self.file = Path(file)
        self.active = False
        self.timer = QtCore.QTimer(self, singleShot=True, interval=AUTOSAVE_DELAY_MS)
        self.timer.timeout.connect(self.write)
        stack = canvas.graph.undo_stack()
        stack.indexChanged.connect(self.schedule)
        stack.cleanChanged.connect(self.schedule)
        canvas.graph.property_changed.connect(self.schedule)
        canvas.path_changed.connect(self.schedule)

    def start(self) -> None:
        """Begin autosaving (and save the current state soon)."""
        self.active = True
        self.schedule()

    def schedule(self, *_args) -> None:
        if self.active:
            self.timer.start()

    def write(self) -> None:
        """Save now (the timer's slot; also called on quit)."""
        self.timer.stop()
        canvas = self.canvas
        draft = Draft(
            graph=canvas.to_dict(),
            path=canvas.path,
            template=canvas.is_template,
            dirty=canvas.dirty,
            saved_at=time.time(),
        )
        try:
            write_draft(self.file, draft)
        except OSError as err:  # a full disk must not take the window down; the next edit retries
            import sys

            print(f"tunegraph: could not autosave to {self.file}: {err}", file=sys.stderr)
            return
        self.written.emit(str(self.file))

    def stop(self) -> None:
        """Write any pending change, then stop (the window is closing)."""
        if self.active and self.timer.isActive():
            self.write()
        self.active = False
        self.timer.stop()


def live_run_count(store_path: Path | str | None = None) -> int:
    """How many runs are queued or in progress in the store (0 when it cannot be read)."""
    import sqlite3

    from engine.errors import TunegraphError
    from engine.events import LIVE_STATES
    from engine.store.index import Store

    try:
        with Store(store_path) as store:
            return len(store.list_runs(",".join(LIVE_STATES)))
    except (TunegraphError, OSError, sqlite3.Error):
        return 0


def quit_message(dirty: bool, live: int, name: str) -> str:
    """The quit prompt's text: what happens to the unsaved graph and to the live runs."""
    lines = []
    if dirty:
        lines.append(
            f"“{name}” has unsaved changes. They come back the next time you open Tunegraph; "
            "Save writes them to the graph file now."
        )
    if live:
        runs = "1 run keeps" if live == 1 else f"{live} runs keep"
        lines.append(
            f"{runs} training in the background. Open Tunegraph again to follow them, or "
            "cancel them from the Runs tab first."
        )
    return "\n\n".join(lines)
