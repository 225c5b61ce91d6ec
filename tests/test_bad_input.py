"""Bad input the user can cause: one sentence naming what to fix, in the worker's error event and
on the command line's stderr (exit 1, no traceback unless --debug), the traceback only in the
worker log. One test per kind: a dataset that is not UTF-8, a folder given as a dataset file, a
node of unknown type, a hub that cannot be reached, and a gated or missing hub model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.main import main
from engine.errors import DataError, ModelError
from engine.events import read_events, run_state
from engine.rundir import entry_command
from engine.spec import BaseModelSpec, DatasetSpec
from nodes import compile as compile_graph
from nodes.graphfile import GraphBuilder, save_graph
from tests.helpers import (
    FAST_EXPORT,
    FAST_LORA,
    FAST_TRAINING,
    cli,
    make_graph,
    make_spec,
    stop_everything,
    write_chats,
)


def assert_one_sentence(out: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, nothing on stdout, one `tunegraph: …` line on stderr holding `words`."""
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "Retrying" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunegraph: "), out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- 1. a dataset that is not UTF-8 ----------------------------------------------------------------
LATIN1 = {
    ".jsonl": b'{"text": "hello there"}\n{"text": "caf\xe9 au lait"}\n',
    ".json": b'[{"text": "hello there"},\n {"text": "caf\xe9 au lait"}]\n',
    ".csv": b"text\ncaf\xe9 au lait\nhello there\n",
}


