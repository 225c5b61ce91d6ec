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
Every run is a real run of the training engine on the CPU (a few minutes on 2 cores).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/walkthrough.py [--out DIR]

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
TERMINAL = ("completed", "failed", "cancelled", "refused", "pruned")


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
    w.window.shutdown()
    w.window.close()


def main(argv: list[str] | None = None) -> int:
    from scripts.example_runs import data_folder, finish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/tunegraph-walkthrough")
    parser.add_argument("--home", help="data folder to use and keep (default: a throw-away one)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home, throw_away = data_folder(args.home)
    started = time.time()
    try:
        walk(home, out)
    finally:
        finish(home, throw_away)
    print(f"walkthrough done in {time.time() - started:.0f} s; screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
