"""A Fine-Tune node shows its runs (issue 20): the state pill, progress and loss above the node
follow the newest run the node started (through the window's own RunBridge over a real store,
with synthetic event logs, and once with a real tiny run through the supervisor); a failed run
says why; a double-click opens the run; Run and Duplicate appear on hover and act. The run
detail's samples of `builtin:tiny-llama` say that the random test model writes nonsense."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from NodeGraphQt.qgraphics.pipe import PipeItem  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from app.node_runs import runs_by_node, summarize  # noqa: E402
from app.run_detail import RunDetail  # noqa: E402
from app.run_views import install_run_views  # noqa: E402
from engine.spec import BaseModelSpec  # noqa: E402
from engine.store.index import Store  # noqa: E402
from tests.app_helpers import (  # noqa: E402
    gc_on_the_gui_thread,  # noqa: F401
    live_main_window_session,
    main_window_session,
)
from tests.helpers import make_graph  # noqa: E402
from tests.synthetic_runs import SyntheticRun, make_spec  # noqa: E402

WAIT_MS = 5000
LEFT = QtCore.Qt.MouseButton.LeftButton


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window_session(qtbot, tmp_path)


def open_graph(qtbot, window, folder, base: str | None = "builtin:tiny-llama"):
    """The window shown at 1400×900 with a one-node graph in view; returns the Fine-Tune node."""
    window.open_file(make_graph(folder, {"tiny": {"max_steps": 40}}, base=base))
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    viewport, size = window.canvas.viewer.viewport(), None
    while size != viewport.size():  # the docks take their first sizes just after showing
        size = viewport.size()
        qtbot.wait(20)
    window.canvas.fit_all()
    return window.canvas.node_by_name("tiny")


def node_run(store: Store, node, name: str = "tiny", **base) -> SyntheticRun:
    """A synthetic run started from `node` (its spec carries the node's uuid, as compiled)."""
    spec = make_spec(name)
    spec.node_uuid = node.get_property("uuid")
    if base:
        spec.base_model = BaseModelSpec(**base)
    return SyntheticRun(store, spec)


def card_of(window, node):
    return window.node_runs.items_of(node).card


def on_viewport(window, item, fx: float = 0.5, fy: float = 0.5) -> QtCore.QPoint:
    """Where a point of a scene item (fractions of its bounding box) is on the canvas widget."""
    rect = item.sceneBoundingRect()
    point = QtCore.QPointF(rect.left() + rect.width() * fx, rect.top() + rect.height() * fy)
    return window.canvas.viewer.mapFromScene(point)


def mouse(window, kind: str, pos: QtCore.QPoint, button=QtCore.Qt.MouseButton.NoButton) -> None:
    """A real mouse event on the canvas widget (QGraphicsView dispatches it to the scene's items
    like any other). Its global position is the widget's own mapping: the scene finds the items
    under the pointer by that position, and QTest's differs from it on the offscreen platform."""
    viewport = window.canvas.viewer.viewport()
    kinds = {
        "move": QtCore.QEvent.Type.MouseMove,
        "press": QtCore.QEvent.Type.MouseButtonPress,
        "release": QtCore.QEvent.Type.MouseButtonRelease,
        "double": QtCore.QEvent.Type.MouseButtonDblClick,
    }
    held = button if kind in ("press", "double") else QtCore.Qt.MouseButton.NoButton
    event = QtGui.QMouseEvent(
        kinds[kind],
        QtCore.QPointF(pos),
        QtCore.QPointF(viewport.mapToGlobal(pos)),
        button,
        held,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )
    QtWidgets.QApplication.sendEvent(viewport, event)


def click(window, pos: QtCore.QPoint) -> None:
    mouse(window, "move", pos)
    mouse(window, "press", pos, LEFT)
    mouse(window, "release", pos, LEFT)


def double_click(window, pos: QtCore.QPoint) -> None:
    click(window, pos)
    mouse(window, "double", pos, LEFT)
    mouse(window, "release", pos, LEFT)


def test_the_pill_follows_a_run_from_queued_through_training_to_completed(
    qtbot, window, store, tmp_path
):
    node = open_graph(qtbot, window, tmp_path)
    card = card_of(window, node)
    assert not card.isVisible()  # no run yet
    run = node_run(store, node).status("queued")
    qtbot.waitUntil(lambda: card.isVisible() and card.pill.endswith("queued"), timeout=WAIT_MS)
    assert card.progress is None and card.colour.name() == "#7a8290"  # the run panel's grey
    assert card.detail == "next in queue"  # where it stands, as the run panel says it
    assert card.y() + card.boundingRect().bottom() < 0  # above the node
    run.status("starting").status("training", device="cpu").metrics(10, 40)
    qtbot.waitUntil(lambda: card.pill.endswith("training"), timeout=WAIT_MS)
    loss = store.run_json(run.id)["metrics"]["loss"]
    assert card.progress == pytest.approx(0.25)
    assert card.detail == f"step 10/40 · loss {loss:.3g}"
    assert card.colour.name() == "#2f9e6e"
    run.metrics(30, 40, ingest=False)  # the bridge ingests live runs itself
    qtbot.waitUntil(lambda: card.progress == 1.0, timeout=WAIT_MS)
    run.evaluate(1.3125).status("evaluating").status("completed")
    qtbot.waitUntil(lambda: card.pill.endswith("completed"), timeout=WAIT_MS)
    loss = store.run_json(run.id)["metrics"]["loss"]
    assert card.text() == f"✓ completed · loss {loss:.3g} · eval 1.31"
    assert card.progress is None  # the bar is for live runs only
    run.close()


def test_a_failed_run_shows_its_reason_and_earlier_runs_are_counted(qtbot, window, store, tmp_path):
    node = open_graph(qtbot, window, tmp_path)
    first = node_run(store, node)
    first.status("queued").status("starting").status("training").metrics(40, 40)
    first.status("completed")
    second = node_run(store, node).status("queued").status("starting")
    second.worker.emit(
        "error",
        **{
            "class": "DataError",
            "message": "chats.jsonl:12: no assistant turn",
            "hint": "Every row needs an assistant answer.",
        },
    )
    second.status("failed", reason="DataError")
    card = card_of(window, node)
    qtbot.waitUntil(lambda: card.pill.endswith("failed"), timeout=WAIT_MS)
    assert card.detail == "chats.jsonl:12: no assistant turn" and card.tone == "error"
    assert card.earlier == "+1 earlier"
    assert "Every row needs an assistant answer." in card.toolTip()
    assert window.node_runs.runs_of(node)[0]["id"] == second.id  # the newest is shown
    for run in (first, second):
        run.close()


def test_double_click_on_the_node_or_its_card_opens_its_newest_run(qtbot, window, store, tmp_path):
    node = open_graph(qtbot, window, tmp_path)
    old = node_run(store, node).status("queued").status("cancelled")
    new = node_run(store, node).status("queued")
    card = card_of(window, node)
    qtbot.waitUntil(lambda: card.earlier == "+1 earlier", timeout=WAIT_MS)
    views = window.run_views
    double_click(window, on_viewport(window, node.view, 0.8, 0.6))
    qtbot.waitUntil(lambda: views.tabs.count() == 2, timeout=WAIT_MS)
    detail = views.tabs.currentWidget()
    assert isinstance(detail, RunDetail) and detail.run_id == new.id
    assert views.views_dock.isVisible()
    views.close_tab(1)
    # on the card, where a pipe runs beneath it: NodeGraphQt would grab (and detach) that pipe
    wired = window.canvas.to_dict()["connections"]
    viewer = window.canvas.viewer
    over_pipe = [
        p
        for p in (on_viewport(window, card, i / 20, 0.4) for i in range(1, 20))
        if any(isinstance(item, PipeItem) for item in viewer.items(p))
    ]
    assert over_pipe, "the test graph has no pipe under the card"
    double_click(window, over_pipe[0])
    qtbot.waitUntil(lambda: views.tabs.count() == 2, timeout=WAIT_MS)
    assert views.tabs.currentWidget().run_id == new.id
    assert window.canvas.to_dict()["connections"] == wired
    for run in (old, new):
        run.close()


def test_hover_shows_run_and_duplicate_which_act_on_that_node(qtbot, window, tmp_path):
    node = open_graph(qtbot, window, tmp_path)
    buttons = window.node_runs.items_of(node).buttons
    assert not buttons.isVisible()
    mouse(window, "move", on_viewport(window, node.view, 0.5, 0.6))
    assert buttons.isVisible() and buttons.run.isEnabled()
    mouse(window, "move", on_viewport(window, buttons.run))  # across the gap to a button
    qtbot.wait(500)  # longer than the hide delay
    assert buttons.isVisible() and buttons.run.hovered
    click(window, on_viewport(window, buttons.run))
    dialog = window.confirm_dialog
    assert dialog is not None and [m.name for m in dialog.modules] == ["tiny"]
    dialog.reject()
    click(window, on_viewport(window, buttons.duplicate))
    modules = window.canvas.nodes("FineTune")
    assert len(modules) == 2
    copy = next(m for m in modules if m is not node)
    assert copy.get_property("uuid") != node.get_property("uuid")
    assert len(window.canvas.upstream(copy)) == len(window.canvas.upstream(node))
    mouse(window, "move", QtCore.QPoint(5, 5))  # away from every node
    assert buttons.isVisible()  # for a moment: the pointer may be on its way to them
    qtbot.waitUntil(lambda: not buttons.isVisible(), timeout=WAIT_MS)


def test_run_on_hover_is_disabled_while_the_node_has_errors(qtbot, window, tmp_path):
    node = open_graph(qtbot, window, tmp_path, base=None)  # no base model connected
    buttons = window.node_runs.items_of(node).buttons
    mouse(window, "move", on_viewport(window, node.view, 0.5, 0.6))
    assert buttons.isVisible()
    assert not buttons.run.isEnabled() and "fix the errors" in buttons.run.toolTip()
    click(window, on_viewport(window, buttons.run))
    assert window.confirm_dialog is None
    badge = window.canvas._decorations[node.id].badge
    assert not buttons.sceneBoundingRect().intersects(badge.sceneBoundingRect())


def test_summaries_of_every_ending():
    def run(state, **fields):
        return {"id": "20261122-190102-3fa9c1", "name": "x", "state": state, **fields}

    metrics = {"loss": 0.98765, "eval_loss": None}
    assert summarize(run("cancelled", step=7, max_steps=40)).detail == "at step 7/40"
    refused = summarize(run("refused", error={"message": "needs ~40.0 GiB"}))
    assert (refused.detail, refused.tone) == ("needs ~40.0 GiB", "error")
    missing = summarize(run("failed", reason="/home/ana/data/chats.jsonl: file not found"))
    assert missing.detail == "chats.jsonl: file not found"  # the whole path in the tooltip
    assert "/home/ana/data/chats.jsonl: file not found" in missing.tip
    assert summarize(run("failed", reason="TCP/IP error")).detail == "TCP/IP error"
    done = summarize(run("completed", metrics=metrics, warnings=["GGUF export failed: x"]))
    assert done.detail == "loss 0.988 · ⚠ 1 warning" and "GGUF export failed" in done.tip
    paused = summarize(run("paused", step=12, max_steps=40, metrics=metrics))
    assert (paused.detail, paused.progress) == ("step 12/40 · loss 0.988", 0.3)
    starting = summarize(run("starting", step=0, max_steps=None))
    assert (starting.detail, starting.progress) == ("", 0.0)
    waiting = summarize(run("queued", reason="waiting for stage 1"))
    assert waiting.detail == "waiting for stage 1"
    assert summarize(run("queued", reason="waiting for a CPU slot"), "2nd in queue").detail == (
        "2nd in queue"
    )
    groups = runs_by_node(
        [
            {"id": "a", "created_at": 1, "spec": {"node_uuid": "n1"}},
            {"id": "b", "created_at": 3, "spec": {"node_uuid": "n1"}},
            {"id": "c", "created_at": 2, "spec": {"node_uuid": ""}},
        ]
    )
    assert {k: [r["id"] for r in v] for k, v in groups.items()} == {"n1": ["b", "a"]}


# -- the tiny model's note under its samples -----------------------------------------------------
@pytest.fixture
def views(qtbot, store):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    v = install_run_views(window, store.path)
    yield v
    v.shutdown()


def finished(store: Store, source: str) -> SyntheticRun:
    spec = make_spec(f"on {source}")
    spec.base_model = BaseModelSpec(source=source)
    run = SyntheticRun(store, spec).status("queued").status("starting").status("training")
    return run.samples(("Hi, my router blinks red.", "....")).status("completed")


def test_tiny_model_samples_carry_a_note_that_other_bases_do_not(qtbot, views, store):
    tiny = finished(store, "builtin:tiny-llama")
    real = finished(store, "HuggingFaceTB/SmolLM2-135M-Instruct")
    chained = finished(store, f"run:{tiny.id}")  # a second stage on the tiny model's result
    qtbot.waitUntil(lambda: chained.id in views.bridge.runs, timeout=WAIT_MS)
    texts = {}
    for run in (tiny, real, chained):
        detail = views.open_run(run.id)
        qtbot.waitUntil(lambda d=detail: "...." in d.samples.toPlainText(), timeout=WAIT_MS)
        texts[run.id] = detail.samples.toPlainText()
    assert "random weights: its answers are nonsense" in texts[tiny.id]
    assert "random weights" in texts[chained.id]
    assert "random" not in texts[real.id] and "nonsense" not in texts[real.id]
    for run in (tiny, real, chained):
        run.close()


# -- a real run ----------------------------------------------------------------------------------
@pytest.fixture
def live_window(qtbot, tmp_path, monkeypatch, tg_home):
    yield from live_main_window_session(qtbot, tmp_path, monkeypatch, tg_home)


@pytest.mark.slow  # 15-40 s on 2 shared cores: supervisor, worker start, 4 steps, export
def test_a_real_tiny_run_shows_on_its_node_until_completed(qtbot, live_window, tmp_path):
    """The node's spec, compiled by the canvas, goes to the real supervisor; its worker trains
    the tiny model and the card above the node ends at completed with the run's final loss."""
    from tests.helpers import cpu_estimate

    window = live_window
    window.open_file(make_graph(tmp_path, {"tiny": {"max_steps": 4}}))
    node = window.canvas.node_by_name("tiny")
    [module] = window.canvas.recompile_checked().modules
    window.start_runs([module.spec], [cpu_estimate(module.spec)])
    qtbot.waitUntil(lambda: len(window.last_submitted) == 1, timeout=60_000)
    card = card_of(window, node)
    seen: set[str] = set()

    def completed() -> bool:
        seen.add(card.pill.split(" ", 1)[-1])
        return card.pill.endswith("completed")

    qtbot.waitUntil(completed, timeout=120_000)
    run = window.run_views.bridge.runs[window.last_submitted[0]["id"]]
    assert run["spec"]["node_uuid"] == node.get_property("uuid")
    assert card.detail.startswith(f"loss {run['metrics']['loss']:.3g}")
    assert "training" in seen or "evaluating" in seen or "exporting" in seen
