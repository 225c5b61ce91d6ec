"""Starting a group of runs that share one base model (no torch: the supervisor uses this).

A group directory holds `group.json` (`{"format_version": 1, "runs": [RUN_DIR, …]}`: the member
run directories, each already made like a normal run's by engine.training.launch.create_run),
and the group process's own `worker.pid` and `worker.log`; each run keeps everything in its own
run directory. `python -m engine.training.group GROUP_DIR` trains them (the entry point
"group_worker" of engine.rundir).

Which runs may share a base, and what a group needs, is engine.plan.sharing's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from engine.rundir import PID_FILE, entry_command, write_pid
from engine.setup.interpreters import engine_python
from engine.training.launch import start_detached

GROUP_FILE = "group.json"
GROUP_FORMAT = 1


def create_group(group_dir: Path, run_dirs: list[Path]) -> Path:
    """Write `group_dir/group.json` naming the member run directories; returns the folder."""
    group_dir = Path(group_dir)
    group_dir.mkdir(parents=True, exist_ok=True)
    body = {"format_version": GROUP_FORMAT, "runs": [str(Path(d).resolve()) for d in run_dirs]}
    (group_dir / GROUP_FILE).write_text(json.dumps(body, indent=1), encoding="utf-8")
    return group_dir


def read_group(group_dir: Path) -> list[Path]:
    """The member run directories of a group (relative ones are taken from the group's folder);
    ValueError naming the file and what is wrong."""
    path = Path(group_dir) / GROUP_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the group's runs ({err})") from None
    runs = body.get("runs") if isinstance(body, dict) else None
    if not isinstance(runs, list) or not runs or not all(isinstance(r, str) for r in runs):
        raise ValueError(f'{path}: "runs" must be a non-empty list of run directories')
    dirs = [(Path(group_dir) / r).resolve() for r in runs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ValueError(f"{path}: no such run directory: {', '.join(missing)}")
    return dirs


def group_command(group_dir: Path) -> list[str]:
    """The group process's command line in the engine's Python."""
    return entry_command(engine_python(), "group_worker", str(group_dir))


def start_group(group_dir: Path, env: dict | None = None) -> subprocess.Popen:
    """Start the group process detached (own process group, output to the group's worker.log)
    and record it in every member's worker.pid (a member's record goes when that run ends)."""
    import psutil

    members = read_group(group_dir)
    for run_dir in members:
        (run_dir / PID_FILE).unlink(missing_ok=True)
    proc = start_detached(group_command(group_dir), Path(group_dir), env)
    try:
        for folder in (Path(group_dir), *members):  # at once: each is watched by its worker.pid
            write_pid(folder, proc.pid)
    except psutil.NoSuchProcess:  # it ended already: its exit code says how
        pass
    return proc
