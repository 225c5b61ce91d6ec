"""Chat with a GGUF: `ChatSession(path)` drives `python -m engine.chat.server` over JSON lines.

The model lives in a child process, so a corrupt file or a llama.cpp crash becomes a ChatError in
the caller, never a dead app. `stream()` yields text pieces as they are generated; `stop()` (from
any thread) ends the current answer early; `stats` describes the last answer; `template_name`
says which chat template the session uses. Several sessions can run side by side.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import TunegraphError
from engine.paths import SOURCE_ROOT
from engine.rundir import entry_command
from engine.setup.interpreters import engine_python, same_install
from engine.setup.streaming import stop_process

CLOSE_TIMEOUT_S = 5.0


class ChatError(TunegraphError):
    """The chat model cannot be loaded, or its process failed while answering."""


@dataclass
class ChatStats:
    """Figures of one answer (the `chat --json` shape, plus seconds)."""

    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float | None
    stop_reason: str  # "stop" (end of turn), "length" (max_tokens), "interrupted" (stop())
    seconds: float | None = None

    def as_dict(self) -> dict:
        """The figures as a plain dict."""
        return asdict(self)


class ChatSession:
    """A GGUF model loaded in its own process; see the module docstring."""

    def __init__(self, gguf_path: Path | str, n_ctx: int = 4096, n_threads: int | None = None):
        self.path = str(gguf_path)
        self.stats: ChatStats | None = None
        self.template_name: str | None = None
        self.info: dict = {}
        self._ids = itertools.count(1)
        self._current: int | None = None
        self._write_lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        python = engine_python()  # llama-cpp-python lives in the engine's environment
        env = dict(os.environ)
        if same_install(python):  # a checkout: its modules; else the engine's installed ones
            root = str(SOURCE_ROOT)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONIOENCODING", "utf-8")
        self._proc: subprocess.Popen | None = subprocess.Popen(
            entry_command(python, "chat_server"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        try:
            self._send({"cmd": "load", "path": self.path, "n_ctx": n_ctx, "n_threads": n_threads})
            reply = self._read("loading the model")
            if reply.get("event") == "error":
                raise ChatError(
                    reply.get("message") or "the model could not be loaded", reply.get("hint")
                )
        except BaseException:
            self.close()
            raise
        self.info = reply
        self.template_name = reply.get("template_name")

    # -- talking to the process -------------------------------------------------------------------
    def _send(self, msg: dict) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise ChatError("The chat session is closed.")
        try:
            with self._write_lock:
                self._proc.stdin.write(json.dumps(msg) + "\n")
                self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise self._died("sending a request") from exc

    def _read(self, doing: str) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise self._died(doing)
            try:
                return json.loads(line)
            except ValueError:
                continue  # not ours: the protocol is only JSON lines

    def _died(self, doing: str) -> ChatError:
        code = self._proc.wait(timeout=CLOSE_TIMEOUT_S) if self._proc else None
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        detail = (": " + " ".join(tail)) if tail else ""
        return ChatError(
            f"The chat process ended while {doing} {self.path} (exit code {code}){detail}",
            "The file may be damaged or not supported by llama.cpp.",
        )

    # -- public API -------------------------------------------------------------------------------
    def stream(
        self,
        messages: list[dict],
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        system: str | None = None,
    ) -> Iterator[str]:
        """Yield the answer to `messages` ([{"role", "content"}]) piece by piece.

        `system` is put first as a system message unless `messages` already starts with one.
        When the answer ends, `self.stats` holds its figures. Leaving the loop early stops the
        generation.
        """
        messages = [dict(m) for m in messages]
        if system and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": system})
        gen_id = next(self._ids)
        self.stats = None
        self._send(
            {
                "cmd": "generate",
                "id": gen_id,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
            }
        )
        self._current = gen_id
        finished = False
        try:
            while True:
                reply = self._read("answering with")
                if reply.get("id") != gen_id:
                    continue  # a late line of an earlier, abandoned answer
                event = reply.get("event")
                if event == "token":
                    yield reply["text"]
                elif event == "done":
                    finished = True
                    self.stats = ChatStats(
                        reply["prompt_tokens"],
                        reply["completion_tokens"],
                        reply.get("tokens_per_s"),
                        reply["stop_reason"],
                        reply.get("seconds"),
                    )
                    return
                elif event == "error":
                    finished = True
                    raise ChatError(reply.get("message") or "generation failed", reply.get("hint"))
        finally:
            self._current = None
            if not finished and self._proc is not None and self._proc.poll() is None:
                self._drain(gen_id)

    def _drain(self, gen_id: int) -> None:
        """Stop an answer the caller walked away from and read its remaining lines."""
        try:
            self._send({"cmd": "stop", "id": gen_id})
            while True:
                reply = self._read("stopping")
                if reply.get("id") == gen_id and reply.get("event") in ("done", "error"):
                    return
        except ChatError:
            return

    def loss(self, messages: list[dict], reference: str) -> tuple[float, int]:
        """(summed negative log-likelihood in nats, tokens) of `reference` as the model's answer
        to `messages` (teacher forcing, through the answer's end-of-turn token)."""
        gen_id = next(self._ids)
        self._send({"cmd": "loss", "id": gen_id, "messages": messages, "reference": reference})
        while True:
            reply = self._read("scoring with")
            if reply.get("id") != gen_id:
                continue
            if reply.get("event") == "error":
                raise ChatError(reply.get("message") or "scoring failed", reply.get("hint"))
            return float(reply["nll"]), int(reply["tokens"])

    def chat(self, messages: list[dict], **kwargs: Any) -> str:
        """The whole answer as one string (see `stream` for the arguments)."""
        return "".join(self.stream(messages, **kwargs))

    def stop(self) -> None:
        """End the answer being streamed (safe to call from another thread)."""
        gen_id = self._current
        if gen_id is not None and self._proc is not None and self._proc.poll() is None:
            try:
                self._send({"cmd": "stop", "id": gen_id})
            except ChatError:
                pass

    def close(self) -> None:
        """Ask the process to exit, then make sure it has (terminate, kill)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None and proc.stdin is not None:
                    proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                    proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(timeout=CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stop_process(proc, CLOSE_TIMEOUT_S)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        if not self._stderr.closed:
            self._stderr.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.close()
