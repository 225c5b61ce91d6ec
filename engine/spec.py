"""Job specs: what one Fine-Tune module asks the engine to do, frozen at submission.

Each part is a dataclass whose fields carry their help text, range and choices as metadata; the node
catalogue (`nodes/`) builds its parameters from these, so a knob is declared once.

Validation lives here, with the spec: each part's `validate(prefix)` checks its own fields (declared
type, range, choices) and the rules between them (e.g. `keep_best` needs an eval split);
`JobSpec.validate` runs every part and then the rules across parts (e.g. fp16 needs a GPU when the
device is cpu). Every failure is a `SpecError` naming the field (e.g. `training.learning_rate`) and
the value, so the compiler shows it on the node and field, before anything is queued. Only what
needs the machine or the data (a visible GPU, an installed package, the number of rows) is left to
the worker. Parts are not checked on construction: an older spec.json must still load (to show
or export its run), and the compiler builds parts from node values before reporting on them.

JSON is written with sorted keys and a `format_version`; `JobSpec.from_dict` migrates older versions.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import SpecError
from engine.fields import SpecPart, build_part, param
from engine.sweep_spec import SweepSpec, loss_like

FORMAT_VERSION = 1

BASE_MODEL_HELP = (
    "A Hugging Face hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local model folder, "
    "gguf:/path/to/model.gguf, builtin:tiny-llama (a tiny random model for trying things out), "
    "or run:RUN_ID (what an earlier run delivered: its base with its adapter merged in)."
)
DATASET_FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
QUANTIZATIONS = ("auto", "none", "4bit")
DEVICES = ("auto", "cuda", "cpu")
TARGETS = ("local", "cluster")
GGUF_QUANTS = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
EVAL_METRICS_HELP = (
    "What to score, one metric per entry: loss (mean token loss of the references, with "
    "perplexity), exact, contains, regex:PATTERN (the answer matches), json (the answer parses "
    "as JSON), json:SCHEMA.json (and is valid against that schema), rouge_l, judge (the judge "
    "model grades each answer 1-10; needs a judge), judge_pairwise (the judge picks the better "
    "of the run's and the base's answer; needs a judge and Also score the base) and "
    "python:FILE.py (your score(output, reference, row) -> float). Empty: loss and rouge_l."
)
JUDGE_METRICS = ("judge", "judge_pairwise")
# training methods (DESIGN "The flow of one run"): sft trains on answers, pretrain on every token of
# plain text; the others are TRL's preference and reinforcement trainers (engine.training.methods)
METHODS = ("sft", "dpo", "orpo", "kto", "simpo", "grpo", "pretrain")
PAIRED_METHODS = ("dpo", "orpo", "simpo")  # data: {prompt, chosen, rejected}
BETA_METHODS = PAIRED_METHODS + ("kto",)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "sppo_hard", "nca_pair", "apo_zero", "apo_down")
# Reward node scorers: engine.eval's text metrics, its judge (a GGUF model grades each answer) and
# length:N
REWARD_NAMES = ("exact", "contains", "json", "rouge_l", "judge")
REWARD_PREFIXES = ("regex:", "json:", "python:", "length:")
REFERENCE_REWARDS = ("exact", "contains", "rouge_l", "judge")  # compare with the row's answer
METHOD_HELP = (
    "How the run learns. sft: from example answers (loss on the assistant turns). pretrain: "
    "continued pretraining on plain text (loss on every token, texts packed into full-length "
    "blocks). dpo, orpo, simpo: from preference pairs {prompt, chosen, rejected} (orpo and simpo "
    "need no reference model). kto: from single answers marked good or bad {prompt, completion, "
    "label}. grpo: the model answers each prompt several times and learns from the scores of "
    "the connected Reward nodes."
)
REWARD_SCORER_HELP = (
    "How a completion is scored (higher is better): exact or contains (against the row's answer "
    "or reference column, or its last assistant turn), rouge_l (overlap with that answer), "
    "regex:PATTERN (1 when the completion matches), json (1 when it parses as JSON), "
    "json:SCHEMA.json (and is valid against that schema), judge (the judge model grades the "
    "completion 1-10 against that answer; the reward is the grade / 10), length:N (1 at N "
    "characters, falling to 0 at 0 and 2N) or python:FILE.py (your score(output, reference, row) "
    "-> float)."
)
CHECKPOINTING = ("auto", "on", "off")
# the LoRA config node's knobs that matter only while `full` (full fine-tuning) is off
LORA_ONLY = ("full", (False,))
ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")
REPORT_TO = ("none", "tensorboard", "mlflow", "wandb")  # experiment trackers (a copy of our events)
# "tokenizer": the base's own template; the others are the families of engine.data.family_templates
CHAT_TEMPLATES = (
    "tokenizer",
    "chatml",
    "llama3",
    "llama3_1",
    "llama3_2",
    "qwen2_5",
    "qwen3",
    "phi3",
    "phi3_5",
    "gemma",
    "gemma3",
)
CHAT_TEMPLATE_HELP = (
    "The chat template the run trains with (and the exported model answers with). tokenizer: the "
    "base model's own (a base without one is refused until you pick one here). chatml: "
    "Tunegraph's ChatML, whose answers end with <|im_end|> when the vocabulary has it, else with "
    "the base's own end-of-text token (the safe pick for a pretrained-only base, whose turn tokens "
    "were often never trained). llama3 … gemma3: the family's original template (shipped with "
    "Tunegraph, from trl's chat_templates); picking one replaces the base's own template."
)


@dataclass
class BaseModelSpec(SpecPart):
    """The model to fine-tune: where it comes from, which revision, and which chat template."""

    source: str = param(
        "builtin:tiny-llama", BASE_MODEL_HELP, label="Model", short="model", widget="model"
    )
    revision: str = param("", "Hub revision (branch, tag or commit); empty for the default branch.")
    trust_remote_code: bool = param(
        False, "Run code shipped with the model repository. Only for sources you trust."
    )
    chat_template: str = param(
        "tokenizer", CHAT_TEMPLATE_HELP, choices=CHAT_TEMPLATES, label="Chat template"
    )

    part: ClassVar[str] = "base_model"

    def check_rules(self, prefix: str) -> None:
        """A source is given, and a `gguf:` source names a file."""
        source = self.source.strip()
        if not source:
            raise SpecError(f"{prefix}.source", self.source, "choose a base model", BASE_MODEL_HELP)
        if source == "gguf:":
            raise SpecError(
                f"{prefix}.source",
                self.source,
                "gguf: needs the path of a .gguf file",
                "Write gguf:/path/to/model.gguf, or choose the file.",
            )
        if source == "run:":
            raise SpecError(
                f"{prefix}.source",
                self.source,
                "run: needs the id of a run",
                "Write run:RUN_ID (`tunegraph list` shows the ids), or connect the earlier "
                "Fine-Tune node's model output to this node's base model input.",
            )


@dataclass
class DatasetSpec(SpecPart):
    """One file of training examples and how to read it."""

    path: str = param(
        "", "A .jsonl, .json, .csv or .parquet file.", label="File", short="data", widget="file"
    )
    format: str = param(
        "auto",
        "Row format; auto detects OpenAI messages, ShareGPT, Alpaca, "
        "prompt/completion or plain text.",
        choices=DATASET_FORMATS,
    )
    columns: dict[str, str] = param(
        {},
        'Column mapping from the format\'s names to this file\'s, e.g. {"messages": "chat"}.',
        widget="mapping",
    )
    max_rows: int = param(0, "Use at most this many rows (0 = all).", min=0)

    part: ClassVar[str] = "dataset"

    def check_rules(self, prefix: str) -> None:
        """A file is chosen, and it is of a type the data loader reads."""
        if not self.path.strip():
            raise SpecError(f"{prefix}.path", self.path, "choose a dataset file")
        suffix = Path(self.path.strip()).suffix.lower()
        if suffix not in DATASET_SUFFIXES:
            raise SpecError(
                f"{prefix}.path",
                self.path,
                f"unsupported file type {suffix or '(none)'!r}",
                "Use a " + ", ".join(DATASET_SUFFIXES[:-1]) + f" or {DATASET_SUFFIXES[-1]} file.",
            )


@dataclass
class TrainingSpec(SpecPart):
    """How long and how fast to train, what to evaluate and keep, speed switches."""

    epochs: float = param(3.0, "Passes over the training data.", min=0.01, max=1000)
    max_steps: int = param(0, "Stop after this many optimizer steps (0 = use epochs).", min=0)
    learning_rate: float = param(
        2e-4, "Peak learning rate of AdamW.", min=1e-8, max=1.0, short="lr"
    )
    micro_batch_size: int = param(
        4, "Sequences per forward pass on one device.", min=1, max=1024, short="batch"
    )
    grad_accum: int = param(1, "Micro batches accumulated per optimizer step.", min=1, max=1024)
    max_seq_length: int = param(
        0,
        "Tokens per example; longer ones are truncated (0 = min(model context, 2048)).",
        min=0,
        label="Max sequence length",
        short="seq len",
    )
    warmup_ratio: float = param(
        0.03,
        "Fraction of steps spent warming the learning rate up.",
        min=0.0,
        max=0.5,
        short="warmup",
    )
    lr_scheduler: str = param(
        "cosine",
        "Learning-rate schedule after warm-up.",
        choices=SCHEDULERS,
        label="LR scheduler",
        short="schedule",
    )
    weight_decay: float = param(0.0, "AdamW weight decay.", min=0.0, max=1.0, short="wd")
    save_steps: int = param(
        50, "Write a checkpoint every this many steps (0 = only at the end).", min=0
    )
    save_minutes: float = param(
        10.0,
        "Also write a checkpoint at least every this many minutes, so a crash loses at most that "
        "much work (0 = only every save_steps).",
        min=0.0,
        max=1440.0,
    )
    save_total_limit: int = param(2, "Checkpoints kept on disk (older ones are deleted).", min=1)
    eval_split: float = param(
        0.05, "Fraction of rows held out for evaluation (0 = none).", min=0.0, max=0.5
    )
    eval_steps: int = param(0, "Evaluate every this many steps (0 = once per epoch).", min=0)
    early_stopping_patience: int = param(
        0, "Stop after this many evaluations without improvement (0 = off).", min=0
    )
    keep_best: bool = param(False, "At the end, keep the checkpoint with the lowest eval loss.")
    seed: int = param(42, "Random seed for LoRA init, shuffling and the eval split.", min=0)
    packing: bool = param(
        True,
        "Padding-free batches: sequences are concatenated without padding "
        "and attention never crosses their borders.",
    )
    precision: str = param(
        "auto",
        "Compute precision (auto: bf16 on GPUs that support it, else fp16 on GPUs, fp32 on CPU).",
        choices=PRECISIONS,
    )
    gradient_checkpointing: str = param(
        "auto",
        "Recompute activations to save memory at ~30% more compute (auto: on only when the "
        "VRAM estimate without it would not fit in 90% of the GPU; always off on the CPU).",
        choices=CHECKPOINTING,
    )
    attention: str = param(
        "auto",
        "Attention kernel (auto = sdpa, PyTorch's fused attention; eager is the slow reference; "
        "flash_attention_2 needs the flash-attn package built for this torch and CUDA).",
        choices=ATTENTIONS,
    )
    liger_kernels: bool = param(
        False,
        "Fused Triton kernels from Liger (RMSNorm, RoPE, SwiGLU, fused cross-entropy): faster "
        "and less memory on NVIDIA GPUs; needs the liger-kernel package (pip install "
        "'tunegraph[speed]').",
    )
    report_to: str = param(
        "none",
        "Also log metrics to an experiment tracker (Tunegraph's own charts stay the source of "
        "truth): tensorboard writes event files into the run folder; mlflow logs to "
        "MLFLOW_TRACKING_URI, else sqlite <data dir>/mlflow.db; wandb needs a configured W&B "
        "account (offline mode keeps it offline). Needs the package: pip install "
        "'tunegraph[tracking]' (tensorboard, mlflow) or wandb.",
        choices=REPORT_TO,
        label="Report to",
    )

    part: ClassVar[str] = "training"

    def check_rules(self, prefix: str) -> None:
        """Something bounds the run's length; early stopping and keep_best have eval rows."""
        if self.max_steps == 0 and self.epochs <= 0:
            raise SpecError(f"{prefix}.epochs", self.epochs, "must be above 0 when max_steps is 0")
        if self.eval_split == 0:
            if self.early_stopping_patience:
                raise SpecError(
                    f"{prefix}.early_stopping_patience",
                    self.early_stopping_patience,
                    "needs evaluations to compare, but eval_split is 0 (no rows held out)",
                    "Set eval_split above 0 (e.g. 0.05), or early_stopping_patience to 0.",
                )
            if self.keep_best:
                raise SpecError(
                    f"{prefix}.keep_best",
                    self.keep_best,
                    "needs an eval loss to pick the best checkpoint, but eval_split is 0 "
                    "(no rows held out)",
                    "Set eval_split above 0 (e.g. 0.05), or turn keep_best off.",
                )


