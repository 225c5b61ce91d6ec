"""GGUF files: convert a merged HF folder, quantize, read and check, patch metadata.

- `convert_to_gguf` runs llama.cpp's official converter (installed apart by `engine.setup.converter`,
  because it ships its own `gguf` module) as a subprocess: progress lines are forwarded, a cancel
  request terminates it, and an architecture it does not know is named in the error.
- `quantize` runs `llama_cpp.llama_model_quantize` in a subprocess (`python -m engine.export.gguf_tools
  quantize …`), so a llama.cpp abort cannot take the caller down and a cancel can stop it.
- `read_gguf` reads metadata and tensor types with PyPI `gguf` and says clearly when a path is
  missing, not a GGUF, or truncated; `patch_metadata` rewrites chat template / EOS / EOT keys.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ExportError, ModelError
from engine.paths import SOURCE_ROOT
from engine.rundir import entry_module
from engine.setup.converter import converter_dir, supported_architectures
from engine.setup.interpreters import engine_python, same_install
from engine.setup.streaming import CancelCheck, LineSink, run_streaming
from engine.spec import GGUF_QUANTS

# bits per weight of each output type, for disk-space estimates (K-quants mix types)
BITS_PER_WEIGHT = {"Q4_K_M": 4.9, "Q5_K_M": 5.7, "Q8_0": 8.5, "F16": 16.0}
KEY_TEMPLATE = "tokenizer.chat_template"
KEY_EOS = "tokenizer.ggml.eos_token_id"
KEY_EOT = "tokenizer.ggml.eot_token_id"
KEY_BOS = "tokenizer.ggml.bos_token_id"
KEY_ADD_BOS = "tokenizer.ggml.add_bos_token"
KEY_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"


class GGUFFileError(ModelError):
    """A GGUF path is missing, is not a GGUF file, is truncated, or cannot be read."""


@dataclass
class GGUFInfo:
    """What a GGUF file says about itself (metadata and tensor types; no weights read)."""

    path: str
    bytes: int
    version: int
    architecture: str | None
    name: str | None
    file_type: int | None
    tensor_count: int
    tensor_types: dict[str, int]  # GGML type name -> number of tensors
    chat_template: str | None
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool | None
    vocab_size: int
    special_tokens: dict[int, str] = field(default_factory=dict)  # control/user-defined tokens
    metadata: dict[str, Any] = field(default_factory=dict)  # scalar keys only

    def token_text(self, token_id: int | None) -> str | None:
        """The text of a special token id (None when unknown or not special)."""
        return None if token_id is None else self.special_tokens.get(token_id)

    def token_id(self, text: str) -> int | None:
        """The id of a special token given its text, or None."""
        for tid, tok in self.special_tokens.items():
            if tok == text:
                return tid
        return None


# -- reading --------------------------------------------------------------------------------------
def read_gguf(path: Path | str) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table; raise GGUFFileError naming what is wrong."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.exists():
        raise GGUFFileError(f"{path} does not exist.", "Choose an existing .gguf file.")
    if not path.is_file():
        raise GGUFFileError(f"{path} is a folder, not a GGUF file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise GGUFFileError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).",
            "Choose a .gguf model file.",
        )
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader fails with IndexError/ValueError on cut-off headers
        raise GGUFFileError(
            f"{path} is truncated or damaged: its header cannot be read "
            f"({type(exc).__name__}: {exc}).",
            "Copy or download the file again.",
        ) from exc
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise GGUFFileError(
            f"{path} is truncated: its tensors need {end:,} bytes but the file has {size:,}.",
            "Copy or download the file again.",
        )
    return _info(path, size, reader)


def _info(path: Path, size: int, reader) -> GGUFInfo:
    scalars: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name.endswith(
            ("tokens", "scores", "token_type", "merges")
        ):
            continue
        try:
            value = fld.contents()
        except Exception:  # an odd field type we do not need
            continue
        if isinstance(value, (str, int, float, bool)):
            scalars[name] = value
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    types = reader.fields.get("tokenizer.ggml.token_type")
    vocab_size = len(tokens.data) if tokens is not None else 0
    special: dict[int, str] = {}
    if tokens is not None and types is not None:
        kinds = types.contents()
        for tid, kind in enumerate(kinds):
            if kind in (3, 4):  # CONTROL, USER_DEFINED
                special[tid] = tokens.contents(tid)
    for key in (KEY_BOS, KEY_EOS, KEY_EOT):  # make sure their texts are known even if "normal"
        tid = scalars.get(key)
        if isinstance(tid, int) and tokens is not None and 0 <= tid < vocab_size:
            special.setdefault(tid, tokens.contents(tid))
    counts = Counter(t.tensor_type.name for t in reader.tensors)

    def _int(key: str) -> int | None:
        value = scalars.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    return GGUFInfo(
        path=str(path),
        bytes=size,
        version=int(scalars.get("GGUF.version", 0)),
        architecture=scalars.get("general.architecture"),
        name=scalars.get("general.name"),
        file_type=_int("general.file_type"),
        tensor_count=len(reader.tensors),
        tensor_types=dict(counts),
        chat_template=scalars.get(KEY_TEMPLATE),
        bos_id=_int(KEY_BOS),
        eos_id=_int(KEY_EOS),
        eot_id=_int(KEY_EOT),
        add_bos=scalars.get(KEY_ADD_BOS),
        vocab_size=vocab_size,
        special_tokens=special,
        metadata=scalars,
    )


# -- patching -------------------------------------------------------------------------------------
def patch_metadata(
    path: Path | str, updates: dict[str, str | int | bool], remove: tuple[str, ...] = ()
) -> None:
    """Rewrite `path` with some metadata keys set (chat template, EOS/EOT ids…) or removed.

    Tensors are copied as they are. The new file is written beside the old one and renamed over
    it, so a failure leaves the original intact. Integer values are written as uint32 (token ids),
    strings and bools as such.
    """
    import gguf

    path = Path(path)
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    tmp = path.with_name(path.name + ".patching")
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    pending = dict(updates)
    try:
        for fld in reader.fields.values():
            if (
                fld.name == "general.architecture"
                or fld.name.startswith("GGUF.")
                or fld.name in remove
            ):
                continue
            val_type = fld.types[0]
            sub_type = fld.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
            if fld.name in pending:
                value = pending.pop(fld.name)
                writer.add_key_value(fld.name, value, _value_type(value))
            else:
                writer.add_key_value(fld.name, fld.contents(), val_type, sub_type=sub_type)
        for key, value in pending.items():
            writer.add_key_value(key, value, _value_type(value))
        for tensor in reader.tensors:
            writer.add_tensor_info(
                tensor.name,
                tensor.data.shape,
                tensor.data.dtype,
                tensor.data.nbytes,
                tensor.tensor_type,
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
        writer.close()
        del reader
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _value_type(value: Any):
    import gguf

    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    raise TypeError(f"cannot write {type(value).__name__} metadata")


# -- converting -----------------------------------------------------------------------------------
def model_architecture(model_dir: Path | str) -> str | None:
    """The first entry of `architectures` in a HF folder's config.json."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = config.get("architectures") or (config.get("text_config") or {}).get("architectures")
    return archs[0] if archs else None


