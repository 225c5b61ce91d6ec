"""The Qt bridge around `engine.chat.session.ChatSession`: one model, one worker thread.

`ChatModel` lives on the GUI side; it owns a QThread running a `_Worker` that loads the GGUF (in
the engine's child process) and streams answers. Requests go to the worker through queued signals,
results come back as signals connected to GUI-side slots (never lambdas: see shared/NOTES.md).
`stop()` is called straight from the GUI thread (ChatSession.stop is thread-safe).
"""

from __future__ import annotations

import traceback

from PySide6 import QtCore

from engine.chat.session import ChatSession
from engine.errors import TunegraphError

WAIT_MS = 15000


def error_text(err: BaseException) -> str:
    """One readable sentence for the pane; the traceback of an unexpected error goes to stderr."""
    if isinstance(err, TunegraphError):
        return str(err)
    traceback.print_exception(err)
    return f"{type(err).__name__}: {err}"


class _Worker(QtCore.QObject):
    loaded = QtCore.Signal(dict)
    piece = QtCore.Signal(str)
    done = QtCore.Signal(dict)
    failed = QtCore.Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.session: ChatSession | None = None

    @QtCore.Slot(str, int, int)
    def load(self, path: str, n_ctx: int, n_threads: int) -> None:
        try:
            self.session = ChatSession(path, n_ctx=n_ctx, n_threads=n_threads or None)
        except Exception as err:
            self.failed.emit(error_text(err))
            return
        self.loaded.emit({**self.session.info, "template_name": self.session.template_name})

    @QtCore.Slot(list, dict)
    def generate(self, messages: list, options: dict) -> None:
        if self.session is None:
            self.failed.emit("The model is not loaded.")
            return
        try:
            for text in self.session.stream(messages, **options):
                self.piece.emit(text)
        except Exception as err:
            self.failed.emit(error_text(err))
            return
        stats = self.session.stats
        self.done.emit(stats.as_dict() if stats else {})


class ChatModel(QtCore.QObject):
    """One GGUF answering in its own thread and process; see the module docstring."""

    loaded = QtCore.Signal(dict)  # the session's info, with template_name
    piece = QtCore.Signal(str)  # a piece of the answer
    done = QtCore.Signal(dict)  # ChatStats as a dict
    failed = QtCore.Signal(str)  # a user-facing message (loading or answering)

    _load = QtCore.Signal(str, int, int)
    _generate = QtCore.Signal(list, dict)

    def __init__(
        self, path: str, parent: QtCore.QObject | None = None, n_ctx: int = 4096, n_threads: int = 0
    ):
        super().__init__(parent)
        self.path = str(path)
        self.busy = False
        self._thread = QtCore.QThread(self)
        self._worker = _Worker()
        self._worker.moveToThread(self._thread)
        self._load.connect(self._worker.load)
        self._generate.connect(self._worker.generate)
        self._worker.loaded.connect(self._on_loaded)
        self._worker.piece.connect(self._on_piece)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self._thread.start()
        self.busy = True
        self._load.emit(self.path, n_ctx, n_threads)

    @property
    def session(self) -> ChatSession | None:
        return self._worker.session

    def send(
        self,
        messages: list[dict],
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        system: str | None = None,
    ) -> bool:
        """Start an answer; False when the model is busy or not loaded."""
        if self.busy or self._worker.session is None:
            return False
        self.busy = True
        options = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "system": system or None,
        }
        self._generate.emit([dict(m) for m in messages], options)
        return True

    def stop(self) -> None:
        """End the current answer early (its `done` comes with stop_reason 'interrupted')."""
        session = self._worker.session
        if session is not None:
            session.stop()

    def close(self) -> None:
        """Stop, end the thread, then end the model's process."""
        self.stop()
        self._thread.quit()
        if not self._thread.wait(WAIT_MS):  # a load still in progress: end its process first
            session = self._worker.session
            if session is not None:
                session.close()
            self._thread.wait()
        if self._worker.session is not None:
            self._worker.session.close()
            self._worker.session = None
        self.busy = False

    # -- worker -> GUI ---------------------------------------------------------------------------
    @QtCore.Slot(dict)
    def _on_loaded(self, info: dict) -> None:
        self.busy = False
        self.loaded.emit(info)

    @QtCore.Slot(str)
    def _on_piece(self, text: str) -> None:
        self.piece.emit(text)

    @QtCore.Slot(dict)
    def _on_done(self, stats: dict) -> None:
        self.busy = False
        self.done.emit(stats)

    @QtCore.Slot(str)
    def _on_failed(self, message: str) -> None:
        self.busy = False
        self.failed.emit(message)
