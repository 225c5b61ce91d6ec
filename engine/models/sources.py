"""Base-model sources: a hub id, a local folder, `gguf:PATH`, `builtin:tiny-llama`, or `run:RUN_ID`.

`resolve_source` is cheap (no torch) and tells what a source is; `load_tokenizer` and `load_model`
do the real loading in the worker. The HF token comes from the keyring, never from the spec.

A hub id is checked once per process with one short request (`check_hub`) before anything is
loaded: an unreachable hub, a gated model without a token and an id that does not exist each get
their own sentence at once, instead of half a minute of retries and a library traceback. When
the hub cannot be reached but the model is cached, it is loaded from the cache alone.

`run:RUN_ID` is what an earlier run delivered (a chained run's base, DESIGN "The flow of one
run"): a full fine-tuning run's model folder, or a LoRA run's own base with its adapter merged in.
It resolves to the first run's base (so shape, config and architecture are read from it before
the upstream run has finished) plus the adapters to merge, oldest first; `load_model` merges them
after loading, and `load_tokenizer` reads the upstream run's tokenizer, saved with the exact chat
template it trained with.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.models.targets import linear_layer_names, resolve_targets
from engine.settings import not_cached_offline
from engine.spec import BaseModelSpec

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PROBE_TIMEOUT_S = 5.0  # one HEAD request; HF_HUB_ETAG_TIMEOUT, when set, wins
log = logging.getLogger(__name__)
# (repo id, revision) -> True when the hub answered, False when only the cache can serve it
_hub_checked: dict[tuple[str, str | None], bool] = {}


@dataclass
class ResolvedSource:
    """What a base-model source is and where it lies (see `resolve_source`)."""

    kind: str  # "builtin" | "folder" | "gguf" | "hub"
    location: str  # folder path, gguf file path or hub id
    gguf_file: str | None = None  # file name inside `location` for gguf sources
    local_only: bool = False  # a hub id served from the local cache (offline, or hub unreachable)
    # run:RUN_ID sources: the upstream runs' adapter folders to merge after loading, oldest
    # first; the folder holding the last run's tokenizer; the first run's Base model spec (its
    # revision, remote code and template choice); the run ids, oldest first
    adapters: tuple[str, ...] = ()
    tokenizer_dir: str | None = None
    origin: BaseModelSpec | None = None
    runs: tuple[str, ...] = ()


def resolve_source(spec: BaseModelSpec, build_builtin: bool = True) -> ResolvedSource:
    """Classify a base-model source and check it exists; raises ModelError naming what is wrong."""
    source = spec.source.strip()
    if source.startswith("run:"):
        return resolve_run(source[len("run:") :].strip(), build_builtin)
    if source.startswith("builtin:"):
        from engine.models.tiny import resolve_builtin

        if not build_builtin:
            return ResolvedSource("builtin", source)
        return ResolvedSource("builtin", str(resolve_builtin(source)))
    if source.startswith("gguf:"):
        from engine.models.gguf_base import gguf_path

        path = gguf_path(source[len("gguf:") :])  # a file, or pypi:PACKAGE shipping one
        return ResolvedSource("gguf", str(path.parent), gguf_file=path.name)
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or os.sep in source[:1]:
        if not path.is_dir():
            raise ModelError(
                f"Base model: the folder {path} does not exist.",
                "Choose a model folder, a hub id, a gguf: file or builtin:tiny-llama.",
            )
        if not (path / "config.json").is_file():
            raise ModelError(
                f"Base model: the folder {path} has no config.json, so it is not a "
                "Hugging Face model folder.",
                "Pick the folder that holds config.json and the weights.",
            )
        return ResolvedSource("folder", str(path))
    if HUB_ID.match(source):
        from engine.settings import check_hub_id

        revision = spec.revision or None
        local_only = check_hub_id(source, revision)  # offline mode: only cached models
        if not local_only:
            local_only = not check_hub(source, revision)
        return ResolvedSource("hub", source, local_only=local_only)
    raise ModelError(
        f"Base model: {source!r} is neither an existing folder nor a hub id like org/name.",
        "Use a hub id, a local folder, gguf:PATH or builtin:tiny-llama.",
    )


def resolve_run(
    run_id: str, build_builtin: bool = True, seen: tuple[str, ...] = ()
) -> ResolvedSource:
    """`run:RUN_ID`: the run's full model folder when it trained every weight and has delivered
    it, else its own base resolved (recursively) plus its adapter folder to merge. ModelError for
    a run that does not exist or whose chain loops."""
    from engine import paths
    from engine.rundir import ADAPTER, MODEL, SPEC_FILE
    from engine.spec import JobSpec

    if run_id in seen:
        raise ModelError(f"Base model run:{run_id} starts from itself (through {', '.join(seen)}).")
    run_dir = paths.runs_dir() / run_id
    if not run_id or not (run_dir / SPEC_FILE).is_file():
        raise ModelError(
            f"Base model run:{run_id}: there is no run with that id in {paths.runs_dir()}.",
            "`tunegraph list` shows the runs and their ids.",
        )
    upstream = JobSpec.load(run_dir / SPEC_FILE)
    model_dir = run_dir / MODEL
    if (model_dir / "config.json").is_file():  # a full fine-tuning run's delivered model
        return ResolvedSource(
            "folder",
            str(model_dir),
            tokenizer_dir=str(model_dir),
            origin=upstream.base_model,
            runs=(run_id,),
        )
    source = upstream.base_model.source.strip()
    if source.startswith("run:"):
        base = resolve_run(source[len("run:") :].strip(), build_builtin, (*seen, run_id))
    else:
        base = resolve_source(upstream.base_model, build_builtin)
    # a full run not delivered yet: its base, for the shape; loading says it has no model yet
    delivers = run_dir / (MODEL if upstream.lora.full else ADAPTER)
    return dataclasses.replace(
        base,
        adapters=base.adapters if upstream.lora.full else (*base.adapters, str(delivers)),
        tokenizer_dir=str(delivers),
        origin=base.origin or upstream.base_model,
        runs=(*base.runs, run_id),
    )


def upstream_missing(resolved: ResolvedSource) -> str:
    """Why a `run:` source cannot be loaded yet ("" when it can): an upstream run that has not
    delivered its adapter or model."""
    for folder in resolved.adapters:
        if not (Path(folder) / "adapter_config.json").is_file():
            return f"the run {Path(folder).parent.name} has delivered no adapter yet"
    if (
        resolved.tokenizer_dir
        and not (Path(resolved.tokenizer_dir) / "tokenizer_config.json").is_file()
    ):
        return f"the run {resolved.runs[-1]} has delivered no model yet"
    return ""


def hub_kwargs(spec: BaseModelSpec, resolved: ResolvedSource) -> dict:
    """from_pretrained keyword arguments for a source: remote code, revision, token, GGUF file
    (for a `run:` source, those of the first run's base)."""
    spec = resolved.origin or spec
    kwargs: dict = {"trust_remote_code": spec.trust_remote_code}
    if resolved.kind == "hub":
        from engine.secrets import get_hf_token

        if spec.revision:
            kwargs["revision"] = spec.revision
        token = get_hf_token()
        if token:
            kwargs["token"] = token
        if resolved.local_only:
            kwargs["local_files_only"] = True
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    return kwargs


def load_config(spec: BaseModelSpec, resolved: ResolvedSource | None = None) -> Any:
    """The base model's transformers config (no weights)."""
    from transformers import AutoConfig

    resolved = resolved or resolve_source(spec)
    try:
        return AutoConfig.from_pretrained(resolved.location, **hub_kwargs(spec, resolved))
    except Exception as exc:  # the library raises many types; the user needs one sentence
        raise _load_failed("config", spec, exc) from exc


def _load_failed(what: str, spec: BaseModelSpec, exc: Exception) -> ModelError:
    source = spec.source.strip()
    if HUB_ID.match(source) and not Path(source).expanduser().exists():
        known = hub_error(exc, source, spec.revision or None)
        if known is not None:
            return known
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = None
    if "offline" in text.lower() or "connect" in text.lower() or "couldn't find" in text.lower():
        hint = (
            "The model is not in the local cache and the hub cannot be reached; download it "
            "once while online or choose a local folder."
        )
    elif "401" in text or "gated" in text.lower() or "token" in text.lower():
        hint = "The repository may be gated: add your Hugging Face token in Settings."
    return ModelError(f"Base model {spec.source!r}: could not load the {what}: {text}", hint)


# -- the hub: one quick check, and one sentence per way it can fail ------------------------------
HUB_HINT = "Check the network, or turn on offline mode in Settings and use a cached or local model."


def check_hub(repo_id: str, revision: str | None = None) -> bool:
    """Ask the hub once (per process) for the model's config.json, with a short timeout and no
    retries. Returns True when the hub serves it, False when the hub cannot be reached or refuses
    it but the model is in the local cache (load it with `local_files_only`). Raises ModelError
    with one sentence otherwise: hub unreachable, gated model, no such model or revision."""
    key = (repo_id, revision)
    if key in _hub_checked:
        return _hub_checked[key]
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    from engine.secrets import get_hf_token

    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_PROBE_TIMEOUT_S)
    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, "config.json", revision=revision),
            token=get_hf_token() or None,
            timeout=timeout,
            retry_on_errors=False,
        )
        _hub_checked[key] = True
        return True
    except Exception as exc:  # noqa: BLE001 - every failure is classified below
        if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
            log.info("hub check for %s failed (%s); using the cached copy", repo_id, exc)
            _hub_checked[key] = False
            return False
        error = hub_error(exc, repo_id, revision)
        if error is None:
            lines = str(exc).strip().splitlines()
            error = ModelError(
                f"Could not check {repo_id} on the Hugging Face hub: "
                + (lines[0] if lines else type(exc).__name__),
                HUB_HINT,
            )
        log.info("hub check for %s failed: %r", repo_id, exc)
        raise error from exc


