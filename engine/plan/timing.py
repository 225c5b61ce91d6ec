"""The time range of a run before it starts: start-up, loading, encoding, the training compute
from a sample of the data's token lengths, evaluation, samples, saving and export, each as a
(fast, slow) pair of rates. Calibrated with bench/bench_time_coverage.py (BENCHMARKS.md
"Time-estimate coverage"). Imports torch only through the tokenizer: never from the UI process.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.plan.shape import ModelShape
from engine.spec import JobSpec

TIME_HEADROOM = 1.3
CHARS_PER_TOKEN = 3.6
# dense bf16 peak FLOP/s by GPU name fragment (measured where we could; vendor figures otherwise)
GPU_PEAK_FLOPS = {
    "H200": 790e12,
    "H100": 790e12,
    "A100": 312e12,
    "L40": 181e12,
    "4090": 165e12,
    "A6000": 155e12,
    "3090": 71e12,
    "A10": 125e12,
    "T4": 65e12,
    "4080": 97e12,
}
GPU_MFU = (0.45, 0.10)  # LoRA model-FLOPs utilisation with HF Trainer (small models: low)
CPU_FLOPS_PER_CORE = (10e9, 1e9)  # small shapes on a shared, busy CPU run far below peak
START_S = {"cpu": (3.0, 30.0), "cuda": (8.0, 45.0)}  # process start, imports, CUDA init
LOAD_BYTES_PER_S = (2e9, 1e8)  # reading and placing the weights
ENCODE_ROWS_PER_S = (4000.0, 150.0)  # chat template, tokenizing, masking
STEP_OVERHEAD_S = {"cpu": (0.02, 0.6), "cuda": (0.02, 0.15)}  # per micro-batch
SAMPLE_TOKENS = 3 * 64  # the end-of-run samples (engine.training.trainer.SAMPLE_MAX_NEW_TOKENS)
DECODE_S_PER_TOKEN = (0.002, 0.08)  # greedy decoding latency floor per token
SAVE_S = (0.3, 8.0)  # adapter, tokenizer, model card, final checkpoint
GGUF_S = (1.0, 60.0)  # merge, convert, quantize, parity check: fixed part
GGUF_PARAMS_PER_S = (1e8, 5e6)  # ... and the part growing with the model
TEMPLATE_TOKENS = 5  # per message: role markers and end of turn
# the Eval nodes' end-of-run scoring (engine.eval.runner.answer_budget): each row's answer gets
# about half the reference's characters + 16 tokens, within 32..512; a fast model stops at the
# reference's length, a slow estimate writes the whole budget. A judge verdict reads a prompt
# of a few hundred tokens and writes a few.
ANSWER_TOKENS = (32, 512)
JUDGE_S_PER_VERDICT = (0.05, 3.0)
JUDGE_METRICS = ("judge", "judge_pairwise")


@dataclass
class Workload:
    """What a run will compute, from the spec and a sample of its data (for the time range)."""

    rows: int  # rows in the files
    train_rows: float
    eval_rows: float
    steps: int  # optimizer steps
    micro_batches: int  # forward/backward passes per device
    real_tokens: float  # tokens trained, per device
    computed_tokens: float  # with padding (packing off), per device
    eval_tokens: float  # tokens of all evaluation passes, per device
    # the Eval nodes' scoring when training ends (all targets): tokens written, as (fast, slow),
    # tokens read (prompt and reference, for `loss`) and judge verdicts
    answer_tokens: tuple[float, float] = (0.0, 0.0)
    scored_tokens: float = 0.0
    verdicts: int = 0


def time_range_s(
    shape: ModelShape,
    work: Workload | float,
    device: str,
    gpu_name: str | None,
    cores: int,
    spec: JobSpec | None = None,
) -> dict:
    """Lower and upper bound (with headroom) of a run's wall time, process start to exit.

    The parts, each as a (fast, slow) pair of rates measured on the machines we could use
    (bench/bench_time_coverage.py; BENCHMARKS.md): worker start-up (imports, CUDA init), reading
    the weights, encoding the rows, the training compute (4·N FLOPs per computed token at a
    FLOP rate for the device) plus a fixed cost per micro-batch (optimizer, logging, Python),
    evaluation passes (2·N per token), the three end-of-run samples, saving, and the GGUF export,
    plus the Eval nodes' scoring (their answers decoded token by token, the references read, the
    judge's verdicts). `work` may be a plain token count (no data sample: the training compute
    only, plus start-up).
    """
    gpu = device == "cuda"
    if gpu:
        peak = next((v for k, v in GPU_PEAK_FLOPS.items() if gpu_name and k in gpu_name), 100e12)
        rates = (peak * GPU_MFU[0], peak * GPU_MFU[1])
    else:
        rates = (CPU_FLOPS_PER_CORE[0] * cores, CPU_FLOPS_PER_CORE[1] * cores)
    if not isinstance(work, Workload):
        work = Workload(0, 0, 0, 0, 0, work, work, 0)
    weights = shape.params * (2 if gpu else 4)
    bounds = []
    for i in (0, 1):  # 0: everything goes fast, 1: everything goes slow
        seconds = START_S[device if gpu else "cpu"][i]
        seconds += weights / LOAD_BYTES_PER_S[i] + work.rows / ENCODE_ROWS_PER_S[i]
        # full fine-tuning also computes every weight's gradient: 6·N FLOPs a token, not 4·N
        flops = 6 if spec is not None and spec.lora.full else 4
        seconds += flops * shape.params * work.computed_tokens / rates[i]
        seconds += work.micro_batches * STEP_OVERHEAD_S["cuda" if gpu else "cpu"][i]
        seconds += 2 * shape.params * work.eval_tokens / rates[i]
        if spec is not None:
            per_token = max(2 * shape.params / rates[i], DECODE_S_PER_TOKEN[i])
            seconds += SAMPLE_TOKENS * per_token + SAVE_S[i]
            seconds += (
                work.answer_tokens[i] * per_token + 2 * shape.params * work.scored_tokens / rates[i]
            )
            seconds += work.verdicts * JUDGE_S_PER_VERDICT[i]
            if spec.export.gguf:
                seconds += GGUF_S[i] + shape.params / GGUF_PARAMS_PER_S[i]
        bounds.append(seconds)
    return {"low": round(bounds[0], 1), "high": round(bounds[1] * TIME_HEADROOM, 1)}


def export_s(shape: ModelShape) -> tuple[float, float]:
    """(fast, slow) seconds of a GGUF export of a model of this shape: merge, convert, quantize
    and the parity check, as in time_range_s (the slow side with its headroom)."""
    return (
        GGUF_S[0] + shape.params / GGUF_PARAMS_PER_S[0],
        (GGUF_S[1] + shape.params / GGUF_PARAMS_PER_S[1]) * TIME_HEADROOM,
    )


def row_lengths(spec: JobSpec, sample: int = 500) -> tuple[int, list[int]]:
    """(rows in the files, token lengths of up to `sample` rows per file, untruncated).

    Lengths come from the base model's own tokenizer when it loads quickly (a folder, a hub
    cache or the builtin model), else from characters / CHARS_PER_TOKEN; each message adds its
    template's few tokens (role markers, end of turn). Rows of the methods beyond SFT count what
    a step puts through the model (engine.data.method_formats.step_text): a preference row its
    prompt twice with both answers, a GRPO row its prompt plus its sampled answers.
    """
    from engine.data.formats import normalize, read_rows, row_error
    from engine.data.method_formats import METHOD_FORMATS, method_row, step_text
    from engine.data.prepare import load_dataset_rows
    from engine.errors import DataError

    tokenizer = _quick_tokenizer(spec)
    rows, texts = 0, []
    method = spec.method.method
    generated = spec.method.num_generations * spec.method.max_completion_length
    for ds in spec.datasets:
        if method in METHOD_FORMATS:
            loaded, fmt = read_rows(ds), None
        else:
            loaded, fmt = load_dataset_rows(ds)
        rows += len(loaded)
        stride = max(1, len(loaded) // sample)
        for index in range(0, len(loaded), stride)[:sample]:
            row = loaded[index]
            if fmt is None:
                try:
                    text, turns = step_text(method_row(row, method))
                except DataError as err:
                    raise row_error(ds.path, index, err.message) from None
                texts.append((text, turns))
                continue
            example = normalize(row, fmt)
            if "text" in example:
                texts.append((example["text"], 1))
            else:
                parts = example["messages"]
                texts.append(("\n".join(m["content"] for m in parts), len(parts)))
    if not texts:
        return rows, []
    if tokenizer is not None:
        ids = tokenizer([t for t, _ in texts], add_special_tokens=False)["input_ids"]
        counts = [len(x) for x in ids]
    else:
        counts = [len(t) / CHARS_PER_TOKEN for t, _ in texts]
    extra = generated if method == "grpo" else 0  # tokens sampled per prompt, then trained
    return rows, [
        max(1, round(c + TEMPLATE_TOKENS * n + extra))
        for c, (_, n) in zip(counts, texts, strict=True)
    ]


def _quick_tokenizer(spec: JobSpec):
    source = spec.base_model.source.strip()
    if source.startswith("gguf:"):
        return None  # rebuilding a GGUF's tokenizer takes tens of seconds
    try:
        from transformers import AutoTokenizer

        from engine.models.sources import hub_kwargs, resolve_source

        resolved = resolve_source(spec.base_model)
        return AutoTokenizer.from_pretrained(
            resolved.location, **hub_kwargs(spec.base_model, resolved)
        )
    except Exception:  # no tokenizer at hand: fall back to characters
        return None


def workload(spec: JobSpec, rows: int, lengths: list[int], seq: int) -> Workload:
    """Steps, micro-batches and tokens a run will compute, from a sample of its row lengths."""
    import math
    import random

    from engine.data.prepare import eval_size

    t = spec.training
    lengths = [min(n, seq) for n in lengths] or [seq]
    mean = sum(lengths) / len(lengths)
    n_eval = eval_size(rows, t.eval_split)
    train_rows = rows - n_eval
    b, devices = t.micro_batch_size, spec.resources.gpu_count
    per_step = b * t.grad_accum * devices
    epochs = t.epochs
    if t.max_steps:
        steps = t.max_steps
        epochs = steps * per_step / max(train_rows, 1)
    else:
        steps = math.ceil(math.ceil(train_rows / (b * devices)) / t.grad_accum * epochs)
    micro = steps * t.grad_accum
    padded = mean
    if not t.packing and b > 1:  # each micro-batch is padded to its longest row
        rng = random.Random(0)
        padded = sum(max(rng.choices(lengths, k=b)) for _ in range(200)) / 200
    evals = math.ceil(epochs) if not t.eval_steps else steps // t.eval_steps + 1
    answers, scored, verdicts = final_eval_work(spec, n_eval, mean, evals if n_eval else 0)
    return Workload(
        rows=rows,
        train_rows=train_rows,
        eval_rows=n_eval,
        steps=steps,
        micro_batches=micro,
        real_tokens=micro * b * mean,
        computed_tokens=micro * b * padded,
        eval_tokens=(evals * n_eval * mean / devices) if n_eval else 0.0,
        answer_tokens=answers,
        scored_tokens=scored,
        verdicts=verdicts,
    )


def final_eval_work(
    spec: JobSpec, held_out: int, mean_tokens: float, evaluations: int = 0
) -> tuple[tuple[float, float], float, int]:
    """What the Eval nodes add: ((fast, slow) tokens written, tokens read, judge verdicts), over
    every target scored when training ends (the adapter, the base, the GGUF), plus the answers
    a node with `during_training_rows` writes at each of the run's `evaluations` during training
    (the loss the sets add then is small next to the training, and left out). A set file that
    cannot be read adds nothing here (the run reports it)."""
    from engine.data.formats import load_dataset_rows, normalize
    from engine.errors import TunegraphError
    from engine.spec import DatasetSpec

    fast = slow = scored = 0.0
    verdicts = 0
    for ev in spec.evals:
        if ev.path.strip():
            try:
                rows, fmt = load_dataset_rows(DatasetSpec(path=ev.path, max_rows=ev.max_rows))
            except TunegraphError:
                continue
            answers = [_last_answer(normalize(r, fmt)) for r in rows]
            refs = [len(a) / CHARS_PER_TOKEN for a in answers if a is not None]
            row_tokens = [mean_tokens] * len(refs)
        else:
            n = min(held_out, ev.max_rows or held_out)
            refs, row_tokens = [mean_tokens / 2] * n, [mean_tokens] * n  # no text at hand
        targets = 1 + ev.score_base + ev.score_gguf
        metrics = set(ev.metrics or ("loss", "rouge_l"))
        if metrics - {"loss"}:  # something to generate
            # during training: the first during_training_rows rows, at each evaluation
            during = ev.during_training_rows if metrics - {"loss", *JUDGE_METRICS} else 0
            for i, ref in enumerate(refs):
                budget = max(
                    ANSWER_TOKENS[0], min(ANSWER_TOKENS[1], ref * CHARS_PER_TOKEN / 2 + 16)
                )
                times = targets + (evaluations if i < during else 0)
                fast += times * min(budget, max(ref, 1.0))
                slow += times * budget
        if "loss" in metrics:
            scored += targets * sum(row_tokens)
        if metrics & set(JUDGE_METRICS):
            verdicts += len(refs) * targets * (1 + 2 * ("judge_pairwise" in metrics))
    return (fast, slow), scored, verdicts


def _last_answer(example: dict) -> str | None:
    turns = [m["content"] for m in example.get("messages", []) if m["role"] == "assistant"]
    return turns[-1] if turns else None
