"""A run's event lines with a level or kind filter, a search box and "Save log as…" (the run
detail's Logs and Events tabs)."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtGui, QtWidgets

MAX_EVENTS = 20_000  # the Events tab keeps the latest ones (a long run logs 2 per step)
LEVELS = ("all levels", "debug", "info", "warning", "error")


class EventView(QtWidgets.QWidget):
    """Event lines with a level or kind filter, a search box and "Save log as…"."""

    def __init__(self, kinds: tuple[str, ...] | None, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.kinds = kinds  # None: every kind (the Events tab)
        self.events: list[dict] = []
        bar = QtWidgets.QHBoxLayout()
        self.filter = QtWidgets.QComboBox()
        self.filter.addItems(
            LEVELS
            if kinds
            else (
                "all kinds",
                "status",
                "metric",
                "eval",
                "progress",
                "log",
                "sample",
                "artifact",
                "error",
                "schedule",
            )
        )
        self.search = QtWidgets.QLineEdit()
        self.search.setPlaceholderText("Search…")
        self.search.setClearButtonEnabled(True)
        self.save = QtWidgets.QPushButton("Save log as…")
        bar.addWidget(self.filter)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.save)
        self.text = QtWidgets.QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.text)
        self.filter.currentIndexChanged.connect(self.render)
        self.search.textChanged.connect(self.render)
        self.save.clicked.connect(self.ask_save)

    def add(self, events: list[dict]) -> None:
        new = [e for e in events if self.kinds is None or e["kind"] in self.kinds]
        if not new:
            return
        self.events.extend(new)
        if len(self.events) > MAX_EVENTS:
            del self.events[: len(self.events) - MAX_EVENTS]
            self.render()
            return
        lines = self.lines(new)  # append only the new lines: no full re-render per update
        if lines:
            bar = self.text.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 2
            self.text.appendPlainText("\n".join(lines))
            if at_end:
                bar.setValue(bar.maximum())

    def lines(self, events: list[dict] | None = None) -> list[str]:
        from engine.store.queries import format_event  # not at import: keeps the app's start fast

        choice = self.filter.currentText()
        needle = self.search.text().strip().lower()
        out = []
        for event in self.events if events is None else events:
            if self.kinds and choice != LEVELS[0]:
                level = event.get("level") or ("error" if event["kind"] == "error" else "info")
                if level != choice:
                    continue
            elif not self.kinds and not choice.startswith("all") and event["kind"] != choice:
                continue
            line = format_event(event)
            if needle and needle not in line.lower():
                continue
            out.append(line)
        return out

    def render(self) -> None:
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.text.setPlainText("\n".join(self.lines()))
        if at_end:
            bar.setValue(bar.maximum())

    def save_to(self, path: Path | str) -> None:
        Path(path).write_text("\n".join(self.lines()) + "\n", encoding="utf-8")

    def ask_save(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Save log as", "run.log", "Log files (*.log *.txt)"
        )
        if path:
            self.save_to(path)
