"""One base, many adapters, in GPU memory: what a group of LoRA variants of an 8B base needs,
16-bit and 4-bit, against the same variants as separate runs, and whether it fits a 24 GiB card.
No GPU and no weights: the figures are the engine's own estimate, and the 16-bit case is
cross-checked by a traced training step.

    .venv/bin/python bench/bench_group_memory.py [--shape 8b] [--ranks 8 16 32 64]
        [--seq 2048] [--batch 1] [--targets all-linear] [--dropout 0] [--card-gib 24]
        [--no-trace] [--out FILE.json]

The base is Llama-3.1-8B's shape (bench/common.py SHAPES; its config.json and the tiny model's
tokenizer in a temporary folder, which is all an estimate reads). The variants are SFT runs that
differ only in LoRA rank (alpha 2r) and keep Tunegraph's defaults otherwise: padding-free
batches, sdpa, gradient checkpointing "auto", no dropout. For each variant and each base
precision (16-bit, 4-bit QLoRA) it prints engine.plan.estimate's peak and its parts as the
confirm step and the scheduler see them on a card of --card-gib; then the group's need
(engine.plan.sharing.group_need_gib) against separate runs (separate_gib), and the verdict with
the scheduler's 90% headroom (engine.plan.estimate.HEADROOM): does the group fit, and how many of
the variants fit at once as separate runs and in one group. Last, quantization "auto" (the
default): the mode each variant gets alone, and the groups engine.plan.sharing.groups forms.

16-bit cross-check (engine.plan.memory_trace, fake tensors on the CPU): each variant alone (two
training steps) and the group as engine.training.group trains it: one base with every variant's
named adapter, the variants taking turns (set_adapter, forward and backward on their own
adapter, their own fused AdamW's step, zero_grad), two rounds. The trace gives the tensors' peak;
the estimate's tensor part (before the allocator's slack and the CUDA context) is compared with
it. 4-bit bases cannot be traced (bitsandbytes has no fake-tensor kernels): the 4-bit figures are
the estimate's formula alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from engine.hardware import GIB  # noqa: E402

MODES = (("16-bit", "none", "lora"), ("4-bit", "4bit", "qlora"))  # label, quantization, mode


def base_folder(shape: str, folder: Path) -> Path:
    """A base-model folder with `shape`'s config.json and the tiny model's tokenizer files (the
    chat template the estimate checks): everything an estimate reads, no weights."""
    folder.mkdir(parents=True, exist_ok=True)
    common.shape_config(shape).save_pretrained(folder)
    for item in common.tiny_model().iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(item, folder / item.name)
    return folder


def variant_specs(source: str, data: Path, args, quantization: str) -> list:
    """One SFT spec per rank, on the GPU, otherwise Tunegraph's defaults."""
    from engine.spec import (
        BaseModelSpec,
        DatasetSpec,
        JobSpec,
        LoraSpec,
        ResourceSpec,
        TrainingSpec,
    )

    return [
        JobSpec(
            name=f"r{r}" if args.ranks.count(r) == 1 else f"r{r}#{i + 1}",
            base_model=BaseModelSpec(source=source),
            datasets=[DatasetSpec(path=str(data))],
            training=TrainingSpec(micro_batch_size=args.batch, max_seq_length=args.seq),
            lora=LoraSpec(
                r=r,
                alpha=2 * r,
                dropout=args.dropout,
                target_modules=list(args.targets),
                quantization=quantization,
            ),
            resources=ResourceSpec(device="cuda"),
        )
        for i, r in enumerate(args.ranks)
    ]


def checkpointing_of(spec, shape, four_bit: bool, seq: int, card_gib: float) -> bool:
    """Whether the run trains with gradient checkpointing on this card ("auto" resolved)."""
    from engine.plan.estimate import use_checkpointing

    on, _ = use_checkpointing(spec, "cuda", shape, four_bit, seq, card_gib)
    return on


