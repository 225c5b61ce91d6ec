"""`tunegraph` with no command (or with a graph file) opens the desktop app here."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Open the main window (with the graph file in `argv[0]`, if any); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from PySide6 import QtWidgets

    from app.main_window import MainWindow
    from app.theme import apply_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
    app.setApplicationName("Tunegraph")
    app.setOrganizationName("Tunegraph")
    app.setDesktopFileName("tunegraph")  # ties the window to tunegraph.desktop (Wayland, docks)
    icon = Path(__file__).resolve().parents[1] / "resources" / "icons" / "tunegraph.svg"
    if icon.is_file():  # a checkout and the installers ship it; a bare wheel does not
        from PySide6 import QtGui

        app.setWindowIcon(QtGui.QIcon(str(icon)))
    apply_theme(app)
    from app.tools import apply_theme_setting
    from engine import settings

    apply_theme_setting(settings.load().theme)
    window = MainWindow()
    window.show()
    window.open_initial(argv[0] if argv else None)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
