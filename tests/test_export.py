"""Export, for real on the CPU: adapter ZIP, merged folder, GGUF bundle, parity, Modelfiles, and the
ways an export can fail. One run is exported once per session (`exported_run`) and shared by the
tests here and in test_chat.py."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import zipfile
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.data.templates import strip_generation_markers
from engine.errors import ExportError, ModelError
from engine.events import EventLog, read_events, run_state
from engine.export import gguf_tools, ollama
from engine.export.pipeline import export_after_training, export_run
from engine.spec import BaseModelSpec, DatasetSpec, ExportSpec, JobSpec

RUN_ID = "20261122-120000-e0e0e0"
SAMPLE_PROMPTS = (
    "Hello, can you help me with my bill?",
    "My router keeps restarting.",
    "What is the price of the new plan?",
)
ADAPTER_MEMBERS = {
    "adapter_model.safetensors",
    "adapter_config.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "README.md",
}


# -- a run with a non-trivial adapter, without a training run ---------------------------------------
def make_run(
    run_dir: Path, base_dir: Path, name: str = "support bot", samples: bool = True
) -> Path:
    """A run folder as training leaves it: spec.json, adapter/ (LoRA B weights perturbed so the
    adapter changes the model), sample events and a `completed` status."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir.mkdir(parents=True)
    spec = JobSpec(
        name=name,
        base_model=BaseModelSpec(source=str(base_dir)),
        datasets=[DatasetSpec(path=str(run_dir / "data.jsonl"))],
    )
    spec.save(run_dir / "spec.json")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                param.normal_(0.0, 0.05)
    adapter = run_dir / "adapter"
    model.save_pretrained(adapter)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.save_pretrained(adapter)
    template = (base_dir / "chat_template.jinja").read_text(encoding="utf-8")
    (adapter / "chat_template.jinja").write_text(template, encoding="utf-8")
    (adapter / "README.md").write_text(f"# {name}\n\nA test adapter.\n", encoding="utf-8")
    with EventLog(run_dir / "events.jsonl") as log:
        log.emit("status", state="training")
        if samples:
            for prompt in SAMPLE_PROMPTS:
                log.emit("sample", prompt=prompt, response="Thank you, I can help with that.")
        log.emit("status", state="completed", warnings=[])
    return run_dir


def artifact_path(events: list, kind: str) -> Path:
    """The path of the last `artifact` event of this kind in a run's events."""
    found = [
        Path(e["path"]) for e in events if e.kind == "artifact" and e.get("artifact_kind") == kind
    ]
    assert found, f"no {kind} artifact"
    return found[-1]


@dataclass
class Exported:
    home: Path
    run_dir: Path
    warnings: list[str]
    seconds: float
    events: list = field(default_factory=list)

    def artifact(self, kind: str) -> Path:
        return artifact_path(self.events, kind)

    def parity(self) -> dict:
        return next(e["parity"] for e in self.events if e.kind == "log" and "parity" in e.data)


_EXPORTED: dict[str, Exported] = {}


def build_exported_run(root: Path, base_dir: Path) -> Exported:
    """Export a fresh run (adapter ZIP + merged + Q4_K_M bundle) once per session."""
    if "run" not in _EXPORTED:
        home = root / "export-home"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TUNEGRAPH_HOME", str(home))
            run_dir = make_run(home / "runs" / RUN_ID, base_dir)
            started = time.time()
            with EventLog(run_dir / "events.jsonl") as log:
                warnings = export_run(
                    run_dir, ExportSpec(gguf=True, quant="Q4_K_M", merged=True), log
                )
            seconds = time.time() - started
        events = list(read_events(run_dir / "events.jsonl"))
        _EXPORTED["run"] = Exported(home, run_dir, warnings, seconds, events)
    return _EXPORTED["run"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir) -> Exported:
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir)


