"""LoRA target modules follow the architecture (engine.models.targets): the default `auto` is the
attention's query and value projections under each family's names, resolved from the model's
layers the same way in the estimate (config on the meta device), the memory trace and the worker;
a module the model lacks is refused with one sentence at submission, before any worker starts.

Tiny random models are built from the real config classes of each family; the Phi-3 end-to-end
run uses Phi-3's real tokenizer and template (tests/real_tokenizers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import get_peft_model
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from engine.control import Control
from engine.errors import ModelError
from engine.events import EventLog, read_events
from engine.models.sources import check_target_modules
from engine.models.targets import (
    architecture_name,
    linear_layer_names,
    peft_target_modules,
    resolve_targets,
)
from engine.plan.estimate import estimate, trainable_params
from engine.plan.shape import model_shape
from engine.rundir import ADAPTER, ADAPTER_WEIGHTS, WORKER_LOG
from engine.spec import BaseModelSpec, DatasetSpec, ExportSpec, JobSpec, LoraSpec, TrainingSpec
from engine.supervisor import client
from engine.training.options import lora_config
from tests import real_tokenizers as real
from tests.helpers import cli, make_graph, write_chats

SIZES = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
# family -> (a tiny config of its real class, the layers auto adapts, all its linear layers)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
FAMILIES = {
    "llama": (lambda: LlamaConfig(**SIZES), ["q_proj", "v_proj"], ATTENTION + MLP),
    "mistral": (lambda: MistralConfig(**SIZES), ["q_proj", "v_proj"], ATTENTION + MLP),
    "qwen2": (lambda: Qwen2Config(**SIZES), ["q_proj", "v_proj"], ATTENTION + MLP),
    "qwen3": (lambda: Qwen3Config(**SIZES, head_dim=8), ["q_proj", "v_proj"], ATTENTION + MLP),
    "gemma3": (
        lambda: Gemma3TextConfig(**SIZES, head_dim=8, sliding_window=16),
        ["q_proj", "v_proj"],
        ATTENTION + MLP,
    ),
    "phi3": (
        lambda: Phi3Config(**SIZES, pad_token_id=0, bos_token_id=1, eos_token_id=2),
        ["qkv_proj"],
        ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"],
    ),
}
PHI3_REFUSAL = (
    "LoRA config: target modules q_proj, v_proj do not exist in Phi3ForCausalLM; its linear "
    "layers are o_proj, qkv_proj, gate_up_proj, down_proj (or use all-linear)"
)


def job(lora: LoraSpec, base: str = "unused", data: str = "unused.jsonl") -> JobSpec:
    return JobSpec(
        name="targets",
        base_model=BaseModelSpec(source=base),
        datasets=[DatasetSpec(path=data)],
        training=TrainingSpec(
            max_steps=2,
            micro_batch_size=4,
            max_seq_length=128,
            eval_split=0.0,
            save_steps=0,
            warmup_ratio=0.0,
            learning_rate=1e-3,
        ),
        lora=lora,
        export=ExportSpec(adapter_zip=False, gguf=False),
    )


def adapted(peft_model) -> set[str]:
    """Short names of the layers peft put a LoRA adapter on."""
    return {
        name.split(".")[-4]
        for name, _ in peft_model.named_parameters()
        if name.endswith("lora_A.default.weight")
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_auto_is_the_query_and_value_projections_of_each_family(family):
    make_config, auto, layers = FAMILIES[family]
    config = make_config()
    shape = model_shape(config)  # what the estimate sees: the config on the meta device
    model = AutoModelForCausalLM.from_config(config)  # what the worker sees
    assert list(shape.lora_params) == linear_layer_names(model) == layers
    assert architecture_name(config) == type(model).__name__
    assert resolve_targets(["auto"], layers, "x") == auto
    assert check_target_modules(model, ["auto"]) == auto
    assert LoraSpec().target_modules == ["auto"]  # the default


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    "targets", [["auto"], ["all-linear"], ["auto", "o_proj"], ["down_proj"]], ids=str
)
def test_the_estimate_counts_the_parameters_peft_trains(family, targets):
    """Resolved against the meta model's layers, the estimate's trainable parameters are the ones
    peft trains: with the worker's lora_config given the model (exact names) and without it
    (auto spelled out, peft adapting the names the model has): the same layers either way."""
    make_config, _, layers = FAMILIES[family]
    config = make_config()
    spec = job(LoraSpec(r=4, alpha=8, target_modules=targets))
    expected = trainable_params(model_shape(config), spec)
    names = set(resolve_targets(targets, layers, "x"))
    for with_model in (True, False):
        model = AutoModelForCausalLM.from_config(config)
        peft_model = get_peft_model(model, lora_config(spec, model if with_model else None))
        assert peft_model.get_nb_trainable_parameters()[0] == expected > 0
        assert adapted(peft_model) == names
    exact = "all-linear" if "all-linear" in targets else resolve_targets(targets, layers, "x")
    assert peft_target_modules(targets, layers) == exact


def test_old_specs_keep_working_on_llama_like_models_and_name_phi3s_layers():
    _, _, llama_layers = FAMILIES["llama"]
    assert resolve_targets(["q_proj", "v_proj"], llama_layers, "LlamaForCausalLM") == [
        "q_proj",
        "v_proj",
    ]
    _, _, phi3_layers = FAMILIES["phi3"]
    with pytest.raises(ModelError) as err:
        resolve_targets(["q_proj", "v_proj"], phi3_layers, "Phi3ForCausalLM")
    assert err.value.message == PHI3_REFUSAL
    with pytest.raises(ModelError) as err:
        resolve_targets(["auto", "k_proj"], phi3_layers, "Phi3ForCausalLM")
    assert err.value.message.startswith("LoRA config: target module k_proj does not exist in ")
    with pytest.raises(ModelError) as err:  # auto finds nothing: say what it looks for
        resolve_targets(["auto"], ["fc_in", "fc_out"], "OddForCausalLM")
    assert err.value.message == (
        "LoRA config: target modules auto finds no attention query or value projection "
        "(q_proj, v_proj, qkv_proj, query_key_value, Wqkv) in OddForCausalLM; its linear layers "
        "are fc_in, fc_out (name the ones to adapt, or use all-linear)"
    )
    assert "all-linear" in err.value.hint and "LoRA config node" in err.value.hint


def test_the_memory_trace_adapts_the_resolved_layers():
    from engine.plan.memory_trace import simulate_peak

    config = FAMILIES["phi3"][0]()

    def peak(targets: list[str]) -> int:
        spec = job(LoraSpec(r=8, alpha=16, target_modules=targets))
        return simulate_peak(config, spec, 32, checkpointing=False, steps=1).peak_bytes

    assert peak(["auto"]) == peak(["qkv_proj"]) < peak(["all-linear"])
    with pytest.raises(ModelError, match="q_proj, v_proj do not exist in Phi3ForCausalLM"):
        peak(["q_proj", "v_proj"])


# -- a tiny Phi-3 with Phi-3's real tokenizer and template ---------------------------------------
@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory) -> Path:
    import torch

    files = real.fetched()
    tok = real.tokenizer(files, "phi3")
    ids = tok.convert_tokens_to_ids(["<s>", "<|endoftext|>"])
    config = Phi3Config(
        **{**SIZES, "vocab_size": len(tok), "hidden_size": 64, "num_key_value_heads": 4},
        original_max_position_embeddings=256,
        bos_token_id=ids[0],
        eos_token_id=ids[1],
        pad_token_id=ids[1],
        tie_word_embeddings=False,
    )
    out = tmp_path_factory.mktemp("tiny-phi3")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_phi3_model_trains_with_the_default_targets(phi3_dir, tmp_path):
    from engine.training.trainer import run_job

    data = write_chats(tmp_path / "chats.jsonl", 24)
    spec = job(LoraSpec(r=4, alpha=8), base=str(phi3_dir), data=str(data))
    spec.resources.device = "cpu"
    spec.validate()
    predicted = estimate(spec, device="cpu")

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with EventLog(run_dir / "events.jsonl") as log:
        run_job(spec, run_dir, log, Control(run_dir))  # the worker's body, in this process

    events = list(read_events(run_dir / "events.jsonl"))
    assert not [e for e in events if e.kind == "error"]
    assert max(e["step"] for e in events if e.kind == "metric") == spec.training.max_steps
    lora_line = next(e["message"] for e in events if e["message"].startswith("LoRA: "))
    assert lora_line.startswith(f"LoRA: {predicted.trainable_params:,} trainable of ")
    with safe_open(str(run_dir / ADAPTER / ADAPTER_WEIGHTS), "pt") as weights:
        keys = list(weights.keys())
    assert keys and all(".self_attn.qkv_proj.lora_" in k for k in keys)
    # the run trained with Phi-3's own ending (tests/test_eos_swap.py): EOS is <|end|>, and the
    # template keeps writing <|endoftext|> where Phi-3's format has it
    saved = json.loads((run_dir / ADAPTER / "tokenizer_config.json").read_text())
    assert saved["eos_token"] == "<|end|>"
    template = (run_dir / ADAPTER / "chat_template.jinja").read_text()
    assert template.startswith("{%- set eos_token = '<|endoftext|>' -%}\n")


def assert_refused(out, *words: str) -> None:
    """Exit 1 with one `tunegraph: …` sentence on stderr holding `words`, no traceback."""
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunegraph: "), out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_a_missing_target_is_refused_by_estimate_and_run_before_anything_starts(
    phi3_dir, tmp_path, tg_home
):
    """An old graph (q_proj, v_proj) on a Phi-3 base: `estimate` and `run` say so in one sentence
    and exit 1; `run` submits nothing, so no supervisor and no worker ever start."""
    graph = make_graph(tmp_path, base=str(phi3_dir), device="cpu")
    assert_refused(cli("estimate", str(graph)), PHI3_REFUSAL, "LoRA config node")
    assert_refused(cli("run", str(graph), "--detach", "--yes"), PHI3_REFUSAL)
    runs = tg_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    assert not (tg_home / "supervisor.lock").exists()


def test_a_submission_without_an_estimate_is_refused_by_the_supervisors_estimate(
    sup, phi3_dir, data
):
    """The app's Start path when its own estimate failed: the supervisor's estimate helper
    refuses the run with the sentence, and its worker never starts."""
    spec = job(LoraSpec(target_modules=["q_proj", "v_proj"]), base=str(phi3_dir), data=str(data))
    spec.resources.device = "cpu"
    [entry] = client.submit(sup, [spec])
    assert entry["state"] == "refused"
    assert PHI3_REFUSAL in entry["error"]["message"]
    run = sup.run_json(entry["id"])
    assert run["state"] == "refused" and run["estimate"] is None
    assert not (Path(run["run_dir"]) / WORKER_LOG).exists()  # never started
