"""Start, watch and stop an OpenAI-compatible endpoint for a GGUF (`tunegraph serve`, the app's
Serve panel): `ServeProcess(gguf, host, port)` runs `python -m engine.chat.serve` as a child in
the engine's Python and follows its status file.

Binding to anything but a loopback address needs an API key: one is generated when none is given,
and requests without it get 401. The child ends with the process that started it unless
`keep_serving(True)` was called (the app's "keep serving" box): then it outlives the app, and
`stop()` (or the Stop button of a later window) ends it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import uuid
from pathlib import Path

from engine import paths
from engine.chat.serve import KEY_ENV, ServeError, port_in_use
from engine.paths import SOURCE_ROOT
from engine.rundir import entry_command
from engine.setup.interpreters import engine_python, same_install
from engine.setup.streaming import last_log_line, stop_process

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8000
STOP_GRACE_S = 5.0


def needs_key(host: str) -> bool:
    """True when `host` is reachable from other machines (anything but loopback)."""
    return host not in LOOPBACK and not host.startswith("127.")


def new_api_key() -> str:
    """A fresh random API key."""
    return "tg-" + secrets.token_urlsafe(24)


def check_port(host: str, port: int) -> None:
    """Raise the one-sentence ServeError when host:port cannot be bound right now."""
    if not 0 < port < 65536:
        raise ServeError(f"Port {port} is not a port number (1-65535).")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ServeError(f"Cannot serve on {host}: {exc.strerror}.") from exc
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (98, 48, 10048):
                raise port_in_use(host, port) from exc
            raise ServeError(f"Cannot serve on {host}:{port}: {exc.strerror or exc}.") from exc


def serving_dir() -> Path:
    """Where the status files of endpoints started from this data directory live."""
    folder = paths.data_dir() / "serving"
    folder.mkdir(exist_ok=True)
    return folder


def examples(url: str, model: str, api_key: str | None) -> dict[str, str]:
    """A copyable curl command and Python snippet (the official openai client) for the endpoint."""
    auth = f' \\\n  -H "Authorization: Bearer {api_key}"' if api_key else ""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "stream": False}
    )
    curl = (
        f"curl {url}/chat/completions{auth} \\\n"
        f'  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )
    python = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{url}", api_key="{api_key or "none"}")\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )
    return {"curl": curl, "python": python}


class ServeProcess:
    """One endpoint as a child process; see the module docstring."""

    def __init__(
        self,
        gguf: Path | str,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        n_ctx: int = 4096,
        threads: int = 0,
        alias: str | None = None,
    ):
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise ServeError(f"{gguf} does not exist.", "Give the path of a .gguf file.")
        self.host, self.port = host, int(port)
        self.api_key = api_key or (new_api_key() if needs_key(host) else None)
        self.alias = alias or self.gguf.stem
        check_port(host, self.port)  # the common case answered at once, before any loading
        self.status_path = serving_dir() / f"{self.port}-{uuid.uuid4().hex[:8]}.json"
        self.keep_path = self.status_path.with_suffix(".keep")
        self.log_path = self.status_path.with_suffix(".log")
        python = engine_python()  # llama-cpp-python lives in the engine's environment
        env = dict(os.environ)
        if same_install(python):  # a checkout: its modules; else the engine's installed ones
            root = str(SOURCE_ROOT)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.pop(KEY_ENV, None)
        if self.api_key:
            env[KEY_ENV] = self.api_key
        args = [str(self.gguf), "--host", host, "--port", str(self.port), "--ctx", str(n_ctx)]
        args += [
            "--threads",
            str(threads),
            "--alias",
            self.alias,
            "--status",
            str(self.status_path),
        ]
        args += ["--parent", str(os.getpid()), "--keep-file", str(self.keep_path)]
        with open(self.log_path, "wb") as log:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                entry_command(python, "serve", *args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches `tunegraph serve` only
            )

    # -- state ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The OpenAI base URL (…/v1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def status(self) -> dict:
        """The child's latest status ({} before it wrote one)."""
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def requests(self) -> int:
        """Requests served so far."""
        return int(self.status().get("requests") or 0)

    def running(self) -> bool:
        """True while the child process lives."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 300.0) -> dict:
        """Wait until the endpoint answers; ServeError with the child's own sentence when it ends
        first (port taken, model not loadable), or after `timeout` seconds."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.status()
            if status.get("state") == "ready":
                return status
            if status.get("state") == "failed" or not self.running():
                self.stop()
                raise ServeError(
                    status.get("error") or self.last_log_line(), status.get("hint") or None
                )
            time.sleep(0.1)
        self.stop()
        raise ServeError(f"The endpoint did not start within {timeout:.0f} s.")

    def last_log_line(self) -> str:
        """The child's last line of output (its one sentence when it failed)."""
        return last_log_line(self.log_path, "the serving process ended").removeprefix("tunegraph: ")

    def examples(self) -> dict[str, str]:
        """curl and Python examples for this endpoint."""
        return examples(self.url, self.alias, self.api_key)

    # -- control ----------------------------------------------------------------------------------
    def keep_serving(self, on: bool) -> None:
        """Whether the endpoint outlives the process that started it."""
        if on:
            self.keep_path.touch()
        else:
            self.keep_path.unlink(missing_ok=True)

    def detach(self) -> None:
        """Forget the child without stopping it (after keep_serving(True), when the app closes)."""
        self.proc = None

    def stop(self) -> None:
        """End the endpoint (SIGTERM, then SIGKILL after a grace) and remove its files."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            stop_process(proc, STOP_GRACE_S)
        elif proc is not None:
            proc.wait()
        for path in (self.status_path, self.keep_path, self.log_path):
            path.unlink(missing_ok=True)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