@pytest.mark.parametrize("suffix", list(LATIN1))
def test_a_dataset_that_is_not_utf8_names_file_line_and_offset(tmp_path, suffix, monkeypatch):
    data = tmp_path / f"latin1{suffix}"
    data.write_bytes(LATIN1[suffix])
    offset = LATIN1[suffix].index(b"\xe9")
    with pytest.raises(DataError) as err:
        from engine.data.formats import load_dataset_rows

        load_dataset_rows(DatasetSpec(path=str(data)))
    text = str(err.value)
    assert text.startswith(f"{data}:2: the file is not UTF-8 text: byte 0xE9 ")
    assert f"at byte offset {offset} (line 2, column " in text and err.value.line == 2
    assert err.value.hint.startswith("Save it as UTF-8")

    # the same place when a character straddles the reader's chunks
    import engine.data.formats as formats

    for chunk in (1, 2, 3, 5):
        monkeypatch.setattr(formats, "_CHUNK", chunk)
        formats.check_utf8(write_chats(tmp_path / "fine.jsonl", 2))  # valid: passes
        (tmp_path / "wide.jsonl").write_bytes("é€😀\n".encode() * 3 + b"ok\xc3(\n")
        with pytest.raises(DataError, match=r"byte 0xC3 at byte offset 32 \(line 4, column 3\)"):
            formats.check_utf8(tmp_path / "wide.jsonl")
    monkeypatch.undo()

    if suffix != ".jsonl":
        return
    # the command line: the sentence on stderr, exit 1, no traceback; --debug shows it
    out = cli("preview", str(data))
    assert_one_sentence(out, f"{data}:2:", f"byte offset {offset}", "Save it as UTF-8")
    # the estimate (and so `run`, before it submits anything) refuses the module: the sentence
    # on the Dataset node's path, as the canvas shows it
    out = cli("estimate", str(make_graph(tmp_path, data=data)))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f'error: Dataset "chats": path: {data}:2: the file is not UTF-8')
    assert f"byte offset {offset}" in line and "Save it as UTF-8" in line
    with pytest.raises(DataError):
        main(["--debug", "preview", str(data)])

    # the worker: the run fails with the sentence as its error event; the traceback is logged
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    make_spec(data).save(run_dir / "spec.json")
    proc = subprocess.run(
        entry_command(sys.executable, "worker", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    error = next(e for e in read_events(run_dir / "events.jsonl") if e.kind == "error")
    assert error["class"] == "DataError"
    assert f"{data}:2:" in error["message"] and f"byte offset {offset}" in error["message"]
    assert error["hint"].startswith("Save it as UTF-8")
    assert run_state(run_dir)[0] == "failed"
    assert "Traceback" in (run_dir / "worker.log").read_text()


# -- 2. a folder where a file is expected ------------------------------------------------------------
def test_a_folder_given_as_the_dataset_file(tmp_path, capsys):
    folder = tmp_path / "chats.jsonl"  # even with a dataset's suffix
    folder.mkdir()
    from engine.data.formats import load_dataset_rows

    for path in (folder, tmp_path):  # with and without a suffix
        with pytest.raises(DataError) as err:
            load_dataset_rows(DatasetSpec(path=str(path)))
        assert str(err.value).startswith(f"{path}: is a folder, not a file.")
        assert "not found" not in str(err.value)
    capsys.readouterr()
    assert main(["preview", str(folder)]) == 1
    assert capsys.readouterr().err == (
        f"tunegraph: {folder}: is a folder, not a file. "
        "Choose a .jsonl, .json, .csv or .parquet file in it.\n"
    )
    result = compile_graph(json.loads(make_graph(tmp_path, data=folder).read_text()))
    assert "is a folder" in str(result.errors[0])  # the compiler says so too


# -- 3. a node of unknown type -------------------------------------------------------------------
def _two_modules(folder: Path) -> Path:
    """Modules "good" and "bad"; "bad" also takes its export from a node of unknown type, and a
    second unknown node sits alone in the graph."""
    g = GraphBuilder(seed=3)
    base = g.add_node("BaseModel", "base", source="builtin:tiny-llama")
    data = g.add_node("Dataset", "chats", path=str(write_chats(folder / "chats.jsonl")))
    lora = g.add_node("LoraConfig", "lora", **FAST_LORA)
    training = g.add_node("TrainingConfig", "train", **{**FAST_TRAINING, "max_steps": 2})
    export = g.add_node("Export", "export", **FAST_EXPORT)
    modules = {name: g.add_node("FineTune", name, device="cpu") for name in ("good", "bad")}
    for module in modules.values():
        for node, port in ((base, "base_model"), (data, "dataset"), (lora, "lora_config")):
            g.connect(node, module, port)
        g.connect(training, module, "training_config")
    g.connect(export, modules["good"], "export")
    graph = g.to_dict()
    graph["nodes"]["0xnewer"] = {"type_": "tunegraph.Exportt", "name": "newer export"}
    graph["nodes"]["0xalone"] = {"type_": "tunegraph.Foo", "name": "foo", "custom": {}}
    graph["connections"].append({"out": ["0xnewer", "export"], "in": [modules["bad"], "export"]})
    return save_graph(graph, folder / "graph.json")


def test_an_unknown_node_type_refuses_the_modules_it_feeds(tmp_path, tg_home):
    path = _two_modules(tmp_path)
    result = compile_graph(json.loads(path.read_text()), graph_path=path)
    assert [s.name for s in result.specs] == ["good"]
    bad = next(m for m in result.modules if m.name == "bad")
    [err] = bad.errors  # the unknown node's error, not "connect an Export node"
    assert (err.node_id, err.kind, err.field) == ("0xnewer", "unknown_type", "type_")
    assert str(err).startswith(
        "Node \"newer export\": type_: unknown node type 'tunegraph.Exportt' (a typo, or a "
        "node from a newer version of Tunegraph); known types: tunegraph.FineTune, "
    )

    env = {**os.environ, "TUNEGRAPH_SUPERVISOR_IDLE": "5", "TUNEGRAPH_CPU_SLOTS": "1"}
    try:
        out = cli("run", str(path), "--detach", "--json", "--yes", env=env)
    finally:
        stop_everything(tg_home)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    entries = {e["name"]: e for e in json.loads(out.stdout)}
    assert entries["good"]["state"] == "queued"  # the rest runs
    assert entries["bad"]["state"] == "refused"
    assert "'tunegraph.Exportt'" in entries["bad"]["error"]["message"]
    assert entries["graph"]["state"] == "refused"  # the lone unknown node is not lost either
    assert "'tunegraph.Foo'" in entries["graph"]["error"]["message"]
    assert 'refused: bad: Node "newer export": type_: unknown node type' in out.stderr


# -- 4. the hub cannot be reached -------------------------------------------------------------------
def _closed_port_url() -> str:
    """An http:// address where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_an_unreachable_hub_fails_fast_with_one_sentence(tmp_path, monkeypatch):
    graph = make_graph(tmp_path, base="some-org/some-model")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env["HF_ENDPOINT"] = _closed_port_url()  # no network, whatever this machine has
    out = cli("estimate", str(graph), env=env)
    assert_one_sentence(
        out,
        "Could not reach the Hugging Face hub for some-org/some-model",
        "Check the network, or turn on offline mode",
        "cached or local model",
    )
    debug = cli("--debug", "estimate", str(graph), env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr

    # a cached model is still usable with the hub out of reach: from the cache, with no request
    import huggingface_hub.constants as hf_constants

    from engine.models import sources

    snapshot = tmp_path / "hub" / "models--some-org--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "ENDPOINT", env["HF_ENDPOINT"])
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # read at import, as set by conftest
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(sources, "_hub_checked", {})
    spec = BaseModelSpec(source="some-org/cached")
    resolved = sources.resolve_source(spec)
    assert resolved.local_only and sources.hub_kwargs(spec, resolved)["local_files_only"]
    with pytest.raises(ModelError, match="Could not reach the Hugging Face hub for org/x"):
        sources.resolve_source(BaseModelSpec(source="org/x"))


# -- 5. a gated model without a token, and a model id that does not exist ---------------------------
def _hub_errors():
    """The exceptions huggingface_hub raises, as transformers passes them on (OSError from …)."""
    import httpx2
    from huggingface_hub import errors as hf

    def http(cls, status):
        request = httpx2.Request("HEAD", "https://huggingface.co/org/name/resolve/main/config.json")
        return cls(f"{status} Client Error", response=httpx2.Response(status, request=request))

    def wrapped(inner):
        try:
            try:
                raise inner
            except Exception as e:
                raise OSError("transformers says something long about it") from e
        except OSError as outer:
            return outer

    return {
        "gated": wrapped(http(hf.GatedRepoError, 403)),
        "missing": wrapped(http(hf.RepositoryNotFoundError, 401)),
        "revision": http(hf.RevisionNotFoundError, 404),
        "no config": http(hf.RemoteEntryNotFoundError, 404),
        "not cached": wrapped(hf.LocalEntryNotFoundError("no connection and not in the cache")),
        "connection": wrapped(httpx2.ConnectError("[Errno -2] Name or service not known")),
        "os connection": wrapped(ConnectionRefusedError(111, "Connection refused")),
    }


def test_gated_and_missing_hub_models_have_their_own_sentences(monkeypatch):
    from engine.models.sources import check_hub, hub_error

    errors = _hub_errors()
    said = {
        kind: hub_error(exc, "org/name", "main", has_token=False) for kind, exc in errors.items()
    }
    assert str(said["gated"]) == (
        "org/name is a gated model and no Hugging Face token is set. Add your token in Settings "
        "(after asking for access on https://huggingface.co/org/name)."
    )
    assert str(said["missing"]) == (
        "The Hugging Face hub has no model org/name. Check the id (org/name, as on its hub "
        "page); a private model also needs your token in Settings."
    )
    assert "has no revision 'main'" in str(said["revision"])
    assert "no config.json" in str(said["no config"]) and "gguf:" in said["no config"].hint
    for kind in ("not cached", "connection", "os connection"):
        assert said[kind].message == "Could not reach the Hugging Face hub for org/name", kind
    assert len({str(e) for e in said.values()}) == len(said) - 2  # distinct, but for unreachable
    with_token = hub_error(errors["gated"], "org/name", has_token=True)
    assert "your Hugging Face token has no access" in str(with_token)
    assert hub_error(ValueError("unrelated"), "org/name") is None

    # the hub check turns them into the same sentences before anything is downloaded
    import huggingface_hub

    from engine import secrets
    from engine.models import sources

    monkeypatch.setattr(secrets, "get_hf_token", lambda: None)
    for kind in ("gated", "missing"):
        monkeypatch.setattr(sources, "_hub_checked", {})
        monkeypatch.setattr(
            huggingface_hub, "get_hf_file_metadata", lambda *a, _e=errors[kind], **k: _raise(_e)
        )
        with pytest.raises(ModelError) as err:
            check_hub("org/name")
        assert str(err.value) == str(said[kind])


def _raise(exc: BaseException):
    raise exc