def hub_unreachable(repo_id: str) -> ModelError:
    """The sentence for a hub that cannot be reached (no network, a firewall, a proxy)."""
    return ModelError(f"Could not reach the Hugging Face hub for {repo_id}", HUB_HINT)


def hub_error(
    exc: BaseException, repo_id: str, revision: str | None = None, has_token: bool | None = None
) -> ModelError | None:
    """One sentence for a failure of the hub or of huggingface_hub/transformers loading from it,
    found anywhere in the exception's chain; None when it is none of the known kinds.

    Kinds: an id the hub refuses as malformed, a gated model (no token, or a token without
    access), a model id that does not exist (or is private), a revision that does not exist, a repository without config.json, offline
    mode with the model not cached, and the hub unreachable (connection errors and timeouts).
    """
    from huggingface_hub import errors as hf

    chain = _chain(exc)
    if has_token is None:
        from engine.secrets import get_hf_token

        has_token = bool(get_hf_token())
    if _first(chain, hf.HFValidationError) is not None:
        return ModelError(
            f"{repo_id!r} is not a valid Hugging Face model id",
            "Check the id: org/name, letters, digits, '-', '_' and '.', no '--' or '..'.",
        )
    if _first(chain, hf.GatedRepoError) is not None:
        if has_token:
            return ModelError(
                f"{repo_id} is a gated model and your Hugging Face token has no access to it",
                f"Ask for access on https://huggingface.co/{repo_id}, then try again.",
            )
        return ModelError(
            f"{repo_id} is a gated model and no Hugging Face token is set",
            f"Add your token in Settings (after asking for access on "
            f"https://huggingface.co/{repo_id}).",
        )
    if _first(chain, hf.RevisionNotFoundError) is not None:
        return ModelError(
            f"{repo_id} has no revision {revision or 'main'!r} on the Hugging Face hub",
            "Check the base model's revision (a branch, tag or commit).",
        )
    if _first(chain, hf.RepositoryNotFoundError) is not None:
        private = "" if has_token else "; a private model also needs your token in Settings"
        return ModelError(
            f"The Hugging Face hub has no model {repo_id}",
            f"Check the id (org/name, as on its hub page){private}.",
        )
    if _first(chain, hf.OfflineModeIsEnabled) is not None:
        return not_cached_offline(repo_id)
    if _first(chain, hf.RemoteEntryNotFoundError) is not None:
        return ModelError(
            f"{repo_id} has no config.json, so it is not a transformers model",
            "For a GGUF-only repository, download the .gguf file and use gguf:PATH.",
        )
    if _first(chain, hf.LocalEntryNotFoundError) is not None or any(map(_is_network_error, chain)):
        return hub_unreachable(repo_id)
    for err in chain:
        if isinstance(err, hf.HfHubHTTPError):
            status = getattr(getattr(err, "response", None), "status_code", None)
            if status == 401 and has_token:
                return ModelError(
                    f"The Hugging Face hub refused your token for {repo_id}",
                    "Check the token in Settings (it may be expired or revoked).",
                )
            if status is None or status >= 500 or status in (404, 407, 408, 429):
                return hub_unreachable(repo_id)
    return None