# -- the adapter ZIP --------------------------------------------------------------------------------
def test_adapter_zip_holds_the_adapter_and_loads_with_peft(exported, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = exported.artifact("adapter_zip")
    with zipfile.ZipFile(path) as zf:
        assert set(zf.namelist()) == ADAPTER_MEMBERS
        zf.extractall(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 3, 504, 1507, 1502, 577]])
    with torch.no_grad():
        plain = base(ids).logits
        model = PeftModel.from_pretrained(base, tmp_path / "adapter")
        adapted = model(ids).logits
    assert not torch.allclose(plain, adapted, atol=1e-4), "the adapter changes nothing"
    template = (tmp_path / "adapter" / "chat_template.jinja").read_text()
    assert template == (tiny_model_dir / "chat_template.jinja").read_text()


def test_artifacts_are_in_the_library_with_manifests(exported):
    from engine.paths import sha256_file

    kinds = {e.get("artifact_kind") for e in exported.events if e.kind == "artifact"}
    assert kinds == {"adapter_zip", "merged_dir", "gguf", "gguf_bundle"}
    for event in (e for e in exported.events if e.kind == "artifact"):
        path = Path(event["path"])
        assert path.parent.parent == exported.home / "library"
        manifest = json.loads((path.parent / "manifest.json").read_text())
        assert manifest["id"] == event["id"] == path.parent.name
        assert manifest["run_id"] == RUN_ID
        assert manifest["kind"] == event["artifact_kind"]
        assert manifest["bytes"] == event["bytes"] > 0
        assert manifest["base_model"].endswith(Path(manifest["base_model"]).name)
        if path.is_file():
            assert sha256_file(path) == manifest["sha256"] == event["sha256"]
    assert exported.warnings == []
    assert not list((exported.home / "library").glob(".export-*")), "work folder left behind"


def test_phases_are_logged(exported):
    messages = [e["message"] for e in exported.events if e.kind == "log"]
    for phase in ("adapter ZIP", "merging", "converting", "quantizing", "parity", "Ollama"):
        assert any(phase in m for m in messages), phase


# -- the GGUF -------------------------------------------------------------------------------------
def test_gguf_metadata_holds_template_and_stop_ids(exported, tiny_model_dir):
    info = gguf_tools.read_gguf(exported.artifact("gguf"))
    assert info.architecture == "llama"
    assert info.tensor_types.get("Q4_K", 0) > 0
    template = strip_generation_markers((tiny_model_dir / "chat_template.jinja").read_text())
    assert info.chat_template == template
    assert "{%- generation" not in info.chat_template and "endgeneration" not in info.chat_template
    assert info.token_text(info.eos_id) == "<|im_end|>"
    assert info.token_id("<|im_start|>") is not None, "<|im_start|> must be a special token"


def test_gguf_loads_in_llama_cpp_and_generates(exported):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(exported.artifact("gguf")), n_ctx=256, verbose=False)
    try:
        out = llm.create_completion(
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
            max_tokens=8,
            temperature=0.0,
        )
        assert out["usage"]["completion_tokens"] > 0
    finally:
        llm.close()


def test_parity_f16_agrees_and_quant_is_reported(exported):
    figures = exported.parity()
    assert figures["prompts"] == 3
    assert figures["prompt_tokens_match"], figures["prompt_mismatches"]
    assert figures["stop_ids_match"]
    assert figures["eos_id_hf"] == figures["eos_id_gguf"]
    assert figures["f16_agreement"] >= 0.99
    assert figures["quant"] == "Q4_K_M" and figures["quant_agreement"] is not None
    assert figures["positions"] > 10


def test_bundle_zip_has_modelfile_scripts_and_readme(exported, tmp_path):
    bundle = exported.artifact("gguf_bundle")
    gguf_name = exported.artifact("gguf").name
    with zipfile.ZipFile(bundle) as zf:
        assert set(zf.namelist()) == {
            gguf_name,
            "Modelfile",
            "install.sh",
            "install.ps1",
            "README.md",
        }
        assert zf.getinfo(gguf_name).compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("install.sh").external_attr >> 16 & 0o111
        modelfile = zf.read("Modelfile").decode()
        sh, ps1 = zf.read("install.sh").decode(), zf.read("install.ps1").decode()
        readme = zf.read("README.md").decode()
    assert f"FROM ./{gguf_name}" in modelfile
    assert 'TEMPLATE """' + ollama.CHATML.go_template + '"""' in modelfile
    for stop in ("<|im_start|>", "<|im_end|>"):
        assert f'PARAMETER stop "{stop}"' in modelfile
    assert "ollama create" in sh and "-f Modelfile" in sh
    assert "ollama create" in ps1 and "$PSScriptRoot" in ps1
    assert "Parity" in readme and "ollama run support-bot" in readme


