"""A run's header line in its detail: the training method, and the stages of its chain as links.

"Starts from: <upstream name> (<short id>)" names the run a chained run starts from (its `upstream`),
"Feeds: <names>" the runs that start from this one; clicking one emits `openRequested(run_id)`.
`chain_links` is the Qt-free part: which runs to link, from the run and the runs the bridge knows.
"""

from __future__ import annotations

import html

from PySide6 import QtCore, QtWidgets

LINK = "run:"  # a link's href: run:<run id>


def short_id(run_id: str) -> str:
    """The random tail of a run id (20261122-190102-3fa9c1 → 3fa9c1), enough to tell runs apart."""
    return run_id.rsplit("-", 1)[-1]


def chain_links(run: dict, runs: dict[str, dict]) -> tuple[str | None, list[str]]:
    """The run a run starts from (None when it is not chained) and the runs that start from it
    (oldest first)."""
    downstream = [r for r in runs.values() if r.get("upstream") == run.get("id")]
    downstream.sort(key=lambda r: (r.get("created_at") or 0, r["id"]))
    return run.get("upstream") or None, [r["id"] for r in downstream]


class RunHeader(QtWidgets.QLabel):
    """The method and the chain links of one run."""

    openRequested = QtCore.Signal(str)  # noqa: N815 - a run id

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextBrowserInteraction)
        self.setOpenExternalLinks(False)
        self.setWordWrap(True)
        self.upstream: str | None = None
        self.downstream: list[str] = []
        self.linkActivated.connect(self._open)

    def set_run(self, run: dict, runs: dict[str, dict]) -> None:
        """Show the run's method and links to the stages before and after it."""
        self.upstream, self.downstream = chain_links(run, runs)
        parts = [f"Method: <b>{html.escape((run.get('method') or 'sft').upper())}</b>"]
        if self.upstream:
            parts.append("Starts from: " + self._link(self.upstream, runs))
        if self.downstream:
            parts.append("Feeds: " + ", ".join(self._link(rid, runs) for rid in self.downstream))
        text = " &nbsp;·&nbsp; ".join(parts)
        if text != self.text():
            self.setText(text)

    @staticmethod
    def _link(run_id: str, runs: dict[str, dict]) -> str:
        if run_id not in runs:  # deleted, or not indexed here: nothing to open
            return f"a run no longer listed ({html.escape(short_id(run_id))})"
        name = runs[run_id].get("name") or run_id
        return (
            f"<a href='{LINK}{html.escape(run_id)}' style='color:#6cb6ff'>{html.escape(name)}</a>"
            f" ({html.escape(short_id(run_id))})"
        )

    def _open(self, href: str) -> None:
        if href.startswith(LINK):
            self.openRequested.emit(href[len(LINK) :])
