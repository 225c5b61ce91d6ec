"""Issue 23 in the app: the run confirmation says which runs share one copy of their base model
and what that saves (from their real estimates), places such a group on a GPU once with the
group's need, and says nothing when Settings turns sharing off; the Settings checkbox is saved
to the settings file and read back."""

from __future__ import annotations

import keyring
import pytest
from keyring.backends import fail

pytest.importorskip("pytestqt")

from app.confirm_dialog import ConfirmRunsDialog  # noqa: E402
from app.confirm_plan import (  # noqa: E402
    Machine,
    PlannedRun,
    outcomes,
    schedule_sentence,
    sharing_groups,
)
from app.settings_dialog import SettingsDialog  # noqa: E402
from engine import settings as settings_mod  # noqa: E402
from engine.hardware import Gpu  # noqa: E402
from engine.plan import sharing  # noqa: E402
from engine.plan.estimate import HEADROOM  # noqa: E402
from engine.plan.report import estimate_spec  # noqa: E402
from tests.app_helpers import gc_on_the_gui_thread  # noqa: E402, F401
from tests.test_confirm_dialog import THREE, entries, modules_of  # noqa: E402


def test_three_runs_of_one_base_are_said_to_share_it_with_the_saving_of_their_estimates(
    qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_CPU_SLOTS", "3")
    graph, modules = modules_of(tmp_path, THREE)
    given = entries(modules)
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=given)
    qtbot.addWidget(dialog)
    saving = sharing.saving_gib([e["estimate"] for e in given])
    assert saving > 0  # one CUDA context and one copy of the weights instead of three
    assert dialog.sharing.text() == (
        f"3 runs share one copy of builtin:tiny-llama (saves {saving:.1f} GiB), in one training "
        "process: “alpha”, “beta”, “gamma”."
    )
    assert not dialog.sharing.isHidden()
    # on the CPU each run of the group still takes a CPU slot
    assert dialog.schedule.text().startswith("3 start now")


def test_a_node_with_share_base_off_trains_alone_and_the_count_says_so(qtbot, tmp_path):
    graph, modules = modules_of(tmp_path, THREE)
    modules[1].spec.resources.share_base = False  # "Share base" unticked on "beta"
    given = entries(modules)
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=given)
    qtbot.addWidget(dialog)
    pair = [given[0]["estimate"], given[2]["estimate"]]
    assert (
        dialog.sharing.text()
        == sharing.sharing_sentence(2, "builtin:tiny-llama", sharing.saving_gib(pair))
        + ", in one training process: “alpha”, “gamma”."
    )


def test_with_the_setting_off_the_confirmation_says_nothing_of_sharing(qtbot, tmp_path):
    settings_mod.save(settings_mod.Settings(share_base=False))
    graph, modules = modules_of(tmp_path, THREE)
    dialog = ConfirmRunsDialog(modules, [], graph, estimates=entries(modules))
    qtbot.addWidget(dialog)
    assert dialog.sharing.isHidden() and dialog.sharing.text() == ""
    assert "share" not in (dialog.totals.text() + dialog.schedule.text()).lower()


def test_on_a_gpu_a_group_is_placed_once_with_the_groups_need(tmp_path, monkeypatch):
    """Three tiny runs estimated for a 24 GiB GPU with 1 GiB of room left: apart, one fits and
    two wait; as one group (one base, one CUDA context) all three start."""
    monkeypatch.setenv("TUNEGRAPH_FAKE_GPUS", "RTX 4090:24")
    _, modules = modules_of(tmp_path, THREE)
    runs = [PlannedRun(m.name, m.spec, estimate_spec(m.spec, "auto")) for m in modules]
    assert {r.estimate["device"] for r in runs} == {"cuda:0"}
    estimates = [r.estimate for r in runs]
    alone = sharing.separate_gib(estimates) / 3
    together = sharing.group_need_gib(estimates)
    assert alone < 1.0 < 2 * alone and together < 1.0
    gpu = Gpu(0, "RTX 4090", 24.0, 24.0, fake=True)
    machine = Machine(gpus=[gpu], held={0: 24.0 * HEADROOM - 1.0}, live=1)

    groups = sharing_groups(runs)
    assert groups == [[0, 1, 2]]
    assert outcomes(runs, machine, {}, groups) == ["now", "now", "now"]
    assert schedule_sentence(outcomes(runs, machine, {}, groups), machine) == (
        "3 start now; 1 run already going or queued come first."
    )
    assert outcomes(runs, machine, {}) == ["now", "gpu memory", "gpu memory"]
    # a refused run is no member; a run chained to another node waits for it, not with them
    runs[2].refused = True
    assert sharing_groups(runs) == [[0, 1]]
    runs[2].refused = False
    runs[0].spec.upstream_node = "some-upstream-uuid"
    assert sharing_groups(runs) == [[1, 2]]


def test_the_settings_checkbox_round_trips_to_the_settings_file(qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEGRAPH_CONFIG_DIR", str(tmp_path / "config"))
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # no keyring: the token row stays out of the way
    try:
        dialog = SettingsDialog()
        qtbot.addWidget(dialog)
        assert dialog.share_base.isChecked()  # on by default
        assert "GPU memory" in dialog.share_base.toolTip()
        assert "own adapter" in dialog.share_base.toolTip()
        dialog.share_base.setChecked(False)
        assert dialog.save()
        assert settings_mod.load().share_base is False
        assert '"share_base": false' in settings_mod.settings_path().read_text()
        again = SettingsDialog()
        qtbot.addWidget(again)
        assert not again.share_base.isChecked()
        again.share_base.setChecked(True)
        assert again.save() and settings_mod.load().share_base is True
    finally:
        keyring.set_keyring(previous)
