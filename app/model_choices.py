"""What the Base model node's picker offers: the models in the local Hugging Face cache, the GGUFs
in the library, the runs that delivered a model, the built-in tiny model and a few hub ids to
start from.

`base_model_choices` reads them all (the cache's folders, the library's manifests, the run index:
tens of milliseconds, more on a big cache), so the picker never calls it on the UI thread:
`ModelChoices` keeps the last answer for every picker and reads again in the background each time
one opens (`refresh`), announcing a new answer with `updated`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from engine import paths
from engine.formatting import format_bytes

log = logging.getLogger(__name__)
BUILTIN = "builtin:tiny-llama"
HUB_SUGGESTIONS = (  # small instruct models that fine-tune on one consumer GPU
    "Qwen/Qwen2.5-0.5B-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "google/gemma-3-270m-it",
    "microsoft/Phi-4-mini-instruct",
)
GROUPS = ("Hugging Face cache", "Library GGUFs", "Delivered by runs", "Built in", "On the Hub")


@dataclass(frozen=True)
class ModelChoice:
    """One entry: `value` is what the node stores ("" for a note that cannot be picked), `label`
    what the list shows."""

    value: str
    label: str
    group: str  # one of GROUPS


def base_model_choices() -> list[ModelChoice]:
    """Every entry, grouped in GROUPS order; a source that cannot be read adds nothing."""
    out: list[ModelChoice] = []
    for reader in (_cached, _library, _runs):
        try:
            out += reader()
        except Exception as exc:  # noqa: BLE001 - one unreadable source leaves the others
            log.warning("base model choices: %s failed: %s", reader.__name__, exc)
    out.append(
        ModelChoice(BUILTIN, f"{BUILTIN} — a random test model (writes nonsense)", "Built in")
    )
    cached = {c.value for c in out}
    out += [ModelChoice(h, h, "On the Hub") for h in HUB_SUGGESTIONS if h not in cached]
    return out


def _cached() -> list[ModelChoice]:
    from engine.models.hf_cache import cached_models, hub_cache_dir

    models = cached_models()
    if not models:
        return [ModelChoice("", f"no model downloaded yet in {hub_cache_dir()}", GROUPS[0])]
    out = []
    for model in models:
        size = format_bytes(model.size_bytes)
        if model.has_config:
            note = size if model.has_weights else f"{size}, config only: weights download at start"
            out.append(ModelChoice(model.repo_id, f"{model.repo_id}  ({note})", GROUPS[0]))
        for gguf in model.gguf_files:
            label = f"{model.repo_id} / {Path(gguf).name}  ({size})"
            out.append(ModelChoice(f"gguf:{gguf}", label, GROUPS[0]))
    return out


def _library() -> list[ModelChoice]:
    from engine.store.library import library_entries

    out = []
    for entry in library_entries():  # newest first
        # a gguf_bundle is a ZIP for Ollama; its GGUF is registered beside it as kind gguf
        if entry.get("kind") != "gguf" or not Path(entry["file"]).is_file():
            continue
        run = entry.get("run_name") or entry.get("run_id") or ""
        size = format_bytes(Path(entry["file"]).stat().st_size)
        label = f"{Path(entry['file']).name} — {run}  ({size})" if run else Path(entry["file"]).name
        out.append(ModelChoice(f"gguf:{entry['file']}", label, GROUPS[1]))
    return out


def _runs() -> list[ModelChoice]:
    if not paths.db_path().is_file():
        return []
    from engine.store.index import Store

    with Store() as store:
        runs = store.list_runs("completed")  # newest first
    out = []
    for run in runs:
        finished = run.get("finished_at") or run.get("created_at")
        when = time.strftime("%d %b %H:%M", time.localtime(finished)) if finished else ""
        label = f"{run.get('name') or run['id']}  (run {run['id']}{', ' + when if when else ''})"
        out.append(ModelChoice(f"run:{run['id']}", label, GROUPS[2]))
    return out


# -- the shared, refreshed-in-the-background answer ---------------------------------------------
class _Done(QtCore.QObject):
    finished = QtCore.Signal(object)  # list[ModelChoice]


class _Read(QtCore.QRunnable):
    def __init__(self, done: _Done):
        super().__init__()
        self.done = done

    def run(self) -> None:
        choices: list[ModelChoice] = []
        try:
            choices = base_model_choices()
        finally:
            self.done.finished.emit(choices)


class ModelChoices(QtCore.QObject):
    """The picker's entries, read off the UI thread; one per application (`shared`)."""

    updated = QtCore.Signal()

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.choices: list[ModelChoice] = [
            ModelChoice(BUILTIN, BUILTIN, "Built in"),
            *(ModelChoice(h, h, "On the Hub") for h in HUB_SUGGESTIONS),
        ]
        self.read_at = 0.0  # when the last answer arrived (0: none yet)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._reading = False
        self._again = False
        self._done = _Done(self)
        self._done.finished.connect(self._on_finished)

    def refresh(self) -> None:
        """Read again in the background (once more after the current read, if one runs)."""
        if self._reading:
            self._again = True
            return
        self._reading = True
        self.pool.start(_Read(self._done))

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Wait for a read in progress and deliver its answer (tests, shutdown)."""
        done = self.pool.waitForDone(timeout_ms)
        QtCore.QCoreApplication.sendPostedEvents(self)  # the answer, queued to this object
        return done

    def _on_finished(self, choices: list[ModelChoice]) -> None:
        self._reading = False
        self.read_at = time.time()
        if choices and choices != self.choices:
            self.choices = choices
            self.updated.emit()
        if self._again:
            self._again = False
            self.refresh()


_shared: ModelChoices | None = None


def shared() -> ModelChoices:
    """The application's one ModelChoices (made, and first read, on first use)."""
    global _shared
    app = QtWidgets.QApplication.instance()
    if _shared is None or _shared.parent() is not app:
        _shared = ModelChoices(app)
        _shared.refresh()
    return _shared