@dataclass
class LoraSpec(SpecPart):
    """The adapter: rank, scaling, dropout, target modules, 4-bit base; or, with `full`, no
    adapter at all: every weight of the model trains (the other knobs then do not apply)."""

    r: int = param(16, "LoRA rank.", min=1, max=1024, label="Rank", visible_if=LORA_ONLY)
    alpha: int = param(
        32, "LoRA scaling numerator (scale = alpha / r).", min=1, max=4096, visible_if=LORA_ONLY
    )
    dropout: float = param(0.0, "Dropout on the LoRA path.", min=0.0, max=0.9, visible_if=LORA_ONLY)
    target_modules: list[str] = param(
        ["auto"],
        "Linear layers to adapt: auto (the attention's query and value projections under this "
        "model's names: q_proj, v_proj in Llama, Qwen, Mistral, Gemma; the fused qkv_proj in "
        "Phi-3), all-linear, or module names such as q_proj, v_proj, o_proj.",
        short="targets",
        widget="modules",
        visible_if=LORA_ONLY,
    )
    quantization: str = param(
        "auto",
        "4bit loads the base in NF4 (QLoRA, CUDA only); auto picks 4-bit when 16-bit "
        "would not fit the GPU.",
        choices=QUANTIZATIONS,
        short="quant",
        visible_if=LORA_ONLY,
    )
    full: bool = param(
        False,
        "Full fine-tuning: every weight of the model trains and the run delivers a whole model "
        "folder (and its GGUF), no adapter. It needs far more GPU memory than LoRA: fp32 master "
        "weights, their gradients and AdamW's two moments, about 16 bytes per parameter (a 1B "
        "model: ~15 GiB before activations). The LoRA settings do not apply, nor does 4-bit.",
        label="Full fine-tuning",
    )

    part: ClassVar[str] = "lora"

    def check_rules(self, prefix: str) -> None:
        """At least one module is adapted (whether the model has it is checked by the estimate,
        which reads the model's layers: engine.models.targets); full fine-tuning trains the
        weights themselves, which a 4-bit base cannot."""
        if self.full:
            if self.quantization == "4bit":
                raise SpecError(
                    f"{prefix}.quantization",
                    self.quantization,
                    "full fine-tuning trains every weight itself, which a 4-bit base cannot "
                    "(4-bit works only with a LoRA adapter)",
                    "Set quantization to auto or none, or turn Full fine-tuning off to train a "
                    "QLoRA adapter.",
                )
            return
        if not self.target_modules:
            raise SpecError(
                f"{prefix}.target_modules", [], "name at least one module, or all-linear"
            )


