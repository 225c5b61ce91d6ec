"""The `tunegraph` console script and `python -m app`.

With no sub-command, or with a graph file, it opens the desktop window; any other argv goes to the
headless command line (`app.cli`) without importing Qt.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """`tunegraph [GRAPH | COMMAND …]`: the window, or the command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from app.cli.main import is_command
    from app.cli.main import main as cli_main

    if is_command(argv):
        return cli_main(argv)
    if argv and not Path(argv[0]).is_file():
        print(
            f"tunegraph: {argv[0]}: no such graph file or command (see tunegraph --help)",
            file=sys.stderr,
        )
        return 2
    try:
        return open_window(argv[0] if argv else None)
    except ImportError as err:
        print(f"tunegraph: the desktop app cannot start: {err}", file=sys.stderr)
        return 1


def open_window(graph: str | None = None) -> int:
    """Open the main window (with `graph` loaded, if given) and run the event loop; when a
    window is already open on this data directory, hand `graph` to it and return 0."""
    from PySide6 import QtWidgets

    from app.single_instance import SingleInstance
    from engine import paths

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
    data_dir = paths.data_dir()
    instance = SingleInstance(data_dir, app)
    if not instance.claim([str(Path(graph).resolve())] if graph else []):
        print(f"Tunegraph is already open on {data_dir}: its window was brought forward.")
        return 0
    from app.main_window import MainWindow
    from app.theme import apply_theme

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
    instance.message_received.connect(window.on_second_start)
    window.show()
    window.open_initial(graph)
    try:
        return app.exec()
    finally:
        instance.close()


if __name__ == "__main__":
    sys.exit(main())