def _first(chain: list[BaseException], kind: type) -> BaseException | None:
    return next((e for e in chain if isinstance(e, kind)), None)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 20:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "ConnectionError",
    "NetworkError",
    "NewConnectionError",
    "ProxyError",
    "ReadTimeout",
    "TimeoutException",
    "Timeout",
    "MaxRetryError",
}


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any(
        cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
        and cls.__name__ in _NETWORK_ERRORS
        for cls in type(exc).__mro__
    )


def load_tokenizer(spec: BaseModelSpec, resolved: ResolvedSource) -> Any:
    """The base model's tokenizer with the chat template the Base model node picks (its own by
    default; ModelError naming the choices when it has none, see engine.data.family_templates),
    and a pad token distinct from EOS where the vocabulary allows."""
    from transformers import AutoTokenizer

    from engine.data.family_templates import apply_choice

    choice = spec.chat_template
    delivered = resolved.tokenizer_dir and (Path(resolved.tokenizer_dir) / "tokenizer_config.json")
    try:
        if delivered and delivered.is_file():  # run:RUN_ID: the tokenizer it trained with
            tok = AutoTokenizer.from_pretrained(resolved.tokenizer_dir)
        elif resolved.kind == "gguf":  # rebuilt from the GGUF's vocabulary
            from engine.models.gguf_base import load_tokenizer as load_gguf_tokenizer

            tok = load_gguf_tokenizer(Path(resolved.location) / resolved.gguf_file)
        else:
            tok = AutoTokenizer.from_pretrained(resolved.location, **hub_kwargs(spec, resolved))
        if resolved.origin is not None and not (delivered and delivered.is_file()):
            # run:RUN_ID not delivered yet (an estimate): the first run's base and its choice
            choice = spec.chat_template if choice != "tokenizer" else resolved.origin.chat_template
    except ModelError:
        raise
    except Exception as exc:  # the library raises many types; the user needs one sentence
        raise _load_failed("tokenizer", spec, exc) from exc
    note = apply_choice(tok, choice, repr(spec.source), architecture_of(resolved))
    if note:
        log.info("%s", note)
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # Our labels come from the assistant mask, never from "is not pad", so pad = eos would not
        # hide EOS from training; still prefer a distinct pad token where the vocabulary has one.
        # A text the vocabulary lacks maps to the unknown token's id, and set as pad it would be
        # saved as a new token (the reloaded tokenizer then outgrows the model): real tokens only.
        for candidate in ("<pad>", "<|finetune_right_pad_id|>", "<|endoftext|>", tok.unk_token):
            tid = tok.convert_tokens_to_ids(candidate) if candidate else None
            real = tid is not None and tok.convert_ids_to_tokens(tid) == candidate
            if real and tid != tok.eos_token_id:
                tok.pad_token = candidate
                break
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def architecture_of(resolved: ResolvedSource) -> str | None:
    """The model type of a resolved source without loading it: a GGUF's `general.architecture`,
    a folder's (or the hub cache's) config.json `model_type`; None when it cannot be told."""
    if resolved.kind == "gguf":
        from engine.models.gguf_base import architecture

        try:
            return architecture(Path(resolved.location) / str(resolved.gguf_file))
        except ModelError:
            return None
    config = Path(resolved.location) / "config.json"
    if resolved.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(resolved.location, "config.json")
        config = Path(cached) if isinstance(cached, str) else None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") if config else None
    except (OSError, ValueError, AttributeError):
        return None


