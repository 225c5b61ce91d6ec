"""Dataset preview: stats of the selected Dataset node's file and its first rows rendered through
the base model's chat template, with the trained tokens highlighted, so a wrong template or mask
shows before any GPU time is spent. A data node (Generate, Filter, Deduplicate, Mix, Split) shows
the file its step made the same way, with a "Dropped" tab of what the step dropped and why
(app.data_node_preview), or says where the step stands while it is not made.

The first rows as they are in the file show at once (engine.plan.preview.head reads them here,
with plain json/csv and no tokenizer); the tokenized view and the stats follow from
`python -m engine.plan.preview`, whose tokenizer takes seconds to load."""

from __future__ import annotations

import html
import json
import logging

from PySide6 import QtCore, QtGui, QtWidgets

from app import data_node_preview as data_view
from app.canvas import Canvas
from app.node_factory import decl_of
from app.processes import JsonProcess
from app.raw_rows import head_html
from engine.plan.preview import dataset_spec, head
from engine.rundir import entry_module
from nodes.catalogue import FINE_TUNE
from nodes.graphfile import graph_dir, resolve_file, resolve_model_source
from nodes.recipes import STEP_OF

log = logging.getLogger(__name__)

DEFAULT_BASE = "builtin:tiny-llama"
DELAY_MS = 400
LARGE_FILE = (
    "A large .json or .parquet file is read whole, not line by line: its rows are shown "
    "tokenized only (“As the model sees them”)."
)
TRAINED_BG = "#1f5130"
PROMPT_FG = "#9aa0a8"
WARN_FG = "#f0c46e"
GOOD_FG = "#81c995"
BAD_FG = "#f28b82"
IDLE = "Select a Dataset or data node to see its rows as the model will see them."
PREVIEWED = ("Dataset", *STEP_OF)  # the node kinds whose rows the preview shows
# the method formats engine.plan.preview reports, by the name the user knows them
FORMAT_LABELS = {"preference": "preference pairs", "kto": "answers marked good or bad"}


