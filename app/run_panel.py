"""The run panel: live runs (Active) above finished ones (History), one row per run.

A row shows the name, a coloured status pill with an icon, a progress bar, "Epoch X/Y", the latest
loss, ETA, elapsed time and the GPU, plus the buttons the run's state allows. Rows expand to show
the run's detail (several at once, each updating on its own). Every change arrives through the
`RunBridge`; every command leaves through it, so nothing here waits on the store or a worker.

The "Stop" button (control action `stop`) reads "Stop and keep best" when the run has an eval
split: the worker then delivers the checkpoint with the lowest eval loss (`stop_button`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6 import QtCore, QtWidgets

from app.run_bridge import RunBridge
from app.tracking_actions import TENSORBOARD, TensorBoardButton, TensorBoards
from engine.events import LIVE_STATES
from engine.formatting import format_duration

# state -> (colour, icon glyph); one of each per state
STATE_STYLE: dict[str, tuple[str, str]] = {
    "queued": ("#7a8290", "◷"),
    "starting": ("#4f8fd6", "◌"),
    "training": ("#2f9e6e", "▶"),
    "evaluating": ("#2aa3a3", "◎"),
    "exporting": ("#7d6bd6", "⇪"),
    "paused": ("#c79a2e", "❚❚"),
    "retrying": ("#d9822b", "↻"),
    "completed": ("#3f9b4f", "✓"),
    "failed": ("#d0473f", "✕"),
    "cancelled": ("#8a6f6f", "⊘"),
    "refused": ("#a3475f", "⊗"),
    None: ("#60656e", "…"),
}
ACTIVE_STATES = set(LIVE_STATES) | {"paused", None}
CANCEL_TEXT = (
    "Cancel “{name}”?\n\nCancelling is not reversible: the worker is stopped at once, "
    "partial metrics are kept, and no adapter is saved. Pause keeps a checkpoint "
    "instead."
)
BUTTONS = {  # button -> states in which it shows (the text of all but "Stop", see stop_button)
    "Pause": ("starting", "training"),
    "Stop": ("training",),
    "Resume": ("paused", "failed"),
    "Cancel": tuple(LIVE_STATES) + ("paused",),
    "Test in chat": ("completed",),
    "Continue": ("completed",),
    "Export": ("completed",),
    "Serve": ("completed",),
    "Push to Hub…": ("completed",),
}


def epoch_text(run: dict) -> str:
    """ "Epoch X/Y" (1-based current epoch of the planned total), or "" before any progress."""
    epochs = ((run.get("spec") or {}).get("training") or {}).get("epochs")
    epoch, step, max_steps = run.get("epoch"), run.get("step"), run.get("max_steps")
    if epoch is None:
        return ""
    total = epochs
    if step and max_steps and epoch:
        total = max_steps * epoch / step  # the real plan when max_steps cuts the epochs short
    current = min(int(epoch) + 1, max(int(round(total or 1)), 1))
    return f"Epoch {current}/{max(int(round(total or 1)), 1)}"


def stop_button(run: dict) -> tuple[str, str]:
    """The Stop button's text and tooltip for a run: with an eval split the worker delivers the
    checkpoint with the lowest eval loss, so it says "Stop and keep best"; without one, "Stop"
    (the current weights are delivered)."""
    split = ((run.get("spec") or {}).get("training") or {}).get("eval_split")
    if split:
        return (
            "Stop and keep best",
            "End training now and deliver the adapter of the checkpoint with the lowest eval "
            "loss so far (the current weights are evaluated first and compete too).",
        )
    return (
        "Stop",
        "End training now and deliver the adapter with the current weights (this run has no "
        "eval split to choose a best checkpoint by).",
    )


def attempts_text(run: dict) -> tuple[str, str]:
    """("attempt N", one line per earlier attempt: when and why it ended) once a run has been
    started more than once (a crash retried, a resume); ("", "") before that."""
    attempts = run.get("attempts") or []
    if len(attempts) < 2:
        return "", ""
    lines = []
    for i, attempt in enumerate(attempts, 1):
        start = time.strftime("%H:%M:%S", time.localtime(attempt["started_at"]))
        if attempt["ended_at"] is None:
            lines.append(f"{i}. {start}, running")
        else:
            end = time.strftime("%H:%M:%S", time.localtime(attempt["ended_at"]))
            lines.append(f"{i}. {start}–{end}: {attempt['reason']}")
    return f"attempt {len(attempts)}", "\n".join(lines)


def gpu_text(run: dict) -> str:
    device = run.get("device") or ((run.get("spec") or {}).get("resources") or {}).get("device")
    hold = run.get("hold")
    if hold and hold.get("gib"):
        return f"{device or 'GPU ' + str(hold['gpu'])} · {hold['gib']:.1f} GiB"
    return device or "—"


def elapsed(run: dict, now: float | None = None) -> float | None:
    start = run.get("started_at")
    if start is None:
        return None
    end = run.get("finished_at") if run.get("state") not in ACTIVE_STATES else None
    return (end or now or time.time()) - start


class StatusPill(QtWidgets.QLabel):
    """A rounded, coloured label: icon and state name."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.state: str | None = "?"
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setFixedWidth(118)
        self.set_state(None)

    def set_state(self, state: str | None) -> None:
        if state == self.state:
            return
        self.state = state
        colour, icon = STATE_STYLE.get(state, STATE_STYLE[None])
        self.setText(f"{icon}  {state or 'new'}")
        self.setStyleSheet(
            f"QLabel {{ background: {colour}; color: white; border-radius: 9px;"
            " padding: 2px 10px; font-weight: bold; }"
        )


