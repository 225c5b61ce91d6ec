"""The run confirmation: for each run, where it runs (this workstation or the Ray cluster),
parameters, VRAM and device, the 4-bit decision and why, the time range, dataset rows (with the
under-1,000 warning), the chat template it trains with and why, and what gets exported.

Estimates come from `tunegraph estimate GRAPH --json` in a helper process (the UI never imports
torch), or are passed in. "Start" emits `start_requested(specs, estimates)` for the runs that can
start; "Cancel" submits nothing. A run that can never fit this machine is shown as refused, and so
is one whose base model has no chat template while its node asks for the model's own (it would
fail as it starts; the card says what to pick).
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.canvas import absolute_paths
from app.processes import JsonProcess
from engine import hardware
from engine.cluster.executor import ADDRESS_HINT, resolve_address
from engine.formatting import format_count, format_rough_duration, format_setting
from engine.models.template_choice import TemplatePlan, template_plan
from engine.plan.estimate import vram_parts_text
from engine.spec import JobSpec
from engine.supervisor import scheduler
from nodes.results import ModuleResult

FEW_ROWS = 1000


class ConfirmRunsDialog(QtWidgets.QDialog):
    start_requested = QtCore.Signal(list, list)  # specs, estimates (dict or None each)

    def __init__(
        self,
        modules: list[ModuleResult],
        skipped: list[ModuleResult],
        graph: dict,
        graph_path: str | Path | None = None,
        estimates: list[dict] | None = None,
        parent: QtWidgets.QWidget | None = None,
    ):
        super().__init__(parent)
        self.setWindowTitle("Start runs")
        self.resize(720, 560)
        self.modules = [m for m in modules if m.spec is not None]
        self.skipped = list(skipped)
        self.graph, self.graph_path = graph, graph_path
        self.estimates: dict[str, dict] = {}  # node_uuid -> estimate
        self.refusals: dict[str, scheduler.Refusal] = {}
        # node_uuid -> the chat template the run will use (a GGUF header or tokenizer files)
        self.templates: dict[str, TemplatePlan] = {
            m.node_uuid: template_plan(m.spec.base_model) for m in self.modules
        }
        for uuid, plan in self.templates.items():
            if plan.problem:
                self.refusals[uuid] = scheduler.Refusal(f"base model: {plan.problem}", plan.hint)
        self.estimate_error = ""
        self.gpus = hardware.gpus()
        self.cluster = resolve_address()  # TUNEGRAPH_RAY_ADDRESS or Settings; "" when none
        self._tmp: str | None = None
        layout = QtWidgets.QVBoxLayout(self)
        self.status = QtWidgets.QLabel()
        self.busy = QtWidgets.QProgressBar(maximum=0, textVisible=False, maximumHeight=6)
        layout.addWidget(self.status)
        layout.addWidget(self.busy)
        self.body = QtWidgets.QTextBrowser(openExternalLinks=False)
        layout.addWidget(self.body, 1)
        self.buttons = QtWidgets.QDialogButtonBox()
        self.start_button = self.buttons.addButton(
            "Start", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.buttons.addButton(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self._start)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.process = JsonProcess(self)
        self.process.finished.connect(self._on_estimates)
        self.process.failed.connect(self._on_failed)
        if estimates is not None:
            self._on_estimates(estimates)
        elif self.modules:
            self._start_estimates()
        else:
            self._render()

    # -- estimates -------------------------------------------------------------------------------
    def _start_estimates(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="tunegraph-estimate-")
        data = absolute_paths(self.graph, self.graph_path) if self.graph_path else self.graph
        path = Path(self._tmp) / "graph.tunegraph.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        args = ["estimate", str(path), "--json"]
        for module in self.modules:
            args += ["--only", module.name]
        self.process.start("app", args)
        self._render()

    def _on_estimates(self, entries) -> None:
        self._cleanup()
        for entry in entries or []:
            if isinstance(entry, dict) and isinstance(entry.get("estimate"), dict):
                self.estimates[entry.get("node_uuid") or entry.get("name")] = entry["estimate"]
        for module in self.modules:
            est = self.estimate_for(module)
            spec = module.spec
            if spec.resources.target == "cluster":
                if not self.cluster:  # the cluster's own capacity is checked when it starts
                    self.refusals[module.node_uuid] = scheduler.Refusal(
                        "its target is the cluster, and no Ray cluster is named", ADDRESS_HINT
                    )
                continue
            refusal = (
                scheduler.refusal(
                    est, self.gpus, spec.resources.gpu_count, spec.resources.device != "cpu"
                )
                if est
                else None
            )
            if refusal:
                self.refusals[module.node_uuid] = refusal
        self._render()

    def _on_failed(self, message: str) -> None:
        self._cleanup()
        self.estimate_error = message
        self._render()

    def estimate_for(self, module: ModuleResult) -> dict | None:
        return self.estimates.get(module.node_uuid) or self.estimates.get(module.name)

    @property
    def estimating(self) -> bool:
        return self.process.is_running()

    def startable(self) -> list[ModuleResult]:
        """Modules that Start would submit: compiled and not refused."""
        return [m for m in self.modules if m.node_uuid not in self.refusals]

    # -- rendering -------------------------------------------------------------------------------
    def _render(self) -> None:
        busy = self.estimating
        self.busy.setVisible(busy)
        count = len(self.startable())
        if busy:
            self.status.setText(
                f"Estimating memory and time for {len(self.modules)} run(s)… A model not yet "
                "run on this machine first gets a short speed check (seconds to a minute)."
            )
        elif self.estimate_error:
            error = self.estimate_error.rstrip()
            self.status.setText(
                f"Could not estimate: {error}{'' if error.endswith(('.', '!', '?')) else '.'}"
                " On Start the supervisor estimates each run again; a run it cannot estimate"
                " either is refused with the error, since no run is placed without an estimate."
            )
        else:
            self.status.setText(
                f"{count} run(s) ready to start." if count else "Nothing can start."
            )
        self.start_button.setText(f"Start {count} run{'s' if count != 1 else ''}")
        self.start_button.setEnabled(count > 0 and not busy)
        cards = [self._card(m) for m in self.modules]
        cards += [self._skipped_card(m) for m in self.skipped]
        self.body.setHtml(_STYLE + "".join(cards))

    def _card(self, module: ModuleResult) -> str:
        spec: JobSpec = module.spec
        est = self.estimate_for(module)
        rows = [
            ("Runs on", html.escape(target_text(spec, self.cluster))),
            ("Recipe", html.escape(recipe_text(spec))),
        ]
        if est is None:
            waiting = (
                "estimating…"
                if self.estimating
                else "not available: estimated again on Start, refused if that fails too"
            )
            rows.append(("Estimate", waiting))
        else:
            rows += estimate_rows(est, self.gpus)
        plan = self.templates.get(module.node_uuid)
        if plan is not None and not plan.problem:
            rows.append(
                ("Chat template", html.escape(plan.summary.removeprefix("Chat template: ")))
            )
        rows.append(("Exports", exports_text(spec)))
        refusal = self.refusals.get(module.node_uuid)
        head = f"<h3>{html.escape(module.name)}</h3>"
        if refusal:
            head += (
                f"<p class='bad'><b>Refused:</b> {html.escape(refusal.message)}. "
                f"{html.escape(refusal.hint or '')}</p>"
            )
        table = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div class='card'>{head}<table>{table}</table></div>"

    def _skipped_card(self, module: ModuleResult) -> str:
        items = "".join(f"<li>{html.escape(str(e))}</li>" for e in module.errors)
        return (
            f"<div class='card'><h3>{html.escape(module.name)}</h3><p class='bad'>Not started: "
            f"fix these first</p><ul>{items}</ul></div>"
        )

    # -- buttons ---------------------------------------------------------------------------------
    def _start(self) -> None:
        modules = self.startable()
        if not modules:
            return
        self.start_requested.emit(
            [m.spec for m in modules], [self.estimate_for(m) for m in modules]
        )
        self.accept()

    def done(self, result: int) -> None:  # noqa: D401 - Qt override: stop the helper on close
        self.process.cancel()
        self._cleanup()
        super().done(result)

    def _cleanup(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# -- text ----------------------------------------------------------------------------------------
def estimate_rows(est: dict, gpus: list | None = None) -> list[tuple[str, str]]:
    """(label, HTML) rows for one estimate in DESIGN.md's shape."""
    vram, t = est.get("vram_gib") or {}, est.get("time_s") or {}
    device = str(est.get("device") or "?")
    if device.startswith("cuda") and gpus:
        index = int(device.split(":")[1]) if ":" in device else 0
        gpu = next((g for g in gpus if g.index == index), None)
        if gpu:
            device += f" ({gpu.name}, {gpu.total_gib:.0f} GiB)"
    elif device == "cpu":
        device = "CPU (no NVIDIA GPU found: slow, but it works)"
    qlora = est.get("mode") == "qlora"
    need = vram.get("4bit") if qlora else vram.get("bf16")
    low, high = format_rough_duration(t.get("low")), format_rough_duration(t.get("high"))
    rows = [
        (
            "Parameters",
            f"{format_count(est.get('params'))} "
            f"({format_count(est.get('trainable_params'))} trainable with LoRA)",
        ),
        (
            "VRAM",
            f"~{need} GiB on {html.escape(device)} "
            f"<span class='dim'>(16-bit ~{vram.get('bf16')} GiB, 4-bit "
            f"~{vram.get('4bit')} GiB)</span>"
            + (
                f"<br><span class='dim'>{html.escape(vram_parts_text(est['vram_parts_gib']))}"
                "</span>"
                if est.get("vram_parts_gib")
                else ""
            ),
        ),
        (
            "4-bit (QLoRA)",
            ("<b>yes</b>" if qlora else "no")
            + f" — {html.escape(str(est.get('mode_reason') or ''))}",
        ),
        (
            "Time",
            f"{low} – {high}"
            + (
                f" <span class='dim'>({html.escape(str(est['time_basis']))})</span>"
                if est.get("time_basis")
                else ""
            ),
        ),
    ]
    rows_count = est.get("dataset_rows")
    data = f"{rows_count:,} rows" if isinstance(rows_count, int) else "unknown"
    if isinstance(rows_count, int) and rows_count < FEW_ROWS:
        data += (
            " <span class='warn'>⚠ under 1,000 examples: expect the model to pick up "
            "style more than knowledge</span>"
        )
    rows.append(("Dataset", data))
    others = [w for w in est.get("warnings") or [] if "1,000" not in w]
    if others:
        rows.append(
            (
                "Warnings",
                "<br>".join(f"<span class='warn'>⚠ {html.escape(w)}</span>" for w in others),
            )
        )
    return rows


