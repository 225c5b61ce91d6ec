"""Helpers shared by the training benchmarks: varied-length chat data, base models (the tiny one, a
folder, or a random-weight model shaped like a real 0.5B-8B Llama/Qwen), the job spec they train,
the environment record every result file carries, and plain-text tables.

Random-weight shapes need no download: the model is built from a LlamaConfig/Qwen2Config with the
real sizes (hidden, layers, heads, vocabulary) and saved with the tiny model's tokenizer, whose ids
all fall inside the real vocabulary. Its token counts per text differ from the real tokenizer's,
which changes nothing for throughput or memory at a given number of tokens.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATASETS = ROOT / "resources" / "datasets"
MODEL_CACHE = Path(os.environ.get("TUNEGRAPH_BENCH_MODELS", "/tmp/tunegraph-bench-models"))

# Real architectures' sizes (from their config.json files); weights are random.
SHAPES: dict[str, dict] = {
    "micro": dict(  # CPU smoke test of the config: path only
        family="llama",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    "0.5b": dict(  # Qwen2.5-0.5B
        family="qwen2",
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "1b": dict(  # Llama-3.2-1B
        family="llama",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "3b": dict(  # Qwen2.5-3B
        family="qwen2",
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "8b": dict(  # Llama-3.1-8B
        family="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
}

_WORDS = (
    "router modem invoice refund password delivery contract plan speed cable restart account "
    "billing payment order email phone network signal technician warehouse tracking label "
    "please thanks sorry today tomorrow monday friday minutes hours usually check confirm "
    "the a to and of in is it you that for on are with as be at this have from or by not"
).split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
    return " ".join(words).capitalize() + rng.choice([".", ".", "?", "!"])


def varied_chats(n: int, seed: int = 0, long_tail: float = 1.0) -> list[dict]:
    """`n` chats whose lengths spread like real SFT data: the repository's sample datasets plus
    generated support chats with 1-3 turns and a log-normal number of sentences per answer (a few
    short answers, many medium ones, a long tail; `long_tail` scales it)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for name in ("support_chats.jsonl", "json_style.jsonl"):
        path = DATASETS / name
        if path.is_file():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rng.shuffle(rows)
    rows = rows[: n // 2]
    while len(rows) < n:
        messages = [{"role": "system", "content": "You are a helpful support assistant."}]
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            messages.append({"role": "user", "content": sentence(rng)})
            count = max(1, int(rng.lognormvariate(1.0, 0.8) * long_tail))
            answer = " ".join(sentence(rng) for _ in range(min(count, int(40 * long_tail))))
            messages.append({"role": "assistant", "content": answer})
        rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_model() -> Path:
    """The builtin tiny model (built once into the bench model cache)."""
    from engine.models.tiny import build_tiny_model

    out = MODEL_CACHE / "tiny-llama"
    if not (out / "model.safetensors").exists():
        tmp = MODEL_CACHE / f".tiny-{os.getpid()}"
        build_tiny_model(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def shape_config(name: str):
    """A transformers config of one of SHAPES, with the tiny tokenizer's special-token ids."""
    from transformers import LlamaConfig, Qwen2Config

    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    sizes = dict(SHAPES[name])
    family = sizes.pop("family")
    cls = Qwen2Config if family == "qwen2" else LlamaConfig
    tiny = json.loads((tiny_model() / "config.json").read_text())
    return cls(
        **sizes,
        max_position_embeddings=8192,
        rope_theta=1e6 if family == "qwen2" else 5e5,
        rms_norm_eps=1e-6 if family == "qwen2" else 1e-5,
        bos_token_id=tiny["bos_token_id"],
        eos_token_id=tiny["eos_token_id"],
        pad_token_id=tiny["pad_token_id"],
    )


def random_model(name: str, device: str = "cpu") -> Path:
    """A folder with a random-weight bf16 model of shape `name` and the tiny tokenizer, built once
    into MODEL_CACHE (weights initialised on `device`, which is fast on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = MODEL_CACHE / f"random-{name}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    config = shape_config(name)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = MODEL_CACHE / f".random-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    del model
    tiny = tiny_model()
    for item in tiny.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(item, tmp / item.name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def model_source(arg: str, device: str = "cpu") -> str:
    """`tiny`, `config:<shape>` or a model folder / hub id, as a spec's base-model source."""
    if arg == "tiny":
        return str(tiny_model())
    if arg.startswith("config:"):
        return str(random_model(arg[len("config:") :], device))
    return arg


def bench_spec(
    source: str,
    data: Path,
    device: str,
    steps: int,
    batch: int,
    seq: int,
    name: str = "bench",
    data_format: str = "auto",
    **training,
):
    """The job spec every training benchmark trains: LoRA r16 on q/k/v/o, lr 2e-4, no eval, no
    export, a checkpoint only at the end."""
    from engine.spec import (
        BaseModelSpec,
        DatasetSpec,
        ExportSpec,
        JobSpec,
        LoraSpec,
        ResourceSpec,
        TrainingSpec,
    )

    settings = dict(
        max_steps=steps,
        micro_batch_size=batch,
        max_seq_length=seq,
        eval_split=0.0,
        save_steps=0,
        warmup_ratio=0.0,
        learning_rate=2e-4,
        lr_scheduler="constant",
    )
    settings.update(training)
    return JobSpec(
        name=name,
        base_model=BaseModelSpec(source=source),
        datasets=[DatasetSpec(path=str(data), format=data_format)],
        training=TrainingSpec(**settings),
        lora=LoraSpec(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        resources=ResourceSpec(device=device),
        export=ExportSpec(adapter_zip=False, gguf=False),
    )


def environment(device: str) -> dict:
    """Machine and versions, for the result files and BENCHMARKS.md."""
    import peft
    import torch
    import transformers

    env = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
        env["cuda"] = torch.version.cuda
    else:
        env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for extra in ("bitsandbytes", "liger_kernel", "flash_attn"):
        try:
            module = __import__(extra)
            env[extra] = getattr(module, "__version__", "installed")
        except Exception:
            pass
    return env


def measure_bf16_peak(size: int = 8192, iters: int = 20) -> float:
    """The GPU's measured dense bf16 matmul FLOP/s (best of a few timed batches)."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
        best = max(best, 2 * size**3 * iters / seconds)
    del a, b
    torch.cuda.empty_cache()
    return best


def table(headers: list[str], rows: list[list]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def write_result(path: str | None, result: dict) -> None:
    """Write a result file (JSON, sorted keys) when --out was given."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"figures written to {out}", file=sys.stderr)


def quiet() -> None:
    """Keep library chatter out of the tables."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
