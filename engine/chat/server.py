"""The chat process: `python -m engine.chat.server`, llama-cpp-python behind JSON lines.

It runs apart from the app (and from any caller) so a corrupt GGUF or a llama.cpp abort ends this
process, not the UI. Requests arrive one JSON object per line on stdin, replies leave one per line
on stdout (C libraries that print to stdout are redirected to stderr first):

  {"cmd": "load", "path", "n_ctx", "n_threads"}  -> {"event": "loaded", "template_name", …}
  {"cmd": "generate", "id", "messages", "max_tokens", "temperature", "top_p"}
                                                   -> {"event": "token", "id", "text"}…
                                                      {"event": "done", "id", stats…}
  {"cmd": "loss", "id", "messages", "reference"}  -> {"event": "loss", "id", "nll", "tokens"}
  {"cmd": "stop", "id"}                            -> the generation `id` ends ("interrupted")
  {"cmd": "close"}                                 -> the process exits
Any failure is answered with {"event": "error", "id"?, "message", "hint"}.

The prompt is rendered with the template engine.chat.chat_format chooses (the GGUF's own, else
its family's, else plain text) through llama-cpp-python's Jinja formatter, and generation stops on
EOS, EOT and the family's turn tokens (the formatter alone would stop on EOS only). `loss` is the
model's summed negative log-likelihood of a reference answer (through its end-of-turn token) after
the same rendered prompt, under teacher forcing (the evals' `loss` metric on a GGUF).
"""

from __future__ import annotations

import codecs
import json
import os
import queue
import sys
import threading
import time
from typing import Any, TextIO

from engine.errors import TunegraphError