def check_architecture(architecture: str | None) -> None:
    """Raise ExportError when the converter does not know `architecture`."""
    known = supported_architectures()
    if architecture and known is not None and architecture not in known:
        raise ExportError(
            f"The GGUF converter does not support the architecture {architecture}.",
            "The adapter ZIP is still usable; GGUF export needs a base model "
            "family that llama.cpp supports.",
        )


def convert_to_gguf(
    model_dir: Path | str,
    out_path: Path | str,
    *,
    outtype: str = "f16",
    model_name: str | None = None,
    on_line: LineSink | None = None,
    cancel: CancelCheck | None = None,
) -> Path:
    """Convert a HF model folder to one GGUF file with llama.cpp's converter; returns out_path."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    architecture = model_architecture(model_dir)
    check_architecture(architecture)
    folder = converter_dir()
    cmd = [
        engine_python(),
        str(folder / "convert_hf_to_gguf.py"),
        str(model_dir),
        "--outtype",
        outtype,
        "--outfile",
        str(out_path),
    ]
    if model_name:
        cmd += ["--model-name", model_name]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    code, tail = run_streaming(cmd, env=env, on_line=on_line, cancel=cancel)
    if code != 0:
        text = "\n".join(tail)
        if "is not supported" in text or "not supported!" in text:
            raise ExportError(
                f"The GGUF converter does not support the architecture "
                f"{architecture or 'of this model'}."
            )
        raise ExportError("GGUF conversion failed: " + _last_error(tail, code))
    if not out_path.is_file():
        raise ExportError(f"GGUF conversion wrote no file at {out_path}.")
    return out_path


def _last_error(tail: list[str], code: int) -> str:
    for line in reversed(tail):
        stripped = line.strip()
        if stripped and not stripped.startswith(("Writing", "INFO")):
            return stripped
    return f"exit code {code}"


# -- quantizing -----------------------------------------------------------------------------------
def quantize(
    src: Path | str,
    dst: Path | str,
    quant: str,
    *,
    threads: int | None = None,
    on_line: LineSink | None = None,
    cancel: CancelCheck | None = None,
) -> Path:
    """Quantize an F16 GGUF to `quant` (Q4_K_M, Q5_K_M, Q8_0) in a subprocess; returns dst.

    F16 needs no quantizing: `src` is returned as is.
    """
    if quant not in GGUF_QUANTS:
        raise ExportError(
            f"Unknown GGUF quantization {quant!r}.", "Choose " + ", ".join(GGUF_QUANTS)
        )
    if quant == "F16":
        return Path(src)
    dst = Path(dst)
    python = engine_python()
    cmd = [
        python,
        "-m",
        entry_module("gguf_tools"),
        "quantize",
        str(src),
        str(dst),
        quant,
        str(threads or os.cpu_count() or 1),
    ]
    env = dict(os.environ)
    if same_install(python):  # a checkout: its modules; else the engine's installed ones
        root = str(SOURCE_ROOT)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    code, tail = run_streaming(cmd, env=env, on_line=on_line, cancel=cancel)
    if code != 0 or not dst.is_file():
        raise ExportError(f"Quantizing to {quant} failed: " + _last_error(tail, code))
    return dst


def _quantize_main(src: str, dst: str, quant: str, threads: str) -> int:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}", None)
    if ftype is None:
        print(f"llama_cpp has no file type for {quant}", file=sys.stderr)
        return 2
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = int(threads)
    started = time.time()
    code = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if code != 0:
        print(f"llama_model_quantize returned {code}", file=sys.stderr)
        return 1
    print(f"quantized to {quant} in {time.time() - started:.1f} s", flush=True)
    return 0


# -- llama.cpp helpers ----------------------------------------------------------------------------
def llama_prompt_ids(llm: Any, text: str) -> list[int]:
    """Token ids llama.cpp gives a rendered chat prompt: special tokens parsed, BOS added only when
    the GGUF asks for it and the text does not already start with it (never twice)."""
    import llama_cpp

    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    bos = llm.token_bos()
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llm._model.vocab))
    if add_bos and bos >= 0 and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def llama_vocab_ids(path: Path | str, texts: list[str]) -> list[list[int]]:
    """`llama_prompt_ids` of each text, loading only the GGUF's vocabulary (fast)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return [llama_prompt_ids(llm, text) for text in texts]
    finally:
        llm.close()


def llama_stop_ids(llm: Any, extra_texts: Sequence[str] = ()) -> list[int]:
    """EOS, EOT and the single-token ids of `extra_texts` (a family's end-of-turn texts)."""
    import llama_cpp

    vocab = llm._model.vocab
    ids = {llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab)}
    for text in extra_texts:
        toks = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(toks) == 1:
            ids.add(toks[0])
    return sorted(i for i in ids if i is not None and i >= 0)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.export.gguf_tools quantize SRC DST QUANT THREADS` | `info FILE`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 5 and argv[0] == "quantize":
        return _quantize_main(*argv[1:])
    if len(argv) == 2 and argv[0] == "info":
        try:
            info = read_gguf(argv[1])
        except GGUFFileError as err:
            print(f"tunegraph: {err}", file=sys.stderr)
            return 1
        shown = {k: v for k, v in vars(info).items() if k not in ("special_tokens", "metadata")}
        print(json.dumps(shown, indent=2))
        return 0
    print(
        "usage: python -m engine.export.gguf_tools quantize SRC DST QUANT THREADS | info FILE",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