class Histogram(QtWidgets.QWidget):
    """Token-length distribution as bars (bins from the preview report)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bins: list[list[int]] = []
        self.limit = 0
        self.setMinimumHeight(70)
        self.setToolTip("Token length of each example (after the chat template)")

    def set_bins(self, bins: list[list[int]], limit: int) -> None:
        self.bins, self.limit = bins, limit
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt override
        if not self.bins:
            return
        p = QtGui.QPainter(self)
        rect = self.rect().adjusted(2, 4, -2, -16)
        top = max(c for _, c in self.bins) or 1
        width = rect.width() / len(self.bins)
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        p.setBrush(QtGui.QColor(88, 166, 112))
        for i, (_, count) in enumerate(self.bins):
            h = rect.height() * count / top
            p.drawRect(QtCore.QRectF(rect.left() + i * width + 1, rect.bottom() - h, width - 2, h))
        p.setPen(QtGui.QColor(154, 160, 168))
        p.drawText(
            QtCore.QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
            QtCore.Qt.AlignmentFlag.AlignLeft,
            "0",
        )
        step = self.bins[1][0] if len(self.bins) > 1 else 1
        end = self.bins[-1][0] + step
        p.drawText(
            QtCore.QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
            QtCore.Qt.AlignmentFlag.AlignRight,
            f"{end} tokens",
        )
        p.end()


class DatasetPreview(QtWidgets.QWidget):
    """Follows the canvas selection; previews one Dataset node at a time."""

    def __init__(self, canvas: Canvas, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.node = None
        self.request: dict | None = None
        self.report: dict | None = None
        self.head: dict | None = None  # the first rows as in the file, shown before the report
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        self.title = QtWidgets.QLabel()
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self.stats = QtWidgets.QLabel()
        self.stats.setWordWrap(True)
        self.stats.setTextFormat(QtCore.Qt.TextFormat.RichText)
        layout.addWidget(self.stats)
        self.histogram = Histogram()
        layout.addWidget(self.histogram)
        self.rows = QtWidgets.QTextBrowser()  # as the model sees them (the helper's report)
        self.raw = QtWidgets.QTextBrowser()  # as they are in the file (at once)
        self.views = QtWidgets.QTabWidget(documentMode=True)
        self.views.addTab(self.rows, "As the model sees them")
        self.views.addTab(self.raw, "As in the file")
        self.dropped = QtWidgets.QTextBrowser()  # a data node's dropped rows, with their rule
        self.dropped_index = self.views.addTab(self.dropped, "Dropped")
        self.views.tabBarClicked.connect(self._on_tab_clicked)
        self._tab_chosen = False  # the user picked a tab: a report arriving does not switch
        layout.addWidget(self.views, 1)
        self.process = JsonProcess(self)
        self.process.finished.connect(self._on_report)
        self.process.failed.connect(self._on_failed)
        self.timer = QtCore.QTimer(self, singleShot=True, interval=DELAY_MS)
        self.timer.timeout.connect(self._run)
        canvas.selection_changed.connect(self._on_selection)
        canvas.node_edited.connect(self._on_edited)
        self._idle(IDLE)
        self.data_view: data_view.DataNodeView | None = None  # the selected data node's step

    # -- state -----------------------------------------------------------------------------------
    def _idle(self, text: str) -> None:
        self.title.setText(f"<span style='color:{PROMPT_FG}'>{html.escape(text)}</span>")
        self.stats.clear()
        self.histogram.set_bins([], 0)
        self.histogram.setVisible(False)
        self.rows.clear()
        self.raw.clear()
        self.views.setVisible(False)

    def _on_selection(self, nodes: list) -> None:
        datasets = [n for n in nodes if decl_of(n) is not None and decl_of(n).kind in PREVIEWED]
        if len(datasets) == 1 and datasets[0] is not self.node:
            self.show_node(datasets[0])

    def _on_edited(self, node, _name: str) -> None:
        if node is self.node or (
            self.node is not None
            and decl_of(node) is not None
            and decl_of(node).kind in ("BaseModel", "TrainingConfig")
        ):
            self.timer.start()

    def show_node(self, node) -> None:
        """Preview `node` (a Dataset node): its first rows now, the tokenized view after."""
        self.node = node
        self.timer.stop()
        self._run()

    def _on_tab_clicked(self, _index: int) -> None:
        self._tab_chosen = True

    def stop(self) -> None:
        self.timer.stop()
        self.process.cancel()

    # -- the helper process -----------------------------------------------------------------------
    def build_request(self, node) -> dict:
        """What engine.plan.preview needs: dataset, the base model of a Fine-Tune node it feeds."""
        base = graph_dir(self.canvas.path)
        if self.data_view is not None:  # a data node's made file, read as any dataset
            dataset = {"path": self.data_view.path, "format": "auto", "columns": {}, "max_rows": 0}
        else:
            dataset = {p.name: node.get_property(p.name) for p in decl_of(node).parameters}
            dataset["path"] = resolve_file(str(dataset.get("path") or ""), base)
        request = {
            "dataset": dataset,
            "base_model": {"source": DEFAULT_BASE},
            "rows": 3,
            "max_seq_length": 0,
            "note": "",
        }
        module = next(
            (m for m in self.canvas.nodes(FINE_TUNE.kind) if node in self.canvas.upstream(m)), None
        )
        feeders = (
            {p.name(): ns for p, ns in module.connected_input_nodes().items()} if module else {}
        )
        if feeders.get("base_model"):
            model = feeders["base_model"][0]
            request["base_model"] = {
                p.name: model.get_property(p.name) for p in decl_of(model).parameters
            }
            request["base_model"]["source"] = resolve_model_source(
                str(request["base_model"]["source"] or ""), base
            )
        else:
            request["note"] = (
                "Not connected to a Fine-Tune node with a base model: showing "
                f"{DEFAULT_BASE}'s chat template."
            )
        if feeders.get("training_config"):
            seq = feeders["training_config"][0].get_property("max_seq_length")
            request["max_seq_length"] = int(seq) if str(seq).isdigit() else 0
        return request

    def _run(self) -> None:
        node = self.node
        if node is None or node.id not in {n.id for n in self.canvas.nodes()}:
            self._idle(IDLE)
            return
        self.data_view = None
        if decl_of(node).kind in STEP_OF:  # a data node: the file its step made, if made
            view = data_view.view_of(self.canvas.result.specs, node.get_property("uuid"))
            if not view.made:
                self._idle(data_view.status_text(node.name(), view))
                return
            self.data_view = view
        elif not str(node.get_property("path") or "").strip():
            self._idle(f"“{node.name()}” has no file yet: choose one in Properties.")
            return
        self.request = self.build_request(node)
        self.report = None
        try:
            self.head = head(dataset_spec(self.request["dataset"]))
        except (TypeError, ValueError) as err:  # a node value of the wrong type: the report says
            self.head = {"rows": [], "format": None, "more": False, "error": None}
            log.info("no quick head for %s: %s", node.name(), err)
        if self.head["error"]:  # missing, unreadable, a malformed line among the first ones
            self.process.cancel()
            err = self.head["error"]
            self._idle(f"{node.name()}: {err['message']} {err.get('hint') or ''}".strip())
            return
        self._show_head(node)
        self.process.start(entry_module("preview"), [json.dumps(self.request)])

    def _show_head(self, node) -> None:
        """The first rows as in the file, while the helper tokenizes."""
        base = self.request["base_model"].get("source", DEFAULT_BASE)
        path = self.request["dataset"]["path"]
        self.title.setText(
            f"<b>{html.escape(node.name())}</b> <span style='color:{PROMPT_FG}'>— "
            f"{html.escape(path)}</span>"
        )
        self.stats.setText(
            f"<span style='color:{PROMPT_FG}'>Counting tokens with {html.escape(str(base))}'s "
            "tokenizer and chat template…</span>"
        )
        self.histogram.setVisible(False)
        self.rows.setHtml(
            f"<p style='color:{PROMPT_FG}'>Loading {html.escape(str(base))}'s tokenizer…</p>"
        )
        rows = self.head["rows"]
        self.raw.setHtml(
            head_html(rows, self.head["more"], self.head["format"])
            if rows
            else f"<p style='color:{PROMPT_FG}'>{LARGE_FILE}</p>"
        )
        self._show_dropped()
        self.views.setVisible(True)
        if not self._tab_chosen:
            self.views.setCurrentWidget(self.raw if rows else self.rows)

    def _show_dropped(self) -> None:
        """A data node's counts under the title and its dropped rows in their tab."""
        view = self.data_view
        self.views.setTabVisible(self.dropped_index, view is not None)
        if view is None:
            return
        self.title.setText(self.title.text() + self._counts_line())
        self.dropped.setHtml(data_view.dropped_html(view.dropped, PROMPT_FG))

    def _counts_line(self) -> str:
        """A data node's counts (in, kept, dropped by rule) as a line under the title."""
        counts = data_view.counts_html(self.data_view.counts) if self.data_view else ""
        return f"<br><span style='color:{PROMPT_FG}'>{counts}</span>" if counts else ""

    def _on_failed(self, message: str) -> None:
        self._idle(f"Preview failed: {message}")

    def _on_report(self, report: dict) -> None:
        self.show_report(report)

    # -- rendering --------------------------------------------------------------------------------
    def show_report(self, report: dict) -> None:
        """Render a preview report (the shape engine.plan.preview prints)."""
        self.report = report
        name = self.node.name() if self.node is not None else "Dataset"
        if report.get("error"):
            err = report["error"]
            self._idle(f"{name}: {err.get('message')} {err.get('hint') or ''}".strip())
            return
        note = (self.request or {}).get("note") or ""
        base = ((self.request or {}).get("base_model") or {}).get("source", DEFAULT_BASE)
        self.title.setText(
            f"<b>{html.escape(name)}</b> <span style='color:{PROMPT_FG}'>as seen by "
            f"{html.escape(str(base))}</span>"
            + (f"<br><span style='color:{PROMPT_FG}'>{html.escape(note)}</span>" if note else "")
            + self._counts_line()
        )
        self.stats.setText(stats_html(report))
        tokens = report.get("tokens") or {}
        self.histogram.set_bins(tokens.get("histogram") or [], report.get("max_seq_length") or 0)
        self.histogram.setVisible(bool(tokens))
        self.rows.setHtml(rows_html(report.get("preview") or []))
        if self.head is None or not self.head["rows"]:
            self.raw.setHtml(f"<p style='color:{PROMPT_FG}'>{LARGE_FILE}</p>")
        self.views.setVisible(True)
        if not self._tab_chosen:
            self.views.setCurrentWidget(self.rows)


