"""Regenerate docs/screenshots/run_panel.png (4 runs, one expanded) and compare.png (a 3-run
learning-rate / rank sweep) from synthetic runs in a throw-away data directory.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_runs.py
    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshot_runs.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def settle(app, seconds: float, until=None) -> None:
    end = time.time() + seconds
    while time.time() < end and not (until and until()):
        app.processEvents()
        time.sleep(0.02)


def make_runs(store):
    from tests.synthetic_runs import SyntheticRun, make_spec

    def run(name, state, steps, max_steps, evals=(), sha="3f9a" * 16, lora_r=None, **training):
        spec = make_spec(name, **training)
        if lora_r:
            spec.lora.r, spec.lora.alpha = lora_r, 2 * lora_r
        r = SyntheticRun(store, spec, created_at=time.time())
        r.status("queued")
        if state == "queued":
            return r
        r.status("starting").status("training", device="cuda:0" if "r16" not in name
                                     else "cuda:1")
        r.data_log(rows=1200, sha=sha)
        lr = training.get("learning_rate", 2e-4)
        speed = {2e-4: 1.0, 5e-5: 0.55, 3e-4: 1.25}.get(lr, 1.0) * (1.1 if lora_r else 1.0)
        for i, at in enumerate(evals):
            r.metrics(at - r.step, max_steps, steps_per_epoch=max_steps // 2, lr=lr,
                      speed=speed)
            r.evaluate(0.5 + 1.2 / (1 + i) / speed)
        if steps > r.step:
            r.metrics(steps - r.step, max_steps, steps_per_epoch=max_steps // 2, lr=lr,
                      speed=speed)
        if state in ("completed",):
            r.samples(("My router blinks red, what now?",
                       "Unplug it for 30 seconds, plug it back in and wait for a steady green "
                       "light. If it still blinks red, the line may be down: I can check that."),
                      ("I was billed twice this month.",
                       "Sorry about that! I can see two charges on the 3rd; I have refunded the "
                       "second one, it shows within 5 days."),
                      ("Can I pause my plan?", "Yes: plans can be paused for up to 3 months "
                       "from Settings → Plan → Pause."))
            r.artifact(size=18_874_368)
        if state != "training":
            r.status(state, **({"reason": "CUDA out of memory at step 212"}
                               if state == "failed" else {}))
        time.sleep(0.01)
        return r

    runs = [
        run("support-bot lr 2e-4", "completed", 600, 600, evals=(150, 300, 450, 600)),
        run("support-bot r16", "failed", 212, 600, evals=(150,), lora_r=16),
        run("support-bot lr 5e-5", "paused", 330, 600, evals=(150, 300), learning_rate=5e-5,
            sha="77c0" * 16),
        run("support-bot lr 3e-4", "training", 410, 600, evals=(150, 300),
            learning_rate=3e-4),
    ]
    for r in runs:
        r.close()
    return runs


def main() -> int:
    os.environ["TUNEGRAPH_HOME"] = tempfile.mkdtemp(prefix="tunegraph-shot-")
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import QtWidgets

    from app.run_views import install_run_views
    from app.theme import apply_theme
    from engine.store.index import Store

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["tunegraph"])
    apply_theme(app)
    store = Store()
    runs = make_runs(store)
    window = QtWidgets.QMainWindow()
    window.setWindowTitle("Tunegraph — runs")
    window.resize(1500, 960)
    views = install_run_views(window, store.path)
    window.setCentralWidget(QtWidgets.QWidget())
    window.centralWidget().setMaximumHeight(0)
    window.show()
    settle(app, 10, lambda: len(views.panel.rows) == len(runs))
    live = runs[-1]
    views.panel.rows[live.id].set_expanded(True)
    views.panel.split.setSizes([700, 150])
    settle(app, 2.0)
    OUT.mkdir(parents=True, exist_ok=True)
    views.panel_dock.raise_()
    settle(app, 0.5)
    views.panel.grab().save(str(OUT / "run_panel.png"))
    compare = views.open_compare([r.id for r in runs])
    settle(app, 5, lambda: bool(compare.stats) and compare.point_counts() == [600, 212, 330, 410])
    settle(app, 1.0)
    views.tabs.grab().save(str(OUT / "compare.png"))
    views.shutdown()
    window.close()
    print(f"wrote {OUT / 'run_panel.png'} and {OUT / 'compare.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
