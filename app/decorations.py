"""What the canvas paints on a node besides NodeGraphQt's own drawing: a red error badge (with the
compile errors as its tooltip) and, on duplicated Fine-Tune nodes, the line saying what differs
from the origin; on Fine-Tune nodes also the card of their newest run and the Run / Duplicate
buttons shown on hover (app.node_runs fills them). All are child items of the node's view, so
they move and undo with it."""

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


# -- a Fine-Tune node's runs (app.node_runs decides what they say) --------------------------------
CARD_FONT_PT = 8.0
CARD_GAP = 6.0  # between the card and the node's top edge
PILL_HEIGHT = 17.0
BAR_HEIGHT = 4.0
DETAIL_WIDTH = 230.0  # the detail text is elided to this, the whole of it is in the tooltip
DETAIL_COLOURS = {"normal": "#d3d7dd", "error": "#e08a80", "muted": "#8d939b"}


class RunCard(QtWidgets.QGraphicsObject):
    """Above a Fine-Tune node: its newest run's state pill, a line of detail, a progress bar while
    the run lives, and "+N earlier". Double-click asks for the run (`openRequested`)."""

    openRequested = QtCore.Signal()  # noqa: N815

    def __init__(self, parent: QtWidgets.QGraphicsItem):
        # everything boundingRect and paint read first: with a real display Qt asks for them
        # as soon as the item is parented or given a cursor
        self._rect = QtCore.QRectF()
        self.regular = QtGui.QFont()
        self.regular.setPointSizeF(CARD_FONT_PT)
        self.bold = QtGui.QFont(self.regular)
        self.bold.setBold(True)
        self.pill = ""
        self.colour = QtGui.QColor("#60656e")
        self.detail = ""
        self.tone = "normal"
        self.progress: float | None = None
        self.earlier = ""
        super().__init__(parent)
        self.setZValue(10)
        self.setAcceptHoverEvents(True)  # keeps the node's hover (and its buttons) alive
        self.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)

    def set_content(
        self,
        pill: str,
        colour: str,
        detail: str,
        tone: str = "normal",
        progress: float | None = None,
        earlier: str = "",
        tip: str = "",
    ) -> None:
        """What to show; `progress` (0-1) draws the bar, None hides it."""
        self.prepareGeometryChange()
        self.pill, self.colour, self.tone = pill, QtGui.QColor(colour), tone
        metrics = QtGui.QFontMetricsF(self.regular)
        self.detail = metrics.elidedText(detail, QtCore.Qt.TextElideMode.ElideRight, DETAIL_WIDTH)
        self.progress = None if progress is None else min(max(progress, 0.0), 1.0)
        self.earlier = earlier
        self.setToolTip(tip)
        width = self._pill_width() + 6 + metrics.horizontalAdvance(self.detail)
        if earlier:
            width += 8 + metrics.horizontalAdvance(earlier)
        height = PILL_HEIGHT + (BAR_HEIGHT + 3 if self.progress is not None else 0)
        self._rect = QtCore.QRectF(0, 0, max(width, 120.0), height)
        self.update()

    def _pill_width(self) -> float:
        return QtGui.QFontMetricsF(self.bold).horizontalAdvance(self.pill) + 14

    def text(self) -> str:
        """What the card says, as one line (for tests and the accessibility of screenshots)."""
        return " · ".join(filter(None, (self.pill, self.detail, self.earlier)))

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 - Qt override
        return self._rect.adjusted(-1, -1, 1, 1)

    def paint(self, painter: QtGui.QPainter, _option, _widget=None) -> None:
        painter.save()
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        pill = QtCore.QRectF(0, 0, self._pill_width(), PILL_HEIGHT)
        painter.setPen(QtCore.Qt.PenStyle.NoPen)
        painter.setBrush(self.colour)
        painter.drawRoundedRect(pill, PILL_HEIGHT / 2, PILL_HEIGHT / 2)
        painter.setFont(self.bold)
        painter.setPen(QtGui.QColor("white"))
        painter.drawText(pill, QtCore.Qt.AlignmentFlag.AlignCenter, self.pill)
        painter.setFont(self.regular)
        metrics = QtGui.QFontMetricsF(self.regular)
        x = pill.right() + 6
        for text, tone in ((self.detail, self.tone), (self.earlier, "muted")):
            if not text:
                continue
            width = metrics.horizontalAdvance(text)
            back = QtCore.QRectF(x - 3, 1, width + 6, PILL_HEIGHT - 2)
            painter.setPen(QtCore.Qt.PenStyle.NoPen)
            painter.setBrush(QtGui.QColor(24, 26, 29, 190))  # readable over pipes and grid
            painter.drawRoundedRect(back, 3, 3)
            painter.setPen(QtGui.QColor(DETAIL_COLOURS[tone]))
            painter.drawText(
                QtCore.QRectF(x, 0, width + 1, PILL_HEIGHT),
                QtCore.Qt.AlignmentFlag.AlignVCenter,
                text,
            )
            x += width + 8
        if self.progress is not None:
            bar = QtCore.QRectF(0, PILL_HEIGHT + 3, self._rect.width(), BAR_HEIGHT)
            painter.setPen(QtCore.Qt.PenStyle.NoPen)
            painter.setBrush(QtGui.QColor("#2c3036"))
            painter.drawRoundedRect(bar, 2, 2)
            if self.progress > 0:
                done = QtCore.QRectF(bar)
                done.setWidth(bar.width() * self.progress)
                painter.setBrush(self.colour)
                painter.drawRoundedRect(done, 2, 2)
        painter.restore()

    def place(self) -> None:
        """Just above the node, left-aligned with it."""
        self.setPos(0, -self._rect.height() - CARD_GAP)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt override
        event.accept()  # a press here neither drags the node nor starts a selection marquee

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802 - Qt override
        event.accept()
        self.openRequested.emit()


