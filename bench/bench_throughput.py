"""Training throughput: our worker path against a plain transformers + PEFT Trainer, side by side.

    .venv/bin/python bench/bench_throughput.py [--model tiny|PATH|config:<shape>] [--device cpu|cuda]
        [--steps 30] [--batch 8] [--seq 512] [--repeats 3] [--variants ours,ours-padded]
        [--quant none|4bit] [--baseline-padding longest|max_length] [--out FILE.json]

Same model, data (varied-length chats, bench/common.py), LoRA (r16 on q/k/v/o), optimizer, batch
size and steps for every configuration:
- baseline: `AutoModelForCausalLM.from_pretrained` (transformers' default attention, sdpa) +
  `peft.get_peft_model` + `transformers.Trainer` with `DataCollatorForSeq2Seq` padded batches
  (default: padding to the longest row of each batch, the collator's usual setting; `max_length`
  pads every row to --seq), labels = input ids, no gradient checkpointing, logging every step;
  with --quant 4bit the base is loaded in NF4 and prepared with `prepare_model_for_kbit_training`;
- ours: `engine.training.trainer.build_trainer`, exactly what the worker runs (our data pipeline, padding-free
  batches, sdpa, checkpointing only when memory needs it), timed around `trainer.train()`;
- variants of ours, each one switch changed: `ours-padded` (packing off), `ours-eager` (eager
  attention), `ours-ckpt` (gradient checkpointing on), `ours-liger` (Liger kernels), `ours-fa2`
  (flash_attention_2).

Configurations are interleaved within each repeat. Tokens/s counts real (non-padding) tokens of
the timed steps (the first --warmup steps are left out), time between step ends, so data loading
and collation are included: wall time on CUDA; on the CPU by default this process's CPU time with
one torch thread (`--clock cpu`), because on a shared machine wall time swings several-fold with
other processes' load while the CPU time of a single thread measures the work itself. On CUDA it also reports model FLOPs utilisation:
tokens/s x 4N / the bf16 matmul peak measured in this run (N = parameters taking part in matmuls,
i.e. all but the input embedding table; LoRA's backward needs no weight gradients for the frozen
base, so ~4N rather than 6N FLOPs per token; attention's s^2 FLOPs are not counted).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

GOAL_GPU = 2.0
VARIANTS = {
    "ours": {},
    "ours-padded": {"packing": False},
    "ours-eager": {"attention": "eager"},
    "ours-ckpt": {"gradient_checkpointing": "on"},
    "ours-liger": {"liger_kernels": True},
    "ours-fa2": {"attention": "flash_attention_2"},
}


class CountingCollator:
    """Wraps a collator and records the real tokens of every batch it builds, in order."""

    def __init__(self, inner):
        self.inner = inner
        self.real: list[int] = []

    def __call__(self, features):
        self.real.append(sum(len(f["input_ids"]) for f in features))
        return self.inner(features)


def step_timer(device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.cpu: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self._sync()
            self.ends = [time.perf_counter()]
            self.cpu = [time.process_time()]

        def on_step_end(self, args, state, control, **kwargs):
            self._sync()
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def _sync(self):
            if device == "cuda":
                import torch

                torch.cuda.synchronize()

    return StepTimer()


def measure(trainer, device: str, warmup: int) -> dict:
    """Train and return tokens/s over the steps after `warmup`, and the peak memory."""
    import torch

    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    timer = step_timer(device)
    trainer.add_callback(timer)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = len(timer.ends) - 1
    if steps <= warmup:
        raise SystemExit(f"only {steps} steps ran: raise --steps above --warmup")
    seconds = timer.ends[-1] - timer.ends[warmup]
    cpu_seconds = timer.cpu[-1] - timer.cpu[warmup]
    ga = trainer.args.gradient_accumulation_steps
    tokens = sum(counter.real[warmup * ga : steps * ga])
    peak = torch.cuda.max_memory_reserved() / 2**30 if device == "cuda" else None
    release(trainer)
    return {
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "tokens": tokens,
        "seconds": seconds,
        "peak_gib": peak,
    }


def release(trainer) -> None:
    """Drop the trainer's model and optimizer so the next configuration starts from free memory."""
    try:
        trainer.accelerator.free_memory()
    except Exception:
        pass
    trainer.model = trainer.model_wrapped = None
    trainer.optimizer = trainer.lr_scheduler = None