@dataclass
class ResourceSpec(SpecPart):
    """Where the run trains: device, GPU count, local or a Ray cluster."""

    device: str = param(
        "auto", "Where to train: auto (a GPU when there is one), cuda or cpu.", choices=DEVICES
    )
    gpu_count: int = param(
        1,
        "GPUs for this run (more than 1 trains with DDP).",
        min=1,
        max=64,
        label="GPU count",
        short="GPUs",
    )
    target: str = param("local", "This workstation or a Ray cluster.", choices=TARGETS)
    share_base: bool = param(
        True,
        "Train in one process with other runs of the same base model that start together, on "
        "one copy of it (each run keeps its own adapter, optimizer, data order and results).",
        label="Share base",
    )

    part: ClassVar[str] = "resources"


@dataclass
class ExportSpec(SpecPart):
    """What to deliver after training."""

    adapter_zip: bool = param(
        True, "Zip the adapter with tokenizer, chat template and model card.", label="Adapter ZIP"
    )
    gguf: bool = param(
        True, "Merge into the base and write a quantized GGUF bundle for Ollama.", label="GGUF"
    )
    quant: str = param("Q4_K_M", "GGUF quantization.", choices=GGUF_QUANTS)
    merged: bool = param(False, "Also keep the merged 16-bit Hugging Face folder.")
    ollama_name: str = param("", "Install into Ollama under this name when ollama is on PATH.")

    part: ClassVar[str] = "export"


