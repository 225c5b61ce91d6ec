"""The hardware view: each GPU with its total / used / held memory as a bar, the runs holding it,
and a switch that suspends it (no new runs); then the CPU entry.

A poller in its own thread takes `engine.store.holds.hardware_snapshot()` (NVML through
engine.hardware, no torch, and the store's VRAM holds) every few seconds. A suspension is
remembered in settings.json (`suspended_gpus`) and sent to the supervisor as `suspend_gpu` /
`unsuspend_gpu` from that thread (starting a supervisor can take a moment).

When a Ray cluster is named (Settings or TUNEGRAPH_RAY_ADDRESS), its nodes with their CPUs and
GPUs are listed below, from `tunegraph cluster ADDRESS --json` in a helper process (the UI never
imports Ray), refreshed every CLUSTER_REFRESH_MS.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from app.chat_worker import error_text
from app.processes import JsonProcess
from engine import settings as settings_mod
from engine.cluster.executor import resolve_address
from engine.store.holds import hardware_snapshot

REFRESH_MS = 3000
CLUSTER_REFRESH_MS = 30000

Sender = Callable[[str, int], object]


def default_sender(action: str, gpu: int) -> object:
    """Queue the command for the supervisor, starting one if none runs; no waiting."""
    from engine.store.index import Store
    from engine.supervisor import client

    store = Store()
    try:
        return client.send(store, action, gpu=gpu, wait=False)
    finally:
        store.close()


class _Poller(QtCore.QObject):
    ready = QtCore.Signal(dict)
    sent = QtCore.Signal(str, int)
    failed = QtCore.Signal(str)

    def __init__(self, sender: Sender):
        super().__init__()
        self.sender = sender

    @QtCore.Slot()
    def poll(self) -> None:
        try:
            self.ready.emit(hardware_snapshot())
        except Exception as err:
            self.failed.emit(error_text(err))

    @QtCore.Slot(str, int)
    def send(self, action: str, gpu: int) -> None:
        try:
            self.sender(action, gpu)
        except Exception as err:
            self.failed.emit(f"Could not reach the supervisor: {error_text(err)}")
            return
        self.sent.emit(action, gpu)


class MemoryBar(QtWidgets.QWidget):
    """Total memory as the track; used by anything (total − free) in grey, held by runs in blue."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.total = self.free = self.held = 0.0
        self.setMinimumHeight(16)
        self.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed
        )

    def set_values(self, total: float, free: float, held: float) -> None:
        self.total, self.free, self.held = total, free, held
        self.update()

    def paintEvent(self, _event: QtGui.QPaintEvent) -> None:  # noqa: N802 - Qt override
        p = QtGui.QPainter(self)
        rect = self.rect().adjusted(0, 0, -1, -1)
        p.setPen(QtGui.QColor(90, 95, 102))
        p.setBrush(QtGui.QColor(28, 30, 33))
        p.drawRoundedRect(rect, 3, 3)
        if self.total > 0:
            width = rect.width()
            used = max(self.total - self.free, 0.0)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QColor(110, 114, 120))
            p.drawRect(1, 1, int(width * min(used / self.total, 1.0)), rect.height() - 1)
            p.setBrush(QtGui.QColor(64, 120, 192))
            p.drawRect(1, 1, int(width * min(self.held / self.total, 1.0)), rect.height() - 1)
        p.end()


class GpuCard(QtWidgets.QGroupBox):
    suspend_toggled = QtCore.Signal(int, bool)

    def __init__(self, index: int, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.index = index
        self.bar = MemoryBar()
        self.figures = QtWidgets.QLabel()
        self.holders = QtWidgets.QLabel()
        self.holders.setWordWrap(True)
        self.suspend = QtWidgets.QCheckBox("Suspended (no new runs)")
        self.suspend.toggled.connect(self._on_toggled)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.bar)
        layout.addWidget(self.figures)
        layout.addWidget(self.holders)
        layout.addWidget(self.suspend)

    def show_gpu(self, gpu: dict) -> None:
        fake = " (simulated)" if gpu.get("fake") else ""
        self.setTitle(f"GPU {gpu['index']}: {gpu['name']}{fake}")
        total, free, held = gpu["total_gib"], gpu["free_gib"], gpu["held_gib"]
        self.bar.set_values(total, free, held)
        available = max(min(free, total - held), 0.0)  # fake GPUs report free = total
        self.figures.setText(
            f"{total:.1f} GiB total · {held:.1f} GiB held by runs · {available:.1f} GiB available"
        )
        self.figures.setToolTip(
            f"The driver reports {free:.1f} GiB free; grey in the bar is "
            "memory used by anything, blue is what Tunegraph's runs hold."
        )
        self.holders.setText(
            "Held by: " + ", ".join(f"{h['name']} ({h['gib']:.1f} GiB)" for h in gpu["holders"])
            if gpu["holders"]
            else "No run holds this GPU."
        )
        self.suspend.blockSignals(True)
        self.suspend.setChecked(bool(gpu["suspended"]))
        self.suspend.blockSignals(False)

    @QtCore.Slot(bool)
    def _on_toggled(self, checked: bool) -> None:
        self.suspend_toggled.emit(self.index, checked)


