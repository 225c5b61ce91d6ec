"""Chat-template families and the Ollama side of a GGUF bundle.

There is no general Jinja→Go template translation, so each family we know (ChatML, Llama 3,
Mistral, Gemma, Phi-3, Phi-4) carries its turn format twice: as an Ollama Go template (Modelfile
TEMPLATE, written from the format; it uses `.Messages`, so it runs once per conversation) and as a
Jinja template for the chat backend when a GGUF has no template of its own. Both leave BOS to the
runtime, which adds it when the GGUF says `tokenizer.ggml.add_bos_token` (shared/NOTES.md).

A Modelfile always carries TEMPLATE and every `PARAMETER stop` explicitly: `ollama create` without
TEMPLATE guesses from a stale list, the most reported cause of fine-tunes that babble or never stop.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ExportError


@dataclass(frozen=True)
class Family:
    """One chat-template family: its name, stop strings and the two renderings of its format."""

    name: str
    label: str
    stops: tuple[str, ...]
    end_of_turn: str
    go_template: str
    jinja_template: str


CHATML = Family(
    "chatml",
    "ChatML",
    ("<|im_start|>", "<|im_end|>"),
    "<|im_end|>",
    go_template=(
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    ),
    jinja_template=(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
)

LLAMA3 = Family(
    "llama3",
    "Llama 3",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "<|eot_id|>",
    go_template=(
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>\n"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    jinja_template=(
        "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
        "+ m['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
)

LLAMA3_SYSTEM_HEADER = "<|start_header_id|>system<|end_header_id|>\n\n"


def llama3_with_preamble(preamble: str) -> Family:
    """Llama 3.1 / 3.2's turn format: every conversation opens with a system block that starts
    with fixed text (their templates write `Cutting Knowledge Date: December 2023`, `Today Date:
    …` and a blank line, with or without a system message) before the system prompt. `preamble`
    is that text as the run's own template renders it, so the Modelfile writes what the model was
    trained on. The system messages go into that block; the other turns are Llama 3's."""
    if "{{" in preamble or "{%" in preamble or '"""' in preamble:
        raise ExportError("the Llama 3 system preamble cannot be written into a Modelfile")
    go_template = (
        LLAMA3_SYSTEM_HEADER
        + preamble
        + "{{ if .System }}{{ .System }}{{ end }}<|eot_id|>\n"
        + '{{- range .Messages }}{{- if ne .Role "system" }}'
        + "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n"
        + "{{- end }}{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    literal = "'" + preamble.replace("\\", "\\\\").replace("\n", "\\n").replace("'", "\\'") + "'"
    jinja_template = (
        "{% set ns = namespace(system='') %}"
        "{% for m in messages if m['role'] == 'system' %}{% set ns.system = m['content'] %}"
        "{% endfor %}"
        "{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' + " + literal + " + ns.system + "
        "'<|eot_id|>' }}"
        "{% for m in messages if m['role'] != 'system' %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + "
        "'<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    )
    return Family(
        "llama3.1",
        "Llama 3.1/3.2",
        LLAMA3.stops,
        LLAMA3.end_of_turn,
        go_template=go_template,
        jinja_template=jinja_template,
    )


def llama3_system_preamble(tokenizer: Any, template: str) -> str:
    """The fixed text a Llama 3 template writes at the start of the system block, before the
    system prompt (Llama 3.1/3.2: `Cutting Knowledge Date: …`, `Today Date: …`); "" for Llama 3.0's
    template, which writes the system prompt alone."""
    probe = "Tunegraph system probe"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": probe}, {"role": "user", "content": "probe"}],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=True,
        )
    except Exception:  # a template with rules of its own: keep Llama 3's plain format
        return ""
    start = text.find(LLAMA3_SYSTEM_HEADER)
    end = text.find(probe)
    if start < 0 or end < 0:
        return ""
    return text[start + len(LLAMA3_SYSTEM_HEADER) : end]


# The system prompt goes in front of the last user turn, as Mistral's own templates do.
MISTRAL = Family(
    "mistral",
    "Mistral",
    ("[INST]", "[/INST]", "</s>"),
    "</s>",
    go_template=(
        "{{- range $i, $m := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        '{{- if eq $m.Role "user" }}[INST] {{ if and $last $.System }}{{ $.System }}\n\n'
        "{{ end }}{{ $m.Content }}[/INST]\n"
        '{{- else if eq $m.Role "assistant" }} {{ $m.Content }}</s>\n'
        "{{- end }}\n"
        "{{- end }}"
    ),
    jinja_template=(
        "{% set ns = namespace(system='') %}"
        "{% for m in messages if m['role'] == 'system' %}{% set ns.system = m['content'] %}"
        "{% endfor %}"
        "{% set users = messages | selectattr('role', 'equalto', 'user') | list %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}{{ '[INST] ' }}"
        "{% if ns.system and m is sameas users[-1] %}{{ ns.system + '\\n\\n' }}{% endif %}"
        "{{ m['content'] + '[/INST]' }}"
        "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + '</s>' }}{% endif %}"
        "{% endfor %}"
    ),
)

# Gemma has no system role: the system prompt opens the first user turn; the assistant is "model".
GEMMA = Family(
    "gemma",
    "Gemma",
    ("<start_of_turn>", "<end_of_turn>"),
    "<end_of_turn>",
    go_template=(
        "{{- $system := .System }}\n"
        "{{- range .Messages }}\n"
        '{{- if eq .Role "user" }}<start_of_turn>user\n'
        '{{ if $system }}{{ $system }}\n\n{{ $system = "" }}{{ end }}{{ .Content }}<end_of_turn>\n'
        '{{ else if eq .Role "assistant" }}<start_of_turn>model\n'
        "{{ .Content }}<end_of_turn>\n"
        "{{ end }}\n"
        "{{- end }}<start_of_turn>model\n"
    ),
    jinja_template=(
        "{% set ns = namespace(system='') %}"
        "{% for m in messages if m['role'] == 'system' %}{% set ns.system = m['content'] %}"
        "{% endfor %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}{{ '<start_of_turn>user\\n' }}"
        "{% if ns.system %}{{ ns.system + '\\n\\n' }}{% set ns.system = '' %}{% endif %}"
        "{{ m['content'] + '<end_of_turn>\\n' }}"
        "{% elif m['role'] == 'assistant' %}"
        "{{ '<start_of_turn>model\\n' + m['content'] + '<end_of_turn>\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
)

PHI3 = Family(
    "phi3",
    "Phi-3",
    ("<|end|>", "<|system|>", "<|user|>", "<|assistant|>"),
    "<|end|>",
    go_template=(
        "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"
    ),
    jinja_template=(
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
)

PHI4 = Family(
    "phi4",
    "Phi-4",
    ("<|im_end|>", "<|im_start|>", "<|im_sep|>"),
    "<|im_end|>",
    go_template=(
        "{{- range .Messages }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>"
        "{{ end }}<|im_start|>assistant<|im_sep|>"
    ),
    jinja_template=(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '<|im_sep|>' + m['content'] + "
        "'<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
    ),
)

FAMILIES: dict[str, Family] = {f.name: f for f in (CHATML, LLAMA3, MISTRAL, GEMMA, PHI3, PHI4)}
KNOWN_LABELS = ", ".join(f.label for f in FAMILIES.values())

# Markers in a Jinja chat template, most specific first (Phi-4 is ChatML plus <|im_sep|>).
_TEMPLATE_MARKERS: tuple[tuple[tuple[str, ...], Family], ...] = (
    (("<|im_sep|>",), PHI4),
    (("<|start_header_id|>",), LLAMA3),
    (("<start_of_turn>",), GEMMA),
    (("<|im_start|>",), CHATML),
    (("<|assistant|>", "<|end|>"), PHI3),
    (("[INST]",), MISTRAL),
)


def family_from_template(template: str | None) -> Family | None:
    """The family whose turn markers the Jinja chat template writes, or None."""
    if not template:
        return None
    for markers, family in _TEMPLATE_MARKERS:
        if all(m in template for m in markers):
            return family
    return None


def family_from_architecture(architecture: str | None, vocab: Container[str] = ()) -> Family | None:
    """The family of a model architecture (GGUF `general.architecture` or an HF class name).

    Architectures shared by several formats are told apart by tokens of the vocabulary: `phi3` is
    Phi-4 when `<|im_sep|>` exists, `llama` is Llama 3 with `<|start_header_id|>`, Mistral with
    `[INST]`, and ChatML with `<|im_start|>` (SmolLM and other Llama-shaped ChatML models).
    """
    if not architecture:
        return None
    arch = re.sub(r"(forcausallm|forconditionalgeneration|model)$", "", architecture.lower())
    if arch.startswith(("qwen", "smollm")):
        return CHATML
    if arch.startswith("gemma"):
        return GEMMA
    if arch.startswith("phi3") or arch == "phi4":
        return PHI4 if "<|im_sep|>" in vocab else PHI3
    if arch.startswith(("llama", "mistral")):
        if "<|start_header_id|>" in vocab:
            return LLAMA3
        if "[INST]" in vocab or arch.startswith("mistral"):
            return MISTRAL
        if "<|im_start|>" in vocab:
            return CHATML
    return None


def detect_family(
    template: str | None, architecture: str | None = None, vocab: Container[str] = ()
) -> Family | None:
    """The family from the chat template, else from the architecture; None when unknown."""
    return family_from_template(template) or family_from_architecture(architecture, vocab)


def stop_strings(family: Family | None, extra: list[str | None] = ()) -> list[str]:
    """The family's stops plus `extra` (e.g. the model's EOS and EOT texts), without duplicates."""
    stops = list(family.stops) if family else []
    for text in extra:
        if text and text not in stops:
            stops.append(text)
    return stops


def modelfile(
    gguf_name: str, family: Family | None, extra_stops: list[str | None] = (), title: str = ""
) -> tuple[str, list[str]]:
    """A Modelfile for `gguf_name` (a file beside it) and its warnings.

    FROM, TEMPLATE (the family's Go template) and one `PARAMETER stop` per stop string. An unknown
    family gets no TEMPLATE (Ollama would then guess) and a warning saying so.
    """
    warnings: list[str] = []
    lines = [f"# {title}" if title else "# Exported by Tunegraph"]
    lines.append(f"# Chat format: {family.label}" if family else "# Chat format: unknown")
    lines += ["", f"FROM ./{gguf_name}", ""]
    if family:
        if '"""' in family.go_template:
            raise ExportError(f"the {family.label} template cannot be quoted in a Modelfile")
        lines += [f'TEMPLATE """{family.go_template}"""', ""]
    else:
        warnings.append(
            "Ollama: the chat template matches no known family (" + KNOWN_LABELS + "), so the "
            "Modelfile has no TEMPLATE and Ollama will guess one; check that answers stop."
        )
    stops = stop_strings(family, list(extra_stops))
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    return "\n".join(lines) + "\n", warnings


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def install_sh(name: str) -> str:
    """A POSIX shell script that runs `ollama create NAME -f Modelfile` from its own folder."""
    return (
        "#!/bin/sh\n"
        "# Install this model into Ollama (https://ollama.com).\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        'NAME="${1:-' + name + '}"\n'
        "if ! command -v ollama >/dev/null 2>&1; then\n"
        '  echo "ollama is not installed or not on PATH" >&2\n'
        "  exit 1\n"
        "fi\n"
        'ollama create "$NAME" -f Modelfile\n'
        'echo "Installed. Try: ollama run $NAME"\n'
    )


def install_ps1(name: str) -> str:
    """A PowerShell script that runs `ollama create NAME -f Modelfile` from its own folder."""
    return (
        "# Install this model into Ollama (https://ollama.com).\n"
        f"param([string]$Name = '{name}')\n"
        "$ErrorActionPreference = 'Stop'\n"
        "Set-Location -Path $PSScriptRoot\n"
        "if (-not (Get-Command ollama -ErrorAction SilentlyContinue)) {\n"
        "    Write-Error 'ollama is not installed or not on PATH'\n"
        "    exit 1\n"
        "}\n"
        "ollama create $Name -f Modelfile\n"
        "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n"
        'Write-Host "Installed. Try: ollama run $Name"\n'
    )


def model_name(text: str) -> str:
    """An Ollama model name made from free text (lowercase letters, digits, - _ .)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name or "tunegraph-model"


def ollama_available() -> bool:
    """Whether the `ollama` command is on PATH."""
    return shutil.which("ollama") is not None


def install(name: str, bundle_dir: Path | str, timeout: float = 3600.0) -> str:
    """Run `ollama create NAME -f Modelfile` in an unpacked bundle folder; returns its output.

    Raises ExportError when ollama is missing or the command fails.
    """
    exe = shutil.which("ollama")
    if exe is None:
        raise ExportError(
            "ollama is not on PATH, so the model was not installed.",
            "Install Ollama, then run install.sh (or install.ps1) from the bundle.",
        )
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "Modelfile").is_file():
        raise ExportError(f"{bundle_dir} has no Modelfile.")
    result = subprocess.run(
        [exe, "create", model_name(name), "-f", "Modelfile"],
        cwd=bundle_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        last = output.splitlines()[-1] if output else f"exit code {result.returncode}"
        raise ExportError(f"ollama create {model_name(name)} failed: {last}")
    return output