@dataclass
class EvalSpec(SpecPart):
    """An eval set the run scores itself on when training ends (DESIGN.md "Lifecycle")."""

    path: str = param(
        "",
        "The eval set: a .jsonl, .json, .csv or .parquet file in any format the Dataset node "
        "reads; each row's last assistant turn is the reference answer, the turns before it the "
        "prompt. Empty: the rows connected to the node's Eval set input (a Dataset node, or a "
        "data node such as a Split's eval output), else the run's held-out split (the training "
        "config's eval_split).",
        label="Eval set file",
        short="eval set",
        widget="file",
    )
    metrics: list[str] = param(["loss", "rouge_l"], EVAL_METRICS_HELP, widget="metrics")
    judge: str = param(
        "",
        "A GGUF model that grades the answers for the judge metrics (run by llama.cpp on the "
        "CPU); a small instruct model will do.",
        label="Judge model",
        short="judge",
        widget="gguf",
    )
    max_rows: int = param(50, "Score at most this many rows of the set (0 = all).", min=0)
    during_training_rows: int = param(
        0,
        "Also compute the metrics that generate answers at each evaluation during training, on "
        "at most this many rows of the set (0 = only when training ends). Each evaluation then "
        "writes that many answers with the model being trained; the judge metrics are left to "
        "the end (they load the judge model).",
        label="Generate during training (rows)",
        short="rows during training",
        min=0,
    )
    score_base: bool = param(
        False,
        "Also score the base model without the adapter on this set, once: the baseline row.",
        label="Also score the base",
    )
    score_gguf: bool = param(
        False,
        "Also score the exported GGUF after it is written, so what quantization costs shows as "
        "a number (needs GGUF on in the Export node).",
        label="Also score the GGUF",
    )
    name: str = param(
        "",
        "How the scores name the set; empty: by its file's name. Set by the compiler, not on "
        "the node: rows from a node on the Eval set input go by that node's name (and port), "
        "e.g. hold out 4 (eval).",
        node=False,
    )

    part: ClassVar[str] = "eval"

    def check_rules(self, prefix: str) -> None:
        """A judge metric has a judge, a pairwise judge has the base to compare with, and a
        file given is of a type the data loader reads (the metrics themselves are checked by
        engine.eval.metrics, which needs no model either)."""
        path = self.path.strip()
        if path and Path(path).suffix.lower() not in DATASET_SUFFIXES:
            raise SpecError(
                f"{prefix}.path",
                self.path,
                f"unsupported file type {Path(path).suffix.lower() or '(none)'!r}",
                "Use a " + ", ".join(DATASET_SUFFIXES[:-1]) + f" or {DATASET_SUFFIXES[-1]} file, "
                "or leave it empty for the held-out split.",
            )
        named = [m.strip() for m in self.metrics if m.strip() in JUDGE_METRICS]
        if named and not self.judge.strip():
            raise SpecError(
                f"{prefix}.judge",
                self.judge,
                f"the {named[0]} metric needs a judge model",
                "Choose a .gguf judge model, or remove the judge metrics.",
            )
        if "judge_pairwise" in named and not self.score_base:
            raise SpecError(
                f"{prefix}.score_base",
                self.score_base,
                "judge_pairwise compares the run's answers with the base's, so it needs Also "
                "score the base",
                "Turn Also score the base on, or use the judge metric.",
            )


