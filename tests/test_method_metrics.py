"""Each training method's own metrics (issue 21) reach `show`, `show --json`, the run detail's
charts (live), `diff` and the compare view; an index written before them opens and gains them; the
run detail links the stages of a chain.

A real tiny DPO run checks the names TRL really logs against what the charts declare; the UI tests
use runs written through the real event log and indexed by a real store (tests.synthetic_runs)."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtWidgets  # noqa: E402

from app.method_charts import charts_of  # noqa: E402
from app.run_detail import RunDetail  # noqa: E402
from app.run_views import install_run_views  # noqa: E402
from engine import paths  # noqa: E402
from engine.events import is_method_metric  # noqa: E402
from engine.spec import MethodSpec  # noqa: E402
from engine.store import schema  # noqa: E402
from engine.store.index import Store  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.synthetic_runs import SyntheticRun, make_spec  # noqa: E402

WAIT_MS = 5000
OLD_INDEX = Path(__file__).parent / "data" / "index_v1"  # a schema-1 index and its run folder
DESIGN_METRICS = {"loss", "grad_norm", "lr", "eval_loss", "tokens_per_s"}


@pytest.fixture
def views(qtbot, store):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    v = install_run_views(window, store.path)
    window.resize(1300, 800)
    yield v
    v.shutdown()


def method_run(store: Store, name: str, method: str, upstream: str = "") -> SyntheticRun:
    spec = make_spec(name)
    spec.method = MethodSpec(method=method)
    spec.upstream = upstream
    run = SyntheticRun(store, spec)
    run.status("queued").status("starting").status("training", device="cpu")
    return run


def log_steps(run: SyntheticRun, count: int, max_steps: int = 40, ingest: bool = True) -> None:
    """Metric events as TRL's trainers log them: DPO's rewards or GRPO's rewards per function."""
    method = json.loads((run.dir / "spec.json").read_text())["method"]["method"]
    for _ in range(count):
        run.step += 1
        s = run.step
        if method == "grpo":
            vowels, length = min(1.0, 0.4 + 0.02 * s), 0.3 + 0.1 * math.sin(s / 4)
            own = {
                "rewards/regex:[aeiou]/mean": vowels,
                "rewards/regex:[aeiou]/std": 0.1,
                "rewards/length:24/mean": length,
                "rewards/length:24/std": 0.2,
                "reward": vowels + 0.5 * length,
                "reward_std": 0.15,
                "completions/mean_length": 12.0 - s % 3,
            }
        else:
            own = {
                "rewards/chosen": 0.05 * s,
                "rewards/rejected": -0.03 * s,
                "rewards/margins": 0.08 * s,
                "rewards/accuracies": min(1.0, 0.5 + 0.02 * s),
                "logps/chosen": -140.0 + s,
            }
            if method == "kto":
                own["kl"] = 0.1 * s
        run.worker.emit(
            "metric",
            step=s,
            epoch=s / max_steps,
            loss=0.69 * math.exp(-s / 20),
            grad_norm=0.5,
            lr=1e-4,
            tokens_per_s=900.0,
            tokens_seen=64 * s,
            **own,
        )
    run.worker.emit("progress", step=run.step, max_steps=max_steps, eta_s=1.0, epoch=0.5)
    if ingest:
        run.ingest()