def test_merged_folder_matches_base_plus_adapter(exported, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged_dir = exported.artifact("merged_dir")
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        assert (merged_dir / name).is_file(), name
    config = json.loads((merged_dir / "tokenizer_config.json").read_text())
    assert config["added_tokens_decoder"]["3"]["content"] == "<|im_start|>"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert json.loads((merged_dir / "config.json").read_text())["dtype"] == "bfloat16"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 3, 504, 1507, 1502, 577, 1305, 4]])
    with torch.no_grad():
        reference = PeftModel.from_pretrained(base, exported.run_dir / "adapter")(ids).logits
        got = merged(ids).logits
    assert torch.allclose(got, reference, atol=0.05), (got - reference).abs().max()


# -- Modelfiles and families ------------------------------------------------------------------------
# What Go's text/template renders from each family's TEMPLATE (checked with `go run` while writing
# them) for system, user, assistant, user; the Jinja twins used by the chat backend must match.
GO_RENDERED = {
    "chatml": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
    "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
    "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "[INST] U1[/INST] A1</s>[INST] SYS\n\nU2[/INST]",
    "gemma": "<start_of_turn>user\nSYS\n\nU1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
    "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\n",
    "phi3": "<|system|>\nSYS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n"
    "<|user|>\nU2<|end|>\n<|assistant|>\n",
    "phi4": "<|im_start|>system<|im_sep|>SYS<|im_end|><|im_start|>user<|im_sep|>U1<|im_end|>"
    "<|im_start|>assistant<|im_sep|>A1<|im_end|><|im_start|>user<|im_sep|>U2<|im_end|>"
    "<|im_start|>assistant<|im_sep|>",
}


@pytest.mark.parametrize("name", sorted(ollama.FAMILIES))
def test_modelfile_per_family(name):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    family = ollama.FAMILIES[name]
    text, warnings = ollama.modelfile("m-Q4_K_M.gguf", family, ["<eos-extra>"], title="t")
    assert warnings == []
    lines = text.splitlines()
    assert "FROM ./m-Q4_K_M.gguf" in lines
    assert text.count('TEMPLATE """') == 1 and family.go_template in text
    assert "{{" in family.go_template and ".Messages" in family.go_template
    assert "bos" not in family.go_template.lower() and "<s>" not in family.go_template
    stops = [line for line in lines if line.startswith("PARAMETER stop ")]
    assert stops == [f'PARAMETER stop "{s}"' for s in (*family.stops, "<eos-extra>")]
    conversation = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]
    rendered = Jinja2ChatFormatter(family.jinja_template, eos_token="</s>", bos_token="<s>")(
        messages=conversation
    ).prompt
    assert rendered == GO_RENDERED[name]


def test_mistral_stops_are_mistrals_own():
    assert ollama.MISTRAL.stops == ("[INST]", "[/INST]", "</s>")


def test_unknown_family_warns_and_has_no_template():
    text, warnings = ollama.modelfile("m.gguf", None, ["</s>"])
    assert "TEMPLATE" not in text and 'PARAMETER stop "</s>"' in text
    assert len(warnings) == 1 and "no known family" in warnings[0]