def tensors_gib(shape, spec, four_bit: bool, checkpointing: bool, seq: int) -> float:
    """The estimate's tensor part: its memory parts before the allocator's slack and context."""
    from engine.plan.memory import memory_parts

    return sum(memory_parts(shape, spec, four_bit, checkpointing, seq).values()) / GIB


def group_model(config, specs: list, checkpointing: bool, mode):
    """The group's model as memory_trace builds a run's, with every variant's named
    adapter on the one base ("default" for the first, then v1, v2, ...), the adapters in fp32 as
    peft keeps them: built on the meta device, then every parameter and buffer made a fake CPU
    tensor under `mode` (None: real CPU tensors with random weights, for small configs)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.models.targets import linear_layer_names
    from engine.plan.memory_trace import fake_tensors
    from engine.training.options import lora_config

    config = copy.deepcopy(config)
    attention = specs[0].training.attention  # shared by the group (share_key)
    config._attn_implementation = (
        "sdpa" if attention in ("auto", "flash_attention_2") else attention
    )
    config.use_cache = False
    with torch.device("meta" if mode is not None else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        if checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        linear = linear_layer_names(model)  # the base's own names, as the group's SharedBase
        model = get_peft_model(model, lora_config(specs[0], linear=linear))
        for i, spec in enumerate(specs[1:], start=1):
            model.add_adapter(f"v{i}", lora_config(spec, linear=linear))
    if mode is None:
        for name, param in model.named_parameters():
            param.requires_grad_(False)  # set_adapter turns the active adapter's gradients on
            if "lora_" in name:
                param.data = param.data.float()
        return model
    adapters = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    # set_adapter turns the active adapter's gradients on
    return fake_tensors(model, mode, fp32=lambda p: id(p) in adapters, trainable=lambda p: False)


def trace_group(
    config, specs: list, seq: int, checkpointing: bool, rounds: int = 2, fake: bool = True
) -> int:
    """The traced tensor peak (bytes) of one process training `specs`' adapters on one 16-bit
    base in turns, as engine.training.group does: a variant's turn makes its adapter the active
    one (its parameters require gradients, the others' not), runs its forward and backward pass
    and its own optimizer's step, then clears its gradients; each optimizer is created in its
    variant's first turn, over the parameters that then require gradients. fake=False runs the
    same steps on real CPU tensors (small configs only)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from engine.plan.memory_trace import LiveBytes

    mode = FakeTensorMode() if fake else None
    model = group_model(config, specs, checkpointing, mode)
    names = ["default"] + [f"v{i}" for i in range(1, len(specs))]
    model.train()
    counter = LiveBytes()
    for tensor in list(model.parameters()) + list(model.buffers()):
        counter.track(tensor)
    vocab = model.get_input_embeddings().num_embeddings
    optimizers: dict[str, torch.optim.Optimizer] = {}
    with mode if mode is not None else contextlib.nullcontext():
        torch.manual_seed(0)
        batches = {}  # padding-free: one row of micro-batch x seq tokens, as the worker's
        for name, spec in zip(names, specs, strict=True):
            b = spec.training.micro_batch_size
            batches[name] = (
                torch.randint(0, vocab, (1, b * seq)),
                torch.arange(seq).repeat(b)[None],
            )
        with counter:
            for _ in range(rounds):
                for name, spec in zip(names, specs, strict=True):
                    model.set_adapter(name)  # its adapter trains, the others are frozen
                    if name not in optimizers:
                        trainable = [p for p in model.parameters() if p.requires_grad]
                        optimizers[name] = torch.optim.AdamW(
                            trainable, lr=spec.training.learning_rate, fused=True
                        )
                    ids, positions = batches[name]
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        loss = model(input_ids=ids, labels=ids, position_ids=positions).loss
                    loss.backward()
                    optimizers[name].step()
                    optimizers[name].zero_grad(set_to_none=True)
                    del loss
    return counter.peak


def fit_at_once(needs: list[float], room: float) -> int:
    """How many of the runs fit on the card together as separate processes (smallest first)."""
    count, used = 0, 0.0
    for need in sorted(needs):
        if used + need > room:
            break
        count, used = count + 1, used + need
    return count


def group_at_once(ests: list[dict], room: float) -> int:
    """How many of the runs (smallest first) one group can hold on the card."""
    from engine.plan.sharing import group_need_gib, member_gib

    members = sorted(ests, key=member_gib)
    count = 0
    while count < len(members) and group_need_gib(members[: count + 1]) <= room:
        count += 1
    return count


def estimates(specs: list, card: float) -> list[dict]:
    """engine.plan.estimate's estimate of each spec on a GPU of `card` GiB, as dicts."""
    from engine.plan.estimate import estimate

    name = f"a {card:g} GiB GPU"  # the name only keys timings, which are not used here
    return [estimate(s, "cuda", gpu_total_gib=card, gpu_name=name).to_dict() for s in specs]


def one_mode(label, quantization, mode, source, data, config, shape, args) -> dict:
    """Estimates, group need and verdict (and, for 16-bit, the traces) of one base precision."""
    from engine.plan import sharing
    from engine.plan.estimate import HEADROOM
    from engine.plan.memory_trace import simulate_peak

    four_bit = mode == "qlora"
    specs = variant_specs(source, data, args, quantization)
    card = args.card_gib
    ests = estimates(specs, card)
    if any(e["mode"] != mode for e in ests):
        raise SystemExit(f"{label}: the estimate chose another mode: {ests[0]['mode_reason']}")
    key = "4bit" if four_bit else "bf16"
    ckpt = [checkpointing_of(s, shape, four_bit, args.seq, card) for s in specs]
    variants = []
    for spec, est, on in zip(specs, ests, ckpt, strict=True):
        v = {
            "name": spec.name,
            "r": spec.lora.r,
            "trainable_params": est["trainable_params"],
            "checkpointing": on,
            "vram_gib": est["vram_gib"][key],
            "parts_gib": est["vram_parts_gib"],
            "member_gib": round(sharing.member_gib(est), 2),
            "tensors_gib": round(tensors_gib(shape, spec, four_bit, on, args.seq), 3),
        }
        if not four_bit and not args.no_trace:
            started = time.perf_counter()
            v["traced_gib"] = round(simulate_peak(config, spec, args.seq, on).peak_bytes / GIB, 3)
            v["trace_s"] = round(time.perf_counter() - started, 1)
            print(f"  traced {label} {spec.name} alone in {v['trace_s']} s", file=sys.stderr)
        variants.append(v)
    room = card * HEADROOM
    need, apart = sharing.group_need_gib(ests), sharing.separate_gib(ests)
    slack = max(e["vram_parts_gib"]["context_and_slack"] for e in ests)
    result = {
        "label": label,
        "mode": mode,
        "variants": variants,
        "group_need_gib": need,
        "group_tensors_gib": round(need - slack, 3),
        "group_parts_gib": {
            "base_once": round(sharing.base_gib(ests), 2),
            "adapters": round(sum(v["member_gib"] for v in variants), 2),
        },
        "separate_gib": apart,
        "saving_gib": sharing.saving_gib(ests),
        "room_gib": round(room, 2),
        "group_fits": need <= room,
        "alone_fit": sum(v["vram_gib"] <= room for v in variants),
        "separate_at_once": fit_at_once([v["vram_gib"] for v in variants], room),
        "group_at_once": group_at_once(ests, room),
    }
    if not four_bit and not args.no_trace and len(set(ckpt)) == 1:
        started = time.perf_counter()
        result["group_traced_gib"] = round(trace_group(config, specs, args.seq, ckpt[0]) / GIB, 3)
        result["group_trace_s"] = round(time.perf_counter() - started, 1)
        print(f"  traced the {label} group in {result['group_trace_s']} s", file=sys.stderr)
    return result


def auto_case(source, data, shape, args) -> dict:
    """Quantization "auto" (the LoRA config node's default): each run's mode is chosen alone
    (4-bit only when its 16-bit estimate does not fit), then the runs form the groups
    engine.plan.sharing.groups makes of them (same share key and mode)."""
    from engine.plan import sharing
    from engine.plan.estimate import HEADROOM

    specs = variant_specs(source, data, args, "auto")
    ests = estimates(specs, args.card_gib)
    room = args.card_gib * HEADROOM
    variants = []
    for spec, est in zip(specs, ests, strict=True):
        four_bit = est["mode"] == "qlora"
        need = est["vram_gib"]["4bit" if four_bit else "bf16"]
        on = checkpointing_of(spec, shape, four_bit, args.seq, args.card_gib)
        variants.append(
            {
                "name": spec.name,
                "mode": est["mode"],
                "checkpointing": on,
                "vram_gib": need,
                "fits": need <= room,
            }
        )
    by_name = {s.name: e for s, e in zip(specs, ests, strict=True)}
    formed = sharing.groups([(s.name, s, e) for s, e in zip(specs, ests, strict=True)])
    groups = []
    for names in formed:
        need = sharing.group_need_gib([by_name[n] for n in names])
        mode = by_name[names[0]]["mode"]
        groups.append({"runs": names, "mode": mode, "need_gib": need, "fits": need <= room})
    return {"variants": variants, "groups": groups, "room_gib": round(room, 2)}


def print_mode(r: dict) -> None:
    """One base precision's table: each variant's estimate by parts (and its trace), then the
    group against separate runs."""
    from engine.plan.memory import ALLOCATOR_SLACK, CUDA_CONTEXT_GIB

    traced = "traced_gib" in r["variants"][0]
    print(f"\n{r['label']} base ({r['mode']}), GiB")
    headers = ["variant", "trainable", "ckpt", "weights", "LoRA", "activ.", "logits", "ctx+slack"]
    headers += ["alone", f"fits {r['room_gib']:g}?", "adds to group"]
    if traced:
        headers += ["tensors est.", "traced", "error"]
    rows = []
    for v in r["variants"]:
        p = v["parts_gib"]
        row = [v["name"], f"{v['trainable_params'] / 1e6:.1f}M"]
        row += ["on" if v["checkpointing"] else "off"]
        row += [f"{p[k]:.2f}" for k in ("weights", "lora", "activations", "logits")]
        row += [f"{p['context_and_slack']:.2f}", f"{v['vram_gib']:.2f}"]
        row += ["yes" if v["vram_gib"] <= r["room_gib"] else "no", f"{v['member_gib']:.2f}"]
        if traced:
            error = (v["tensors_gib"] - v["traced_gib"]) / v["traced_gib"]
            row += [f"{v['tensors_gib']:.2f}", f"{v['traced_gib']:.2f}", f"{error:+.1%}"]
        rows.append(row)
    print(common.table(headers, rows))
    parts = r["group_parts_gib"]
    print(
        f"{len(r['variants'])} separate runs: {r['separate_gib']:.2f} GiB; one group: "
        f"{r['group_need_gib']:.2f} GiB (held once {parts['base_once']:.2f} + adapters "
        f"{parts['adapters']:.2f}), saves {r['saving_gib']:.2f} GiB"
    )
    if "group_traced_gib" in r:
        t, est = r["group_traced_gib"], r["group_tensors_gib"]
        print(
            f"group traced: {t:.2f} GiB of tensors vs the formula's {est:.2f} "
            f"({(est - t) / t:+.1%}); with one process's context and slack "
            f"({t:.2f} x {ALLOCATOR_SLACK} + {CUDA_CONTEXT_GIB}): "
            f"{t * ALLOCATOR_SLACK + CUDA_CONTEXT_GIB:.2f} GiB"
        )


def print_auto(a: dict) -> None:
    """What quantization "auto" makes of the same variants: modes, then the groups formed."""
    print('\nquantization "auto" (the default): each run\'s mode chosen alone, GiB')
    rows = [
        [
            v["name"],
            v["mode"],
            "on" if v["checkpointing"] else "off",
            f"{v['vram_gib']:.2f}",
            "yes" if v["fits"] else "no",
        ]
        for v in a["variants"]
    ]
    print(common.table(["variant", "mode", "ckpt", "alone", f"fits {a['room_gib']:g}?"], rows))
    if not a["groups"]:
        print("groups formed (engine.plan.sharing.groups): none")
    for g in a["groups"]:
        print(
            f"group formed (engine.plan.sharing.groups): {', '.join(g['runs'])} in {g['mode']}: "
            f"{g['need_gib']:.2f} GiB, {'fits' if g['fits'] else 'does not fit'} "
            f"{a['room_gib']:g}"
        )


def print_verdict(results: list[dict], card: float) -> None:
    n = len(results[0]["variants"])
    print(f"\nVerdict on a {card:g} GiB card (90% usable: {results[0]['room_gib']:g} GiB)")
    rows = [
        [
            r["label"],
            f"{r['separate_gib']:.2f}",
            f"{r['group_need_gib']:.2f}",
            f"{r['group_need_gib'] / r['separate_gib']:.2f}x",
            "yes" if r["group_fits"] else "no",
            f"{r['alone_fit']} of {n}",
            f"{r['separate_at_once']} of {n}",
            f"{r['group_at_once']} of {n}",
        ]
        for r in results
    ]
    headers = [
        "base",
        f"{n} separate GiB",
        "group GiB",
        "group/separate",
        "group fits?",
        "fit alone",
        "at once, separate",
        "at once, one group",
    ]
    print(common.table(headers, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8b", choices=sorted(common.SHAPES))
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--seq", type=int, default=2048, help="max sequence length")
    parser.add_argument("--batch", type=int, default=1, help="micro-batch of every variant")
    parser.add_argument("--targets", nargs="+", default=["all-linear"])
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--card-gib", type=float, default=24.0)
    parser.add_argument("--no-trace", action="store_true", help="the estimate's formula only")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tg-bench-group-memory-"))
    # no speed check and no calibration from the user's own runs: only memory matters here
    os.environ["TUNEGRAPH_HOME"] = str(work / "home")
    os.environ["TUNEGRAPH_SPEED_CHECK"] = "0"
    common.quiet()
    from engine.plan.shape import model_shape

    started = time.perf_counter()
    try:
        source = str(base_folder(args.shape, work / f"base-{args.shape}"))
        data = common.write_jsonl(work / "chats.jsonl", common.varied_chats(200))
        config = common.shape_config(args.shape)
        shape = model_shape(config)
        results = [
            one_mode(label, q, mode, source, data, config, shape, args) for label, q, mode in MODES
        ]
        auto = auto_case(source, data, shape, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{len(args.ranks)} SFT variants of one base, shape {args.shape} "
        f"({shape.params / 1e9:.2f}B parameters; 8b is Llama-3.1-8B's): LoRA r {', '.join(map(str, args.ranks))} "
        f"(alpha 2r) on {', '.join(args.targets)}, dropout {args.dropout:g}, micro-batch "
        f"{args.batch}, {args.seq} tokens, padding-free, sdpa, gradient checkpointing auto; "
        f"a {args.card_gib:g} GiB card"
    )
    for r in results:
        print_mode(r)
    print_auto(auto)
    print_verdict(results, args.card_gib)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    common.write_result(
        args.out,
        {
            "benchmark": "group_memory",
            "env": common.environment("cpu"),
            "args": vars(args),
            "results": results,
            "auto": auto,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
