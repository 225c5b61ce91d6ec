"""The leaderboard with real runs: a sweep of three copies of one Fine-Tune module (learning rates
1e-3, 5e-3, 2e-2) with an Eval node, trained for real on the tiny model (in this process, through
the worker's own `run_job`) and indexed by a real store, then ranked in the Runs tab's
leaderboard: order by the chosen score, the winner marked, the base as a baseline row, the knob
that differs, each eval row's outputs side by side with their scores; one run selected brings its
whole family; the run's charts show the set's loss from the evaluation during training. `family` and `bar_fraction` are checked on plain data."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtWidgets  # noqa: E402

from app.leaderboard import WINNER, Leaderboard  # noqa: E402
from app.run_views import install_run_views  # noqa: E402
from engine import paths  # noqa: E402
from engine.store.index import Store  # noqa: E402
from engine.store.leaderboard import bar_fraction, family  # noqa: E402
from nodes import compile  # noqa: E402
from nodes.duplicate import deep_duplicate  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.test_eval_node import eval_graph, short_set  # noqa: E402

WAIT_MS = 10_000
RATES = (1e-3, 5e-3, 2e-2)
METRICS = ["loss", "contains", "regex:^Sorry", "rouge_l"]


def sweep_specs(folder: Path, rows: int = 2, steps: int = 4) -> list:
    """The three modules of a learning-rate sweep, each a deep copy of the first (so they share
    its origin) with its own Eval node (the first also scores the base), compiled."""
    short_set(folder / "set.jsonl", rows=6)
    evaluation = {"path": "set.jsonl", "metrics": METRICS, "max_rows": rows, "score_base": True}
    path, graph, module, _ = eval_graph(folder, evaluation, learning_rate=RATES[0], max_steps=steps)
    for rate in RATES[1:]:
        copy = deep_duplicate(graph, module, suffix=f" lr {rate:g}")
        graph = copy.merged_into(graph)
        copied = {graph["nodes"][old]["type_"]: new for old, new in copy.ids.items()}
        graph["nodes"][copied["tunegraph.TrainingConfig"]]["custom"]["learning_rate"] = rate
        graph["nodes"][copied["tunegraph.Eval"]]["custom"]["score_base"] = False  # once is enough
    result = compile(graph, path)
    assert result.errors == []
    return result.specs


def train_in_process(specs: list, store: Store) -> list[str]:
    """Each spec trained by the worker's own code in this process, indexed by `store`."""
    from engine.control import Control
    from engine.events import EventLog
    from engine.rundir import SPEC_FILE, WORKER_LOG
    from engine.training.trainer import run_job

    ids = []
    for spec in specs:
        run_id = paths.new_run_id()
        run_dir = paths.runs_dir() / run_id
        run_dir.mkdir(parents=True)
        spec.save(run_dir / SPEC_FILE)
        with EventLog(run_dir / WORKER_LOG) as log:
            log.emit("status", state="starting")
            warnings = run_job(spec, run_dir, log, Control(run_dir))
            log.emit("status", state="completed", warnings=warnings)
        store.ingest(run_dir)
        ids.append(run_id)
    return ids


@pytest.fixture
def views(qtbot):
    store = Store()
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    views = install_run_views(window, store.path, start=False)
    window.resize(1400, 900)
    yield store, views
    views.shutdown()
    store.close()


