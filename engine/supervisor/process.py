"""The supervisor as a background process: starting it, finding it and stopping it.

One supervisor runs per data directory: `serve_locked` runs it in the calling process while it
holds an exclusive lock on `<data_dir>/supervisor.lock` (which also records its pid and start
time); `ensure_supervisor` starts a detached `python -m engine.supervisor.process` unless one runs, and
`stop_supervisor` ends it (its workers keep running). Clients import only this module, not the
supervisor itself.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from engine import paths
from engine.setup.streaming import stop_process

LOCK_FILE = "supervisor.lock"


def lock_path() -> Path:
    """The lock file of this data directory's supervisor."""
    return paths.data_dir() / LOCK_FILE


def supervisor_pid() -> int | None:
    """The pid of the live supervisor of this data directory, or None."""
    import psutil

    try:
        info = json.loads(lock_path().read_text(encoding="utf-8"))
        proc = psutil.Process(info["pid"])
        if (
            abs(proc.create_time() - info["create_time"]) < 1.0
            and proc.is_running()
            and proc.status() != psutil.STATUS_ZOMBIE
        ):
            return info["pid"]
    except (OSError, ValueError, KeyError, psutil.Error):
        pass
    return None


def ensure_supervisor(timeout: float = 20.0) -> int:
    """Start the background supervisor for this data directory unless one runs; returns its pid."""
    from engine.setup.interpreters import app_entry_command

    pid = supervisor_pid()
    if pid:
        return pid
    kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | 0x00000008
    else:
        kwargs["start_new_session"] = True
    with open(paths.data_dir() / "supervisor.log", "ab") as err:
        subprocess.Popen(app_entry_command("supervisor"), stderr=err, **kwargs)
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = supervisor_pid()
        if pid:
            return pid
        time.sleep(0.05)
    raise RuntimeError("the supervisor did not start; see supervisor.log in the data directory")


def stop_supervisor(timeout: float = 10.0) -> bool:
    """End the supervisor at once (workers keep running). True if one was stopped."""
    import psutil

    pid = supervisor_pid()
    if not pid:
        return False
    stop_process(psutil.Process(pid), timeout, reap=False)
    return True


def serve_locked(idle_exit_s: float | None = None) -> int:
    """Run the supervisor in this process if no other holds the lock; 0 when it ran."""
    import psutil

    from engine.supervisor.service import (
        Supervisor,  # clients import this module: keep theirs light
    )

    path = lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return 1
    os.ftruncate(fd, 0)
    os.write(
        fd, json.dumps({"pid": os.getpid(), "create_time": psutil.Process().create_time()}).encode()
    )
    logging.basicConfig(
        filename=paths.data_dir() / "supervisor.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        Supervisor(idle_exit_s=idle_exit_s).serve()
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
    return 0


def main() -> int:
    """`python -m engine.supervisor.process`: serve this data directory until idle; 1 when another
    supervisor already holds it."""
    if serve_locked() != 0:
        print("A supervisor already runs for this data directory.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
