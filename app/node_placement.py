"""Where new nodes go on the canvas: in free space (never on top of another node, its Δ label or
its error line), and the view scrolled to show them. The search is `nodes.graphedit.free_spot`
on the nodes' scene rectangles."""

from __future__ import annotations

from PySide6 import QtCore

from nodes.graphedit import Rect, free_spot


def node_rect(node) -> Rect:
    """A node's scene rectangle with what the canvas paints around it (badge, Δ label, ports)."""
    view = node.view
    rect = view.sceneBoundingRect()
    for child in view.childItems():
        if child.isVisible():
            rect = rect.united(child.sceneBoundingRect())
    return rect.x(), rect.y(), rect.width(), rect.height()


def place_in_free_space(canvas, node) -> None:
    """Move `node` to the free spot nearest where it is (part of the current undo step)."""
    others = [node_rect(n) for n in canvas.graph.all_nodes() if n is not node]
    x, y, width, height = node_rect(node)
    free_x, free_y = free_spot((width, height), (x, y), others)
    if (free_x, free_y) != (x, y):
        node_x, node_y = node.pos()
        node.set_pos(node_x + free_x - x, node_y + free_y - y)


def reveal(canvas, nodes: list) -> None:
    """Centre the view on `nodes` unless they are all in view already; the zoom stays unless
    they do not fit, then it zooms out just enough (never in past 1:1)."""
    if not nodes:
        return
    viewer = canvas.viewer
    visible = viewer.mapToScene(viewer.viewport().rect()).boundingRect()
    wanted = QtCore.QRectF()
    for node in nodes:
        wanted = wanted.united(QtCore.QRectF(*node_rect(node)))
    if visible.contains(wanted):
        return
    if wanted.width() <= visible.width() and wanted.height() <= visible.height():
        canvas.graph.center_on(nodes)
    else:
        viewer.zoom_to_nodes([n.view for n in nodes])