def target_text(spec: JobSpec, cluster: str) -> str:
    """Where the run executes: "this workstation" or "cluster (ADDRESS)"."""
    if spec.resources.target != "cluster":
        return "this workstation"
    return f"cluster ({cluster})" if cluster else "cluster (none named)"


def recipe_text(spec: JobSpec) -> str:
    """The settings an analyst compares between runs, on one line."""
    t, lora = spec.training, spec.lora
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epoch(s)"
    data = ", ".join(Path(d.path).name for d in spec.datasets)
    return (
        f"{spec.base_model.source} on {data}; {length}, lr {format_setting(t.learning_rate)}, "
        f"batch {t.micro_batch_size}×{t.grad_accum}; LoRA r{lora.r}/α{lora.alpha} on "
        f"{', '.join(lora.target_modules)}"
    )


def exports_text(spec: JobSpec) -> str:
    e = spec.export
    parts = ["LoRA adapter folder"]
    if e.adapter_zip:
        parts.append("adapter ZIP (with tokenizer, chat template, model card)")
    if e.gguf:
        parts.append(f"GGUF bundle {html.escape(e.quant)} for Ollama / llama.cpp")
    if e.merged:
        parts.append("merged 16-bit model folder")
    if e.ollama_name:
        parts.append(f"Ollama model “{html.escape(e.ollama_name)}” (when ollama is installed)")
    return ", ".join(parts)


_STYLE = """<style>
.card { margin-bottom: 14px; }
h3 { margin: 6px 0 4px 0; }
th { text-align: left; padding: 2px 14px 2px 0; color: #a8adb5; font-weight: normal; }
td { padding: 2px 0; }
.bad { color: #ff7b7b; }
.warn { color: #f0c46e; }
.dim { color: #8a8f98; }
</style>"""