class ChatServer:
    """One loaded model and the generation loop; writes replies to `out`."""

    def __init__(self, out: TextIO):
        self.out = out
        self.llm = None
        self.formatter = None
        self.stop_ids: set[int] = set()
        self.stop_texts: list[str] = []
        self.current: Any = None
        self.stop_event = threading.Event()

    def send(self, **reply: Any) -> None:
        """Write one JSON reply line to `out`."""
        self.out.write(json.dumps(reply) + "\n")
        self.out.flush()

    # -- load -------------------------------------------------------------------------------------
    def load(self, path: str, n_ctx: int = 4096, n_threads: int | None = None) -> None:
        """Load a GGUF, choose its chat template and stop tokens; reply `loaded` or `error`."""
        import llama_cpp

        from engine.chat.chat_format import build_formatter, choose_chat_format

        chosen = choose_chat_format(path)  # clear errors for missing, foreign, truncated files
        threads = n_threads or max(1, (os.cpu_count() or 2))
        try:
            llm = llama_cpp.Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports one generic failure; say what we know
            raise TunegraphError(
                f"llama.cpp could not load {path} (architecture {chosen.architecture}): {exc}",
                "The file may be damaged, or made for a newer llama.cpp.",
            ) from exc
        eos = llm.token_eos()
        try:
            formatter, stop_ids = build_formatter(llm, chosen)
        except TunegraphError as err:
            llm.close()
            raise TunegraphError(f"{path}: {err.message}") from err
        if self.llm is not None:
            self.llm.close()
        self.llm, self.formatter = llm, formatter
        self.stop_ids = set(stop_ids)
        self.stop_texts = list(chosen.stop_texts)
        self.send(
            event="loaded",
            template_name=chosen.name,
            template_source=chosen.source,
            family=chosen.family,
            architecture=chosen.architecture,
            n_ctx=llm.n_ctx(),
            stop_ids=sorted(self.stop_ids),
            eos_id=eos,
        )

    # -- generate ---------------------------------------------------------------------------------
    def generate(
        self,
        gen_id: Any,
        messages: list[dict],
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
    ) -> None:
        """Stream one answer as `token` events and finish with `done` (with stats)."""
        import llama_cpp

        from engine.export.gguf_tools import llama_prompt_ids

        if self.llm is None:
            raise TunegraphError("No model is loaded.")
        llm = self.llm
        prompt = self.formatter(messages=messages).prompt
        ids = llama_prompt_ids(llm, prompt)
        room = llm.n_ctx() - len(ids)
        if room <= 0:
            raise TunegraphError(
                f"The conversation is {len(ids)} tokens, more than the context of {llm.n_ctx()}.",
                "Start a new chat or shorten it.",
            )
        max_tokens = max(1, min(int(max_tokens), room))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        reason, count, held, sent_any = "length", 0, "", False
        started = time.time()
        first_at = last_at = None
        for token in llm.generate(
            ids, temp=max(0.0, float(temperature)), top_p=float(top_p), reset=True
        ):
            if self.stop_event.is_set():
                reason = "interrupted"
                break
            if token in self.stop_ids or llama_cpp.llama_vocab_is_eog(vocab, token):
                reason = "stop"
                break
            count += 1
            last_at = time.time()
            first_at = first_at or last_at
            held += decoder.decode(llm.detokenize([token]))
            if not sent_any:
                held = held.lstrip()
            held, hit = self._cut_stop_text(held)
            safe = self._safe_prefix(held) if not hit else held
            if safe:
                self.send(event="token", id=gen_id, text=safe)
                sent_any = True
                held = held[len(safe) :]
            if hit:
                reason = "stop"
                break
            if count >= max_tokens:
                break
        held += decoder.decode(b"", final=True)
        if held and reason != "stop":
            self.send(event="token", id=gen_id, text=held)
        span = (last_at - first_at) if first_at and last_at and count > 1 else 0.0
        self.send(
            event="done",
            id=gen_id,
            prompt_tokens=len(ids),
            completion_tokens=count,
            tokens_per_s=round((count - 1) / span, 2) if span > 0 else None,
            stop_reason=reason,
            seconds=round(time.time() - started, 3),
        )

    # -- loss -------------------------------------------------------------------------------------
    def loss(self, gen_id: Any, messages: list[dict], reference: str) -> None:
        """Reply `loss`: the summed negative log-likelihood (nats) of `reference` as the answer to
        `messages`, and over how many tokens (the answer's tokens through its end-of-turn)."""
        import llama_cpp
        import numpy as np

        from engine.export.gguf_tools import llama_prompt_ids

        if self.llm is None:
            raise TunegraphError("No model is loaded.")
        llm = self.llm
        prompt = self.formatter(messages=messages).prompt
        answered = [*messages, {"role": "assistant", "content": reference}]
        full = self.formatter(messages=answered).prompt
        prompt_ids = llama_prompt_ids(llm, prompt)
        if full.startswith(prompt):  # the answer as the template writes it, to its end of turn
            answer = llm.tokenize(full[len(prompt) :].encode("utf-8"), add_bos=False, special=True)
            end = next((i for i, t in enumerate(answer) if t in self.stop_ids), None)
            answer = answer[: end + 1] if end is not None else answer
        else:
            answer = llm.tokenize(reference.encode("utf-8"), add_bos=False, special=False)
            answer.append(llm.token_eos())
        answer = answer[: max(0, llm.n_ctx() - len(prompt_ids))]
        llm.reset()
        llm.eval(prompt_ids)
        nll = 0.0
        for token in answer:
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)
            ).astype(np.float64)
            top = logits.max()
            nll += float(np.log(np.exp(logits - top).sum()) + top - logits[token])
            llm.eval([token])
        self.send(event="loss", id=gen_id, nll=nll, tokens=len(answer))

    def _cut_stop_text(self, text: str) -> tuple[str, bool]:
        """Cut `text` at the first stop string written as plain text (not as a token)."""
        cuts = [text.find(s) for s in self.stop_texts if s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def _safe_prefix(self, text: str) -> str:
        """The part of `text` that cannot be the start of a stop string still being written."""
        keep = 0
        for stop in self.stop_texts:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        return text[: len(text) - keep]

    def close(self) -> None:
        """Free the loaded model, if any."""
        if self.llm is not None:
            self.llm.close()
            self.llm = None


def _protocol_stdout() -> TextIO:
    """A private copy of stdout for replies; fd 1 is pointed at stderr so stray prints from C
    code can never corrupt the protocol."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(out_fd, "w", encoding="utf-8", buffering=1)


def _quiet_llama_logs() -> None:
    """Silence llama.cpp's C log lines (they would fill the caller's stderr)."""
    try:
        import llama_cpp

        @llama_cpp.llama_log_callback
        def _drop(level, text, user_data):  # noqa: ARG001
            return None

        llama_cpp.llama_log_set(_drop, None)
        _quiet_llama_logs.keep = _drop  # type: ignore[attr-defined]  # keep the callback alive
    except Exception:  # an older binding without the hook: logs stay on stderr
        pass


def main() -> int:
    """Serve requests from stdin until `close` or end of input."""
    out = _protocol_stdout()
    _quiet_llama_logs()
    server = ChatServer(out)
    requests: queue.Queue[dict] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("cmd") == "stop":
                if server.current is not None and msg.get("id") in (None, server.current):
                    server.stop_event.set()
                continue
            requests.put(msg)
        requests.put({"cmd": "close"})

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        msg = requests.get()
        cmd = msg.get("cmd")
        if cmd == "close":
            server.close()
            return 0
        gen_id = msg.get("id")
        try:
            if cmd == "load":
                server.load(msg["path"], int(msg.get("n_ctx") or 4096), msg.get("n_threads"))
            elif cmd == "loss":
                server.loss(gen_id, msg["messages"], msg["reference"])
            elif cmd == "generate":
                server.stop_event.clear()
                server.current = gen_id
                try:
                    server.generate(
                        gen_id,
                        msg["messages"],
                        msg.get("max_tokens", 256),
                        msg.get("temperature", 0.7),
                        msg.get("top_p", 0.95),
                    )
                finally:
                    server.current = None
            else:
                server.send(event="error", id=gen_id, message=f"unknown command {cmd!r}", hint=None)
        except TunegraphError as err:
            server.send(event="error", id=gen_id, message=err.message, hint=err.hint)
        except Exception as exc:  # noqa: BLE001 - answer, never die on one bad request
            server.send(event="error", id=gen_id, message=f"{type(exc).__name__}: {exc}", hint=None)


if __name__ == "__main__":
    sys.exit(main())
