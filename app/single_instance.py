"""One window per data directory: a second start hands its arguments to the first and exits.

The first window listens on a local socket (QLocalServer: a Unix socket, a named pipe on Windows)
named after a hash of its data directory, so another data directory (TUNEGRAPH_HOME, or the one
chosen in Settings) still gets a window of its own. A later start connects to that name, sends its
arguments as one JSON line and exits; the first window comes forward and opens the graph it was
given. A crash leaves the Unix socket file behind: `claim` finds nobody answering on it and
removes the stale name before listening.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PySide6 import QtCore, QtNetwork

CONNECT_TIMEOUT_MS = 1000


def server_name(data_dir: Path | str) -> str:
    """The local-socket name for `data_dir` (short: Unix socket paths are limited to ~100 bytes)."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode("utf-8")).hexdigest()
    return f"tunegraph-{digest[:16]}"


class SingleInstance(QtCore.QObject):
    """The window's claim on its data directory; `message_received(argv)` when another start
    on the same data directory handed over its arguments."""

    message_received = QtCore.Signal(list)

    def __init__(self, data_dir: Path | str, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.name = server_name(data_dir)
        self.server: QtNetwork.QLocalServer | None = None
        self._buffers: dict[QtNetwork.QLocalSocket, bytes] = {}

    def claim(self, argv: list[str]) -> bool:
        """True when this process is the first for its data directory (it now listens); False
        when another one is running and took `argv`."""
        if self.forward(argv):
            return False
        return self.listen()

    def forward(self, argv: list[str], timeout_ms: int = CONNECT_TIMEOUT_MS) -> bool:
        """Send `argv` to the running instance; False when nobody listens on the name."""
        socket = QtNetwork.QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(timeout_ms):
            return False
        socket.write(json.dumps({"argv": list(argv)}).encode("utf-8") + b"\n")
        sent = socket.waitForBytesWritten(timeout_ms)
        socket.disconnectFromServer()
        if socket.state() != QtNetwork.QLocalSocket.LocalSocketState.UnconnectedState:
            socket.waitForDisconnected(timeout_ms)
        return sent

    def listen(self) -> bool:
        """Listen on the name, removing a stale one a crashed instance left behind."""
        server = QtNetwork.QLocalServer(self)
        server.setSocketOptions(QtNetwork.QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # nobody answered on the name (claim tried first), so the socket file is stale
            QtNetwork.QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                return False
        server.newConnection.connect(self._on_connection)
        self.server = server
        return True

    def close(self) -> None:
        """Stop listening (the name is free for the next start)."""
        for socket in list(self._buffers):
            self._drop(socket)
        if self.server is not None:
            self.server.close()
            self.server = None

    # the sockets' signals go to methods of this object (never lambdas): a socket closing while
    # this object is being destroyed must not call back into it
    def _on_connection(self) -> None:
        while self.server is not None and self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            self._buffers[socket] = b""
            socket.readyRead.connect(self._on_ready)
            socket.disconnected.connect(self._on_disconnected)
            self._read(socket)  # bytes may have arrived before the signals were connected

    def _on_ready(self) -> None:
        self._read(self.sender())

    def _on_disconnected(self) -> None:
        socket = self.sender()
        self._read(socket)
        if socket in self._buffers:  # closed without a full line: whatever came is the message
            self._deliver(socket)

    def _read(self, socket: QtNetwork.QLocalSocket) -> None:
        if socket in self._buffers:
            self._buffers[socket] += bytes(socket.readAll().data())
            if b"\n" in self._buffers[socket]:
                self._deliver(socket)

    def _deliver(self, socket: QtNetwork.QLocalSocket) -> None:
        line = self._buffers.get(socket, b"").split(b"\n", 1)[0]
        self._drop(socket)
        try:
            argv = json.loads(line.decode("utf-8")).get("argv")
        except (ValueError, AttributeError):
            return  # not one of ours: ignored
        if isinstance(argv, list):
            self.message_received.emit([str(a) for a in argv])

    def _drop(self, socket: QtNetwork.QLocalSocket) -> None:
        self._buffers.pop(socket, None)
        socket.readyRead.disconnect(self._on_ready)
        socket.disconnected.disconnect(self._on_disconnected)
        socket.abort()
        socket.deleteLater()