def test_the_leaderboard_ranks_a_real_sweep_and_shows_its_outputs(qtbot, views, tmp_path):
    store, run_views = views
    ids = train_in_process(sweep_specs(tmp_path), store)
    runs = {rid: store.run_json(rid) for rid in ids}
    run_views.bridge.start()
    qtbot.waitUntil(lambda: set(ids) <= set(run_views.bridge.runs), timeout=WAIT_MS)

    # one run selected: the leaderboard takes its whole sweep (the runs sharing its origin)
    tab = run_views.runs_tab
    tab.select([ids[1]])
    assert sorted(tab.leaderboard_ids()) == sorted(ids)
    assert tab.leaderboard_button.isEnabled()
    with qtbot.waitSignal(tab.leaderboardRequested) as asked:
        tab.leaderboard_button.click()
    board_view = run_views.tabs.currentWidget()
    assert isinstance(board_view, Leaderboard) and sorted(asked.args[0]) == sorted(ids)
    qtbot.waitUntil(lambda: board_view.outputs.rowCount() == 2, timeout=WAIT_MS)

    board = board_view.board
    assert board.set == "set.jsonl" and board.metric == "loss"  # the set's first metric
    assert board.metrics == ["loss", "perplexity", "contains", "regex:^Sorry", "rouge_l"]
    losses = {rid: runs[rid]["eval"]["set.jsonl"]["loss"] for rid in ids}
    ranked = sorted(ids, key=losses.get)
    assert [e.run_id for e in board.entries if e.kind == "run"] == ranked
    assert board.winner == ranked[0]
    (base,) = [e for e in board.entries if e.kind == "base"]  # one baseline: one base model
    assert base.scores["loss"] == runs[ids[0]]["eval"]["set.jsonl (base)"]["loss"]
    # the knobs that differ: the sweep's, and the base scored by the first run only
    assert [label for _key, label in board.knobs] == ["lr", "score base[0]"]

    # `tunegraph diff` and the compare view list the eval scores with the final metrics
    from engine.store.diff import diff_json

    scores = diff_json([runs[rid] for rid in ids])["metrics"]["set.jsonl: loss"]["values"]
    assert scores == [losses[rid] for rid in ids]

    # the table: the winner marked on its row, the base a baseline row, a bar per score
    table = board_view.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers[:3] == ["#", "Run", "loss ▼"] and headers[-2:] == ["lr", "score base[0]"]
    cells = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(4)]
    names = {rid: runs[rid]["name"] for rid in ids}
    winner_row = next(row for row in cells if row[1] == names[ranked[0]])
    assert winner_row[0] == f"{WINNER} 1" and table.item(cells.index(winner_row), 1).font().bold()
    assert [row[0] for row in cells].count("baseline") == 1
    assert {row[-2] for row in cells if row[0] != "baseline"} == {"0.001", "0.005", "0.02"}
    assert f"Winner on <b>set.jsonl</b>: <b>{names[ranked[0]]}</b>" in board_view.summary.text()

    # outputs side by side: the rows' own outputs and scores, from the run folders
    out = board_view.outputs
    assert [out.horizontalHeaderItem(c).text() for c in range(2)] == ["Prompt", "Reference"]
    assert out.columnCount() == 2 + 4  # three runs and the base
    from engine.eval.run_results import run_results

    rows = run_results(runs[ranked[0]]["run_dir"])[0]["results"][0]["rows"]
    for r, row in enumerate(rows):
        assert out.item(r, 0).text() == row["prompt"] and out.item(r, 1).text() == row["reference"]
        assert out.item(r, 2).text() == f"{row['output']}\n— loss {row['scores']['loss']:.4g}"

    # ranked by another score, the order follows it; "Open in chat" asks for the ranked runs
    board_view.rank_combo.setCurrentIndex(board_view.rank_combo.findText("training time"))
    board_view.rank_combo.activated.emit(board_view.rank_combo.currentIndex())
    times = {e.run_id: e.scores["training_time"] for e in board_view.board.entries if e.run_id}
    assert all(times.values())
    runs_by_time = [e.run_id for e in board_view.board.entries if e.kind == "run"]
    assert runs_by_time == sorted(ids, key=times.get)
    with qtbot.waitSignal(board_view.chatRequested) as chat:
        board_view.chat_button.click()
    assert chat.args[0] == runs_by_time
    assert board_view.export_button.isEnabled() and board_view.continue_button.isEnabled()

    # the run's charts draw the set's loss at the evaluation during training, by the eval loss
    detail = run_views.open_run(ranked[0])
    charts = detail.charts

    def set_curve_points() -> int:
        charts.redraw(force=True)
        curve = charts.set_curves.get("set.jsonl")
        return 0 if curve is None or curve.xData is None else len(curve.xData)

    qtbot.waitUntil(lambda: set_curve_points() == 1, timeout=WAIT_MS)
    (step,) = charts.set_curves["set.jsonl"].xData
    assert step == runs[ranked[0]]["max_steps"] and charts.series.eval_steps == [step]


def test_family_and_bars_on_plain_data():
    def run(rid, node, origin=""):
        return {"id": rid, "spec": {"node_uuid": node, "origin_uuid": origin}}

    runs = [run("a", "u1"), run("b", "u2", "u1"), run("c", "u3", "u2"), run("d", "u9")]
    assert family(runs, "c") == ["a", "b", "c"] and family(runs, "d") == ["d"]
    assert bar_fraction("rouge_l", 0.25, [0.25, 0.5]) == 0.25  # scores in 0..1: their own scale
    assert bar_fraction("judge", 5.0, [5.0]) == 0.5
    assert bar_fraction("loss", 2.0, [2.0, 3.0]) == 1.0  # lower is better: the best is full
    assert bar_fraction("loss", 3.0, [2.0, 3.0]) == pytest.approx(0.1)
    assert bar_fraction("loss", None, [2.0]) == 0.0
