"""The node palette: every node kind with its help, a search box, double-click or drag to add."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from nodes.catalogue import CATALOGUE

MIME_TYPE = "nodegraphqt/nodes"  # the canvas viewer accepts drags of this type
KIND_ROLE = QtCore.Qt.ItemDataRole.UserRole


def mime_for(kind: str) -> QtCore.QMimeData:
    """Drag data for one node kind (read back by `kind_from_mime`)."""
    mime = QtCore.QMimeData()
    mime.setData(MIME_TYPE, QtCore.QByteArray(f"tunegraph-kind:{kind}".encode()))
    return mime


def kind_from_mime(mime: QtCore.QMimeData) -> str | None:
    if not mime.hasFormat(MIME_TYPE):
        return None
    text = bytes(mime.data(MIME_TYPE).data()).decode(errors="replace")
    kind = text.removeprefix("tunegraph-kind:")
    return kind if kind in CATALOGUE else None


class _KindList(QtWidgets.QListWidget):
    def mimeData(self, items):  # noqa: N802 - Qt override
        return mime_for(items[0].data(KIND_ROLE)) if items else QtCore.QMimeData()


class Palette(QtWidgets.QWidget):
    """Emits `add_requested(kind)` on double-click or Enter; items drag onto the canvas."""

    add_requested = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.search = QtWidgets.QLineEdit(placeholderText="Search nodes…", clearButtonEnabled=True)
        layout.addWidget(self.search)
        self.list = _KindList()
        self.list.setDragEnabled(True)
        self.list.setDragDropMode(QtWidgets.QAbstractItemView.DragDropMode.DragOnly)
        self.list.setIconSize(QtCore.QSize(14, 14))
        self.list.setSpacing(2)
        self.list.setWordWrap(True)
        for decl in CATALOGUE.values():
            item = QtWidgets.QListWidgetItem(_swatch(decl.colour), decl.label)
            item.setData(KIND_ROLE, decl.kind)
            item.setToolTip(
                f"<b>{decl.label}</b><br>{decl.help}<br><i>Double-click or drag onto "
                "the canvas.</i>"
            )
            self.list.addItem(item)
        layout.addWidget(self.list, 1)
        tip = QtWidgets.QLabel(
            "Double-click or drag a node onto the canvas. Drop a .jsonl, "
            ".csv or .parquet file on the canvas for a Dataset node."
        )
        tip.setWordWrap(True)
        tip.setObjectName("hint")
        layout.addWidget(tip)
        self.search.textChanged.connect(self._filter)
        self.search.returnPressed.connect(self._add_first_visible)
        self.list.itemActivated.connect(lambda item: self.add_requested.emit(item.data(KIND_ROLE)))

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        for i in range(self.list.count()):
            item = self.list.item(i)
            decl = CATALOGUE[item.data(KIND_ROLE)]
            hay = f"{decl.label} {decl.kind} {decl.help} " + " ".join(
                p.name for p in decl.parameters
            )
            item.setHidden(not all(w in hay.lower() for w in words))

    def _add_first_visible(self) -> None:
        for i in range(self.list.count()):
            if not self.list.item(i).isHidden():
                self.add_requested.emit(self.list.item(i).data(KIND_ROLE))
                return


def _swatch(colour: tuple[int, int, int]) -> QtGui.QIcon:
    pixmap = QtGui.QPixmap(14, 14)
    pixmap.fill(QtGui.QColor(*colour))
    return QtGui.QIcon(pixmap)