def stats_html(report: dict) -> str:
    tokens = report.get("tokens") or {}
    fmt = FORMAT_LABELS.get(report.get("format"), report.get("format"))
    parts = [f"<b>{report.get('rows', 0):,}</b> rows · format <b>{fmt}</b>"]
    if tokens and report.get("format") == "preference":
        parts.append(
            f"{tokens['min']}–{tokens['max']} tokens per pair (the prompt with its longer "
            f"answer; mean {tokens['mean']:.0f}); ≈ {tokens['trained_mean']:.0f} trained per "
            "pair (both answers)"
        )
    elif tokens:
        parts.append(
            f"{tokens['min']}–{tokens['max']} tokens per row (mean "
            f"{tokens['mean']:.0f}), of which ≈ {tokens['trained_mean']:.0f} trained"
        )
    truncated, limit = report.get("truncated_rows") or 0, report.get("max_seq_length")
    parts.append(
        f"<span style='color:{WARN_FG}'>{truncated} rows longer than {limit} tokens will be "
        "truncated</span>"
        if truncated
        else f"no row is longer than {limit} tokens"
    )
    parts += [
        f"<span style='color:{WARN_FG}'>⚠ {html.escape(w)}</span>"
        for w in report.get("warnings") or []
    ]
    return "<br>".join(parts)


