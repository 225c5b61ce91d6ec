"""The chat backend, for real: a GGUF exported from a tiny run answers in a child process, streams,
stops mid-answer, names its template, and a bad file is an error for the caller, not a crash."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import psutil
import pytest

from engine.chat.session import ChatError, ChatSession
from engine.export import gguf_tools
from tests.test_export import build_exported_run

HELLO = [{"role": "user", "content": "Hello, can you help me with my bill?"}]


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir).artifact("gguf")


@pytest.fixture
def session(gguf_path):
    """A chat session per test: the conftest guard fails a test that leaves its process."""
    chat = ChatSession(gguf_path, n_ctx=2048, n_threads=2)
    yield chat
    chat.close()


def _children() -> list[psutil.Process]:
    return [
        p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    ]


def test_session_uses_the_models_own_template(session):
    assert "tokenizer.chat_template" in session.template_name
    assert session.info["family"] == "chatml"
    assert session.info["eos_id"] in session.info["stop_ids"]


def test_stream_yields_text_and_stats(session):
    pieces = list(session.stream(HELLO, max_tokens=24, temperature=0.0))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip()
    stats = session.stats
    assert stats.prompt_tokens > 5
    assert 0 < stats.completion_tokens <= 24
    assert stats.stop_reason in ("stop", "length")
    assert stats.tokens_per_s is None or stats.tokens_per_s > 0


def test_stop_mid_stream_then_answer_again(session):
    received = []
    for piece in session.stream(HELLO, max_tokens=1500, temperature=0.0):
        received.append(piece)
        if len(received) == 2:
            session.stop()
    assert session.stats.stop_reason == "interrupted"
    assert session.stats.completion_tokens < 1500
    again = session.chat(HELLO, max_tokens=4, temperature=0.0, system="Be brief.")
    assert isinstance(again, str) and session.stats.completion_tokens <= 4


def test_leaving_a_stream_early_keeps_the_session_usable(session):
    stream = session.stream(HELLO, max_tokens=1000, temperature=0.0)
    next(stream)
    stream.close()  # the caller walked away: the answer is stopped and drained
    assert session.chat(HELLO, max_tokens=3, temperature=0.0)
    assert session.stats.completion_tokens <= 3


@pytest.mark.parametrize("kind", ["missing", "noise", "truncated"])
def test_bad_file_is_an_error_and_the_caller_lives(kind, gguf_path, tmp_path):
    path = tmp_path / f"{kind}.gguf"
    if kind == "noise":
        path.write_bytes(os.urandom(50_000))
    elif kind == "truncated":
        path.write_bytes(gguf_path.read_bytes()[:200_000])
    with pytest.raises(ChatError) as err:
        ChatSession(path)
    assert str(path) in err.value.message
    assert not _children(), "the chat process was not closed"


def test_family_template_when_the_gguf_has_none(gguf_path, tmp_path):
    bare = tmp_path / "bare.gguf"
    shutil.copyfile(gguf_path, bare)
    gguf_tools.patch_metadata(bare, {}, remove=(gguf_tools.KEY_TEMPLATE,))
    with ChatSession(bare, n_ctx=512) as chat:
        assert chat.template_name.startswith("ChatML (by architecture llama")
        assert chat.info["template_source"] == "family:chatml"
        assert isinstance(chat.chat(HELLO, max_tokens=3, temperature=0.0), str)
    assert not _children()


def test_close_ends_the_process(gguf_path):
    chat = ChatSession(gguf_path, n_ctx=256)
    proc = chat._proc
    chat.close()
    assert proc.poll() is not None
    with pytest.raises(ChatError, match="closed"):
        chat.chat(HELLO)


def test_cli_chat_json(gguf_path, capsys):
    from app.cli.export import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "chat",
            str(gguf_path),
            "--prompt",
            "Hello",
            "--json",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--ctx",
            "256",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"text", "prompt_tokens", "completion_tokens", "tokens_per_s", "stop_reason"}
    assert out["completion_tokens"] <= 6 and out["stop_reason"] in ("stop", "length")
