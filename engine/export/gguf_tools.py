"""GGUF files: convert a merged HF folder, quantize, and llama.cpp's view of a file.

- `convert_to_gguf` runs llama.cpp's official converter (installed apart by `engine.setup.converter`,
  because it ships its own `gguf` module) as a subprocess: progress lines are forwarded, a cancel
  request terminates it, and an architecture it does not know is named in the error.
- `quantize` runs `llama_cpp.llama_model_quantize` in a subprocess (`python -m engine.export.gguf_tools
  quantize …`), so a llama.cpp abort cannot take the caller down and a cancel can stop it.
- `llama_prompt_ids` / `llama_vocab_ids` / `llama_stop_ids`: how llama.cpp tokenizes and stops.
- Reading and patching a file's metadata (`read_gguf`, `patch_metadata`, the `KEY_*` names) live in
  engine.export.gguf_file and are imported here for the callers that know them from this module.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import ExportError
from engine.export.gguf_file import (  # noqa: F401 - the names callers import from here
    KEY_ADD_BOS,
    KEY_BOS,
    KEY_EOS,
    KEY_EOT,
    KEY_NAME,
    KEY_SPACE_PREFIX,
    KEY_TEMPLATE,
    GGUFFileError,
    GGUFInfo,
    patch_metadata,
    read_gguf,
)
from engine.paths import SOURCE_ROOT
from engine.rundir import entry_module
from engine.setup.converter import converter_dir, supported_architectures
from engine.setup.interpreters import engine_python, same_install
from engine.setup.streaming import CancelCheck, LineSink, run_streaming
from engine.spec import GGUF_QUANTS

# bits per weight of each output type, for disk-space estimates (K-quants mix types)
BITS_PER_WEIGHT = {"Q4_K_M": 4.9, "Q5_K_M": 5.7, "Q8_0": 8.5, "F16": 16.0}


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


def llama_vocab_ids(
    path: Path | str, texts: list[str], overrides: dict[str, bool | int | str] | None = None
) -> list[list[int]]:
    """`llama_prompt_ids` of each text, loading only the GGUF's vocabulary (fast); `overrides`
    replace metadata values for this load only (llama.cpp's kv_overrides)."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path), vocab_only=True, verbose=False, kv_overrides=overrides or None
    )
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
