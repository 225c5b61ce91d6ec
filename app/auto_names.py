"""Copies on the canvas keep names that say what differs from their origin (nodes.autoname).

`rename_copies` applies `nodes.autoname.auto_names` to the canvas at once; `AutoNames` does it
shortly after every edit, connection and compile (on the next turn of the event loop, so a
duplicate or a sweep being built is named once it is whole). The renames are not undo steps of
their own: they follow the edit that caused them, and undoing that edit renames back.
"""

from __future__ import annotations

from PySide6 import QtCore

from nodes.autoname import auto_names

PASSES = 3  # NodeGraphQt numbers a name taken for a moment by a node renamed after it


def rename_copies(canvas) -> bool:
    """Rename the canvas's copies whose name the app gave and which no longer says what differs;
    True when a node was renamed."""
    renamed = False
    for _ in range(PASSES):
        names = auto_names(canvas.to_dict())
        if not names:
            break
        for node_id, name in names.items():
            node = canvas.graph.get_node_by_id(node_id)
            if node is None:
                continue
            node.set_property("name", name, push_undo=False)
            node.set_property("auto_name", node.name(), push_undo=False)
            renamed = True
    return renamed


class AutoNames(QtCore.QObject):
    """Runs `rename_copies` after the canvas's edits (see the module docstring)."""

    def __init__(self, canvas):
        super().__init__(canvas)
        self.canvas = canvas
        self._busy = False
        self._timer = QtCore.QTimer(self, singleShot=True, interval=0)
        self._timer.timeout.connect(self.apply)
        canvas.node_edited.connect(self._on_edited)
        for signal in (
            canvas.compiled,
            canvas.graph.port_connected,
            canvas.graph.port_disconnected,
        ):
            signal.connect(self._soon)

    def apply(self) -> None:
        """Rename now (the renames themselves are edits: they do not start another round)."""
        if self._busy:
            return
        self._busy = True
        try:
            rename_copies(self.canvas)
        finally:
            self._busy = False

    def _soon(self, *_args) -> None:
        if not self._busy:
            self._timer.start()

    def _on_edited(self, _node, name: str) -> None:
        if name != "name":
            self._soon()