def load_model(
    spec: BaseModelSpec,
    resolved: ResolvedSource,
    dtype: Any,
    quantization_config: Any = None,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    config: Any = None,
) -> Any:
    """The base model as AutoModelForCausalLM in `dtype` (or 4-bit when a config is given), with
    the attention kernel `attn_implementation` ("sdpa", "eager", "flash_attention_2"; None for
    transformers' default); `config` is the one already loaded with `load_config`, if any."""
    from transformers import AutoModelForCausalLM

    kwargs = hub_kwargs(spec, resolved)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if config is not None and resolved.kind != "gguf":
        kwargs["config"] = config
    missing = upstream_missing(resolved)
    if missing:
        raise ModelError(
            f"Base model {spec.source.strip()}: {missing}.",
            "A chained run starts once the run before it has completed.",
        )
    try:
        if resolved.kind == "gguf" and quantization_config is None:
            from engine.models.gguf_base import load_model as load_gguf_model

            model = load_gguf_model(Path(resolved.location) / resolved.gguf_file, dtype)
            if attn_implementation is not None:
                model.set_attn_implementation(attn_implementation)
        else:
            model = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=dtype, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise _load_failed("model", spec, exc) from exc
    return merge_upstream(model, resolved)


def merge_upstream(model: Any, resolved: ResolvedSource) -> Any:
    """`model` with the adapters of a `run:` source's runs merged in, oldest first (the base a
    chained run starts from); `model` itself for any other source."""
    if not resolved.adapters:
        return model
    from peft import PeftModel

    for folder in resolved.adapters:
        tokens = _tokenizer_size(Path(folder))
        if tokens and tokens > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(tokens)  # the run added a token (e.g. <pad>)
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        log.info("merged the adapter of run %s into the base", Path(folder).parent.name)
    return model


def _tokenizer_size(folder: Path) -> int:
    """The number of tokens of the tokenizer saved in `folder` (0 when it cannot be told)."""
    from transformers import AutoTokenizer

    try:
        return len(AutoTokenizer.from_pretrained(folder))
    except Exception:  # noqa: BLE001 - only a hint for resizing
        return 0


def check_target_modules(model: Any, targets: list[str]) -> list[str]:
    """The linear layers a LoRA config's targets adapt in this loaded model (auto and all-linear
    resolved, engine.models.targets); raises ModelError when one does not exist, listing those that
    do. The estimate refuses such a run at submission; this catches a spec that skipped it."""
    return resolve_targets(targets, linear_layer_names(model), type(model).__name__)
