"""The app's own settings (window layout, recent files, first start) in `<data dir>/ui.ini`, so
tests with their own TUNEGRAPH_HOME never touch a user's settings."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore

from engine import paths

MAX_RECENT = 8
SETTINGS_VERSION = 1


class SettingsStore:
    """QSettings in INI format with typed accessors."""

    def __init__(self, path: str | Path | None = None):
        path = Path(path) if path else paths.data_dir() / "ui.ini"
        self.qsettings = QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat)
        if self.qsettings.value("version") is None:
            self.qsettings.setValue("version", SETTINGS_VERSION)

    @property
    def folder(self) -> Path:
        """The folder of the settings file (the data directory, unless a test chose another):
        the autosaved session lives beside it."""
        return Path(self.qsettings.fileName()).parent

    @property
    def first_start(self) -> bool:
        return self.qsettings.value("started", "false") != "true"

    def mark_started(self) -> None:
        self.qsettings.setValue("started", "true")

    def recent_files(self) -> list[str]:
        value = self.qsettings.value("recent_files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in value or [] if v]

    def add_recent(self, path: str | Path) -> list[str]:
        text = str(Path(path).resolve())
        files = [text] + [f for f in self.recent_files() if f != text]
        self.qsettings.setValue("recent_files", files[:MAX_RECENT])
        return files[:MAX_RECENT]

    def window_layout(self) -> tuple[QtCore.QByteArray | None, QtCore.QByteArray | None]:
        return self.qsettings.value("window/geometry"), self.qsettings.value("window/state")

    def save_window_layout(self, geometry: QtCore.QByteArray, state: QtCore.QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    def sync(self) -> None:
        self.qsettings.sync()
