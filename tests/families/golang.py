"""Go for the Modelfile tests: `go` from PATH, else Debian's `golang-go` installed with apt-get, and
tests/gotemplate (Go's own text/template, run the way Ollama runs a Modelfile TEMPLATE) built once
into the test-file cache (`$TUNEGRAPH_TEST_FILES`, else ~/.cache/tunegraph-test-files), with its
GOCACHE and GOPATH there too, so nothing lands in the repository. Python has no faithful Go
template renderer, hence Go itself. Anything missing fails the test with the reason, never skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.families.fetch import cache_dir

SOURCE = Path(__file__).resolve().parent.parent / "gotemplate"


class GoError(RuntimeError):
    """Go or the helper could not be had; the message says why."""


def find_go() -> str:
    """The `go` binary: on PATH, in Debian's /usr/lib/go/bin, else after `apt-get install -y
    golang-go` (as root; `apt-get update` first when the package lists lack it)."""
    found = shutil.which("go") or shutil.which("go", path="/usr/lib/go/bin")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise GoError("no `go` on PATH and no apt-get to install Debian's golang-go")
    if os.geteuid() != 0:
        raise GoError("no `go` on PATH; installing golang-go with apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "golang-go"]
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    found = shutil.which("go") or shutil.which("go", path="/usr/lib/go/bin")
    if done.returncode != 0 or not found:
        raise GoError(f"apt-get install golang-go failed: {(done.stderr or done.stdout)[-800:]}")
    return found


def build_helper() -> Path:
    """The built helper, rebuilt when tests/gotemplate's sources change."""
    go = find_go()
    sources = sorted(SOURCE.glob("*.go")) + [SOURCE / "go.mod"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    root = cache_dir() / "gotemplate"
    binary = root / f"gotemplate-{digest}"
    if binary.is_file():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOCACHE": str(root / "gocache"),
        "GOPATH": str(root / "gopath"),
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    tmp = root / f".{binary.name}.{os.getpid()}"
    done = subprocess.run(
        [go, "build", "-o", str(tmp), "."], cwd=SOURCE, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise GoError(f"go build of tests/gotemplate failed: {done.stderr[-800:]}")
    tmp.replace(binary)
    return binary


def render(helper: Path, template: str, messages: list[dict]) -> str:
    """`template` rendered by Go for a chat request with `messages` (see tests/gotemplate)."""
    with tempfile.TemporaryDirectory() as folder:
        tmpl, data = Path(folder) / "template", Path(folder) / "data.json"
        tmpl.write_text(template, encoding="utf-8")
        data.write_text(json.dumps({"messages": messages}), encoding="utf-8")
        done = subprocess.run([str(helper), str(tmpl), str(data)], capture_output=True)
    if done.returncode != 0:
        raise GoError(done.stderr.decode(errors="replace"))
    return done.stdout.decode()
