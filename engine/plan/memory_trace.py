"""Peak tensor memory of a training step, traced on fake tensors: no GPU and no weights.

The worker's model (built from a transformers config, 16-bit base, LoRA from the spec, the
spec's attention kernel and checkpointing; or, for full fine-tuning, no adapter and every weight
trained in fp32, as the worker loads it) runs two full steps (forward under bf16 autocast,
backward, fused AdamW as the Trainer's default optimizer) inside torch's FakeTensorMode, so every
op computes shapes and dtypes only; a dispatch mode counts the bytes of each live storage and
keeps the highest sum. That is what `torch.cuda.max_memory_allocated` would report for the same
step, less what the GPU's kernels add themselves (cuBLAS and attention workspaces) and the
caching allocator's rounding: the allocated part of engine.plan.memory.memory_parts, which
tests/test_estimate_memory.py, tests/test_full_finetune.py and bench/bench_vram_sim.py check
against it. 4-bit bases are not simulated (bitsandbytes' kernels have no fake-tensor form), nor
is GRPO's sampling. Imports torch: never from the UI process.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from engine.models.targets import linear_layer_names, peft_target_modules, resolve_targets
from engine.spec import JobSpec


@dataclass
class SimulatedPeak:
    """The bytes a simulated training run held at its peak, and those of the weights alone."""

    peak_bytes: int  # the most bytes alive at once over the steps, weights included
    weights_bytes: int  # parameters and buffers before the first step


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an op returns until the storage is freed."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, weakref.finalize] = {}
        self.now = 0
        self.peak = 0

    def track(self, tensor) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        size = storage.nbytes()
        self.now += size
        self.peak = max(self.peak, self.now)
        self._live[key] = weakref.finalize(storage, self._freed, key, size)

    def _freed(self, key: int, size: int) -> None:
        self.now -= size
        self._live.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            self.track(item)
        return out


def _model(config, spec: JobSpec, checkpointing: bool, mode: FakeTensorMode | None):
    """The run's model (peft's for LoRA; fp32 weights for full fine-tuning), with every
    parameter and buffer a fake CPU tensor under `mode` (None: a real model with random weights,
    for checking the simulation on small configs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    attention = spec.training.attention
    # flash-attn has no CPU kernel: traced as sdpa, which keeps more than flash-attn would (key
    # and value repeated to every head, a mask per layer), so only an upper bound for it
    config._attn_implementation = (
        "sdpa" if attention in ("auto", "flash_attention_2") else attention
    )
    config.use_cache = False
    with torch.device("meta" if mode is not None else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if checkpointing:  # as the Trainer does for activation_checkpointing=True
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # transformers before the rename
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if not spec.lora.full:  # full fine-tuning: no adapter, every weight trains (in fp32)
        targets, linear = spec.lora.target_modules, linear_layer_names(model)
        resolve_targets(targets, linear, type(model).__name__)  # a missing module: as the worker
        lora = LoraConfig(
            r=spec.lora.r,
            lora_alpha=spec.lora.alpha,
            lora_dropout=spec.lora.dropout,
            target_modules=peft_target_modules(targets, linear),  # as the worker's lora_config
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    elif mode is None:  # real tensors: fp32 master weights, as the worker loads them
        model = model.float()
    if mode is None:
        return model
    return fake_tensors(
        model, mode, fp32=lambda p: p.requires_grad, trainable=lambda p: p.requires_grad
    )


def fake_tensors(
    model: Any,
    mode: FakeTensorMode,
    fp32: Callable[[Any], bool],
    trainable: Callable[[Any], bool],
) -> Any:
    """Make every parameter and buffer of `model` (built on the meta device) a fake CPU tensor
    under `mode`: a parameter in fp32 where `fp32(param)`, requiring gradients where
    `trainable(param)`; tied weights stay one tensor. Returns the model."""
    device = torch.device("cpu")
    converter = mode.fake_tensor_converter
    fakes: dict[int, torch.Tensor] = {}

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in fakes:
            meta = tensor.detach().float() if fp32(tensor) else tensor.detach()
            made = converter.from_meta_and_device(mode, meta, device)
            fakes[id(tensor)] = torch.nn.Parameter(made, requires_grad=trainable(tensor))
        return fakes[id(tensor)]

    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = fake(param)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = converter.from_meta_and_device(mode, buffer, device)
    return model


def simulate_peak(
    config: Any,
    spec: JobSpec,
    seq_len: int,
    checkpointing: bool,
    steps: int = 2,
    fake: bool = True,
) -> SimulatedPeak:
    """Trace `steps` training steps of `spec`'s run (LoRA or full) on a model of `config`,
    micro-batches of spec.training.micro_batch_size sequences of `seq_len` tokens (one flattened
    row with position ids when packing is on, as the worker's padding-free collator makes), and
    return the peak. fake=False runs the same steps on real CPU tensors (small configs only)."""
    if spec.lora.quantization == "4bit":
        raise ValueError("4-bit bases cannot be simulated: bitsandbytes has no fake-tensor kernels")
    mode = FakeTensorMode() if fake else None
    model = _model(config, spec, checkpointing, mode)
    model.train()
    counter = LiveBytes()
    for tensor in list(model.parameters()) + list(model.buffers()):
        counter.track(tensor)
    weights = counter.now
    b = spec.training.micro_batch_size
    vocab = model.get_input_embeddings().num_embeddings
    with mode if mode is not None else contextlib.nullcontext():
        torch.manual_seed(0)
        trainable = [p for p in model.parameters() if p.requires_grad]
        # fused, as the Trainer's default optimizer (adamw_torch_fused): no temporaries
        optimizer = torch.optim.AdamW(trainable, lr=spec.training.learning_rate, fused=True)
        if spec.training.packing:
            ids = torch.randint(0, vocab, (1, b * seq_len))
            extra = {"position_ids": torch.arange(seq_len).repeat(b)[None]}
        else:
            ids = torch.randint(0, vocab, (b, seq_len))
            extra = {"attention_mask": torch.ones_like(ids)}
        with counter:
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids, **extra).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                del loss
    return SimulatedPeak(peak_bytes=counter.peak, weights_bytes=weights)