@dataclass
class MethodSpec(SpecPart):
    """The training method of a Fine-Tune node and its knobs; each knob is shown (and used) only
    for the methods it belongs to."""

    method: str = param("sft", METHOD_HELP, choices=METHODS)
    beta: float = param(
        0.1,
        "How far the model may move from where it started: higher keeps it closer. DPO and KTO: "
        "the strength of the pull towards the reference model; ORPO: the weight of the "
        "odds-ratio term; SimPO: the reward scale (its paper uses 2 to 10).",
        min=0.0,
        max=100.0,
        visible_if=("method", BETA_METHODS),
    )
    loss_type: str = param(
        "sigmoid",
        "DPO's loss: sigmoid (the original), hinge, ipo (robust to noisy or deterministic "
        "preferences), robust (label-noise aware), sppo_hard, nca_pair, apo_zero or apo_down.",
        choices=DPO_LOSSES,
        label="Loss type",
        visible_if=("method", ("dpo",)),
    )
    simpo_gamma: float = param(
        0.5,
        "SimPO's target reward margin between the chosen and the rejected answer.",
        min=0.0,
        max=10.0,
        label="SimPO gamma",
        visible_if=("method", ("simpo",)),
    )
    desirable_weight: float = param(
        1.0,
        "KTO: the weight of good answers' loss (raise it when good answers are the rarer ones).",
        min=0.01,
        max=100.0,
        visible_if=("method", ("kto",)),
    )
    undesirable_weight: float = param(
        1.0,
        "KTO: the weight of bad answers' loss (raise it when bad answers are the rarer ones).",
        min=0.01,
        max=100.0,
        visible_if=("method", ("kto",)),
    )
    num_generations: int = param(
        4,
        "GRPO: answers sampled per prompt and compared with each other; micro batch size × "
        "gradient accumulation × GPUs must be a multiple of it.",
        min=2,
        max=64,
        label="Generations per prompt",
        short="generations",
        visible_if=("method", ("grpo",)),
    )
    max_completion_length: int = param(
        128,
        "GRPO: the longest answer sampled, in tokens.",
        min=1,
        max=32768,
        visible_if=("method", ("grpo",)),
    )
    temperature: float = param(
        1.0,
        "GRPO: sampling temperature (higher: more varied answers to compare).",
        min=0.01,
        max=5.0,
        visible_if=("method", ("grpo",)),
    )
    kl_coef: float = param(
        0.0,
        "GRPO: the weight of the KL penalty that keeps the model near its start (0: none, and "
        "no reference pass is computed; DeepSeek-R1 used 0.001).",
        min=0.0,
        max=10.0,
        label="KL coefficient",
        short="KL",
        visible_if=("method", ("grpo",)),
    )

    part: ClassVar[str] = "method"


