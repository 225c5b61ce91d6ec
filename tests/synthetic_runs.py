"""Synthetic runs for the UI tests and the UI benchmark: run folders written with
the real event-log codec (no worker, no torch) and indexed by a Store, in milliseconds."""

from __future__ import annotations

import math
import time
from pathlib import Path

from engine import paths
from engine.events import EventLog
from engine.rundir import SUPERVISOR_LOG, WORKER_LOG
from engine.spec import BaseModelSpec, DatasetSpec, JobSpec, LoraSpec, TrainingSpec
from engine.store.index import Store


def make_spec(name: str, **training) -> JobSpec:
    base = {"epochs": 2.0, "learning_rate": 2e-4, "micro_batch_size": 4, "max_seq_length": 256}
    return JobSpec(
        name=name,
        base_model=BaseModelSpec(source="builtin:tiny-llama"),
        datasets=[DatasetSpec(path="/data/chats.jsonl")],
        training=TrainingSpec(**{**base, **training}),
        lora=LoraSpec(r=8, alpha=16),
    )


class SyntheticRun:
    """A run folder whose two logs the test writes: `status`, `metrics`, `evaluate`, …"""

    def __init__(
        self,
        store: Store,
        spec: JobSpec,
        created_at: float | None = None,
        run_id: str | None = None,
    ):
        self.store = store
        self.id = run_id or paths.new_run_id()
        self.dir = paths.runs_dir() / self.id
        self.dir.mkdir(parents=True)
        spec.save(self.dir / "spec.json")
        self.worker = EventLog(self.dir / WORKER_LOG)
        self.supervisor = EventLog(self.dir / SUPERVISOR_LOG)
        store.register_run(self.id, spec, self.dir, created_at=created_at or time.time())
        self.step = 0

    def status(self, state: str, **data) -> SyntheticRun:
        log = self.supervisor if state in ("queued", "cancelled", "retrying") else self.worker
        log.emit("status", state=state, **data)
        return self.ingest()

    def metrics(
        self,
        count: int,
        max_steps: int,
        steps_per_epoch: int | None = None,
        lr: float = 2e-4,
        ingest: bool = True,
        speed: float = 1.0,
    ) -> SyntheticRun:
        per_epoch = steps_per_epoch or max(max_steps // 2, 1)
        for _ in range(count):
            self.step += 1
            s = self.step
            loss = (
                2.5 * math.exp(-s * speed / (0.4 * max_steps))
                + 0.3 / speed
                + 0.04 * math.sin(s / 3)
            )
            grad = (
                0.6 / speed
                + 0.8 * math.exp(-s * speed / (0.2 * max_steps))
                + 0.08 * math.sin(s / 11)
            )
            self.worker.emit(
                "metric",
                step=s,
                epoch=s / per_epoch,
                loss=loss,
                grad_norm=grad,
                lr=lr * (1 - s / max_steps),
                tokens_per_s=950.0 + s % 50,
            )
        self.worker.emit(
            "progress",
            step=self.step,
            max_steps=max_steps,
            eta_s=2.0 * (max_steps - self.step),
            epoch=self.step / per_epoch,
        )
        return self.ingest() if ingest else self

    def evaluate(self, eval_loss: float) -> SyntheticRun:
        self.worker.emit("eval", step=self.step, eval_loss=eval_loss)
        return self.ingest()

    def data_log(self, rows: int = 40, sha: str = "a" * 64) -> SyntheticRun:
        stats = {
            "rows": rows,
            "train_rows": rows - 4,
            "eval_rows": 4,
            "datasets": [
                {"path": "/data/chats.jsonl", "format": "openai", "rows": rows, "sha256": sha}
            ],
        }
        import json

        self.worker.emit("log", level="info", message="Data: " + json.dumps(stats))
        return self.ingest()

    def samples(self, *pairs: tuple[str, str]) -> SyntheticRun:
        for prompt, response in pairs:
            self.worker.emit("sample", prompt=prompt, response=response)
        return self.ingest()

    def artifact(self, name: str = "adapter", size: int = 4096) -> SyntheticRun:
        folder = self.dir / name
        folder.mkdir(exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * size)
        self.worker.emit(
            "artifact", kind="adapter_dir", path=str(folder), bytes=size, sha256="b" * 64
        )
        return self.ingest()

    def ingest(self) -> SyntheticRun:
        self.store.ingest(self.dir)
        return self

    def close(self) -> None:
        self.worker.close()
        self.supervisor.close()


def training_run(
    store: Store, name: str, steps: int, max_steps: int, state: str = "training", **training
) -> SyntheticRun:
    """A run that is `state` after `steps` logged metric steps of `max_steps`."""
    run = SyntheticRun(store, make_spec(name, **training))
    run.status("queued").status("starting").status("training", device="cpu")
    if steps:
        run.metrics(steps, max_steps)
    if state != "training":
        run.status(state)
    return run


def home_runs_dir() -> Path:
    return paths.runs_dir()