def confirm_cancel(parent: QtWidgets.QWidget, name: str) -> bool:
    """Ask before cancelling (not reversible). Tests replace `RunPanel.confirm`."""
    box = QtWidgets.QMessageBox(
        QtWidgets.QMessageBox.Icon.Warning,
        "Cancel run",
        CANCEL_TEXT.format(name=name),
        parent=parent,
    )
    yes = box.addButton("Cancel run", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Keep running", QtWidgets.QMessageBox.ButtonRole.RejectRole)
    box.exec()
    return box.clickedButton() is yes


def ask_epochs(parent: QtWidgets.QWidget, name: str) -> float | None:
    epochs, ok = QtWidgets.QInputDialog.getDouble(
        parent, "Continue run", f"Train “{name}” for how many more epochs?", 1.0, 0.1, 100.0, 1
    )
    return epochs if ok else None


class RunRow(QtWidgets.QFrame):
    """One run: a summary line, and an expandable detail below it."""

    action = QtCore.Signal(str, str)  # button text, run id
    openRequested = QtCore.Signal(str)  # noqa: N815

    def __init__(
        self,
        run: dict,
        detail_factory: Callable | None = None,
        parent: QtWidgets.QWidget | None = None,
    ):
        super().__init__(parent)
        self.run_id = run["id"]
        self.run: dict = {}
        self.detail_factory = detail_factory
        self.detail: QtWidgets.QWidget | None = None
        self.setObjectName("runRow")
        self.setStyleSheet("QFrame#runRow { border-bottom: 1px solid #3a3e44; }")
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(4, 3, 4, 3)
        outer.setSpacing(2)
        line = QtWidgets.QHBoxLayout()
        line.setSpacing(8)
        outer.addLayout(line)
        self.expand = QtWidgets.QToolButton()
        self.expand.setCheckable(True)
        self.expand.setArrowType(QtCore.Qt.ArrowType.RightArrow)
        self.expand.setAutoRaise(True)
        self.expand.toggled.connect(self.set_expanded)
        self.name = QtWidgets.QLabel()
        self.name.setMinimumWidth(140)
        self.name.setStyleSheet("font-weight: bold;")
        self.pill = StatusPill()
        self.progress = QtWidgets.QProgressBar()
        self.progress.setFixedWidth(140)
        self.progress.setTextVisible(True)
        self.epoch = QtWidgets.QLabel()
        self.loss = QtWidgets.QLabel()
        self.eta = QtWidgets.QLabel()
        self.elapsed = QtWidgets.QLabel()
        self.gpu = QtWidgets.QLabel()
        self.attempts = QtWidgets.QLabel()
        self.attempts.setStyleSheet("color: #d9a45b;")
        for w, width in (
            (self.epoch, 74),
            (self.loss, 84),
            (self.eta, 90),
            (self.elapsed, 104),
            (self.gpu, 120),
        ):
            w.setMinimumWidth(width)
        for w in (
            self.expand,
            self.name,
            self.pill,
            self.progress,
            self.epoch,
            self.loss,
            self.eta,
            self.elapsed,
            self.gpu,
            self.attempts,
        ):
            line.addWidget(w)
        line.addStretch(1)
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        for text in BUTTONS:
            button = QtWidgets.QPushButton(text)
            button.setAutoDefault(False)
            button.clicked.connect(lambda _=False, t=text: self.action.emit(t, self.run_id))
            line.addWidget(button)
            self.buttons[text] = button
        self.tensorboard = TensorBoardButton(lambda: self.action.emit(TENSORBOARD, self.run_id))
        line.addWidget(self.tensorboard)
        self.message = QtWidgets.QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #e08a80;")
        self.message.hide()
        outer.addWidget(self.message)
        self.update_run(run)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.openRequested.emit(self.run_id)
        super().mouseDoubleClickEvent(event)

    def update_run(self, run: dict) -> None:
        self.run = run
        state = run.get("state")
        self.name.setText(run.get("name") or run["id"])
        self.name.setToolTip(f"{run['id']}\n{run.get('run_dir') or ''}")
        self.pill.set_state(state)
        step, max_steps = run.get("step") or 0, run.get("max_steps")
        if max_steps:
            self.progress.setRange(0, max_steps)
        else:  # unknown yet: busy while live, empty (or full when completed) once finished
            self.progress.setRange(0, 0 if state in ACTIVE_STATES else 1)
        if max_steps:
            self.progress.setValue(min(step, max_steps))
            self.progress.setFormat(f"{step}/{max_steps}")
        elif state not in ACTIVE_STATES:
            self.progress.setValue(1 if state == "completed" else 0)
            self.progress.setFormat("")
        self.epoch.setText(epoch_text(run))
        loss = (run.get("metrics") or {}).get("loss")
        self.loss.setText(f"loss {loss:.4f}" if loss is not None else "loss —")
        live = state in ACTIVE_STATES
        self.eta.setText(f"ETA {format_duration(run.get('eta_s'))}" if live else "")
        self.gpu.setText(gpu_text(run))
        tried, history = attempts_text(run)
        self.attempts.setText(tried)
        self.attempts.setToolTip(history)
        self.attempts.setVisible(bool(tried))
        self.tick()
        for text, states in BUTTONS.items():
            self.buttons[text].setVisible(state in states)
        self.tensorboard.update_run(run)
        label, tip = stop_button(run)
        self.buttons["Stop"].setText(label)
        self.buttons["Stop"].setToolTip(tip)
        error = run.get("error") or {}
        note = run.get("reason") if state in ("failed", "refused", "retrying") else None
        warnings = run.get("warnings") or []
        text = "; ".join(filter(None, [error.get("message") or note] + list(warnings)))
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def tick(self, now: float | None = None) -> None:
        self.elapsed.setText(f"elapsed {format_duration(elapsed(self.run, now))}")

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def set_expanded(self, on: bool) -> None:
        self.expand.setArrowType(
            QtCore.Qt.ArrowType.DownArrow if on else QtCore.Qt.ArrowType.RightArrow
        )
        if on and self.detail is None and self.detail_factory is not None:
            self.detail = self.detail_factory(self.run_id)
            self.detail.setMinimumHeight(520)
            self.layout().addWidget(self.detail)
        elif not on and self.detail is not None:
            self.detail.close_detail()
            self.detail.deleteLater()
            self.detail = None
        if self.expand.isChecked() != on:
            self.expand.setChecked(on)

    def close_row(self) -> None:
        if self.detail is not None:
            self.detail.close_detail()


class _Section(QtWidgets.QWidget):
    def __init__(self, title: str):
        super().__init__()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.header = QtWidgets.QLabel(title)
        self.header.setStyleSheet("font-weight: bold; padding: 4px; background: #2a2d32;")
        self.title = title
        layout.addWidget(self.header)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        self.body = QtWidgets.QWidget()
        self.rows = QtWidgets.QVBoxLayout(self.body)
        self.rows.setContentsMargins(0, 0, 0, 0)
        self.rows.setSpacing(0)
        self.rows.addStretch(1)
        scroll.setWidget(self.body)
        layout.addWidget(scroll, 1)

    def place(self, row: RunRow, index: int) -> None:
        self.rows.insertWidget(index, row)

    def count(self) -> int:
        return self.rows.count() - 1

    def set_count(self, n: int) -> None:
        self.header.setText(f"{self.title} ({n})")


class RunPanel(QtWidgets.QWidget):
    """Active runs above, history below; rows move between them as their state changes."""

    openRequested = QtCore.Signal(str)  # noqa: N815 - open a run's detail in a tab
    chatRequested = QtCore.Signal(str)  # noqa: N815 - "Test in chat": open the run's GGUF
    serveRequested = QtCore.Signal(str)  # noqa: N815 - "Serve": an endpoint for the run's GGUF
    pushRequested = QtCore.Signal(str)  # noqa: N815 - "Push to Hub…" the run's adapter
    confirm = staticmethod(confirm_cancel)
    ask_epochs = staticmethod(ask_epochs)

    def __init__(
        self,
        bridge: RunBridge,
        detail_factory: Callable | None = None,
        parent: QtWidgets.QWidget | None = None,
    ):
        super().__init__(parent)
        self.bridge = bridge
        self.detail_factory = detail_factory
        self.rows: dict[str, RunRow] = {}
        self.tensorboards = TensorBoards(self)  # "Open in TensorBoard" viewers
        tb = self.tensorboards
        tb.opened.connect(lambda i, url: (r := self.rows.get(i)) and r.tensorboard.show_url(url))
        tb.failed.connect(lambda i, why: (r := self.rows.get(i)) and r.show_message(why))
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.split = split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        self.active = _Section("Active")
        self.history = _Section("History")
        split.addWidget(self.active)
        split.addWidget(self.history)
        split.setSizes([300, 200])
        layout.addWidget(split)
        self.empty = QtWidgets.QLabel(
            "Runs appear here once you start them: select a Fine-Tune node and press Run (Ctrl+R)."
        )
        self.empty.setObjectName("placeholder")
        self.empty.setWordWrap(True)
        self.active.rows.insertWidget(0, self.empty)
        bridge.runsChanged.connect(self.on_runs_changed)
        bridge.runsRemoved.connect(self.on_runs_removed)
        bridge.commandFailed.connect(self.on_command_failed)
        bridge.commandDone.connect(self.on_command_done)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._tick)
        self.timer.start(1000)
        self.on_runs_changed(list(bridge.runs.values()))

    # -- rows --------------------------------------------------------------------------------
    def section_of(self, run_id: str) -> str | None:
        row = self.rows.get(run_id)
        if row is None:
            return None
        return "active" if row.parent() is self.active.body else "history"

    def ids(self, section: str) -> list[str]:
        sec = self.active if section == "active" else self.history
        out = []
        for i in range(sec.rows.count()):
            w = sec.rows.itemAt(i).widget()
            if isinstance(w, RunRow):
                out.append(w.run_id)
        return out

    def on_runs_changed(self, runs: list) -> None:
        for run in runs:
            row = self.rows.get(run["id"])
            if row is None:
                row = RunRow(run, self.detail_factory)
                row.action.connect(self.on_action)
                row.openRequested.connect(self.openRequested)
                self.rows[run["id"]] = row
            else:
                row.update_run(run)
            self._place(row)
        self._update_counts()

    def _place(self, row: RunRow) -> None:
        section = self.active if row.run.get("state") in ACTIVE_STATES else self.history
        ids = [
            i
            for i in self.ids("active" if section is self.active else "history")
            if i != row.run_id
        ]
        created = row.run.get("created_at") or 0
        index = sum(1 for i in ids if (self.rows[i].run.get("created_at") or 0) >= created)
        offset = 1 if section is self.active else 0  # the placeholder label
        if row.parent() is section.body and self._index(section, row) == index + offset:
            return
        section.rows.removeWidget(row)
        section.place(row, index + offset)

    def _index(self, section: _Section, row: RunRow) -> int:
        return section.rows.indexOf(row)

    def on_runs_removed(self, ids: list) -> None:
        for run_id in ids:
            row = self.rows.pop(run_id, None)
            if row is not None:
                row.close_row()
                row.setParent(None)
                row.deleteLater()
        self._update_counts()

    def _update_counts(self) -> None:
        self.active.set_count(len(self.ids("active")))
        self.history.set_count(len(self.ids("history")))
        self.empty.setVisible(not self.rows)

    def _tick(self) -> None:
        now = time.time()
        for row in self.rows.values():
            if row.run.get("state") in ACTIVE_STATES:
                row.tick(now)

    # -- buttons -----------------------------------------------------------------------------
    def on_action(self, text: str, run_id: str) -> None:
        row = self.rows[run_id]
        name = row.run.get("name") or run_id
        row.show_message("")
        if text == "Cancel":
            if not self.confirm(self, name):
                return
            self.bridge.control("cancel", run_id)
        elif text in ("Pause", "Resume"):
            self.bridge.control(text.lower(), run_id)
        elif text == "Stop":
            self.bridge.control("stop", run_id)
        elif text == "Test in chat":
            self.chatRequested.emit(run_id)
            return
        elif text == "Serve":
            self.serveRequested.emit(run_id)
            return
        elif text == "Push to Hub…":
            self.pushRequested.emit(run_id)
            return
        elif text == TENSORBOARD:
            self.tensorboards.open(row.run)
            return
        elif text == "Continue":
            epochs = self.ask_epochs(self, name)
            if epochs:
                self.bridge.continue_run(run_id, epochs)
        elif text == "Export":
            self.bridge.export(run_id)
            row.show_message("Exporting…")
            return
        button = row.buttons[text]
        button.setEnabled(False)  # until the supervisor answered, or 1.5 s
        QtCore.QTimer.singleShot(1500, button, lambda: button.setEnabled(True))

    def on_command_failed(self, action: str, run_id: str, message: str) -> None:
        row = self.rows.get(run_id)
        if row is not None:
            row.show_message(f"{action} failed: {message}")

    def on_command_done(self, action: str, run_id: str, _result: object) -> None:
        row = self.rows.get(run_id)
        if row is not None and action == "export":
            row.show_message("Exported: see the Artifacts tab of the run.")

    def close_panel(self) -> None:
        self.timer.stop()
        self.tensorboards.shutdown()
        for row in self.rows.values():
            row.close_row()