@dataclass
class RewardSpec(SpecPart):
    """One reward function of a GRPO run: a scorer of engine.eval (or a length target) and its
    weight in the sum of rewards; the judge scorer names its judge model."""

    scorer: str = param("contains", REWARD_SCORER_HELP, short="reward", widget="reward")
    weight: float = param(
        1.0, "This reward's weight in the sum of all rewards.", min=0.0, max=100.0
    )
    judge: str = param(
        "",
        "The GGUF model that grades each completion for the judge scorer (run by llama.cpp on "
        "the CPU, loaded once for the run and given the run's CPU threads); a small instruct "
        "model will do, and every graded completion costs a short llama.cpp call.",
        label="Judge model",
        short="judge",
        widget="gguf",
        visible_if=("scorer", ("judge",)),
    )

    part: ClassVar[str] = "rewards"

    def check_rules(self, prefix: str) -> None:
        """The scorer is one rewards can use (loss is not), its pattern compiles, its length is a
        positive whole number, its file is of the right type, and the judge scorer names a judge
        model, which exists when it is a path of this machine (whether a file is a GGUF, and a
        scorer file's contents, are the compiler's and the worker's checks)."""
        scorer = self.scorer.strip()
        where = f"{prefix}.scorer"
        kinds = ", ".join(REWARD_NAMES + tuple(p + "…" for p in REWARD_PREFIXES))
        if scorer == "judge":
            self.check_judge(prefix)
            return
        if scorer in REWARD_NAMES:
            return
        head, sep, rest = scorer.partition(":")
        if not sep or head + ":" not in REWARD_PREFIXES:
            raise SpecError(where, self.scorer, "is not a reward scorer; scorers: " + kinds)
        if not rest.strip():
            raise SpecError(where, self.scorer, f"{head}: needs its value after the colon")
        if head == "regex":
            try:
                re.compile(rest)
            except re.error as err:
                raise SpecError(
                    where, self.scorer, f"the pattern does not compile: {err}"
                ) from None
        elif head == "length" and not (rest.strip().isdigit() and int(rest) > 0):
            raise SpecError(where, self.scorer, "length: needs a number of characters above 0")
        elif head in ("python", "json"):
            suffix = ".py" if head == "python" else ".json"
            if Path(rest.strip()).suffix.lower() != suffix:
                raise SpecError(where, self.scorer, f"{head}: needs a {suffix} file")

    def check_judge(self, prefix: str) -> None:
        """A judge model is named, and an absolute path names an existing file (a relative path
        is the graph folder's, resolved by the compiler; `pypi:PACKAGE` is found by the
        worker)."""
        judge = self.judge.strip()
        where = f"{prefix}.judge"
        if not judge:
            raise SpecError(
                where,
                self.judge,
                "the judge scorer needs a judge model",
                "Choose a .gguf judge model (a small instruct model will do), or another scorer.",
            )
        path = Path(judge).expanduser()
        if not judge.startswith("pypi:") and path.is_absolute() and not path.is_file():
            raise SpecError(
                where,
                self.judge,
                "the file does not exist",
                "Choose an existing .gguf judge model file.",
            )


