"""What the canvas paints on a node besides NodeGraphQt's own drawing: a red error badge (with the
compile errors as its tooltip) and, on duplicated Fine-Tune nodes, the line saying what differs
from the origin. Both are child items of the node's view, so they move and undo with it."""

from __future__ import annotations

import html

from PySide6 import QtCore, QtGui, QtWidgets

from nodes.lineage import lineage_label

BADGE_SIZE = 20.0
ERROR_RED = QtGui.QColor(220, 53, 53)
LINEAGE_COLOUR = QtGui.QColor(240, 196, 110)


class ErrorBadge(QtWidgets.QGraphicsEllipseItem):
    """A red circle with the error count; hover shows the messages."""

    def __init__(self, parent: QtWidgets.QGraphicsItem):
        super().__init__(0, 0, BADGE_SIZE, BADGE_SIZE, parent)
        self.setBrush(ERROR_RED)
        self.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255, 220), 1.5))
        self.setZValue(10)
        self.label = QtWidgets.QGraphicsSimpleTextItem("!", self)
        font = QtGui.QFont()
        font.setBold(True)
        font.setPointSize(9)
        self.label.setFont(font)
        self.label.setBrush(QtGui.QColor("white"))
        self.messages: list[str] = []

    def set_messages(self, messages: list[str]) -> None:
        self.messages = list(messages)
        self.label.setText(str(len(messages)) if len(messages) > 1 else "!")
        rect = self.label.boundingRect()
        self.label.setPos((BADGE_SIZE - rect.width()) / 2, (BADGE_SIZE - rect.height()) / 2)
        items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
        self.setToolTip(f"<b>Fix before running:</b><ul style='margin:0'>{items}</ul>")


class NodeDecorations:
    """The badge and lineage line of one node."""

    def __init__(self, node):
        self.node = node
        view = node.view
        # drawn by us, not through the node's border colour: NodeGraphQt saves that in the file
        self.outline = QtWidgets.QGraphicsRectItem(view)
        self.outline.setPen(QtGui.QPen(ERROR_RED, 2.5, QtCore.Qt.PenStyle.DashLine))
        self.outline.setVisible(False)
        self.badge = ErrorBadge(view)
        self.badge.setVisible(False)
        self.lineage = QtWidgets.QGraphicsTextItem(view)
        self.lineage.setDefaultTextColor(LINEAGE_COLOUR)
        font = self.lineage.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.lineage.setFont(font)
        self.lineage.setTextWidth(260)
        self.lineage.setVisible(False)
        self.error_text = QtWidgets.QGraphicsTextItem(view)
        self.error_text.setDefaultTextColor(QtGui.QColor(255, 120, 120))
        self.error_text.setTextWidth(240)
        self.error_text.setVisible(False)

    def show_errors(self, messages: list[str]) -> None:
        view = self.node.view
        self.outline.setRect(-3, -3, view.width + 6, view.height + 6)
        self.outline.setVisible(bool(messages))
        self.badge.setVisible(bool(messages))
        self.badge.set_messages(messages)
        self.badge.setPos(view.width - BADGE_SIZE / 2 - 2, -BADGE_SIZE / 2)
        first = messages[0] if messages else ""
        more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
        self.error_text.setPlainText(_short(first) + more)
        self.error_text.setVisible(bool(messages))
        self._place()

    def show_lineage(self, text: str) -> None:
        short, full = lineage_label(text)  # three differences and "+N more"; the tooltip all
        self.lineage.setPlainText(f"Δ {short}" if text else "")
        self.lineage.setToolTip(f"Differences from the node this one was copied from:\n{full}")
        self.lineage.setVisible(bool(text))
        self._place()

    def _place(self) -> None:
        y = self.node.view.height + 2
        for item in (self.lineage, self.error_text):
            if item.isVisible():
                item.setPos(0, y)
                y += item.boundingRect().height()


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
