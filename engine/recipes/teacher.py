"""The teacher: a local GGUF model that writes a Generate node's rows (llama-cpp-python).

It is prompted as the chat pane prompts a model (engine.chat.chat_format): the GGUF's own chat
template, else its family's, never llama-cpp-python's llama-2 guess; generation stops on EOS, EOT
and the family's turn tokens. Unlike the chat pane it runs in the calling process (a data node's
worker, already apart from the app) and samples with a seed per reply, so the same spec gives the
same rows and a resumed run writes what an uninterrupted one would have.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EvalError, ModelError

CONTEXT_TOKENS = 4096  # prompt + reply; a passage of 1,500 characters is ~400 tokens


@dataclass
class Reply:
    """One reply: its text, tokens written, why it ended ("stop": the model finished, "length":
    max_tokens, "context": the prompt did not fit) and the seconds it took."""

    text: str
    tokens: int
    finish: str
    seconds: float


def teacher_file(teacher: str) -> Path:
    """The GGUF file a spec's teacher names (a path, `gguf:PATH`, `gguf:pypi:PACKAGE` or
    `pypi:PACKAGE`); ModelError naming the teacher when it is missing or not a GGUF."""
    from engine.eval.targets import check_gguf

    text = teacher.strip()
    bare = text[len("gguf:") :] if text.startswith("gguf:") else text
    try:
        return check_gguf(bare, "teacher")
    except EvalError as err:  # worded for any role; the teacher is a model to load
        raise ModelError(err.message, err.hint) from None


class Teacher:
    """A GGUF loaded with its chat template and stop tokens; `reply` writes one answer."""

    def __init__(self, path: Path | str, n_ctx: int = CONTEXT_TOKENS, threads: int | None = None):
        import llama_cpp

        from engine.chat.chat_format import build_formatter, choose_chat_format

        self.path = Path(path)
        try:
            self.format = choose_chat_format(self.path)
        except ModelError as err:  # a missing, foreign or truncated file
            raise ModelError(f"teacher: {err.message}", err.hint) from None
        threads = threads or max(1, os.cpu_count() or 1)
        try:
            self.llm: Any = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports one generic failure; say what we know
            raise ModelError(
                f"llama.cpp could not load the teacher {self.path} "
                f"(architecture {self.format.architecture}): {exc}",
                "The file may be damaged, or made for a newer llama.cpp.",
            ) from None
        try:
            self.formatter, self.stop_ids = build_formatter(self.llm, self.format)
        except Exception as err:
            self.close()
            raise ModelError(f"teacher {self.path}: {err}") from None

    @property
    def template_name(self) -> str:
        """Which chat template the teacher is prompted with, in words."""
        return self.format.name

    def reply(self, messages: list[dict], max_tokens: int, temperature: float, seed: int) -> Reply:
        """The teacher's answer to `messages` ([{role, content}]), sampled with `seed`."""
        from engine.export.gguf_tools import llama_prompt_ids

        rendered = self.formatter(messages=messages)
        ids = llama_prompt_ids(self.llm, rendered.prompt)
        room = self.llm.n_ctx() - len(ids)
        if room <= 1:
            return Reply("", 0, "context", 0.0)
        started = time.perf_counter()
        out = self.llm.create_completion(
            ids,
            max_tokens=min(max_tokens, room),
            temperature=temperature,
            seed=seed,
            stop=self.format.stop_texts,
            stopping_criteria=rendered.stopping_criteria,
        )
        choice = out["choices"][0]
        finish = choice.get("finish_reason") or "stop"
        if finish == "length" and max_tokens > room:
            finish = "context"
        return Reply(
            choice["text"].strip(),
            int(out["usage"]["completion_tokens"]),
            finish,
            time.perf_counter() - started,
        )

    def close(self) -> None:
        """Free the model."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