BUTTON_SIZE = 20.0
HIDE_DELAY_MS = 350  # the pointer may cross the gap between the node and its buttons


class NodeButton(QtWidgets.QGraphicsObject):
    """A small round icon button drawn on the canvas."""

    clicked = QtCore.Signal()

    def __init__(self, icon: str, tip: str, parent: QtWidgets.QGraphicsItem):
        super().__init__(parent)
        self.icon = icon  # "run" or "duplicate", drawn (fonts lack some symbols)
        self.tip = tip
        self.hovered = False
        self.setAcceptHoverEvents(True)
        self.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)
        self.setToolTip(tip)

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 - Qt override
        return QtCore.QRectF(0, 0, BUTTON_SIZE, BUTTON_SIZE)

    def set_enabled(self, on: bool, why: str = "") -> None:
        self.setEnabled(on)
        self.setToolTip(self.tip if on else f"{self.tip}: {why}" if why else self.tip)
        self.update()

    def paint(self, painter: QtGui.QPainter, _option, _widget=None) -> None:
        painter.save()
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        rect = self.boundingRect().adjusted(1, 1, -1, -1)
        fill = "#4078c0" if self.hovered and self.isEnabled() else "#30343a"
        painter.setBrush(QtGui.QColor(fill))
        painter.setPen(QtGui.QPen(QtGui.QColor("#8d939b"), 1))
        painter.drawEllipse(rect)
        ink = QtGui.QColor("white" if self.isEnabled() else "#6e7278")
        c = rect.center()
        if self.icon == "run":
            painter.setPen(QtCore.Qt.PenStyle.NoPen)
            painter.setBrush(ink)
            painter.drawPolygon(
                QtGui.QPolygonF(
                    [
                        c + QtCore.QPointF(-3, -5),
                        c + QtCore.QPointF(5, 0),
                        c + QtCore.QPointF(-3, 5),
                    ]
                )
            )
        else:  # two overlapping sheets
            painter.setPen(QtGui.QPen(ink, 1.3))
            painter.setBrush(QtGui.QColor(fill))
            painter.drawRoundedRect(QtCore.QRectF(c.x() - 5, c.y() - 5, 7, 7), 1.5, 1.5)
            painter.drawRoundedRect(QtCore.QRectF(c.x() - 2, c.y() - 2, 7, 7), 1.5, 1.5)
        painter.restore()

    def hoverEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.hovered = True
        self.update()
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.hovered = False
        self.update()
        super().hoverLeaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt override
        event.accept()  # the release clicks; the node is neither dragged nor selected

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.isEnabled() and self.boundingRect().contains(event.pos()):
            self.clicked.emit()
        event.accept()