def baseline_trainer(args, source: str, rows: list[dict], work: Path):
    """Plain transformers + PEFT, as a user without Tunegraph would write it."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback

    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = [
        tokenizer.apply_chat_template(
            r["messages"], tokenize=True, return_dict=True, truncation=True, max_length=args.seq
        )["input_ids"]
        for r in rows
    ]
    train = datasets.Dataset.from_dict({"input_ids": ids, "labels": [list(i) for i in ids]})
    cuda = args.device == "cuda"
    kwargs = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if args.quant == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if args.quant == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    set_seed(42)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    training_args = TrainingArguments(
        output_dir=str(work / "baseline"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=cuda,
        use_cpu=not cuda,
        seed=42,
        dataloader_num_workers=0,
    )
    collator = DataCollatorForSeq2Seq(
        tokenizer,
        padding=args.baseline_padding,
        max_length=args.seq if args.baseline_padding == "max_length" else None,
        label_pad_token_id=-100,
        return_tensors="pt",
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def ours_trainer(args, source: str, data: Path, work: Path, variant: str):
    from engine.control import Control
    from engine.events import NullLog
    from engine.training.trainer import build_trainer

    quant = {"quantization": "4bit" if args.quant == "4bit" else "none"}
    spec = common.bench_spec(
        source, data, args.device, args.steps, args.batch, args.seq, **VARIANTS[variant]
    )
    spec.lora.quantization = quant["quantization"]
    run_dir = work / f"{variant}-{time.time_ns()}"
    run_dir.mkdir(parents=True)
    return build_trainer(spec, run_dir, NullLog(), Control(run_dir)).trainer


def matmul_params(source: str) -> int:
    """Parameters taking part in matmuls: all but the input embedding table (the output
    projection counts even when tied to it)."""
    from transformers import AutoConfig

    from engine.plan.shape import model_shape

    config = AutoConfig.from_pretrained(source)
    shape = model_shape(config)
    tied = getattr(config, "tie_word_embeddings", False)
    return shape.params if tied else shape.params - shape.vocab * shape.hidden


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, config:<shape> or a model folder")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--long-tail", type=float, default=1.0, help="scale the chats' answer lengths"
    )
    parser.add_argument("--variants", default="ours,ours-padded", help=",".join(VARIANTS))
    parser.add_argument("--quant", default="none", choices=("none", "4bit"))
    parser.add_argument("--baseline-padding", default="longest", choices=("longest", "max_length"))
    parser.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="time the steps by wall clock or by this process's CPU time (auto: wall on CUDA, "
        "CPU time with one thread on the CPU, where other processes' load swamps wall time)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    common.quiet()
    if args.clock == "auto":
        args.clock = "wall" if args.device == "cuda" else "cpu"
    key = "tokens_per_s" if args.clock == "wall" else "tokens_per_cpu_s"
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "ours" not in variants:
        parser.error(f"--variants must include ours and name only: {', '.join(VARIANTS)}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_throughput: --device cuda needs CUDA, and none is visible")
        return 2

    if args.device == "cpu":
        # one thread on the CPU clock: CPU time then counts the work, not OpenMP threads spinning
        # at barriers while other processes hold the cores
        torch.set_num_threads(
            args.threads or (1 if args.clock == "cpu" else torch.get_num_threads())
        )
    source = common.model_source(args.model, args.device)
    work = Path(tempfile.mkdtemp(prefix="tg-throughput-"))
    rows = common.varied_chats(args.rows, long_tail=args.long_tail)
    data = common.write_jsonl(work / "chats.jsonl", rows)
    peak_flops = common.measure_bf16_peak() if args.device == "cuda" else None
    n_matmul = matmul_params(source)

    names = ["baseline", *variants]
    results: dict[str, list[dict]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    for repeat in range(args.repeats):
        for name in names:
            if name in errors:
                continue
            try:
                trainer = (
                    baseline_trainer(args, source, rows, work)
                    if name == "baseline"
                    else ours_trainer(args, source, data, work, name)
                )
            except Exception as exc:  # a switch that cannot run here (no liger, no flash-attn)
                errors[name] = str(exc).splitlines()[0]
                print(f"{name}: skipped: {errors[name]}", file=sys.stderr)
                continue
            results[name].append(measure(trainer, args.device, args.warmup))
            del trainer
            free(args.device)
            print(
                f"repeat {repeat + 1} {name}: {results[name][-1][key]:,.0f} {key}",
                file=sys.stderr,
            )

    shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(r[key] for r in results["baseline"])
    table_rows, figures = [], {}
    for name in names:
        if not results[name]:
            table_rows.append([name, "skipped: " + errors.get(name, "?"), "", "", "", ""])
            continue
        speeds = [r[key] for r in results[name]]
        med = statistics.median(speeds)
        peak = max((r["peak_gib"] or 0) for r in results[name]) or None
        mfu = med * 4 * n_matmul / peak_flops if peak_flops else None
        figures[name] = {
            key: speeds,
            "runs": results[name],
            "median": med,
            "ratio": med / base,
            "peak_reserved_gib": peak,
            "mfu": mfu,
        }
        table_rows.append(
            [
                name,
                f"{med:,.0f} [{min(speeds):,.0f}-{max(speeds):,.0f}]",
                f"{med / base:.2f}",
                f"{mfu:.1%}" if mfu is not None else "-",
                f"{peak:.2f}" if peak else "-",
                len(speeds),
            ]
        )
    print(
        f"\ntraining throughput, {args.model} on {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
        + f", batch {args.batch}, max_seq {args.seq}, {args.steps} steps "
        f"({args.warmup} warm-up left out), LoRA r16 q/k/v/o, quant {args.quant}, "
        f"baseline padding {args.baseline_padding}; real tokens per "
        + ("second" if args.clock == "wall" else "CPU-second (1 thread)")
        + ", median [min-max]"
    )
    if peak_flops:
        print(f"measured bf16 matmul peak {peak_flops / 1e12:.0f} TFLOP/s; N = {n_matmul:,}")
    print(
        common.table(
            ["configuration", "tokens/s", "vs baseline", "MFU", "peak GiB", "repeats"],
            table_rows,
        )
    )
    ratio = figures["ours"]["ratio"] if "ours" in figures else float("nan")
    goal = f" (goal on a GPU >= {GOAL_GPU:.1f})" if args.device == "cuda" else ""
    print(f"ratio ours/baseline = {ratio:.2f}×{goal}")
    common.write_result(
        args.out,
        {
            "benchmark": "throughput",
            "env": common.environment(args.device),
            "settings": vars(args),
            "peak_bf16_flops": peak_flops,
            "matmul_params": n_matmul,
            "figures": figures,
            "skipped": errors,
            "ratio_ours_baseline": ratio,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
