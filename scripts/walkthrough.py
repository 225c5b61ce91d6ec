"""A scripted walkthrough of an analyst's day in the real app, with a screenshot at each step.

Opens the main window (1600×1000) on a fresh data folder, then, as a user would:
 1. opens the example sweep (two Fine-Tune nodes on builtin:tiny-llama)        01-canvas.png
 2. points a Dataset node at a file with a malformed line: the node's badge    02-data-error.png
 3. fixes it, presses Run all: the confirmation with its estimates            03-confirm.png
 4. starts: the runs train, live on the nodes and in the run panel             04-training.png
 5. waits for both to complete                                                  05-completed.png
 6. compares them                                                               06-compare.png
 7. opens the SFT → DPO example and runs it: the DPO run waits for the SFT run  07-chain.png
 8. the chain completed, DPO metrics in its run detail                         08-chain-done.png
 9. a Sweep node over learning rate and LoRA rank: its search space            09-sweep-node.png
10. the study runs its trials two at a time, pruning the losers                10-sweep-running.png
11. the sweep view once the study is over                                      11-sweep-view.png
    (also written to docs/screenshots/sweep_view.png)
Every run is a real run of the training engine on the CPU (a few minutes on 2 cores).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/walkthrough.py [--out DIR]
    ... scripts/walkthrough.py --only sweep      steps 9-11 alone (about 2 minutes)

Screenshots go to --out (default /tmp/tunegraph-walkthrough); look at them and copy the ones
worth showing to docs/screenshots/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "resources" / "examples"
SAMPLE = ROOT / "resources" / "datasets" / "support_chats.jsonl"
SCREENSHOTS = ROOT / "docs" / "screenshots"
TERMINAL = ("completed", "failed", "cancelled", "refused", "pruned")
# the Sweep node of steps 9-11: TPE over two knobs, 10 trials; a trial worse than the median of
# the earlier ones at the same eval point is pruned, from 20% of its steps on
SEARCH = {
    "space": ["training.learning_rate: 1e-4 .. 0.3 log", "lora.r: 4 .. 16 step 4"],
    "strategy": "tpe",
    "trials": 10,
    "objective": "eval_loss",
    "pruner": "median",
    "min_fraction": 0.2,
}


class Walk:
    """The window, the app and where the pictures go."""

    def __init__(self, home: Path, out: Path):
        from PySide6 import QtWidgets

        from app.main_window import MainWindow
        from app.settings_store import SettingsStore
        from app.theme import apply_theme

        self.out = out
        self.app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
        apply_theme(self.app)
        self.window = MainWindow(settings=SettingsStore(home / "ui.ini"), offer_engine_setup=False)
        self.window.resize(1600, 1000)
        self.window.show()
        self.settle(2.0)

    def settle(self, seconds: float, until=None) -> bool:
        """Process events for `seconds`, or until `until()` holds; whether it held."""
        end = time.time() + seconds
        while time.time() < end:
            self.app.processEvents()
            if until and until():
                return True
            time.sleep(0.02)
        return bool(until and until())

    def shoot(self, name: str, widget=None) -> None:
        self.settle(0.5)
        path = self.out / name
        (widget or self.window).grab().save(str(path))
        print(f"  {path}", flush=True)

    def runs(self) -> dict[str, dict]:
        """The runs in the store by name (the newest of each name)."""
        from engine.store.index import Store

        out: dict[str, dict] = {}
        with Store() as store:
            for run in store.list_runs():  # newest first
                out.setdefault(run["name"], run)
        return out

    def wait_runs(self, names: list[str], states: tuple[str, ...], timeout: float) -> dict:
        ok = self.settle(
            timeout,
            lambda: all(self.runs().get(n, {}).get("state") in states for n in names),
        )
        runs = self.runs()
        if not ok:
            got = {n: runs.get(n, {}).get("state") for n in names}
            raise SystemExit(f"runs did not reach {states} in {timeout:.0f} s: {got}")
        return runs

    def open_example(self, name: str) -> None:
        self.window.canvas.load_file(EXAMPLES / name, template=True)
        self.window.canvas.fit_all()
        self.settle(1.0)

    def close(self) -> None:
        self.window.shutdown()
        self.window.close()

    def run_all_and_start(self, shot: str | None = None) -> None:
        dialog = self.window.run_all()
        if dialog is None:
            raise SystemExit("Run all opened no confirmation")
        if not self.settle(300, lambda: not dialog.estimating):
            raise SystemExit("the estimates did not arrive in 5 minutes")
        if shot:
            self.shoot(shot, dialog)
        dialog.start_button.click()
        self.settle(60, lambda: self.window.confirm_dialog is None)


def walk(home: Path, out: Path) -> None:
    os.environ["TUNEGRAPH_HOME"] = str(home)
    os.environ.setdefault("TUNEGRAPH_CPU_SLOTS", "2")
    w = Walk(home, out)
    canvas = w.window.canvas

    print("1. the example sweep", flush=True)
    w.open_example("sweep.json")
    w.shoot("01-canvas.png")

    print("2. a data error on the Dataset node", flush=True)
    data = canvas.node_by_name("support chats")
    good = str((EXAMPLES / data.get_property("path")).resolve())  # relative to the example
    bad = home / "support_chats_broken.jsonl"
    lines = Path(good).read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join(lines[:3] + ['{"messages": [oops'] + lines[3:]) + "\n")
    canvas.set_param(data, "path", str(bad))
    canvas.select([data])
    w.settle(20, lambda: bool(canvas.errors_of(data)))
    w.shoot("02-data-error.png")
    canvas.set_param(data, "path", good)
    canvas.select([])
    w.settle(20, lambda: not canvas.errors_of(data))

    print("3. Run all: the confirmation", flush=True)
    names = [n.name() for n in canvas.nodes("FineTune")]
    w.run_all_and_start("03-confirm.png")

    print("4. training", flush=True)
    w.settle(180, lambda: any(r.get("step") for r in w.runs().values()))
    w.settle(3.0)
    w.shoot("04-training.png")

    print("5. completed", flush=True)
    runs = w.wait_runs(names, TERMINAL, 900)
    w.settle(3.0)
    w.shoot("05-completed.png")

    print("6. compare", flush=True)
    views = w.window.run_views
    views.open_compare([runs[n]["id"] for n in names])
    w.settle(5.0)
    w.shoot("06-compare.png")

    print("7. SFT, then DPO", flush=True)
    w.open_example("sft-then-dpo.json")
    chain = [n.name() for n in canvas.nodes("FineTune")]
    w.run_all_and_start()
    w.settle(120, lambda: w.runs().get("support sft", {}).get("step"))
    w.settle(3.0)
    w.shoot("07-chain.png")

    print("8. the chain completed", flush=True)
    runs = w.wait_runs(chain, TERMINAL, 1200)
    dpo = runs["support dpo"]
    views.open_run(dpo["id"])
    w.settle(5.0)
    w.shoot("08-chain-done.png")
    print(
        json.dumps({n: {k: r[k] for k in ("state", "step", "upstream")} for n, r in runs.items()})
    )
    sweep_steps(w, 9)
    w.close()


def search_graph() -> dict:
    """The support-chat module on builtin:tiny-llama with a Sweep node (SEARCH): 10 steps a
    trial, an eval point every 2 steps on a tenth of the rows held out."""
    from nodes import GraphBuilder

    g = GraphBuilder(seed=9)
    nodes = {
        "base_model": g.add_node("BaseModel", "tiny llama", (0, 0), source="builtin:tiny-llama"),
        "dataset": g.add_node("Dataset", "support chats", (0, 130), path=str(SAMPLE)),
        "training_config": g.add_node(
            "TrainingConfig",
            "train",
            (0, 260),
            max_steps=10,
            eval_steps=2,
            eval_split=0.1,
            micro_batch_size=4,
            max_seq_length=128,
            learning_rate=2e-4,
        ),
        "lora_config": g.add_node("LoraConfig", "lora", (0, 390), r=8, alpha=16),
        "sweep": g.add_node("Sweep", "search", (0, 520), **SEARCH),
    }
    module = g.add_node("FineTune", "support", (420, 200), device="cpu")
    for port, node in nodes.items():
        g.connect(node, module, port)
    return g.to_dict()


def sweep_steps(w: Walk, first: int) -> None:
    """A Sweep node's study, run for real from the window: its space in the properties panel,
    the trials training two at a time (the losers pruned), then the sweep view."""
    from engine.store.index import Store
    from engine.sweep.report import summaries

    canvas = w.window.canvas
    print(f"{first}. a Sweep node", flush=True)
    canvas.load_dict(search_graph())
    canvas.fit_all()
    canvas.select([canvas.node_by_name("search")])
    w.settle(2.0)
    w.shoot(f"{first:02d}-sweep-node.png")

    print(f"{first + 1}. the study runs", flush=True)
    started = time.time()
    w.run_all_and_start()

    def study() -> dict | None:
        with Store() as store:
            return next(iter(summaries(store)), None)

    w.settle(300, lambda: (s := study()) and s["trials"] >= 3)
    w.shoot(f"{first + 1:02d}-sweep-running.png")
    if not w.settle(900, lambda: (s := study()) and s["state"] == "done"):
        raise SystemExit(f"the sweep did not finish in 15 minutes: {study()}")
    done = study()
    print(f"  study {done['study']} done in {time.time() - started:.0f} s: {json.dumps(done)}")

    print(f"{first + 2}. the sweep view", flush=True)
    views = w.window.run_views
    view = views.open_sweep(done["study"])
    w.settle(30, lambda: view.report is not None and view.report["state"] == "done")
    w.settle(2.0)
    w.shoot(f"{first + 2:02d}-sweep-view.png")
    dock = views.views_dock  # the view alone, floated and given room
    dock.setFloating(True)
    dock.resize(1500, 900)
    w.settle(2.0)
    w.shoot("sweep_view.png", view)
    (w.out / "sweep_view.png").replace(SCREENSHOTS / "sweep_view.png")
    print(f"  {SCREENSHOTS / 'sweep_view.png'}", flush=True)
    dock.setFloating(False)


def main(argv: list[str] | None = None) -> int:
    from scripts.example_runs import data_folder, finish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/tunegraph-walkthrough")
    parser.add_argument("--home", help="data folder to use and keep (default: a throw-away one)")
    parser.add_argument(
        "--only", choices=["sweep"], help="run one part alone: sweep = the Sweep node's steps"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home, throw_away = data_folder(args.home)
    started = time.time()
    try:
        if args.only == "sweep":
            os.environ["TUNEGRAPH_HOME"] = str(home)
            os.environ.setdefault("TUNEGRAPH_CPU_SLOTS", "2")
            w = Walk(home, out)
            sweep_steps(w, 9)
            w.close()
        else:
            walk(home, out)
    finally:
        finish(home, throw_away)
    print(f"walkthrough done in {time.time() - started:.0f} s; screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
