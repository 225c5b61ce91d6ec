"""The sweep view (issue 22) on a real study: the Sweep graph compiled, its Optuna study created in
the real storage and its trials asked, reported and told as the supervisor does, each trial a run
written with the real event codec into a real store (tests.synthetic_runs: no training, so the
first two tests take ~4 s together; the slow one stops a real study, ~15-50 s). The view shows a row per trial (state, chosen values,
objective, pruned at step), the best marked, the optimisation history and the importances; "Add to
canvas" makes a plain Fine-Tune node with the best learning rate and no Sweep node; the runs tab
and the leaderboard lead to the view; pruned runs offer Resume and are greyed in the compare view.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtGui  # noqa: E402

from app.leaderboard import WINNER  # noqa: E402
from app.run_row import STATE_STYLE  # noqa: E402
from app.sweep_view import SweepView, best_so_far_steps  # noqa: E402
from engine.store.index import Store  # noqa: E402
from engine.supervisor import client  # noqa: E402
from engine.sweep import study as studies  # noqa: E402
from nodes import compile  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread, main_window_session  # noqa: E402, F401
from tests.helpers import cpu_estimate  # noqa: E402
from tests.synthetic_runs import SyntheticRun  # noqa: E402
from tests.test_sweep import sweep_graph  # noqa: E402

WAIT_MS = 15_000
SWEEP = {
    "space": ["training.learning_rate: 1e-4, 1e-3, 0.5", "lora.r: 4, 8"],
    "strategy": "grid",
    "trials": 5,
    "pruner": "successive_halving",
}
MAX_STEPS, EVAL_EVERY = 10, 2
LR_TEXT = {1e-4: "1e-4", 1e-3: "1e-3", 0.5: "0.5"}


def eval_loss(params: dict, step: int) -> float:
    """A made-up but telling curve: best near lr 1e-3, r 8 a little better, 0.5 hopeless."""
    lr, r = params["training.learning_rate"], params["lora.r"]
    return 6.0 + abs(math.log10(lr) + 3) + (0.1 if r == 4 else 0.0) - 0.05 * step


def run_study(store: Store, folder: Path) -> tuple[dict, str, list[dict]]:
    """The swept graph, its study's name, and each trial as {"number", "run", "params",
    "state", "value"} (lr 0.5 pruned at its second eval point, the rest completed)."""
    graph, _ids = sweep_graph(folder, SWEEP)
    result = compile(graph)
    assert result.ok, [str(e) for e in result.errors]
    (spec,) = result.specs
    study = studies.create(spec)
    trials = []
    for _ in range(study.budget):
        asked = study.ask()
        params = dict(asked.params)
        run = SyntheticRun(store, study.trial_spec(asked.number, params))
        study.set_run(asked, run.id)
        run.status("queued").status("starting").status("training", device="cpu")
        pruned = params["training.learning_rate"] == 0.5
        for step in range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY):
            run.metrics(EVAL_EVERY, MAX_STEPS)
            value = eval_loss(params, step)
            run.evaluate(value)
            study.report(study.trial(asked.number), step, value)
            if pruned and step == 2 * EVAL_EVERY:
                break
        if pruned:
            run.status(
                "pruned", reason=f"pruned at step {step} of {MAX_STEPS} by successive halving"
            )
            study.tell(asked, None, "PRUNED")
        else:
            run.status("completed")
            study.tell(asked, value)
        run.close()
        state = "pruned" if pruned else "completed"
        trials.append(
            {"number": asked.number, "run": run.id, "params": params, "state": state}
            | {"value": None if pruned else value, "pruned_at": step if pruned else None}
        )
    study.set_state(studies.DONE)
    return graph, study.name, trials


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window_session(qtbot, tmp_path)


def seen(qtbot, window, trials: list[dict]) -> None:
    """Wait until the window's bridge has read every trial's run in its final state."""
    runs = window.run_views.bridge.runs
    qtbot.waitUntil(
        lambda: all((runs.get(t["run"]) or {}).get("state") == t["state"] for t in trials),
        timeout=WAIT_MS,
    )


def open_view(qtbot, window, study: str, trials: list[dict]) -> SweepView:
    views = window.run_views
    seen(qtbot, window, trials)
    view = views.open_sweep(study)
    qtbot.waitUntil(lambda: view.report is not None, timeout=WAIT_MS)
    return view


def test_the_sweep_view_shows_a_real_study_and_promotes_its_best(qtbot, window, store, tmp_path):
    graph, study, trials = run_study(store, tmp_path)
    view = open_view(qtbot, window, study, trials)
    rep = view.report
    assert rep["state"] == "done" and not view.timer.isActive()  # over: no more polling

    # a row per trial: its run, state, chosen values, objective and the step it was pruned at
    table = view.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == ["#", "Run", "State", "lr", "r", "eval loss ▼", "Pruned at step"]
    assert table.rowCount() == len(trials) == 5
    completed = [t for t in trials if t["state"] == "completed"]
    best = min(completed, key=lambda t: t["value"])
    assert best["params"] == {"training.learning_rate": 1e-3, "lora.r": 8}
    for r, trial in enumerate(trials):
        cells = [table.item(r, c).text() for c in range(table.columnCount())]
        is_best = trial is best
        assert cells[0] == (f"{WINNER} {r}" if is_best else str(r))
        assert cells[1] == window.run_views.bridge.runs[trial["run"]]["name"]
        assert cells[2].endswith(trial["state"])
        assert cells[3] == LR_TEXT[trial["params"]["training.learning_rate"]]
        assert cells[4] == str(trial["params"]["lora.r"])
        assert cells[5] == ("—" if trial["value"] is None else f"{trial['value']:.4g}")
        assert cells[6] == ("" if trial["pruned_at"] is None else str(trial["pruned_at"]))
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and all(t["pruned_at"] == 4 for t in pruned)
    colour = table.item(trials.index(pruned[0]), 2).foreground().color()  # the run panel's
    assert colour == QtGui.QColor(STATE_STYLE["pruned"][0]).lighter(130)
    assert view.best_row() == trials.index(best) and table.item(view.best_row(), 1).font().bold()
    assert f"<b>#{best['number']}</b>" in view.best.text() and "lower is better" in view.best.text()

    # Optuna's plots: one point per finished trial, the best-so-far steps, a bar per knob
    assert view.history_points() == len(completed)
    xs, ys = best_so_far_steps(rep["history"])
    assert ys[-1] == best["value"] and xs[-1] == completed[-1]["number"]
    bars = view.importance_bars()
    assert set(bars) == {"lr", "r"} and bars["lr"] > bars["r"]
    assert sum(bars.values()) == pytest.approx(1.0)
    pen = view.curves[pruned[0]["number"]].opts["pen"]  # a pruned trial's curve: grey dashes
    assert pen.style() == QtCore.Qt.PenStyle.DashLine and pen.color().alpha() < 255

    # promote: export and continue the best run; add it to the canvas as a plain Fine-Tune node
    assert view.export_action.isEnabled() and view.continue_action.isEnabled()
    with qtbot.waitSignal(view.exportRequested) as export:
        view.export_action.trigger()
    assert export.args == [best["run"]]
    window.run_views.panel.export_dialog.close()
    canvas = window.canvas
    canvas.load_dict(graph)
    swept = canvas.nodes("FineTune")[0]
    view.canvas_action.trigger()
    modules = canvas.nodes("FineTune")
    assert len(modules) == 2 and len(canvas.nodes("Sweep")) == 1  # the copy took no Sweep node
    (copy,) = [m for m in modules if m is not swept]
    assert copy.name() == window.run_views.bridge.runs[best["run"]]["name"]
    inputs = {port.name(): nodes for port, nodes in copy.connected_input_nodes().items()}
    assert not inputs["sweep"]
    assert inputs["training_config"][0].get_property("learning_rate") == 1e-3
    assert inputs["lora_config"][0].get_property("r") == 8
    result = canvas.recompile()
    (spec,) = [m.spec for m in result.modules if m.node_id == copy.id]
    assert spec.sweep is None and spec.training.learning_rate == 1e-3 and spec.lora.r == 8
    canvas.graph.undo_stack().undo()  # one undo step takes it all away
    assert len(canvas.nodes("FineTune")) == 1
    assert not view.stop_button.isEnabled()  # a study that is over cannot be stopped


def test_trials_lead_to_their_sweep_and_pruned_runs_can_resume(qtbot, window, store, tmp_path):
    _graph, study, trials = run_study(store, tmp_path)
    ids = [t["run"] for t in trials]
    views = window.run_views
    seen(qtbot, window, trials)
    pruned = next(t["run"] for t in trials if t["state"] == "pruned")
    done = next(t["run"] for t in trials if t["state"] == "completed")

    # the runs tab: the selected trials' sweep first in its Sweeps menu, then every study
    tab = views.runs_tab
    tab.select(ids[:2])
    assert tab.selected_study() == study
    with qtbot.waitSignal(tab.reader.loaded, timeout=WAIT_MS):
        tab.sweeps_menu.aboutToShow.emit()
    tab.show_sweeps()
    texts = [a.text() for a in tab.sweeps_menu.actions()]
    assert texts[0] == f"Sweep of the selected trials: {study}"
    assert any(study in t and "done, 5/5 trials, best eval loss" in t for t in texts[2:]), texts
    with qtbot.waitSignal(tab.sweepRequested) as asked:
        tab.sweeps_menu.actions()[0].trigger()
    assert asked.args == [study] and isinstance(views.tabs.currentWidget(), SweepView)
    tab.state.setCurrentText("Pruned")
    assert tab.visible_ids() == [t["run"] for t in reversed(trials) if t["state"] == "pruned"]

    # the leaderboard of trials has the way to their sweep
    board = views.open_leaderboard(ids)
    assert board.sweep_button.isVisibleTo(board)
    with qtbot.waitSignal(board.sweepRequested) as asked:
        board.sweep_button.click()
    assert asked.args == [study]

    # a pruned trial's row says why and offers Resume; its curves stay, greyed, in a comparison
    row = views.panel.rows[pruned]
    assert row.buttons["Resume"].isVisibleTo(row) and not row.buttons["Export"].isVisibleTo(row)
    assert (
        row.message.text().startswith("pruned at step 4") and row.message.property("kind") == "info"
    )
    compare = views.open_compare([done, pruned])
    pens = {rid: compare.curves["loss"][rid].opts["pen"] for rid in (done, pruned)}
    assert (
        pens[pruned].style() == QtCore.Qt.PenStyle.DashLine and pens[pruned].color().alpha() < 255
    )
    assert pens[done].style() == QtCore.Qt.PenStyle.SolidLine
    qtbot.waitUntil(lambda: compare.point_counts() == [MAX_STEPS, 2 * EVAL_EVERY], timeout=WAIT_MS)


@pytest.mark.slow
def test_stop_sweep_ends_a_running_study(qtbot, window, sup, tmp_path):
    """With the real supervisor (~15-50 s, --run-slow): Stop sweep cancels the live trials and
    no new one starts."""
    graph, _ids = sweep_graph(
        tmp_path, {"space": ["lr: 1e-4, 1e-3, 3e-3, 1e-2"], "strategy": "grid", "pruner": "none"}
    )
    (spec,) = compile(graph).specs
    (entry,) = client.submit(sup, [spec], [cpu_estimate(spec)])
    view = window.run_views.open_sweep(entry["id"])
    qtbot.waitUntil(
        lambda: (
            view.report is not None and any(t["state"] == "training" for t in view.report["trials"])
        ),
        timeout=90_000,
    )
    assert view.stop_button.isEnabled()
    view.confirm = lambda *_args: True
    view.stop_button.click()
    qtbot.waitUntil(lambda: "Sweep stopped" in view.note.text(), timeout=70_000)
    qtbot.waitUntil(lambda: view.report["state"] == "cancelled", timeout=30_000)
    assert len(view.report["trials"]) < 4 and not view.stop_button.isEnabled()
    # the live trials' runs end cancelled (the view reads again as their runs change)
    qtbot.waitUntil(
        lambda: all(t["state"] in ("cancelled", "completed") for t in view.report["trials"]),
        timeout=30_000,
    )
