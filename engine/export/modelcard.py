"""The README.md model card written beside every adapter (and a full fine-tuning run's model)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from engine.spec import JobSpec

PACKAGES = ("tunegraph", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a model card lists; missing ones are left out."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def render(
    spec: JobSpec,
    stats: dict,
    metrics: dict,
    samples: list[dict],
    template_origin: str,
    trainable_params: int,
) -> str:
    """Markdown: base model, data with row counts and hashes, hyperparameters, metrics, samples."""
    base = spec.base_model
    lines = [
        f"# {spec.name}",
        "",
        f"A {'full fine-tune' if spec.lora.full else 'LoRA adapter'} trained with Tunegraph on "
        f"**{base.source}**" + (f" (revision `{base.revision}`)" if base.revision else "") + ".",
        "",
        "## Load it",
        "",
        "```python",
        *_load_code(spec),
        "```",
        "",
        f"Chat template: `chat_template.jinja` ({template_origin}); use the same template at "
        "inference.",
        "",
        "## Data",
        "",
        "| file | format | rows | sha256 |",
        "|---|---|---|---|",
    ]
    for ds in stats.get("datasets", []):
        lines.append(
            f"| {Path(ds.get('path', '')).name} | {ds.get('format')} | {ds.get('rows')} "
            f"| `{str(ds.get('sha256', ''))[:16]}` |"
        )
    lines += [
        "",
        f"Train rows {stats.get('train_rows')}, eval rows {stats.get('eval_rows')}, "
        f"truncated {stats.get('truncated_rows')}.",
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(
            {
                "training": vars(spec.training),
                "lora": vars(spec.lora),
                "trainable_params": trainable_params,
            },
            indent=2,
            sort_keys=True,
        ),
        "```",
        "",
        "## Final metrics",
        "",
    ]
    for key, value in sorted(metrics.items()):
        if isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"- {key}: {value}")
    lines += ["", "## Samples", ""]
    for i, sample in enumerate(samples, 1):
        lines += [f"**Prompt {i}:** {sample['prompt']}", "", f"> {sample['response']}", ""]
    lines += ["## Software", ""]
    lines += [f"- {name} {version}" for name, version in package_versions().items()]
    return "\n".join(lines) + "\n"


def _load_code(spec: JobSpec) -> list[str]:
    """How to load what the folder holds: the adapter on its base, or (full fine-tuning) the
    whole model."""
    if spec.lora.full:
        return [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
            'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
        ]
    return [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "from peft import PeftModel",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
        f'base = AutoModelForCausalLM.from_pretrained("{spec.base_model.source}")',
        'model = PeftModel.from_pretrained(base, "<this folder>")',
    ]


def write(path: Path, *args: Any, **kwargs: Any) -> None:
    """Write the model card to `path` (the other arguments are `render`'s)."""
    Path(path).write_text(render(*args, **kwargs), encoding="utf-8")