@dataclass
class JobSpec:
    """One Fine-Tune module: everything a worker needs, and nothing secret."""

    name: str
    base_model: BaseModelSpec = field(default_factory=BaseModelSpec)
    datasets: list[DatasetSpec] = field(default_factory=list)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    evals: list[EvalSpec] = field(default_factory=list)  # scored when training ends
    method: MethodSpec = field(default_factory=MethodSpec)
    rewards: list[RewardSpec] = field(default_factory=list)  # GRPO's reward functions
    # A Sweep node's search over this module's knobs (engine.sweep_spec); the trials it starts
    # are ordinary runs whose `trial` names the study, their number and what they chose:
    # {"study": NAME, "number": N, "params": {"training.learning_rate": 1e-4, …}}
    sweep: SweepSpec | None = None
    trial: dict[str, Any] = field(default_factory=dict)
    # The data steps that make this run's datasets, in order (data recipe nodes before the
    # Fine-Tune node: nodes.recipes): {"key", "step", "name", "node_uuid", "spec", "inputs",
    # "outputs"}; the run waits until each has written its outputs.
    data_steps: list[dict[str, Any]] = field(default_factory=list)
    # A chained run starts from another Fine-Tune node's result: the compiler names that node
    # (`upstream_node`, its uuid; base_model is a copy of the upstream's), and the submission
    # names its run (`upstream`, the run id; base_model.source becomes `run:<id>`).
    upstream_node: str = ""
    upstream: str = ""
    node_uuid: str = ""
    origin_uuid: str = ""  # the Fine-Tune node this one was duplicated from, if any
    graph_path: str = ""
    format_version: int = FORMAT_VERSION

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The spec as plain JSON-ready data."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The spec as JSON text with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> JobSpec:
        """A spec from its dict, migrated from any older format_version; not validated."""
        data = migrate(dict(data))
        parts = {
            "base_model": BaseModelSpec,
            "training": TrainingSpec,
            "lora": LoraSpec,
            "resources": ResourceSpec,
            "export": ExportSpec,
            "method": MethodSpec,
        }
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in parts:
                value = build_part(parts[f.name], value, f.name)
            elif f.name == "datasets":
                value = [build_part(DatasetSpec, d, f"datasets[{i}]") for i, d in enumerate(value)]
            elif f.name == "evals":
                value = [build_part(EvalSpec, d, f"evals[{i}]") for i, d in enumerate(value)]
            elif f.name == "rewards":
                value = [build_part(RewardSpec, d, f"rewards[{i}]") for i, d in enumerate(value)]
            elif f.name == "sweep" and value is not None:
                value = build_part(SweepSpec, value, "sweep")
            kwargs[f.name] = value
        if "name" not in kwargs:
            raise SpecError("name", None, "a job spec needs a name")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """A spec from JSON text (see `from_dict`)."""
        return cls.from_dict(json.loads(text))

    def save(self, path: Path) -> None:
        """Write the spec as JSON to `path`."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        """Read a spec.json (any earlier format_version); not validated, so old runs still open."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise SpecError for the first field holding a value we cannot run with: each part's
        own fields and rules first, then the rules across parts."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError("name", self.name, "the run needs a name")
        self.base_model.validate("base_model")
        if not self.datasets:
            raise SpecError("datasets", [], "connect at least one dataset")
        for i, ds in enumerate(self.datasets):
            ds.validate(f"datasets[{i}]")
        for part in ("training", "lora", "resources", "export"):
            getattr(self, part).validate(part)
        for i, ev in enumerate(self.evals):
            ev.validate(f"evals[{i}]")
        self.method.validate("method")
        for i, reward in enumerate(self.rewards):
            reward.validate(f"rewards[{i}]")
        self.check_device_rules()
        self.check_eval_rules()
        self.check_method_rules()
        self.check_chain_rules()
        if self.sweep is not None:
            self.check_sweep_rules(self.sweep)

    def check_sweep_rules(self, sweep: SweepSpec) -> None:
        """The Sweep node's own fields, its knobs against this module's parts, and an objective
        this module's evaluations produce (pruning needs one measured during training)."""
        sweep.validate("sweep")
        sweep.dimensions(PARTS)
        objective = sweep.objective.strip()
        during = "a grpo run is not evaluated during training"
        if objective == "eval_loss":
            if self.method.method == "grpo":
                raise SpecError(
                    "sweep.objective",
                    objective,
                    f"{during}, so it has no eval_loss",
                    "Choose a metric an Eval node scores when training ends.",
                )
            if self.training.eval_split == 0:
                raise SpecError(
                    "sweep.objective",
                    objective,
                    "eval_loss needs rows held out, but the training config's eval_split is 0",
                    "Set eval_split above 0 (e.g. 0.1), or choose a metric an Eval node scores.",
                )
        else:
            scored = [m for ev in self.evals for m in (ev.metrics or ["loss", "rouge_l"])]
            if objective not in scored:
                have = ", ".join(dict.fromkeys(["eval_loss", *scored]))
                raise SpecError(
                    "sweep.objective",
                    objective,
                    "no connected Eval node scores this metric, so no trial could report it",
                    f"Choose one the module produces ({have}), or add it to an Eval node.",
                )
        if sweep.pruner != "none" and objective != "eval_loss":
            raise SpecError(
                "sweep.pruner",
                sweep.pruner,
                f"pruning compares eval_loss during training, but the objective {objective} "
                "is scored only when training ends",
                "Set the pruner to none, or the objective to eval_loss.",
            )
        if sweep.pruner != "none" and loss_like(objective) != sweep.minimise():
            raise SpecError(
                "sweep.direction",
                sweep.direction,
                "pruning on eval loss needs the objective minimised",
                "Set direction to auto or minimize.",
            )

    def check_chain_rules(self) -> None:
        """A chained run reads its upstream run's result from this machine's data directory, so
        it trains here, not on a cluster."""
        chained = self.upstream or self.upstream_node or self.base_model.source.startswith("run:")
        if chained and self.resources.target == "cluster":
            raise SpecError(
                "resources.target",
                "cluster",
                "a chained run starts from its upstream run's result in this machine's data "
                "directory, so it trains on this machine",
                "Set target to local on this Fine-Tune node.",
            )

    def check_method_rules(self) -> None:
        """GRPO has rewards and a batch its generations divide, and only GRPO takes rewards; a
        GRPO run is not evaluated during training, so it cannot stop early or keep the best."""
        method = self.method.method
        if method != "grpo":
            if self.rewards:
                raise SpecError(
                    "rewards",
                    [r.scorer for r in self.rewards],
                    f"Reward nodes are used only by method grpo, and this run's method is {method}",
                    "Set the Fine-Tune node's method to grpo, or disconnect the Reward nodes.",
                )
            return
        if not self.rewards:
            raise SpecError(
                "rewards",
                [],
                "method grpo learns from rewards: connect at least one Reward node",
                "Add a Reward node (e.g. regex:PATTERN or contains) to the reward input.",
            )
        t = self.training
        batch = t.micro_batch_size * t.grad_accum * self.resources.gpu_count
        if batch % self.method.num_generations:
            raise SpecError(
                "method.num_generations",
                self.method.num_generations,
                f"must divide the batch of generations: micro batch size {t.micro_batch_size} × "
                f"gradient accumulation {t.grad_accum} × {self.resources.gpu_count} GPU(s) = "
                f"{batch}",
                "Make the micro batch size (or gradient accumulation) a multiple of it.",
            )
        if t.early_stopping_patience or t.keep_best:
            name = "early_stopping_patience" if t.early_stopping_patience else "keep_best"
            raise SpecError(
                f"training.{name}",
                getattr(t, name),
                "a grpo run is not evaluated during training, so it cannot stop early or keep the "
                "best checkpoint",
                f"Turn {name} off for this run.",
            )

    def check_eval_rules(self) -> None:
        """An Eval node without a file scores the held-out split, so the run must hold rows out;
        scoring the GGUF needs the GGUF export."""
        for i, ev in enumerate(self.evals):
            if not ev.path.strip() and self.training.eval_split == 0:
                raise SpecError(
                    f"evals[{i}].path",
                    ev.path,
                    "no eval set chosen, and the run holds no rows out to score instead "
                    "(eval_split is 0)",
                    "Choose an eval set file, or set eval_split above 0 in the training config.",
                )
            if ev.score_gguf and not self.export.gguf:
                raise SpecError(
                    f"evals[{i}].score_gguf",
                    ev.score_gguf,
                    "there is no GGUF to score: the run's export writes none",
                    "Turn GGUF on in the Export node, or turn Also score the GGUF off.",
                )

    def check_device_rules(self) -> None:
        """Choices that need a GPU, refused when the run is told to train on the CPU.

        With device auto the worker makes the same checks once it knows the machine.
        """
        if self.resources.device != "cpu":
            return
        on_cpu = "but this run's device is cpu"
        if self.training.precision == "fp16":
            raise SpecError(
                "training.precision",
                "fp16",
                f"fp16 training needs a GPU, {on_cpu}",
                "Use auto, bf16 or fp32 on the CPU, or set the device to auto or cuda.",
            )
        if self.training.attention == "flash_attention_2":
            raise SpecError(
                "training.attention",
                "flash_attention_2",
                f"flash_attention_2 needs an NVIDIA GPU, {on_cpu}",
                "Use auto (sdpa) on the CPU, or set the device to auto or cuda.",
            )
        if self.lora.quantization == "4bit":
            raise SpecError(
                "lora.quantization",
                "4bit",
                f"4-bit QLoRA needs an NVIDIA GPU (bitsandbytes), {on_cpu}",
                "Set quantization to auto or none on the CPU, or set the device to auto or cuda.",
            )


def migrate(data: dict) -> dict:
    """Bring a spec dict of any earlier format_version up to FORMAT_VERSION."""
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SpecError(
            "format_version",
            version,
            f"this Tunegraph reads spec formats up to {FORMAT_VERSION}",
            "Update Tunegraph to open this run.",
        )
    data["format_version"] = FORMAT_VERSION
    return data


PARTS: dict[str, type] = {
    "base_model": BaseModelSpec,
    "dataset": DatasetSpec,
    "training": TrainingSpec,
    "lora": LoraSpec,
    "resources": ResourceSpec,
    "export": ExportSpec,
    "eval": EvalSpec,
    "method": MethodSpec,
    "reward": RewardSpec,
    "sweep": SweepSpec,
}
