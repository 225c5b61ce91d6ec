"""A dark Fusion theme that matches NodeGraphQt's canvas."""

from __future__ import annotations

from PySide6 import QtGui, QtWidgets

STYLE_SHEET = """
QToolTip { color: #e6e6e6; background: #2b2e33; border: 1px solid #4a5055; padding: 4px; }
QDockWidget::title { padding: 5px 8px; background: #2a2d32; font-weight: bold; }
QLabel#hint { color: #9aa0a8; }
QLabel#placeholder { color: #9aa0a8; font-size: 13px; padding: 18px; }
QToolBar { spacing: 4px; padding: 3px; border: none; }
QToolButton { padding: 4px 8px; }
QListWidget::item { padding: 5px 4px; }
QStatusBar QLabel { padding: 0 8px; }
"""


def apply_theme(app: QtWidgets.QApplication) -> None:
    """Fusion with a dark palette and a few style-sheet touches."""
    app.setStyle("Fusion")
    palette = QtGui.QPalette()
    colours = {
        QtGui.QPalette.ColorRole.Window: (37, 39, 43),
        QtGui.QPalette.ColorRole.WindowText: (225, 227, 230),
        QtGui.QPalette.ColorRole.Base: (28, 30, 33),
        QtGui.QPalette.ColorRole.AlternateBase: (44, 47, 52),
        QtGui.QPalette.ColorRole.ToolTipBase: (43, 46, 51),
        QtGui.QPalette.ColorRole.ToolTipText: (230, 230, 230),
        QtGui.QPalette.ColorRole.Text: (225, 227, 230),
        QtGui.QPalette.ColorRole.Button: (48, 51, 56),
        QtGui.QPalette.ColorRole.ButtonText: (225, 227, 230),
        QtGui.QPalette.ColorRole.Highlight: (64, 120, 192),
        QtGui.QPalette.ColorRole.HighlightedText: (255, 255, 255),
        QtGui.QPalette.ColorRole.Link: (110, 170, 240),
        QtGui.QPalette.ColorRole.PlaceholderText: (130, 135, 142),
    }
    for role, rgb in colours.items():
        palette.setColor(role, QtGui.QColor(*rgb))
    disabled = QtGui.QPalette.ColorGroup.Disabled
    for role in (
        QtGui.QPalette.ColorRole.ButtonText,
        QtGui.QPalette.ColorRole.Text,
        QtGui.QPalette.ColorRole.WindowText,
    ):
        palette.setColor(disabled, role, QtGui.QColor(110, 114, 120))
    app.setPalette(palette)
    app.setStyleSheet(STYLE_SHEET)