class ClusterBox(QtWidgets.QGroupBox):
    """The Ray cluster's live nodes with their CPUs and GPUs; hidden when no cluster is named."""

    updated = QtCore.Signal(object)  # the `tunegraph cluster --json` answer, or an error text

    def __init__(
        self, parent: QtWidgets.QWidget | None = None, interval_ms: int = CLUSTER_REFRESH_MS
    ):
        super().__init__("Ray cluster", parent)
        self.address = ""
        self.nodes = QtWidgets.QLabel("")
        self.nodes.setWordWrap(True)
        self.nodes.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        QtWidgets.QVBoxLayout(self).addWidget(self.nodes)
        self.process = JsonProcess(self)
        self.process.finished.connect(self._on_nodes)
        self.process.failed.connect(self._on_failed)
        self.timer = QtCore.QTimer(self, interval=interval_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.hide()

    def refresh(self) -> None:
        """Ask the cluster again (unless a question is still out)."""
        address = resolve_address()
        if address != self.address:
            self.address = address
            self.process.cancel()
            self.nodes.setText(f"Asking {address}…" if address else "")
        self.setVisible(bool(address))
        if address and not self.process.is_running():
            self.process.start("app", ["cluster", address, "--json"])

    def shutdown(self) -> None:
        self.timer.stop()
        self.process.cancel()

    @QtCore.Slot(object)
    def _on_nodes(self, data) -> None:
        self.setTitle(f"Ray cluster at {data.get('address') or self.address}")
        lines = []
        for n in data.get("nodes") or []:
            gpus = f"{n['gpus']} GPU{'s' * (n['gpus'] != 1)}"
            if n.get("gpu_type"):
                gpus += f" ({n['gpu_type']})"
            vram = f" · {n['vram_gib']:g} GiB vram_gib" if n.get("vram_gib") else ""
            lines.append(f"{n['node']}: {n['cpus']} CPUs · {gpus}{vram}")
        self.nodes.setText("\n".join(lines) or "The cluster has no live node.")
        self.updated.emit(data)

    @QtCore.Slot(str)
    def _on_failed(self, message: str) -> None:
        self.nodes.setText(f"Cannot reach the cluster: {message}")
        self.updated.emit(message)


class HardwareView(QtWidgets.QWidget):
    """GPU cards and the CPU entry, refreshed every REFRESH_MS in a poller thread."""

    updated = QtCore.Signal(dict)
    command_sent = QtCore.Signal(str, int)
    _poll = QtCore.Signal()
    _send = QtCore.Signal(str, int)

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        sender: Sender | None = None,
        interval_ms: int = REFRESH_MS,
    ):
        super().__init__(parent)
        self.cards: dict[int, GpuCard] = {}
        self.data: dict = {}
        self.cards_box = QtWidgets.QVBoxLayout()
        self.no_gpu = QtWidgets.QLabel("No NVIDIA GPU found: runs train on the CPU.")
        self.no_gpu.setObjectName("hint")
        self.no_gpu.hide()
        self.cpu = QtWidgets.QLabel("")
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        cpu_box = QtWidgets.QGroupBox("CPU")
        QtWidgets.QVBoxLayout(cpu_box).addWidget(self.cpu)
        inner = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(inner)
        layout.addLayout(self.cards_box)
        layout.addWidget(self.no_gpu)
        layout.addWidget(cpu_box)
        self.cluster = ClusterBox()
        layout.addWidget(self.cluster)
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll = QtWidgets.QScrollArea(widgetResizable=True)
        scroll.setWidget(inner)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        QtWidgets.QVBoxLayout(self).addWidget(scroll)

        self._thread = QtCore.QThread(self)
        self._poller = _Poller(sender or default_sender)
        self._poller.moveToThread(self._thread)
        self._poll.connect(self._poller.poll)
        self._send.connect(self._poller.send)
        self._poller.ready.connect(self._on_ready)
        self._poller.sent.connect(self._on_sent)
        self._poller.failed.connect(self._on_failed)
        self._thread.start()
        self.timer = QtCore.QTimer(self, interval=interval_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()
        self.cluster.refresh()

    def refresh(self) -> None:
        self._poll.emit()

    def set_suspended(self, gpu: int, suspended: bool) -> None:
        """Remember the choice and tell the supervisor."""
        current = settings_mod.load()
        chosen = set(current.suspended_gpus)
        chosen = chosen | {gpu} if suspended else chosen - {gpu}
        current.suspended_gpus = sorted(chosen)
        settings_mod.save(current)
        self._send.emit("suspend_gpu" if suspended else "unsuspend_gpu", gpu)

    def shutdown(self) -> None:
        """Stop polling and end the thread (call before the window closes)."""
        self.timer.stop()
        self.cluster.shutdown()
        self._thread.quit()
        self._thread.wait()

    @QtCore.Slot(dict)
    def _on_ready(self, data: dict) -> None:
        self.data = data
        seen = set()
        for gpu in data["gpus"]:
            card = self.cards.get(gpu["index"])
            if card is None:
                card = self.cards[gpu["index"]] = GpuCard(gpu["index"])
                card.suspend_toggled.connect(self.set_suspended)
                self.cards_box.addWidget(card)
            card.show_gpu(gpu)
            seen.add(gpu["index"])
        for index in set(self.cards) - seen:
            self.cards.pop(index).deleteLater()
        self.no_gpu.setVisible(not data["gpus"])
        cpu = data["cpu"]
        runs = ", ".join(cpu["runs"]) if cpu["runs"] else "none"
        self.cpu.setText(
            f"{cpu['cores']} cores · {cpu['slots']} CPU run slot"
            f"{'s' * (cpu['slots'] != 1)} · {cpu['threads']} threads per run · "
            f"running: {runs}"
        )
        self.updated.emit(data)

    @QtCore.Slot(str, int)
    def _on_sent(self, action: str, gpu: int) -> None:
        self.status.setText(
            f"GPU {gpu} {'suspended: no new runs start on it' if action == 'suspend_gpu' else 'takes new runs again'}."
        )
        self.command_sent.emit(action, gpu)

    @QtCore.Slot(str)
    def _on_failed(self, message: str) -> None:
        self.status.setText(message)
