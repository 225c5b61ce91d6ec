"""TensorBoard for one run's event files ("Open in TensorBoard" in the app).

A run whose Training config has `report_to=tensorboard` leaves event files in `<run dir>/tensorboard`
(engine.training.tracking). `TensorBoardProcess(logdir)` serves them with TensorBoard's own server
in the engine's Python, on 127.0.0.1 and a free port, as a child process: this module run with
`-m` (ENTRY_POINTS "tensorboard") starts `tensorboard.main` and ends it when its parent is gone, so
the viewer dies with the app even when the app is killed. TensorBoard itself is optional
(`pip install 'tunegraph[tracking]'`); `tensorboard_installed(python)` says whether it is there.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from engine import paths
from engine.errors import TunegraphError
from engine.paths import SOURCE_ROOT
from engine.rundir import TENSORBOARD, entry_command
from engine.setup.interpreters import engine_python, same_install
from engine.setup.streaming import last_log_line, stop_process

EVENT_FILES = "events.out.tfevents.*"
INSTALL = "pip install 'tunegraph[tracking]'"
PARENT_POLL_S = 1.0
STOP_GRACE_S = 5.0


def event_dir(run_dir: Path | str | None, spec: dict | None) -> Path | None:
    """`<run dir>/tensorboard` when the run reports to TensorBoard and event files are there."""
    if not run_dir or ((spec or {}).get("training") or {}).get("report_to") != "tensorboard":
        return None
    folder = Path(run_dir) / TENSORBOARD
    return folder if next(folder.rglob(EVENT_FILES), None) is not None else None


def tensorboard_installed(python: str) -> bool:
    """True when `python` can import tensorboard (asked in a subprocess unless it is this one)."""
    if same_install(python):
        import importlib.util

        return importlib.util.find_spec("tensorboard") is not None
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorboard') is None)"
    try:
        return (
            subprocess.run([python, "-c", check], capture_output=True, timeout=30).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_local_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TensorBoardProcess:
    """TensorBoard serving `logdir` on 127.0.0.1 as a child process; see the module docstring."""

    def __init__(self, logdir: Path | str, port: int | None = None, python: str | None = None):
        self.logdir = Path(logdir)
        self.port = port or free_local_port()
        python = python or engine_python()
        env = dict(os.environ)
        if same_install(python):  # a checkout: its modules; else the engine's installed ones
            root = str(SOURCE_ROOT)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        folder = paths.data_dir() / "tensorboard"
        folder.mkdir(exist_ok=True)
        self.log_path = folder / f"{self.port}.log"
        args = [str(self.logdir), "--port", str(self.port), "--parent", str(os.getpid())]
        with open(self.log_path, "wb") as log:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                entry_command(python, "tensorboard", *args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        """TensorBoard's page."""
        return f"http://127.0.0.1:{self.port}/"

    def running(self) -> bool:
        """True while the child process lives."""
        return self.proc is not None and self.proc.poll() is None

    def answers(self, timeout: float = 0.5) -> bool:
        """True once TensorBoard answers HTTP requests (a quick check; never waits longer)."""
        try:
            with urllib.request.urlopen(self.url + "data/runs", timeout=timeout) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until TensorBoard answers; TunegraphError with its last line when it ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return
            if not self.running():
                message = self.last_log_line()
                self.stop()
                raise TunegraphError(f"TensorBoard ended: {message}")
            time.sleep(0.2)
        self.stop()
        raise TunegraphError(f"TensorBoard did not answer within {timeout:.0f} s.")

    def last_log_line(self) -> str:
        """TensorBoard's last line of output (why it ended, when it did)."""
        return last_log_line(self.log_path, "no output")

    def stop(self) -> None:
        """End TensorBoard (SIGTERM, then SIGKILL after a grace) and remove its log."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            stop_process(proc, STOP_GRACE_S)
        elif proc is not None:
            proc.wait()
        self.log_path.unlink(missing_ok=True)


def _watch_parent(parent: int) -> None:
    """Leave at once when the process that started this one is gone."""
    import psutil

    while True:
        time.sleep(PARENT_POLL_S)
        if not psutil.pid_exists(parent) or os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve LOGDIR with TensorBoard on 127.0.0.1:PORT until stopped or the parent ends."""
    p = argparse.ArgumentParser(prog="python -m engine.training.tensorboard_server")
    p.add_argument("logdir")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--parent", type=int, default=0, help="end when this process ends")
    args = p.parse_args(argv)
    try:
        from tensorboard import main as tensorboard_main
    except ImportError:
        print(f"tunegraph: TensorBoard is not installed: {INSTALL}", file=sys.stderr)
        return 2
    if args.parent:
        threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True).start()
    sys.argv = ["tensorboard", "--logdir", args.logdir, "--port", str(args.port)]
    sys.argv += ["--host", "127.0.0.1", "--reload_interval", "5"]
    tensorboard_main.run_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