def rows_html(preview: list[dict]) -> str:
    """Rows as HTML: trained text on green, prompt text grey, special tokens kept visible.
    Preference pairs show their prompt once and chosen vs rejected side by side; KTO rows their
    completion with its good or bad label."""
    kinds = {row.get("kind", "sft") for row in preview}
    if kinds & {"preference", "kto"}:
        legend = (
            "Green = trained tokens: the answer the loss is computed on, after the chat "
            "template; grey = the prompt, shown once."
        )
    else:
        legend = (
            "Green = trained tokens (what the model learns to write); grey = prompt, not trained."
        )
    blocks = [f"<p style='color:{PROMPT_FG}'>{legend}</p>"]
    for number, row in enumerate(preview, 1):
        kind = row.get("kind", "sft")
        if kind == "preference":
            blocks.append(_pair_html(number, row))
        elif kind == "kto":
            blocks.append(_kto_html(number, row))
        else:
            blocks.append(_sft_html(number, row))
    return "".join(blocks)


def _segments_html(segments: list) -> str:
    return "".join(
        f"<span style='background:{TRAINED_BG};color:#e9f7ee'>{_text(t)}</span>"
        if trained
        else f"<span style='color:{PROMPT_FG}'>{_text(t)}</span>"
        for t, trained in segments
    )


def _pre(body: str) -> str:
    return f"<pre style='white-space:pre-wrap;font-family:monospace'>{body}</pre>"


def _sft_html(number: int, row: dict) -> str:
    head = f"Example {number} · {row.get('tokens')} tokens"
    if row.get("truncated"):
        head += f" · <span style='color:{WARN_FG}'>truncated</span>"
    return f"<p><b>{head}</b></p>" + _pre(_segments_html(row.get("segments") or []))


def _row_head(title: str, row: dict) -> str:
    head = f"{title} · prompt {row.get('prompt_tokens')} tokens"
    if row.get("dropped"):
        head += (
            f" · <span style='color:{WARN_FG}'>left out: the prompt alone fills the max "
            "sequence length</span>"
        )
    elif row.get("truncated"):
        head += f" · <span style='color:{WARN_FG}'>truncated</span>"
    return f"<p><b>{head}</b></p>" + _pre(
        f"<span style='color:{PROMPT_FG}'>{_text(row.get('prompt') or '')}</span>"
    )


def _answer_head(label: str, colour: str, answer: dict) -> str:
    figures = f"{answer.get('trained', 0)} of {answer.get('tokens', 0)} tokens trained"
    if answer.get("truncated"):
        figures += f" · <span style='color:{WARN_FG}'>cut at the max length</span>"
    return f"<b style='color:{colour}'>{label}</b> <span style='color:{PROMPT_FG}'>{figures}</span>"


def _pair_html(number: int, row: dict) -> str:
    answers = row.get("answers") or {}
    cells = "".join(
        f"<td width='50%' valign='top'>{_answer_head(label, colour, answers.get(key) or {})}"
        f"{_pre(_segments_html((answers.get(key) or {}).get('segments') or []))}</td>"
        for key, label, colour in (
            ("chosen", "Chosen", GOOD_FG),
            ("rejected", "Rejected", BAD_FG),
        )
    )
    return (
        _row_head(f"Pair {number}", row)
        + f"<table width='100%' cellspacing='6' cellpadding='4'><tr>{cells}</tr></table>"
    )


def _kto_html(number: int, row: dict) -> str:
    answer = (row.get("answers") or {}).get("completion") or {}
    good = bool(row.get("label"))
    label, colour = ("Good answer", GOOD_FG) if good else ("Bad answer", BAD_FG)
    return (
        _row_head(f"Example {number}", row)
        + _answer_head(label, colour, answer)
        + _pre(_segments_html(answer.get("segments") or []))
    )


def _text(text: str) -> str:
    return html.escape(text)
