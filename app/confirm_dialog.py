"""The run confirmation: totals, how the runs will be scheduled and which of them share one copy of
their base model (when Settings.share_base is on) at the top, then for each run where it runs
(this workstation or the Ray cluster), parameters, memory and device, the 4-bit decision and why,
the time range, dataset rows (with the under-1,000 warning), the chat template it trains with and
why, and what gets exported.

Estimates stream in from a helper process in the engine's Python (app.estimate_stream: the UI
never imports torch), one run at a time: each card fills as its estimate arrives, under a
progress bar; estimates already made for the same runs (and unchanged dataset files) come from
the app's cache at once. They may also be passed in. "Start" emits
`start_requested(specs, estimates)` for the runs that can start; "Cancel" stops the helper and
submits nothing. A run that can never fit this machine is shown as refused, and so is one whose
base model has no chat template while its node asks for the model's own (it would fail as it
starts; the card says what to pick).
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.confirm_cards import (
    STYLE,
    estimate_rows,
    exports_text,
    recipe_text,
    sweep_text,
    target_text,
)
from app.confirm_plan import (
    PlannedRun,
    machine_now,
    outcomes,
    schedule_sentence,
    sharing_groups,
    sharing_lines,
    totals_text,
)
from app.estimate_stream import CACHE, EstimateStream
from engine import hardware, settings
from engine.cluster.executor import ADDRESS_HINT, resolve_address
from engine.models.template_choice import TemplatePlan, template_plan
from engine.spec import JobSpec
from engine.supervisor import scheduler
from nodes.catalogue import FINE_TUNE
from nodes.results import ModuleResult


class ConfirmRunsDialog(QtWidgets.QDialog):
    start_requested = QtCore.Signal(list, list)  # specs, estimates (dict or None each)
    refused = QtCore.Signal(dict)  # node uuid -> why that run can never start here

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
        self.setWindowTitle(f"Start runs — {Path(graph_path).name}" if graph_path else "Start runs")
        self.resize(760, 620)
        self.modules = [m for m in modules if m.spec is not None]
        self.skipped = list(skipped)
        self.graph = graph
        self.estimates: dict[str, dict] = {}  # node_uuid -> estimate
        self.errors: dict[str, str] = {}  # node_uuid -> why its estimate failed
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
        self.machine = machine_now(self.gpus)
        self.share_base = settings.load_or_defaults().share_base
        self.names = fine_tune_names(graph) | {m.node_uuid: m.name for m in self.modules}
        self.cluster = resolve_address()  # TUNEGRAPH_RAY_ADDRESS or Settings; "" when none
        self.pending: list[ModuleResult] = []  # the runs the helper estimates, in its order
        self.answered = 0
        layout = QtWidgets.QVBoxLayout(self)
        self.totals = QtWidgets.QLabel(textFormat=QtCore.Qt.TextFormat.RichText)
        font = self.totals.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        self.totals.setFont(font)
        self.schedule = QtWidgets.QLabel(wordWrap=True)
        self.sharing = QtWidgets.QLabel(wordWrap=True, textFormat=QtCore.Qt.TextFormat.PlainText)
        self.sharing.setToolTip(
            "One training process holds the base model once for these runs; each run keeps its "
            "own adapter, optimizer, data order and results. Turn it off in Settings, or with "
            "“Share base” on a Fine-Tune node."
        )
        self.progress = QtWidgets.QProgressBar(textVisible=True, maximumHeight=18)
        self.status = QtWidgets.QLabel(wordWrap=True)
        for widget in (self.totals, self.schedule, self.sharing, self.progress, self.status):
            layout.addWidget(widget)
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
        self.stream = EstimateStream(self)
        self.stream.estimated.connect(self._on_estimated)
        self.stream.finished.connect(self._render)
        self.stream.failed.connect(self._on_failed)
        if estimates is not None:
            self._on_estimates(estimates)
        else:
            self._start_estimates()

    # -- estimates -------------------------------------------------------------------------------
    def _start_estimates(self) -> None:
        """Take what the cache knows; estimate the rest in the helper (none started when the
        cache knows every run)."""
        for module in self.modules:
            if module.node_uuid in self.refusals:  # refused for its base model: no estimate
                continue
            cached = CACHE.get(module.spec)
            if cached is not None:
                self._judge(module, cached)
            else:
                self.pending.append(module)
        if self.pending:
            self.stream.start([m.spec for m in self.pending])
        self._render()

    def _on_estimated(self, index: int, entry: dict) -> None:
        module = self.pending[index]
        self.answered += 1
        if isinstance(entry.get("estimate"), dict):
            self._judge(module, entry["estimate"])
        else:
            self.errors[module.node_uuid] = str(entry.get("error") or "no answer")
        self._render()

    def _on_estimates(self, entries) -> None:
        """Estimates passed in, in the `estimate --json` shape."""
        by_key = {}
        for entry in entries or []:
            if isinstance(entry, dict) and isinstance(entry.get("estimate"), dict):
                by_key[entry.get("node_uuid") or entry.get("name")] = entry["estimate"]
        for module in self.modules:
            self._judge(module, by_key.get(module.node_uuid) or by_key.get(module.name))
        self._render()

    def _judge(self, module: ModuleResult, est: dict | None) -> None:
        """Keep the run's estimate and refuse the run when it can never be placed here."""
        if est is not None:
            self.estimates[module.node_uuid] = est
        spec = module.spec
        if spec.resources.target == "cluster":
            if not self.cluster:  # the cluster's own capacity is checked when it starts
                self.refusals[module.node_uuid] = scheduler.Refusal(
                    "its target is the cluster, and no Ray cluster is named", ADDRESS_HINT
                )
            return
        refusal = (
            scheduler.refusal(
                est, self.gpus, spec.resources.gpu_count, spec.resources.device != "cpu"
            )
            if est
            else None
        )
        if refusal:
            self.refusals[module.node_uuid] = refusal

    def _on_failed(self, message: str) -> None:
        self.stream.cancel()
        self.estimate_error = message
        self._render()

    def refusal_texts(self) -> dict[str, str]:
        """Why each refused run can never start here, with its hint, by Fine-Tune node uuid."""
        return {
            u: f"{r.message}. {r.hint}" if r.hint else r.message for u, r in self.refusals.items()
        }

    def estimate_for(self, module: ModuleResult) -> dict | None:
        return self.estimates.get(module.node_uuid)

    @property
    def estimating(self) -> bool:
        return self.stream.is_running()

    def startable(self) -> list[ModuleResult]:
        """Runs that Start would submit: compiled and not refused."""
        return [m for m in self.modules if m.node_uuid not in self.refusals]

    def planned(self) -> list[PlannedRun]:
        return [
            PlannedRun(m.name, m.spec, self.estimate_for(m), m.node_uuid in self.refusals)
            for m in self.modules
        ]

    # -- rendering -------------------------------------------------------------------------------
    def _render(self) -> None:
        self.refused.emit(self.refusal_texts())
        busy = self.estimating
        count = len(self.startable())
        planned = self.planned()
        # once the estimates are in: the runs that will train on one copy of their base
        groups = sharing_groups(planned) if self.share_base and not busy else []
        self.totals.setText(totals_text(planned) if planned else "<b>No run to start</b>")
        self.schedule.setText(
            schedule_sentence(outcomes(planned, self.machine, self.names, groups), self.machine)
        )
        self.sharing.setText("\n".join(sharing_lines(planned, groups)))
        self.sharing.setVisible(bool(groups))
        self.progress.setVisible(busy)
        if busy:
            total = len(self.pending)
            self.progress.setMaximum(total)
            self.progress.setValue(self.answered)
            self.progress.setFormat(f"estimating {min(self.answered + 1, total)} of {total}…")
            self.status.setText(
                ("Loading the training engine (a few seconds). " if not self.answered else "")
                + "A model not yet run on this machine first gets a short speed check (seconds "
                "to a minute)."
            )
        elif self.estimate_error:
            error = self.estimate_error.rstrip()
            self.status.setText(
                f"Could not estimate: {error}{'' if error.endswith(('.', '!', '?')) else '.'}"
                " On Start the supervisor estimates each run again; a run it cannot estimate"
                " either is refused with the error, since no run is placed without an estimate."
            )
        else:  # the totals and the Start button say how many can start
            self.status.setText("" if count else "Nothing can start: see the cards below.")
        self.status.setVisible(bool(self.status.text()))
        plural = "s" if count != 1 else ""
        left_out = len(self.skipped) + len(self.modules) - count  # with errors, or refused
        self.start_button.setText(
            f"Run the {count} valid Fine-Tune node{plural}"
            if left_out
            else f"Start {count} run{plural}"
        )
        self.start_button.setEnabled(count > 0 and not busy)
        cards = [self._card(m) for m in self.modules]
        cards += [self._skipped_card(m) for m in self.skipped]
        bar = self.body.verticalScrollBar()
        scrolled = bar.value()  # a card filling in must not move what the user reads
        self.body.setHtml(STYLE + "".join(cards))
        bar.setValue(scrolled)

    def _card(self, module: ModuleResult) -> str:
        spec: JobSpec = module.spec
        est = self.estimate_for(module)
        rows = [
            ("Runs on", html.escape(target_text(spec, self.cluster))),
            ("Recipe", html.escape(recipe_text(spec))),
        ]
        if spec.sweep is not None:
            rows.append(("Sweep", html.escape(sweep_text(spec))))
        if spec.data_steps:  # data recipe nodes: built before the run starts
            from engine.store.diff import recipe_line

            made = "; made first, in a CPU slot (what is made already is reused)"
            rows.append(("Data", html.escape(recipe_line(spec.data_steps) + made)))
        if spec.upstream_node:
            upstream = self.names.get(spec.upstream_node, "another Fine-Tune node")
            rows.append(("Starts from", f"the result of “{html.escape(upstream)}”"))
        if est is not None:
            rows += estimate_rows(est, self.gpus)
        elif module.node_uuid in self.errors:
            rows.append(
                (
                    "Estimate",
                    f"<span class='warn'>could not estimate: "
                    f"{html.escape(self.errors[module.node_uuid])}</span> "
                    "<span class='dim'>(estimated again on Start, refused if that fails too)"
                    "</span>",
                )
            )
        elif module.node_uuid in self.refusals:
            pass  # refused before any estimate: the reason is the card's head
        else:
            waiting = (
                "estimating…"
                if self.estimating
                else "not available: estimated again on Start, refused if that fails too"
            )
            rows.append(("Estimate", waiting))
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
        self.stream.cancel()
        super().done(result)


def fine_tune_names(graph: dict) -> dict[str, str]:
    """Fine-Tune node uuid -> node name, from a serialized graph (a chained run names the node
    it starts from by its uuid)."""
    names = {}
    for node in (graph or {}).get("nodes", {}).values():
        if isinstance(node, dict) and node.get("type_") == FINE_TUNE.type_:
            uuid = (node.get("custom") or {}).get("uuid")
            if uuid:
                names[uuid] = str(node.get("name") or "")
    return names