class HoverButtons(QtWidgets.QGraphicsObject):
    """Run and Duplicate beside a Fine-Tune node's title, shown while the pointer is over the
    node (or the buttons, or its run card); they hide a moment after it leaves."""

    def __init__(self, node_view: QtWidgets.QGraphicsItem):
        super().__init__(node_view)
        self.setZValue(11)
        self.run = NodeButton("run", "Run this node…", self)
        self.duplicate = NodeButton(
            "duplicate", "Duplicate this node with everything feeding it", self
        )
        self.duplicate.setPos(BUTTON_SIZE + 3, 0)
        self.setVisible(False)
        self._over: set[int] = set()  # the items the pointer is over (node, card, buttons)
        self._hide = QtCore.QTimer(self, singleShot=True, interval=HIDE_DELAY_MS)
        self._hide.timeout.connect(self._hide_now)
        self.watch(node_view)
        self.watch(self.run)
        self.watch(self.duplicate)

    def watch(self, item: QtWidgets.QGraphicsItem) -> None:
        """Show the buttons while the pointer is over `item` (in the node's scene)."""
        item.setAcceptHoverEvents(True)
        item.removeSceneEventFilter(self)  # installed once, however often this is called
        item.installSceneEventFilter(self)

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 - Qt override
        return QtCore.QRectF(0, 0, 2 * BUTTON_SIZE + 3, BUTTON_SIZE)

    def paint(self, *_args) -> None:
        pass  # the buttons paint themselves

    def sceneEventFilter(self, watched: QtWidgets.QGraphicsItem, event: QtCore.QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if kind == QtCore.QEvent.Type.GraphicsSceneHoverEnter:
            self._over.add(id(watched))
            self._hide.stop()
            self.setVisible(True)
        elif kind == QtCore.QEvent.Type.GraphicsSceneHoverLeave:
            self._over.discard(id(watched))
            if not self._over:
                self._hide.start()
        return False

    def _hide_now(self) -> None:
        if not self._over:
            self.setVisible(False)

    def place(self, node_view, beside_badge: bool) -> None:
        """Right of the node's title bar (clear of the error badge when it shows)."""
        self.setPos(node_view.width + (12 if beside_badge else 4), 0)


class OwnClicks(QtCore.QObject):
    """Presses on a run card or a node button reach only that item. NodeGraphQt's scene reads
    every press near a pipe as grabbing that pipe (it detaches it to re-route it), even when our
    item lies on top of it; for presses over our items this filter skips that step and lets
    Qt deliver the press as usual (QGraphicsScene's own handler)."""

    def __init__(self, scene: QtWidgets.QGraphicsScene):
        super().__init__(scene)
        self.scene = scene
        scene.installEventFilter(self)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if watched is self.scene and event.type() == QtCore.QEvent.Type.GraphicsSceneMousePress:
            top = next((i for i in self.scene.items(event.scenePos()) if i.isVisible()), None)
            if isinstance(top, (RunCard, NodeButton)):
                QtWidgets.QGraphicsScene.mousePressEvent(self.scene, event)
                return True
        return False
