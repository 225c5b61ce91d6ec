"""One run as a row of the run panel: fixed-width columns that line up from row to row.

    ▸ name · pill · progress · Epoch X/Y · loss · ETA (or queue place) · training time · device ·
      started time and short id · [attempt N] · the buttons the run's state allows

The ETA column of a queued run says where it stands ("2nd in queue", or "waiting for <run>") and
never a stale ETA. The training time counts only starting, training and evaluating (from the status
events, engine.store.timing); its tooltip gives the wall time, which also counts the queue, pauses
and exports. The start time and the id's last six characters tell two runs of one name apart.
While an export started from the panel runs, the progress bar follows it and Export is disabled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from app.tracking_actions import TENSORBOARD, TensorBoardButton
from engine.events import LIVE_STATES
from engine.formatting import format_duration
from engine.store.timing import ordinal, training_seconds

# state -> (colour, icon glyph); one of each per state
STATE_STYLE: dict[str | None, tuple[str, str]] = {
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
    "pruned": ("#8a7f5a", "✂"),
    "refused": ("#a3475f", "⊗"),
    None: ("#60656e", "…"),
}
# the row's message line: a failure or warning, a success, a note on work in progress (the
# theme has no message colours: these are the pills' red and green, lightened for dark grey)
MESSAGE_COLOURS = {"error": "#e08a80", "success": "#7cc98a", "info": "#9aa0a8"}
ACTIVE_STATES = set(LIVE_STATES) | {"paused", None}
BUTTONS = {  # button -> states in which it shows (the text of all but "Stop", see stop_button)
    "Pause": ("starting", "training"),
    "Stop": ("training",),
    "Resume": ("paused", "failed", "pruned"),  # a pruned trial kept its last checkpoint
    "Cancel": tuple(LIVE_STATES) + ("paused",),
    "Test in chat": ("completed",),
    "Continue": ("completed",),
    "Export": ("completed",),
    "Serve": ("completed",),
    "Push to Hub…": ("completed",),
}
# column -> fixed width in pixels, so the columns line up across rows
WIDTHS = {
    "name": 180,
    "pill": 118,
    "progress": 124,
    "epoch": 76,
    "loss": 86,
    "eta": 104,
    "train": 92,
    "device": 116,
    "started": 144,
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
    """Wall time since the run first started (until it finished), or None before it started."""
    start = run.get("started_at")
    if start is None:
        return None
    end = run.get("finished_at") if run.get("state") not in ACTIVE_STATES else None
    return (end or now or time.time()) - start


def clock_text(ts: float, now: float | None = None) -> str:
    """ "14:03" today, "Mar 05 14:03" on another day."""
    local, today = time.localtime(ts), time.localtime(now or time.time())
    same_day = local[:3] == today[:3]
    return time.strftime("%H:%M" if same_day else "%b %d %H:%M", local)


def short_id(run_id: str) -> str:
    """The random end of a run id (`20261122-190102-3fa9c1` → `3fa9c1`)."""
    return run_id.rsplit("-", 1)[-1][-6:]


def started_text(run: dict, now: float | None = None) -> tuple[str, str]:
    """("started 14:03 · 3fa9c1", tooltip with the full id and times); "queued …" before the
    run first started."""
    started, created = run.get("started_at"), run.get("created_at")
    if started:
        text = f"started {clock_text(started, now)}"
    elif created:
        text = f"queued {clock_text(created, now)}"
    else:
        text = "—"
    tips = [f"Run id {run['id']}"]
    for label, key in (("Submitted", "created_at"), ("Started", "started_at")):
        if run.get(key):
            tips.append(f"{label} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run[key]))}")
    if run.get("finished_at") and run.get("state") not in ACTIVE_STATES:
        ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["finished_at"]))
        tips.append(f"Ended {ended}")
    return f"{text} · {short_id(run['id'])}", "\n".join(tips)


def queue_text(position: int | None, waiting_for: dict | None, reason: str | None) -> str:
    """What the ETA column says for a queued run: "2nd in queue" or "waiting for <run>"."""
    if waiting_for is not None:
        return f"waiting for {waiting_for.get('name') or waiting_for['id']}"
    if position:
        return "next in queue" if position == 1 else f"{ordinal(position)} in queue"
    return (reason or "queued").split(":")[0]


def set_elided(label: QtWidgets.QLabel, text: str, tip: str | None = None) -> None:
    """Fit `text` into the label's fixed width with an ellipsis; the whole text in the tooltip."""
    metrics = QtGui.QFontMetrics(label.font())
    width = label.width() if label.minimumWidth() == label.maximumWidth() else 10_000
    shown = metrics.elidedText(text, QtCore.Qt.TextElideMode.ElideRight, width - 2)
    label.setText(shown)
    label.setToolTip(tip if tip is not None else (text if shown != text else ""))