@pytest.mark.parametrize(
    "template, arch, vocab, expected",
    [
        ("{{ '<|im_start|>' + m['role'] }}", None, (), "chatml"),
        ("<|im_start|>{{ r }}<|im_sep|>", None, (), "phi4"),
        ("<|start_header_id|>{{ r }}<|end_header_id|>", None, (), "llama3"),
        ("<start_of_turn>user", None, (), "gemma"),
        ("<|user|>{{ c }}<|end|><|assistant|>", None, (), "phi3"),
        ("[INST] {{ c }} [/INST]", None, (), "mistral"),
        (None, "qwen2", (), "chatml"),
        (None, "gemma3", (), "gemma"),
        (None, "phi3", ("<|im_sep|>",), "phi4"),
        (None, "phi3", (), "phi3"),
        (None, "llama", ("<|start_header_id|>",), "llama3"),
        (None, "MistralForCausalLM", (), "mistral"),
        (None, "llama", ("<|im_start|>",), "chatml"),
        (None, "llama", (), None),
        ("{{ messages }}", "bert", (), None),
    ],
)
def test_family_detection(template, arch, vocab, expected):
    family = ollama.detect_family(template, arch, set(vocab))
    assert (family.name if family else None) == expected


def test_install_without_ollama_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not ollama.ollama_available()
    with pytest.raises(ExportError, match="not on PATH"):
        ollama.install("x", tmp_path)


# -- bad input --------------------------------------------------------------------------------------
def test_read_gguf_errors_name_the_problem(exported, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        gguf_tools.read_gguf(tmp_path / "missing.gguf")
    noise = tmp_path / "noise.gguf"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="not a GGUF file"):
        gguf_tools.read_gguf(noise)
    data = exported.artifact("gguf").read_bytes()
    for cut in (len(data) - 1000, 300):
        short = tmp_path / f"short-{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="truncated"):
            gguf_tools.read_gguf(short)


def test_patch_metadata_sets_and_removes_keys(exported, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(exported.artifact("gguf"), copy)
    gguf_tools.patch_metadata(copy, {gguf_tools.KEY_EOT: 4}, remove=(gguf_tools.KEY_TEMPLATE,))
    info = gguf_tools.read_gguf(copy)
    assert info.eot_id == 4 and info.chat_template is None
    assert info.tensor_types == gguf_tools.read_gguf(exported.artifact("gguf")).tensor_types


def test_export_of_a_run_without_adapter_is_refused(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "runs" / "cancelled"
    run_dir.mkdir(parents=True)
    JobSpec(
        name="cancelled one",
        base_model=BaseModelSpec(source=str(tiny_model_dir)),
        datasets=[DatasetSpec(path="x.jsonl")],
    ).save(run_dir / "spec.json")
    with EventLog(run_dir / "events.jsonl") as log:
        with pytest.raises(ExportError, match="no trained adapter") as err:
            export_run(run_dir, ExportSpec(), log)
    assert "cancelled one" in err.value.message


def test_unsupported_architecture_is_named_and_adapter_zip_kept(exported, tmp_path):
    base = tmp_path / "toy-base"
    tiny = Path(JobSpec.load(exported.run_dir / "spec.json").base_model.source)
    shutil.copytree(tiny, base)
    config = json.loads((base / "config.json").read_text())
    config["architectures"] = ["TunegraphToyForCausalLM"]
    (base / "config.json").write_text(json.dumps(config))
    run_dir = tmp_path / "runs" / "toy"
    shutil.copytree(exported.run_dir / "adapter", run_dir / "adapter")
    spec = JobSpec.load(exported.run_dir / "spec.json")
    spec.base_model.source = str(base)
    spec.save(run_dir / "spec.json")
    with EventLog(run_dir / "events.jsonl") as log:
        warnings = export_run(run_dir, ExportSpec(gguf=True), log)
    assert len(warnings) == 1
    assert warnings[0].startswith("GGUF export failed: ")
    assert "TunegraphToyForCausalLM" in warnings[0]
    kinds = [
        e.get("artifact_kind")
        for e in read_events(run_dir / "events.jsonl")
        if e.kind == "artifact"
    ]
    assert kinds == ["adapter_zip"]


def test_converter_names_an_unknown_architecture(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["MadeUpForCausalLM"]}))
    with pytest.raises(ExportError, match="MadeUpForCausalLM"):
        gguf_tools.convert_to_gguf(folder, tmp_path / "out.gguf")


