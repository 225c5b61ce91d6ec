"""The Settings dialog: data directory, offline mode, GPU policy, CPU threads, the speed check,
sharing a base model between runs, theme, the Ray cluster address (with a connection test in a
helper process: the UI never imports Ray), and the Hugging Face token, which goes to the OS
keyring only (engine.secrets) — never to settings.json, a log or a graph. Without a keyring
backend the dialog says so and points to HF_TOKEN.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.processes import JsonProcess
from engine import paths, secrets
from engine import settings as settings_mod
from engine.cluster.executor import ADDRESS_ENV
from engine.settings import Settings

NO_KEYRING = (
    "No keyring backend is available on this system, so the token cannot be stored. "
    "Set the HF_TOKEN environment variable before starting Tunegraph instead."
)


def check_token(token: str) -> str:
    """Ask the Hub who the token belongs to; returns a sentence (the token is never echoed)."""
    from huggingface_hub import whoami

    try:
        info = whoami(token=token)
    except Exception as err:  # HTTP 401, no network, …: one sentence, no token in it
        text = str(err).replace(token, "***")
        return f"The token was not accepted: {text.splitlines()[0] if text else type(err).__name__}"
    return f"Valid token for {info.get('name', 'an unknown user')}."


class _TokenCheck(QtCore.QThread):
    result = QtCore.Signal(str)

    def __init__(self, token: str, parent: QtCore.QObject):
        super().__init__(parent)
        self._token = token

    def run(self) -> None:
        self.result.emit(check_token(self._token))


class SettingsDialog(QtWidgets.QDialog):
    """Edits engine.settings.Settings; `saved` carries the new settings after OK."""

    saved = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self.current = settings_mod.load()
        self._check: _TokenCheck | None = None

        self.data_dir = QtWidgets.QLineEdit(str(paths.chosen_data_dir() or paths.data_dir()))
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        data_row = QtWidgets.QHBoxLayout()
        data_row.addWidget(self.data_dir, 1)
        data_row.addWidget(browse)
        self.offline = QtWidgets.QCheckBox(
            "Offline mode: never download; refuse hub models that are not in the local cache"
        )
        self.offline.setChecked(self.current.offline)
        self.offline.toggled.connect(self._update_token_buttons)
        self._has_stored = False
        self.gpu_policy = QtWidgets.QComboBox()
        self.gpu_policy.addItem("Queue the run until a GPU is free", "queue")
        self.gpu_policy.addItem("Refuse the run", "refuse")
        self.gpu_policy.setCurrentIndex(max(0, self.gpu_policy.findData(self.current.gpu_policy)))
        self.cpu_threads = QtWidgets.QSpinBox(minimum=0, maximum=max(1, os.cpu_count() or 1))
        self.cpu_threads.setSpecialValueText("Automatic")
        self.cpu_threads.setValue(min(self.current.cpu_threads, self.cpu_threads.maximum()))
        self.speed_check = QtWidgets.QCheckBox(
            "Measure a new model's speed with a short run before its first estimate"
        )
        self.speed_check.setToolTip(
            "The first time a model is estimated on this machine, a few real training steps "
            "measure its speed, so the time range before start is at most about 1.7x wide "
            "instead of the size-based guess. Takes seconds to a minute, once per model."
        )
        self.speed_check.setChecked(self.current.speed_check)
        self.share_base = QtWidgets.QCheckBox(
            "Share one copy of a base model between runs that start together"
        )
        self.share_base.setToolTip(
            "LoRA runs (SFT or pretraining) of the same base model (same source, revision, "
            "precision, 4-bit choice and device) that start together train in one process that "
            "holds the base once, which saves GPU memory: more runs fit at a time. Each run "
            "keeps its own adapter, optimizer, data order, metrics and results. A Fine-Tune "
            "node can opt out with “Share base”."
        )
        self.share_base.setChecked(self.current.share_base)
        self.theme = QtWidgets.QComboBox()
        self.theme.addItem("Dark", "dark")
        self.theme.addItem("Light", "light")
        self.theme.setCurrentIndex(max(0, self.theme.findData(self.current.theme)))

        general = QtWidgets.QFormLayout()
        general.addRow("Data directory", data_row)
        note = QtWidgets.QLabel("A new data directory takes effect at the next start.")
        note.setObjectName("hint")
        general.addRow("", note)
        general.addRow("", self.offline)
        general.addRow("When the GPUs are busy", self.gpu_policy)
        general.addRow("CPU threads per CPU run", self.cpu_threads)
        general.addRow("", self.speed_check)
        general.addRow("", self.share_base)
        general.addRow("Theme", self.theme)

        self.keyring_ok = secrets.keyring_available()
        self.token = QtWidgets.QLineEdit()
        self.token.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.test_button = QtWidgets.QPushButton("Test")
        self.test_button.clicked.connect(self.test_token)
        self.clear_button = QtWidgets.QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear_token)
        self.token_status = QtWidgets.QLabel("")
        self.token_status.setWordWrap(True)
        self.token.textChanged.connect(self._update_token_buttons)
        token_row = QtWidgets.QHBoxLayout()
        token_row.addWidget(self.token, 1)
        token_row.addWidget(self.test_button)
        token_row.addWidget(self.clear_button)
        token_box = QtWidgets.QGroupBox("Hugging Face token (for gated models)")
        token_layout = QtWidgets.QVBoxLayout(token_box)
        token_layout.addLayout(token_row)
        token_layout.addWidget(self.token_status)
        self._show_token_state()

        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.error = QtWidgets.QLabel("")
        self.error.setStyleSheet("color: #f28b82;")
        self.error.setWordWrap(True)
        layout = QtWidgets.QVBoxLayout(self)
        # never narrower than its rows: a checkbox's sentence is not cut off
        layout.setSizeConstraint(QtWidgets.QLayout.SizeConstraint.SetMinimumSize)
        layout.addLayout(general)
        layout.addWidget(self._cluster_box())
        layout.addWidget(token_box)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    # -- token ------------------------------------------------------------------------------------
    def _stored_token(self) -> str | None:
        if not self.keyring_ok:
            return None
        try:
            import keyring

            return keyring.get_password(secrets.SERVICE, secrets.HF_TOKEN_KEY)
        except Exception:
            return None

    def _show_token_state(self) -> None:
        self._has_stored = bool(self._stored_token())  # asked once: a keyring may be slow
        if not self.keyring_ok:
            self.token.setEnabled(False)
            self.clear_button.setEnabled(False)
            env = " HF_TOKEN is set in this environment." if os.environ.get("HF_TOKEN") else ""
            self.token.setPlaceholderText("No keyring available")
            self.token_status.setText(NO_KEYRING + env)
        elif self._has_stored:
            self.token.setPlaceholderText("A token is stored in the keyring (type to replace it)")
            self.token_status.setText("Stored in the OS keyring.")
        else:
            self.token.setPlaceholderText("hf_… (stored in the OS keyring only)")
            self.token_status.setText(
                "No token stored."
                + (" HF_TOKEN from the environment is used." if os.environ.get("HF_TOKEN") else "")
            )
        self._update_token_buttons()

    def _update_token_buttons(self) -> None:
        offline = self.offline.isChecked() or settings_mod.is_offline(Settings())
        has_token = bool(
            self.token.text().strip() or self._has_stored or os.environ.get("HF_TOKEN")
        )
        self.test_button.setEnabled(not offline and has_token and self._check is None)
        self.test_button.setToolTip(
            "Offline mode: the token is not checked."
            if offline
            else "Ask huggingface.co whose token this is."
        )

    def test_token(self) -> None:
        token = self.token.text().strip() or self._stored_token() or os.environ.get("HF_TOKEN")
        if not token or self._check is not None:
            return
        self.token_status.setText("Checking with huggingface.co…")
        self._check = _TokenCheck(token, self)
        self._check.result.connect(self._on_checked)
        self._check.finished.connect(self._on_check_done)
        self._check.start()
        self._update_token_buttons()

    @QtCore.Slot(str)
    def _on_checked(self, text: str) -> None:
        self.token_status.setText(text)

    # -- Ray cluster ------------------------------------------------------------------------------
    def _cluster_box(self) -> QtWidgets.QGroupBox:
        self.ray_address = QtWidgets.QLineEdit(self.current.ray_address)
        self.ray_address.setPlaceholderText("e.g. 10.0.0.5:6379 or ray://head:10001 (empty: none)")
        self.ray_address.textChanged.connect(self._update_cluster_button)
        self.cluster_button = QtWidgets.QPushButton("Test connection")
        self.cluster_button.clicked.connect(self.test_cluster)
        self.cluster_status = QtWidgets.QLabel(
            "Fine-Tune nodes whose target is “cluster” run there."
            + (
                f" TUNEGRAPH_RAY_ADDRESS ({os.environ[ADDRESS_ENV]}) overrides this field."
                if os.environ.get(ADDRESS_ENV)
                else ""
            )
        )
        self.cluster_status.setWordWrap(True)
        self.cluster_probe = JsonProcess(self)
        self.cluster_probe.finished.connect(self._on_cluster)
        self.cluster_probe.failed.connect(self._on_cluster_failed)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.ray_address, 1)
        row.addWidget(self.cluster_button)
        box = QtWidgets.QGroupBox("Ray cluster (for runs whose target is the cluster)")
        layout = QtWidgets.QVBoxLayout(box)
        layout.addLayout(row)
        layout.addWidget(self.cluster_status)
        self._update_cluster_button()
        return box

    def _update_cluster_button(self) -> None:
        self.cluster_button.setEnabled(
            bool(self.ray_address.text().strip()) and not self.cluster_probe.is_running()
        )

    def test_cluster(self) -> None:
        """Ask the cluster for its nodes with `tunegraph cluster ADDRESS --json` (a subprocess)."""
        address = self.ray_address.text().strip()
        if not address:
            return
        self.cluster_status.setText(f"Connecting to {address}…")
        self.cluster_probe.start("app", ["cluster", address, "--json"])
        self._update_cluster_button()

    @QtCore.Slot(object)
    def _on_cluster(self, data) -> None:
        self.cluster_status.setText(cluster_summary(data))
        self._update_cluster_button()

    @QtCore.Slot(str)
    def _on_cluster_failed(self, message: str) -> None:
        self.cluster_status.setText(f"Could not connect: {message}")
        self._update_cluster_button()

    @QtCore.Slot()
    def _on_check_done(self) -> None:
        self._check = None
        self._update_token_buttons()

    def clear_token(self) -> None:
        self.token.clear()
        if self.keyring_ok:
            secrets.clear_hf_token()
        self._show_token_state()
        self.token_status.setText("The token was removed from the keyring.")

    # -- saving -----------------------------------------------------------------------------------
    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Data directory", self.data_dir.text()
        )
        if folder:
            self.data_dir.setText(folder)

    def values(self) -> Settings:
        return Settings(
            offline=self.offline.isChecked(),
            gpu_policy=self.gpu_policy.currentData(),
            cpu_threads=self.cpu_threads.value(),
            theme=self.theme.currentData(),
            suspended_gpus=settings_mod.load().suspended_gpus,
            ray_address=self.ray_address.text().strip(),
            speed_check=self.speed_check.isChecked(),
            share_base=self.share_base.isChecked(),
        )

    def save(self) -> bool:
        """Write settings.json, the data-directory choice and (to the keyring) the token."""
        try:
            new = self.values()
            folder = self.data_dir.text().strip()
            if folder and Path(folder).expanduser().resolve() != paths.data_dir():
                paths.choose_data_dir(folder)
            token = self.token.text().strip()
            if token and self.keyring_ok:
                secrets.set_hf_token(token)
            settings_mod.save(new)
        except Exception as err:  # keyring or file-system errors: one sentence, never the token
            text = str(err)
            if self.token.text():
                text = text.replace(self.token.text(), "***")
            self.error.setText(f"Could not save the settings: {text}")
            return False
        self.token.clear()
        self.current = new
        self.saved.emit(new)
        return True

    def accept(self) -> None:
        if self.save():
            super().accept()

    def done(self, result: int) -> None:
        if self._check is not None:
            self._check.wait()
        self.cluster_probe.cancel()
        super().done(result)


def cluster_summary(data: dict) -> str:
    """One sentence for `tunegraph cluster --json`'s answer: nodes, CPUs, GPUs."""
    nodes = data.get("nodes") or []
    cpus = sum(n.get("cpus") or 0 for n in nodes)
    gpus = sum(n.get("gpus") or 0 for n in nodes)
    types = sorted({n["gpu_type"] for n in nodes if n.get("gpu_type")})
    kind = f" ({', '.join(types)})" if types else ""
    return (
        f"Connected to {data.get('address')}: {len(nodes)} node{'s' * (len(nodes) != 1)}, "
        f"{cpus} CPUs, {gpus} GPU{'s' * (gpus != 1)}{kind}."
    )
