"""What the node actor and the Ray Train ranks both do on a cluster node: find the node's home and
address, ship files and checkpoints as ZIP bytes, write a node-local run directory, die with the
parent. Imports no Ray at module level.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import tempfile
import zipfile
from pathlib import Path

from engine.rundir import SPEC_FILE, WORKER_LOG

NODE_HOME_ENV = "TUNEGRAPH_NODE_HOME"
FETCH_TIMEOUT_S = 600.0  # one ZIP of files between processes of the cluster


def node_home() -> Path:
    """The Tunegraph data directory runs use on this node."""
    home = os.environ.get(NODE_HOME_ENV) or str(Path(tempfile.gettempdir()) / "tunegraph-node")
    path = Path(home).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def node_ip() -> str:
    """This node's address as Ray names it (hostname when Ray cannot say)."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - any name will do for a label
        return socket.gethostname()


def zip_bytes(path: Path) -> bytes:
    """A file or folder as ZIP bytes (stored, not deflated: checkpoints and GGUFs do not shrink)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        if path.is_file():
            zf.write(path, path.name)
        else:
            for item in sorted(path.rglob("*")):
                if item.is_file():
                    zf.write(item, item.relative_to(path).as_posix())
    return buf.getvalue()


def unzip_into(data: bytes, dest: Path, single_file: bool = False) -> None:
    """Write ZIP bytes to `dest` (a folder, or one file) via a temporary sibling, then rename, so
    a reader never sees half of it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)
        src = tmp / dest.name if single_file else tmp
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(src, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def complete_checkpoints(run_dir: Path) -> list[str]:
    """Names of the run's checkpoints the Trainer finished writing (trainer_state.json last)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    )


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child, before exec: get `sig` when the process that started it dies (Linux), so a
    killed actor never leaves training running unseen on the node."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def materialise(
    run_dir: Path, spec: dict, datasets: list, events: bytes, checkpoints: bytes
) -> None:
    """Write a node-local run directory: spec (dataset paths rewritten to the shipped copies),
    the event log so far, and the checkpoints to resume from."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True)
    spec = json.loads(json.dumps(spec))
    for i, (entry, payload) in enumerate(zip(spec["datasets"], datasets, strict=True)):
        if payload is None:  # read from storage the node sees at the same path
            continue
        target = data_dir / f"{i}-{Path(entry['path']).name}"
        target.write_bytes(payload)
        entry["path"] = str(target)
    (run_dir / SPEC_FILE).write_text(
        json.dumps(spec, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )
    (run_dir / WORKER_LOG).write_bytes(events)
    if checkpoints:
        unzip_into(checkpoints, run_dir / "checkpoints")