# -- the store and the command line ---------------------------------------------------------------
def test_a_real_dpo_run_gives_show_its_method_metrics(store, tmp_path, capsys):
    """A real tiny DPO run (TRL on CPU), indexed: `show --json` keeps DESIGN's metrics and adds
    `metrics.method`, the latest step's DPO numbers exactly as logged; every metric the DPO charts
    draw is among them; `show` prints them as text."""
    from app.cli.main import main
    from engine.control import Control
    from engine.events import EventLog, read_events
    from engine.rundir import WORKER_LOG
    from engine.training.trainer import run_job
    from tests.helpers import make_spec as fast_spec

    def tunegraph(*args: str) -> str:  # the command line's own entry, in this process
        capsys.readouterr()
        assert main(list(args)) == 0
        return capsys.readouterr().out

    rows = [
        {"prompt": f"Question {i}?", "chosen": f"ACK: answer {i}.", "rejected": f"answer {i}."}
        for i in range(16)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = fast_spec(data, name="prefer ack", max_steps=2, learning_rate=5e-3)
    spec.method = MethodSpec(method="dpo")
    spec.export.adapter_zip = False
    spec.validate()
    run_dir = paths.runs_dir() / paths.new_run_id()
    run_dir.mkdir()
    spec.save(run_dir / "spec.json")
    with EventLog(run_dir / WORKER_LOG) as log:
        run_job(spec, run_dir, log, Control(run_dir))
    last = [e for e in read_events(run_dir / WORKER_LOG) if e.kind == "metric"][-1]
    store.ingest(run_dir)

    shown = json.loads(tunegraph("show", run_dir.name, "--json"))
    metrics = shown["metrics"]
    assert shown["method"] == "dpo" and set(metrics) == DESIGN_METRICS | {"method"}
    assert metrics["loss"] == last["loss"]
    assert metrics["method"] == {k: v for k, v in last.data.items() if is_method_metric(k)}
    drawn = {line.key for chart in charts_of("dpo") for line in chart.lines}
    assert drawn <= set(metrics["method"]), drawn - set(metrics["method"])

    text = tunegraph("show", run_dir.name)
    margin = metrics["method"]["rewards/margins"]
    assert "\n  dpo " in text and f"rewards/margins {margin:.4g}" in text


def test_sft_runs_have_no_method_metrics_and_diff_lists_a_shared_methods_metrics(store):
    """An SFT run's `metrics.method` is {} and its series has no method column; `diff` of two
    DPO runs lists their margins with the delta, of a DPO and an SFT run none."""
    from engine.store.diff import diff_json, diff_runs
    from engine.store.watch import RunWatcher

    sft = method_run(store, "plain", "sft")
    sft.metrics(5, 10)
    a, b = method_run(store, "dpo a", "dpo"), method_run(store, "dpo b", "dpo")
    log_steps(a, 10)
    log_steps(b, 5)
    assert store.run_json(sft.id)["metrics"]["method"] == {}
    assert store.run_json(a.id)["metrics"]["method"]["rewards/margins"] == pytest.approx(0.8)

    watcher = RunWatcher(store, ingest=False)
    for run in (sft, a):
        watcher.subscribe(run.id)
    batches = {batch.run_id: batch for batch in watcher.poll().batches}
    assert set(batches[sft.id].columns) == {
        "step",
        "epoch",
        "loss",
        "grad_norm",
        "lr",
        "tokens_per_s",
    }
    assert batches[a.id].columns["rewards/margins"].tolist() == pytest.approx(
        [0.08 * s for s in range(1, 11)]
    )

    same = diff_json(*diff_runs(store, ["dpo a", "dpo b"]))["metrics"]
    assert same["rewards/margins"]["values"] == pytest.approx([0.8, 0.4])
    assert same["rewards/margins"]["deltas"] == pytest.approx([0.0, -0.4])
    mixed = diff_json(*diff_runs(store, ["dpo a", "plain"]))["metrics"]
    assert not [name for name in mixed if is_method_metric(name)]


def test_an_index_written_before_method_metrics_opens_and_gains_them(tg_home):
    """A real schema-1 index (tests/data/index_v1: SQL dump of the file the code before this
    change wrote, with its run folder) opens: rebuilt from the run folder, the queued command
    kept, and the DPO run's latest rewards in `metrics.method`."""
    shutil.copytree(OLD_INDEX / "runs", paths.runs_dir(), dirs_exist_ok=True)
    old = sqlite3.connect(paths.db_path())
    old.executescript((OLD_INDEX / "tunegraph.sql").read_text(encoding="utf-8"))
    old.execute("INSERT INTO commands (ts, action, run_id) VALUES (1.0, 'cancel', 'x')")
    old.commit()
    assert old.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    old.close()

    with Store() as store:
        version = store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert int(version.fetchone()[0]) == schema.SCHEMA_VERSION == 2
        run = store.run_json("20260101-000000-old0")
        assert run["name"] == "old dpo" and run["state"] == "completed" and run["method"] == "dpo"
        assert run["metrics"]["method"] == pytest.approx(
            {
                "rewards/chosen": 0.3,
                "rewards/rejected": -0.3,
                "rewards/margins": 0.6,
                "rewards/accuracies": 0.8,
            }
        )
        assert [c["action"] for c in store.take_commands()] == ["cancel"]


# -- the run detail -------------------------------------------------------------------------------
def test_the_run_detail_charts_a_dpo_runs_rewards_live(qtbot, views, store):
    """A training DPO run's detail names the method and charts rewards (chosen, rejected, margin)
    and accuracy, one point per logged step, growing as the worker logs more."""
    run = method_run(store, "prefer", "dpo")
    log_steps(run, 12)
    qtbot.waitUntil(lambda: run.id in views.bridge.runs, timeout=WAIT_MS)
    detail = views.open_run(run.id)
    charts = detail.charts
    assert "Method: <b>DPO</b>" in detail.header.text()
    assert [c.title for c in charts.method_plots.charts] == ["rewards", "accuracy"]
    qtbot.waitUntil(lambda: charts.point_count("rewards/margins") == 12, timeout=WAIT_MS)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies"):
        assert charts.point_count(key) == 12
    assert list(charts.method_plots.curves["rewards/margins"].yData) == pytest.approx(
        [0.08 * s for s in range(1, 13)]
    )
    log_steps(run, 8, ingest=False)  # the bridge ingests live runs itself
    qtbot.waitUntil(lambda: charts.point_count("rewards/margins") == 20, timeout=WAIT_MS)
    assert charts.point_count("loss") == 20
    run.close()


def test_grpo_kto_and_sft_details_chart_their_own_metrics(qtbot, views, store):
    """GRPO: the reward mean with a ± std band and a line per reward function, and the completion
    length; KTO: rewards and KL; SFT: the loss column only, as before."""
    grpo, kto, sft = (method_run(store, m, m) for m in ("grpo", "kto", "sft"))
    log_steps(grpo, 9)
    log_steps(kto, 7)
    sft.metrics(6, 10)
    qtbot.waitUntil(lambda: len(views.bridge.runs) == 3, timeout=WAIT_MS)

    charts = views.open_run(grpo.id).charts
    assert [c.title for c in charts.method_plots.charts] == ["reward", "completion length"]
    keys = ("reward", "rewards/regex:[aeiou]/mean", "rewards/length:24/mean")
    qtbot.waitUntil(lambda: all(charts.point_count(k) == 9 for k in keys), timeout=WAIT_MS)
    assert charts.point_count("completions/mean_length") == 9
    low, high = charts.method_plots._bands[0]
    assert list(high.yData - low.yData) == pytest.approx([0.3] * 9)  # mean ± reward_std
    legend = charts.method_plots.plots[0].legend
    assert [label.text for _, label in legend.items] == ["mean ± std", "length:24", "regex:[aeiou]"]

    kto_charts = views.open_run(kto.id).charts
    assert [c.title for c in kto_charts.method_plots.charts] == ["rewards", "KL"]
    qtbot.waitUntil(lambda: kto_charts.point_count("kl") == 7, timeout=WAIT_MS)

    sft_detail = views.open_run(sft.id)
    qtbot.waitUntil(lambda: sft_detail.charts.point_count("loss") == 6, timeout=WAIT_MS)
    assert (
        sft_detail.charts.method_plots is None and "Method: <b>SFT</b>" in sft_detail.header.text()
    )
    for run in (grpo, kto, sft):
        run.close()


def test_the_compare_view_names_methods_and_overlays_a_shared_methods_metrics(qtbot, views, store):
    a, b = method_run(store, "dpo a", "dpo"), method_run(store, "dpo b", "dpo")
    log_steps(a, 10)
    log_steps(b, 6)
    sft = method_run(store, "plain", "sft")
    sft.metrics(8, 10)
    qtbot.waitUntil(lambda: len(views.bridge.runs) == 3, timeout=WAIT_MS)

    view = views.open_compare([a.id, b.id])
    assert view.method == "dpo"
    qtbot.waitUntil(lambda: view.point_counts("rewards/margins") == [10, 6], timeout=WAIT_MS)
    assert view.point_counts("rewards/accuracies") == [10, 6]
    table = view.metrics
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == ["final metric", "dpo a · dpo", "dpo b · dpo"]
    rows = {table.item(r, 0).text(): r for r in range(table.rowCount())}
    assert table.item(rows["rewards/margins"], 2).text() == "0.48  (-0.32)"

    mixed = views.open_compare([a.id, sft.id])
    qtbot.waitUntil(lambda: mixed.point_counts("loss") == [10, 8], timeout=WAIT_MS)
    assert mixed.method is None and set(mixed.plot_items) == {"loss", "grad_norm", "lr"}
    headers = [mixed.metrics.horizontalHeaderItem(c).text() for c in range(3)]
    assert headers == ["final metric", "dpo a · dpo", "plain · sft"]
    names = [mixed.metrics.item(r, 0).text() for r in range(mixed.metrics.rowCount())]
    assert not [n for n in names if is_method_metric(n)]
    for run in (a, b, sft):
        run.close()


# -- chains ---------------------------------------------------------------------------------------
def test_the_run_detail_links_the_stages_of_a_chain(qtbot, views, store):
    """sft → dpo → grpo: the middle stage's header says what it starts from and what it feeds,
    and each link opens that stage's detail; a stage started later appears in "Feeds"."""
    first = method_run(store, "warm up", "sft")
    middle = method_run(store, "prefer", "dpo", upstream=first.id)
    qtbot.waitUntil(lambda: len(views.bridge.runs) == 2, timeout=WAIT_MS)
    detail = views.open_run(middle.id)
    header = detail.header
    assert header.upstream == first.id and header.downstream == []
    assert f"Starts from: <a href='run:{first.id}'" in header.text()
    assert f"warm up</a> ({first.id.rsplit('-', 1)[-1]})" in header.text()
    assert "Feeds" not in header.text()

    last = method_run(store, "reinforce", "grpo", upstream=middle.id)
    qtbot.waitUntil(lambda: header.downstream == [last.id], timeout=WAIT_MS)
    assert f"Feeds: <a href='run:{last.id}'" in header.text() and "reinforce</a>" in header.text()

    header.linkActivated.emit(f"run:{first.id}")  # what a click on the link sends
    opened = views.tabs.currentWidget()
    assert isinstance(opened, RunDetail) and opened.run_id == first.id
    assert opened.header.downstream == [middle.id] and "Starts from" not in opened.header.text()
    opened.header.linkActivated.emit(f"run:{middle.id}")
    assert views.tabs.currentWidget() is detail  # the open tab, not a second one

    header.linkActivated.emit(f"run:{last.id}")
    assert views.tabs.currentWidget().run_id == last.id
    for run in (first, middle, last):
        run.close()