def test_disk_too_small_is_refused_with_numbers(exported, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "small-disk"
    shutil.copytree(exported.run_dir, run_dir)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**20, 10 * 2**20, 2**20))
    with EventLog(run_dir / "events.jsonl") as log:
        with pytest.raises(ExportError, match=r"needs about \d+\.\d GiB .* 0\.0 GiB free"):
            export_run(run_dir, ExportSpec(gguf=True), log)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: usage(2**40, 0, 260 * 2**20)
    )  # enough for the ZIP only
    spec = JobSpec.load(run_dir / "spec.json")
    spec.export = ExportSpec(gguf=True)
    with EventLog(run_dir / "events.jsonl") as log:
        warnings = export_after_training(spec, run_dir, log)
    assert len(warnings) == 1 and warnings[0].startswith("GGUF export failed: Not enough free")
    assert any(
        e.get("artifact_kind") == "adapter_zip"
        for e in read_events(run_dir / "events.jsonl", after_seq=0)
        if e.kind == "artifact"
    )


def test_required_space_counts_merge_f16_quant_and_bundle():
    from engine.export.pipeline import MARGIN_BYTES, required_bytes

    spec, gib = JobSpec(name="x"), 2**30
    q4 = required_bytes(spec, ExportSpec(gguf=True, quant="Q4_K_M"), 100, size_16bit=gib)
    assert q4 == MARGIN_BYTES + 100 + gib + gib + 2 * int(gib * 4.9 / 16)
    f16 = required_bytes(spec, ExportSpec(gguf=True, quant="F16"), 100, size_16bit=gib)
    assert f16 == MARGIN_BYTES + 100 + 3 * gib
    assert required_bytes(spec, ExportSpec(gguf=False), 100) == MARGIN_BYTES + 100


def test_quantize_rejects_unknown_type_and_passes_f16_through(tmp_path):
    src = tmp_path / "m.gguf"
    assert gguf_tools.quantize(src, tmp_path / "o.gguf", "F16") == src
    with pytest.raises(ExportError, match="Unknown GGUF quantization"):
        gguf_tools.quantize(src, tmp_path / "o.gguf", "Q3_X")


def test_converter_dir_honours_env(tmp_path, monkeypatch):
    from engine.setup.converter import ENV_VAR, converter_dir

    assert converter_dir() is not None  # installed by `python -m engine.setup.converter`
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    assert converter_dir(required=False) is None
    with pytest.raises(ExportError, match="not installed") as err:
        converter_dir()
    assert "engine.setup.converter" in err.value.hint


# -- the command line -------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    from app.cli.export import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_export_adapter_only(tmp_path, tiny_model_dir, tg_home, capsys):
    from engine import paths
    from engine.store.index import Store

    run_dir = make_run(
        paths.runs_dir() / "20261122-130000-c11c11", tiny_model_dir, name="cli run", samples=False
    )
    with Store() as store:
        store.ingest(run_dir)
    assert _cli(["export", "cli run", "--no-gguf", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "completed" and out["warnings"] == []
    assert [a["kind"] for a in out["artifacts"]] == ["adapter_zip"]
    assert Path(out["artifacts"][0]["path"]).is_file()
    assert run_state(run_dir)[0] == "completed"
    states = [e["state"] for e in read_events(run_dir / "events.jsonl") if e.kind == "status"]
    assert states[-2:] == ["exporting", "completed"]
    with Store() as store:
        run = store.run_json("20261122-130000-c11c11")
    assert run["state"] == "completed"
    assert [a["kind"] for a in run["artifacts"]] == ["adapter_zip"]


def test_cli_export_refuses_a_live_run(tmp_path, tiny_model_dir, tg_home):
    import psutil

    from engine import paths
    from engine.errors import TunegraphError
    from engine.store.index import Store

    run_dir = make_run(
        paths.runs_dir() / "20261122-140000-a11a11", tiny_model_dir, name="live run", samples=False
    )
    me = psutil.Process()
    (run_dir / "worker.pid").write_text(
        json.dumps({"pid": me.pid, "create_time": me.create_time()})
    )
    with Store() as store:
        store.ingest(run_dir)
    with pytest.raises(TunegraphError, match="cannot be exported while its worker runs"):
        _cli(["export", "live run", "--no-gguf"])
