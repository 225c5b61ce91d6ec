"""The serving process: `python -m engine.chat.serve MODEL.gguf --host H --port P --status FILE`.

An OpenAI-compatible HTTP endpoint (`/v1/chat/completions` with streaming, `/v1/completions`,
`/v1/models`) from llama-cpp-python's own server (`llama_cpp.server`, FastAPI + uvicorn), with
the chat template and stop tokens engine.chat.chat_format chooses for the file — the ones the
export embedded and checked — instead of the server's own guess (which stops on EOS only).

The API key, when one is required, comes in the environment (KEY_ENV), never on the command line
where other users could read it; requests without it get 401. The socket is bound before the
model loads, so a port in use is one sentence, not a traceback. The process reports through a
small JSON status file (state, URL, template, requests served so far) that its launcher and the
app read (engine.chat.serving). It ends when its parent dies, unless the keep file exists
("keep serving").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine.errors import TunegraphError

KEY_ENV = "TUNEGRAPH_SERVE_API_KEY"
PARENT_POLL_S = 1.0


class ServeError(TunegraphError):
    """The endpoint cannot start: the port is taken, the model does not load, a bad option."""


def port_in_use(host: str, port: int) -> ServeError:
    """The one sentence for a port another program holds."""
    return ServeError(
        f"Port {port} on {host} is already in use by another program.",
        "Choose another port with --port, or stop what is serving there.",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (ServeError for a port in use or an unknown address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"Cannot serve on {host}: {exc.strerror}.") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise port_in_use(host, port) from exc
        raise ServeError(f"Cannot serve on {host}:{port}: {exc.strerror or exc}.") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class StatusFile:
    """The JSON status the launcher reads; each write replaces the file atomically."""

    def __init__(self, path: Path | str | None):
        self.path = Path(path) if path else None
        self.data: dict[str, Any] = {"pid": os.getpid(), "requests": 0, "last_request": None}
        self.lock = threading.Lock()

    def update(self, **fields: Any) -> None:
        """Merge `fields` into the status and write it."""
        with self.lock:
            self.data.update(fields)
            if self.path is None:
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
            tmp.replace(self.path)

    def count_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """One more request served."""
        last = {"method": method, "path": path, "status": status, "seconds": round(seconds, 3)}
        self.update(requests=self.data["requests"] + 1, last_request=last, at=time.time())


class CountRequests:
    """ASGI middleware: every /v1 request, once its response has ended, counts in the status."""

    def __init__(self, app: Any, status: StatusFile):
        self.app = app
        self.status = status

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started, code = time.time(), [500]

        async def sending(message: dict) -> None:
            if message.get("type") == "http.response.start":
                code[0] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.status.count_request(
                scope.get("method", ""), scope["path"], code[0], time.time() - started
            )


class _OurFormat:
    """llama-cpp-python's Jinja formatter plus our stop texts, and BOS added only when the GGUF
    asks for it and the rendered prompt lacks it (as engine.export.gguf_tools.llama_prompt_ids)."""

    def __init__(self, formatter: Any, stop_texts: list[str], bos_text: str):
        self.formatter = formatter
        self.stop_texts = stop_texts
        self.bos_text = bos_text

    def __call__(self, **kwargs: Any) -> Any:
        result = self.formatter(**kwargs)
        stops = [result.stop] if isinstance(result.stop, str) else list(result.stop or [])
        result.stop = [s for s in dict.fromkeys(stops + self.stop_texts) if s]
        # added_special False lets llama.cpp add BOS, which it does only when the GGUF asks
        result.added_special = not self.bos_text or result.prompt.startswith(self.bos_text)
        return result


def build_app(
    gguf: str, alias: str, n_ctx: int, threads: int, api_key: str | None
) -> tuple[Any, Any]:
    """llama-cpp-python's FastAPI app serving `gguf` under `alias`, with our chat format; returns
    (app, the ChatFormat used)."""
    import llama_cpp.server.app as server_app
    from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from engine.chat.chat_format import build_formatter, choose_chat_format

    chosen = choose_chat_format(gguf)
    model = ModelSettings(
        model=gguf,
        model_alias=alias,
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    server = ServerSettings(api_key=api_key, interrupt_requests=False)
    try:
        app = server_app.create_app(server_settings=server, model_settings=[model])
    except Exception as exc:  # llama.cpp reports one generic failure; say what we know
        raise ServeError(
            f"llama.cpp could not load {gguf} (architecture {chosen.architecture}): {exc}",
            "The file may be damaged, or made for a newer llama.cpp.",
        ) from exc
    llm = server_app._llama_proxy()  # the loaded model (the proxy holds exactly one)
    formatter, _stop_ids = build_formatter(llm, chosen)
    bos = llm.token_bos()
    bos_text = llm._model.token_get_text(bos) if bos >= 0 else ""
    wrapped = _OurFormat(formatter, chosen.stop_texts, bos_text)
    llm.chat_handler = chat_formatter_to_chat_completion_handler(wrapped)
    return app, chosen


def _watch_parent(parent: int, keep_file: Path | None, server: Any) -> None:
    """End the server when the process that started it is gone, unless `keep_file` exists."""
    import psutil

    while not server.should_exit:
        time.sleep(PARENT_POLL_S)
        if keep_file is not None and keep_file.exists():
            continue
        if not psutil.pid_exists(parent) or os.getppid() != parent:
            server.should_exit = True


def _server_parts() -> Any:
    """uvicorn, once llama-cpp-python's `server` extra is known to be installed (else ServeError)."""
    try:
        import fastapi  # noqa: F401
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ServeError(
            f"llama-cpp-python's server is not installed in the training engine ({exc.name} is "
            "missing).",
            "Install it with pip install 'llama-cpp-python[server]' (or 'tunegraph[chat]').",
        ) from exc
    return uvicorn


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.chat.serve")
    p.add_argument("gguf")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--alias", default=None, help="the model name /v1/models lists")
    p.add_argument("--status", default=None, help="the JSON status file to keep up to date")
    p.add_argument("--parent", type=int, default=0, help="end when this process ends")
    p.add_argument("--keep-file", default=None, help="…unless this file exists")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Bind, load, serve until stopped (SIGTERM, Ctrl-C, or the parent's end)."""
    args = _parse(argv)
    api_key = os.environ.pop(KEY_ENV, None) or None
    status = StatusFile(args.status)
    alias = args.alias or Path(args.gguf).stem
    status.update(state="loading", host=args.host, port=args.port, model=alias, path=args.gguf)
    try:
        uvicorn = _server_parts()
        sock = bind(args.host, args.port)
        threads = args.threads or max(1, os.cpu_count() or 2)
        app, chosen = build_app(args.gguf, alias, args.ctx, threads, api_key)
    except TunegraphError as err:
        status.update(state="failed", error=err.message, hint=err.hint)
        print(f"tunegraph: {err}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    ready = {
        "state": "ready",
        "url": f"http://{host}:{args.port}/v1",
        "template_name": chosen.name,
        "template_source": chosen.source,
        "stop_texts": chosen.stop_texts,
        "api_key_required": api_key is not None,
        "started_at": time.time(),
    }

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            status.update(**ready)

    config = uvicorn.Config(
        CountRequests(app, status), log_level="warning", access_log=False, lifespan="off"
    )
    server = Server(config)
    if args.parent:
        keep = Path(args.keep_file) if args.keep_file else None
        threading.Thread(
            target=_watch_parent, args=(args.parent, keep, server), daemon=True
        ).start()
    try:
        server.run(sockets=[sock])
    finally:
        status.update(state="stopped", stopped_at=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(main())
