"""Which chat template a run of this base will train with, and why: told before anything loads.

`template_plan(base)` reads only what is at hand and cheap (a GGUF's header, a folder's or the hub
cache's tokenizer files; no torch, no download), so the properties panel, the estimate and the
compiler can show it: the base's own template, a family picked on the Base model node, or — for a
base without a template whose node still says `tokenizer` — the refusal with what to pick
(engine.data.family_templates.choices_hint). The worker decides the same way on the loaded
tokenizer (`family_templates.apply_choice`), so what is shown here is what the run does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.data.family_templates import CHATML, FAMILIES, TOKENIZER, choices_hint, known_as
from engine.errors import ModelError
from engine.models.sources import HUB_ID
from engine.spec import BaseModelSpec

UNKNOWN = object()  # the base's own template cannot be told without downloading or loading it


@dataclass(frozen=True)
class TemplatePlan:
    """The template a run will use: `template` is "tokenizer" (the base's own), a family name, or
    None when the run would be refused (`problem` says why, `hint` what to pick)."""

    choice: str
    template: str | None
    summary: str
    problem: str = ""
    hint: str = ""


def template_plan(base: BaseModelSpec) -> TemplatePlan:
    """What the run of `base` (its source already resolved to an absolute path where it names a
    file or folder) will train with, as a sentence; a `problem` and `hint` when it would be
    refused."""
    choice = base.chat_template or TOKENIZER
    source = base.source.strip()
    if source.startswith("builtin:"):
        own, where, arch = "builtin", "Tunegraph's builtin model (ChatML)", "llama"
    else:
        own, where, arch = _own_template(source)
    if choice != TOKENIZER:
        family = FAMILIES.get(choice)
        if family is None:
            return TemplatePlan(
                choice, None, "", f"unknown chat template {choice!r}", choices_hint(None)
            )
        what = (
            "Tunegraph's ChatML (answers end with <|im_end|>, or with the model's own "
            "end-of-text token when its vocabulary lacks <|im_end|>)"
            if choice == CHATML
            else f"the {family.label} family's original template ({family.source})"
        )
        replaces = " It replaces the model's own template." if own and own is not UNKNOWN else ""
        return TemplatePlan(
            choice, choice, f"Chat template: {what}, picked on this node.{replaces}"
        )
    if own is UNKNOWN:
        return TemplatePlan(
            choice, TOKENIZER, f"Chat template: the model's own ({where}; checked when it loads)."
        )
    if own:
        same = known_as(str(own))
        also = f", identical to the {FAMILIES[same].label} family's" if same else ""
        return TemplatePlan(
            choice, TOKENIZER, f"Chat template: the model's own, from {where}{also}."
        )
    return TemplatePlan(
        choice,
        None,
        "",
        f"no chat template in {where}, and a run will not guess one",
        choices_hint(arch),
    )


def _own_template(source: str) -> tuple[str | None | object, str, str | None]:
    """(the base's own template, or None, or UNKNOWN; where it was looked for; architecture)."""
    if source.startswith("gguf:"):
        from engine.models.gguf_base import header, header_path

        try:
            meta = header(header_path(source[len("gguf:") :]))
        except ModelError:
            return UNKNOWN, "the GGUF file cannot be read yet", None
        return (
            meta.get("tokenizer.chat_template") or None,
            "the GGUF file",
            meta.get("general.architecture"),
        )
    folder = Path(source).expanduser()
    if folder.is_absolute():
        own = _folder_template(lambda name: folder / name)
        return own, "its tokenizer files", _model_type(folder / "config.json")
    return _hub_template(source)


def _folder_template(locate: Callable[[str], Path | str | None]) -> str | None | object:
    """The template a tokenizer folder holds: chat_template.jinja, chat_template.json or
    tokenizer_config.json's `chat_template` (a string, or named templates whose `default` counts);
    UNKNOWN when tokenizer_config.json cannot be found."""
    jinja = locate("chat_template.jinja")
    if jinja is not None and Path(jinja).is_file():
        return Path(jinja).read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = locate(name)
        if path is None or not Path(path).is_file():
            continue
        try:
            value = json.loads(Path(path).read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            return UNKNOWN
        if isinstance(value, list):  # [{"name": "default", "template": …}, …]
            value = next((t.get("template") for t in value if t.get("name") == "default"), None)
        if value:
            return value
        if name == "tokenizer_config.json":
            return None
    return UNKNOWN


def _hub_template(repo_id: str) -> tuple[str | None | object, str, str | None]:
    """The template of a hub model from the local cache only (no request)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return UNKNOWN, "the hub model's tokenizer", None

    def cached(name: str) -> str | None:
        try:
            found = try_to_load_from_cache(repo_id, name)
        except Exception:  # noqa: BLE001 - not a hub id (a relative path): nothing cached
            return None
        return found if isinstance(found, str) else None

    own = _folder_template(cached)
    config = cached("config.json")
    if own is not UNKNOWN:
        where = "its cached tokenizer files"
    else:
        where = "not downloaded yet" if HUB_ID.match(repo_id) else "the source cannot be read yet"
    return own, where, _model_type(Path(config)) if config else None


def _model_type(config: Path) -> str | None:
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