def fit_button(button: QtWidgets.QPushButton) -> None:
    """As narrow as its text allows (the style's 80 px minimum would push a row's last buttons
    off a 1600-pixel window)."""
    width = button.fontMetrics().horizontalAdvance(button.text()) + 22
    button.setFixedWidth(max(width, 48))


class StatusPill(QtWidgets.QLabel):
    """A rounded, coloured label: icon and state name."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.state: str | None = "?"
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setFixedWidth(WIDTHS["pill"])
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


class RunRow(QtWidgets.QFrame):
    """One run: a summary line of fixed-width columns, and an expandable detail below it."""

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
        self.exporting = False
        self.queue: tuple[int | None, dict | None] = (None, None)  # position, upstream awaited
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
        self.expand.setFixedWidth(22)
        self.expand.toggled.connect(self.set_expanded)
        self.name = QtWidgets.QLabel()
        bold = self.name.font()
        bold.setBold(True)
        self.name.setFont(bold)  # not a style sheet: set_elided measures with this font
        self.pill = StatusPill()
        self.progress = QtWidgets.QProgressBar()
        self.progress.setTextVisible(True)
        self.epoch = QtWidgets.QLabel()
        self.loss = QtWidgets.QLabel()
        self.eta = QtWidgets.QLabel()
        self.elapsed = QtWidgets.QLabel()
        self.gpu = QtWidgets.QLabel()
        self.started = QtWidgets.QLabel()
        self.started.setObjectName("hint")
        self.attempts = QtWidgets.QLabel()
        self.attempts.setStyleSheet("color: #d9a45b;")
        columns = {
            "name": self.name,
            "progress": self.progress,
            "epoch": self.epoch,
            "loss": self.loss,
            "eta": self.eta,
            "train": self.elapsed,
            "device": self.gpu,
            "started": self.started,
        }
        for key, w in columns.items():
            w.setFixedWidth(WIDTHS[key])
        for w in (self.expand, self.name, self.pill, *list(columns.values())[1:], self.attempts):
            line.addWidget(w)
        line.addStretch(1)
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        for text in BUTTONS:
            button = QtWidgets.QPushButton(text)
            button.setAutoDefault(False)
            button.clicked.connect(lambda _=False, t=text: self.action.emit(t, self.run_id))
            fit_button(button)
            line.addWidget(button)
            self.buttons[text] = button
        self.tensorboard = TensorBoardButton(lambda: self.action.emit(TENSORBOARD, self.run_id))
        fit_button(self.tensorboard.button)
        line.addWidget(self.tensorboard)
        self.message = QtWidgets.QLabel()
        self.message.setWordWrap(True)
        self.message.hide()
        outer.addWidget(self.message)
        self.show_message("")
        self.update_run(run)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.openRequested.emit(self.run_id)
        super().mouseDoubleClickEvent(event)

    def update_run(self, run: dict) -> None:
        self.run = run
        state = run.get("state")
        set_elided(
            self.name,
            run.get("name") or run["id"],
            f"{run.get('name') or ''}\n{run['id']}\n{run.get('run_dir') or ''}".strip(),
        )
        self.pill.set_state(state)
        if not self.exporting:
            self._show_progress(state, run.get("step") or 0, run.get("max_steps"))
        self.epoch.setText(epoch_text(run))
        loss = (run.get("metrics") or {}).get("loss")
        self.loss.setText(f"loss {loss:.4f}" if loss is not None else "loss —")
        self._show_eta()
        self.gpu.setText(gpu_text(run))
        text, tip = started_text(run)
        self.started.setText(text)
        self.started.setToolTip(tip)
        tried, history = attempts_text(run)
        self.attempts.setText(tried)
        self.attempts.setToolTip(history)
        self.attempts.setVisible(bool(tried))
        self.tick()
        for text, states in BUTTONS.items():
            self.buttons[text].setVisible(state in states)
        self.buttons["Export"].setEnabled(not self.exporting)
        self.tensorboard.update_run(run)
        label, tip = stop_button(run)
        if self.buttons["Stop"].text() != label:
            self.buttons["Stop"].setText(label)
            fit_button(self.buttons["Stop"])
        self.buttons["Stop"].setToolTip(tip)
        error = run.get("error") or {}
        note = run.get("reason") if state in ("failed", "refused", "retrying", "pruned") else None
        warnings = run.get("warnings") or []
        text = "; ".join(filter(None, [error.get("message") or note] + list(warnings)))
        # a sweep's pruned trial is no failure: why it was stopped, as a note
        kind = "info" if state == "pruned" and not error and not warnings else "error"
        if not self.exporting and self.message.property("kind") != "success":
            self.show_message(text, kind)

    def _show_progress(self, state: str | None, step: int, max_steps: int | None) -> None:
        if max_steps:
            self.progress.setRange(0, max_steps)
            self.progress.setValue(min(step, max_steps))
            self.progress.setFormat(f"{step}/{max_steps}")
        elif state in LIVE_STATES and state != "queued":  # working, total not known yet: busy
            self.progress.setRange(0, 0)
        else:  # waiting, or finished: empty (full when completed)
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if state == "completed" else 0)
            self.progress.setFormat("")

    def _show_eta(self) -> None:
        state = self.run.get("state")
        if state == "queued":
            position, upstream = self.queue
            reason = self.run.get("reason")
            set_elided(self.eta, queue_text(position, upstream, reason), reason or "")
        elif state in ACTIVE_STATES and state != "paused":
            self.eta.setText(f"ETA {format_duration(self.run.get('eta_s'))}")
            self.eta.setToolTip("")
        else:
            self.eta.setText("")
            self.eta.setToolTip("")

    def set_queue(self, position: int | None, upstream: dict | None) -> None:
        """Where the run stands in the queue (1 = next) and the upstream run it waits for."""
        if (position, upstream) != self.queue:
            self.queue = (position, upstream)
            self._show_eta()

    def tick(self, now: float | None = None) -> None:
        now = now or time.time()
        trained = training_seconds(self.run, now)
        wall = elapsed(self.run, now)
        self.elapsed.setText(f"train {format_duration(trained)}")
        self.elapsed.setToolTip(
            f"Training time {format_duration(trained)}: starting, training and evaluating.\n"
            f"Wall time {format_duration(wall)} since it first started (the queue, pauses, "
            "retries and exports included)."
        )

    def show_message(self, text: str, kind: str = "error") -> None:
        """The line under the row: an error or warning, a success, or a note (`kind`)."""
        self.message.setProperty("kind", kind if text else None)
        self.message.setStyleSheet(f"color: {MESSAGE_COLOURS[kind]};")
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # -- an export started from the panel ----------------------------------------------------
    def set_exporting(self, on: bool) -> None:
        """While on: Export disabled, the progress bar follows the export."""
        self.exporting = on
        self.buttons["Export"].setEnabled(not on)
        self.buttons["Export"].setToolTip("Exporting…" if on else "")
        if on:
            self.export_progress(0.0, "Export: starting")
        else:
            run = self.run
            self._show_progress(run.get("state"), run.get("step") or 0, run.get("max_steps"))

    def export_progress(self, fraction: float, message: str) -> None:
        self.progress.setRange(0, 100)
        self.progress.setValue(int(round(fraction * 100)))
        self.progress.setFormat(f"export {fraction:.0%}")
        working = fraction < 1.0 and not message.endswith("…")
        self.show_message(message + "…" if working else message, "info")

    # -- detail --------------------------------------------------------------------------------
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
