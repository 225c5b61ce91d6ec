"""The main window: canvas in the centre, palette, properties and dataset preview docks, the runs
and chat docks that later parts fill, file handling and the autosaved session, Duplicate / sweep,
a sweep's best trial added back as a Fine-Tune node, Run and its confirmation, and the quit
prompt."""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from app.canvas import Canvas
from app.confirm_dialog import ConfirmRunsDialog
from app.duplicate import (
    deep_duplicate,
    duplicate_as_sweep,
    promote_trial,
    sweep_parameters,
    swept_module,
)
from app.main_window_files import FileActions
from app.node_factory import decl_of
from app.session import SESSION_FILE, Autosave, live_run_count
from app.settings_store import SettingsStore
from app.sweep_dialog import SweepDialog
from app.window_layout import LayoutActions
from engine.errors import TunegraphError
from nodes.catalogue import CATALOGUE, FINE_TUNE

Submit = Callable[[list, list], list]


def default_submit(specs: list, estimates: list) -> list[dict]:
    """Hand runs to the background supervisor (started on demand)."""
    from engine.store.index import Store
    from engine.supervisor import client

    with Store() as store:  # closed when done: the window submits many times in its life
        return client.submit(store, specs, estimates)


class SubmitThread(QtCore.QThread):
    """Runs a submission off the UI thread (the supervisor may take a moment to start)."""

    submitted = QtCore.Signal(list)
    failed = QtCore.Signal(str)

    def __init__(self, submit: Submit, specs: list, estimates: list, parent: QtCore.QObject):
        super().__init__(parent)
        self.submit, self.specs, self.estimates = submit, specs, estimates

    def run(self) -> None:
        try:
            self.submitted.emit(self.submit(self.specs, self.estimates))
        except TunegraphError as err:
            self.failed.emit(str(err))
        except Exception as err:  # a dialog gets one sentence; the trace goes to stderr
            import traceback

            traceback.print_exc()
            self.failed.emit(f"{type(err).__name__}: {err}")


class MainWindow(FileActions, LayoutActions, QtWidgets.QMainWindow):
    def __init__(
        self,
        settings: SettingsStore | None = None,
        submit: Submit | None = None,
        offer_engine_setup: bool | None = None,
    ):
        """`offer_engine_setup`: show the "engine not set up" banner at start (default: yes,
        except under pytest)."""
        super().__init__()
        self.settings = settings or SettingsStore()
        self.submit = submit or default_submit
        self.submit_threads: list[SubmitThread] = []
        self.last_submitted: list[dict] = []
        self.confirm_dialog: ConfirmRunsDialog | None = None
        self.restored_draft = False  # the graph holds unsaved changes restored from the session
        self.closed_down = False  # shutdown() ran: a later close asks nothing
        self.setWindowTitle("Tunegraph")
        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas.widget)
        self.build_docks()
        from app.run_views import install_run_views

        self.run_views = install_run_views(self)  # run panel, runs tab, run details, compare
        from app.node_runs import install_node_runs

        self.node_runs = install_node_runs(self.canvas, self.run_views)  # runs on the nodes
        self.node_runs.runRequested.connect(self._on_run_requested)  # the nodes' hover buttons
        self.node_runs.duplicateRequested.connect(lambda node: self._ctx_duplicate(None, node))
        self.run_views.promoteRequested.connect(self.add_trial_to_canvas)  # a sweep's best
        self._build_actions()
        self._build_menus()
        self._build_context_menus()
        from app.data_node_cards import install_data_cards

        self.data_cards = install_data_cards(self.canvas, self)  # where each data node stands
        self.data_cards.stopRequested.connect(self.run_views.bridge.stop_data)
        self.status = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.status, 1)
        self.canvas.compiled.connect(self._on_compiled)
        self.canvas.selection_changed.connect(self._update_actions)
        self.canvas.dirty_changed.connect(self._on_dirty_changed)
        self.canvas.path_changed.connect(self._on_path_changed)
        self.palette.add_requested.connect(self.add_node)
        self.properties.run_requested.connect(self._on_run_requested)
        self.canvas.graph_file_dropped.connect(self.open_file)
        from app.tools import install_tools

        self.tools = install_tools(self)  # chat pane, library, hardware view, settings
        from app.engine_setup_dialog import install_engine_ui

        self.engine_ui = install_engine_ui(self, offer_engine_setup)  # Help menu, Run check
        self.run_views.panel.chatRequested.connect(self._test_in_chat)
        self.run_views.panel.serveRequested.connect(self.tools.serve_run)
        self.run_views.panel.pushRequested.connect(self.tools.push_run)
        self.watch_run_details()
        self.reset_layout_action = self._action(
            "Reset layout", self.reset_layout, tip="Put every panel back where it starts"
        )
        self.view_menu.addSeparator()
        self.view_menu.addAction(self.reset_layout_action)
        self.arrange_default_docks()
        self.default_sizes_pending = not self.restore_layout()  # first start: sized once shown
        self.autosave = Autosave(self.canvas, self.settings.folder / SESSION_FILE, self)
        self._update_title()
        self._update_actions()

    # -- layout ----------------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QtGui.QKeySequence(shortcut))
        action.setToolTip(
            f"{tip or text}"
            + (f" ({action.shortcut().toString()})" if shortcut is not None else "")
        )
        action.setStatusTip(tip or text)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        keys = QtGui.QKeySequence.StandardKey
        self.new_action = self._action("New", self.new_file, keys.New, "Start an empty graph")
        self.open_action = self._action("Open…", self.open_file, keys.Open, "Open a graph file")
        self.save_action = self._action("Save", self.save, keys.Save, "Save the graph")
        self.save_as_action = self._action(
            "Save As…", self.save_as, keys.SaveAs, "Save the graph under a new name"
        )
        self.quit_action = self._action("Quit", self.close, keys.Quit)
        stack = self.canvas.graph.undo_stack()
        self.undo_action = self._action("Undo", stack.undo, keys.Undo)
        self.redo_action = self._action("Redo", stack.redo, keys.Redo)
        self.undo_action.setEnabled(stack.canUndo())
        self.redo_action.setEnabled(stack.canRedo())
        stack.canUndoChanged.connect(self.undo_action.setEnabled)
        stack.canRedoChanged.connect(self.redo_action.setEnabled)
        stack.undoTextChanged.connect(self._on_undo_text)
        stack.redoTextChanged.connect(self._on_redo_text)
        self.duplicate_action = self._action(
            "Duplicate",
            self.duplicate_selected,
            "Ctrl+D",
            "Copy the selected Fine-Tune node with all nodes feeding it",
        )
        self.sweep_action = self._action(
            "Duplicate as sweep…",
            self.sweep_selected,
            "Ctrl+Shift+D",
            "One copy of the selected Fine-Tune node per value of a parameter",
        )
        self.delete_action = QtGui.QAction("Delete", self)
        self.delete_action.setShortcuts(
            [
                QtGui.QKeySequence(QtCore.Qt.Key.Key_Delete),
                QtGui.QKeySequence(QtCore.Qt.Key.Key_Backspace),
            ]
        )
        self.delete_action.setShortcutContext(QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.delete_action.triggered.connect(self.delete_selected)
        self.canvas.widget.addAction(self.delete_action)
        self.run_action = self._action(
            "Run selected", self.run_selected, "Ctrl+R", "Run the selected Fine-Tune nodes"
        )
        self.run_all_action = self._action(
            "Run all", self.run_all, "Ctrl+Shift+R", "Run every Fine-Tune node without errors"
        )
        self.fit_action = self._action("Fit view", self.fit_view, "F", "Show the whole graph")
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main-toolbar")
        toolbar.setMovable(False)
        for action in (
            self.new_action,
            self.open_action,
            self.save_action,
            None,
            self.undo_action,
            self.redo_action,
            None,
            self.duplicate_action,
            self.sweep_action,
            None,
            self.run_action,
            self.run_all_action,
            None,
            self.fit_action,
        ):
            if action is None:
                toolbar.addSeparator()
            else:
                toolbar.addAction(action)

    def _on_undo_text(self, text: str) -> None:
        self.undo_action.setToolTip(f"Undo {text}" if text else "Undo")

    def _on_redo_text(self, text: str) -> None:
        self.redo_action.setToolTip(f"Redo {text}" if text else "Redo")

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_action, self.open_action])
        self.recent_menu = file_menu.addMenu("Open Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file_menu.addActions([self.save_action, self.save_as_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit = bar.addMenu("&Edit")
        edit.addActions([self.undo_action, self.redo_action])
        edit.addSeparator()
        edit.addActions([self.duplicate_action, self.sweep_action, self.delete_action])
        add = bar.addMenu("&Nodes")
        for decl in CATALOGUE.values():
            action = add.addAction(f"Add {decl.label}")
            action.setStatusTip(decl.help)
            action.triggered.connect(lambda _c=False, k=decl.kind: self.add_node(k))
        run = bar.addMenu("&Run")
        run.addActions([self.run_action, self.run_all_action])
        self.view_menu = view = bar.addMenu("&View")
        view.addAction(self.fit_action)
        view.addSeparator()
        for dock in (
            self.palette_dock,
            self.properties_dock,
            self.preview_dock,
            self.runs_dock,
            self.run_views.views_dock,
            self.chat_dock,
        ):
            view.addAction(dock.toggleViewAction())

    def _build_context_menus(self) -> None:
        menu = self.canvas.graph.get_context_menu("nodes")
        self.node_run_actions = []
        for decl in CATALOGUE.values():
            if decl is FINE_TUNE:
                run = menu.add_command("Run this node…", self._ctx_run, node_type=decl.type_)
                self.node_run_actions.append(run.qaction)
                menu.add_command("Duplicate", self._ctx_duplicate, node_type=decl.type_)
                menu.add_command("Duplicate as sweep…", self._ctx_sweep, node_type=decl.type_)
            menu.add_command("Delete", self._ctx_delete, node_type=decl.type_)
        graph_menu = self.canvas.graph.get_context_menu("graph")
        for decl in CATALOGUE.values():
            graph_menu.add_command(
                f"Add {decl.label}", lambda _g=None, k=decl.kind: self._ctx_add(k)
            )
        self.canvas.graph.context_menu_prompt.connect(self._on_context_menu)

    def _on_context_menu(self, _menu, node) -> None:
        ok = node is not None and decl_of(node) is FINE_TUNE and self.canvas.module_ok(node)
        for action in self.node_run_actions:
            action.setEnabled(ok)

    def _ctx_run(self, _graph, node) -> None:
        self.run_modules([node])

    def _ctx_duplicate(self, _graph, node) -> None:
        deep_duplicate(self.canvas, node)

    def _ctx_sweep(self, _graph, node) -> None:
        self.sweep(node)

    def _ctx_delete(self, _graph, node) -> None:
        nodes = self.canvas.selected()
        self.canvas.delete_nodes(nodes if node in nodes else [node])

    def _ctx_add(self, kind: str) -> None:
        pos = self.canvas.viewer.mapToScene(self.canvas.viewer.mapFromGlobal(QtGui.QCursor.pos()))
        self.canvas.add_node(kind, pos=(pos.x(), pos.y()))

    # -- nodes -----------------------------------------------------------------------------------
    def add_node(self, kind: str):
        x, y = self.canvas.view_centre()
        node = self.canvas.add_node(kind, pos=(x - 80, y - 30))
        self.canvas.select([node])
        return node

    def selected_module(self):
        modules = [n for n in self.canvas.selected() if decl_of(n) is FINE_TUNE]
        return modules[0] if len(modules) == 1 else None

    def duplicate_selected(self):
        module = self.selected_module()
        if module is None:
            self.statusBar().showMessage("Select one Fine-Tune node to duplicate.", 4000)
            return None
        copy = deep_duplicate(self.canvas, module)
        self.statusBar().showMessage(f"Duplicated “{module.name()}” as “{copy.name()}”.", 4000)
        return copy

    def sweep_selected(self) -> None:
        module = self.selected_module()
        if module is None:
            self.statusBar().showMessage("Select one Fine-Tune node to sweep.", 4000)
            return
        self.sweep(module)

    def sweep(self, module) -> None:
        dialog = SweepDialog(module.name(), sweep_parameters(self.canvas, module), self)
        if dialog.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            parameter, values = dialog.choice()
            copies = duplicate_as_sweep(self.canvas, module, parameter, values)
            self.statusBar().showMessage(
                f"Created {len(copies)} copies of “{module.name()}”.", 4000
            )

    def add_trial_to_canvas(self, trial: dict):
        """A sweep's trial as a plain Fine-Tune node (app.duplicate.promote_trial), or why not."""
        module = swept_module(self.canvas, trial.get("node_uuid"))
        try:
            if module is None:
                raise ValueError(
                    f"The swept Fine-Tune node “{trial.get('module') or '?'}” is not on this "
                    "canvas: open its graph, then add the trial again."
                )
            copy = promote_trial(self.canvas, module, trial.get("params") or {}, trial["name"])
        except ValueError as err:
            self.statusBar().showMessage(str(err), 8000)
            return None
        self.statusBar().showMessage(f"Added “{copy.name()}”: the trial's values, no sweep.", 6000)
        return copy

    def delete_selected(self) -> None:
        self.canvas.delete_nodes(self.canvas.selected())

    def fit_view(self) -> None:
        self.canvas.fit_all()

    # -- runs ------------------------------------------------------------------------------------
    def run_selected(self) -> ConfirmRunsDialog | None:
        modules = self.canvas.modules_of(self.canvas.selected())
        if not modules:
            self.statusBar().showMessage(
                "Select a Fine-Tune node (or nodes feeding one) to run, or use Run all.", 5000
            )
            return None
        return self.run_modules(modules)

    def run_all(self) -> ConfirmRunsDialog | None:
        return self.run_modules(self.canvas.nodes(FINE_TUNE.kind))

    def run_modules(
        self, nodes: list, estimates: list[dict] | None = None
    ) -> ConfirmRunsDialog | None:
        """Open the confirmation for these modules (those with errors are listed, not run);
        without a training engine, say what is missing and offer the set-up instead."""
        if not self.engine_ui.ensure_ready():
            return None
        result = self.canvas.recompile_checked()  # every dataset read whole first
        ids = {n.id for n in nodes}
        chosen = [m for m in result.modules if m.node_id in ids]
        ready = [m for m in chosen if m.spec is not None]
        if not ready:
            self.statusBar().showMessage(
                "Nothing to run: fix the errors marked on the nodes first.", 5000
            )
            return None
        skipped = [m for m in chosen if m.spec is None]
        dialog = ConfirmRunsDialog(
            ready,
            skipped,
            self.canvas.to_dict(),
            self.canvas.path,
            estimates=estimates,
            parent=self,
        )
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.start_requested.connect(self.start_runs)
        dialog.refused.connect(self.canvas.set_refusals)  # "can never fit" on the node too
        self.canvas.set_refusals(dialog.refusal_texts())  # those known already
        dialog.destroyed.connect(self._forget_dialog)
        self.confirm_dialog = dialog
        dialog.open()
        return dialog

    def _on_run_requested(self, node) -> None:
        self.run_modules([node])

    def _forget_dialog(self, *_args) -> None:
        self.confirm_dialog = None

    def start_runs(self, specs: list, estimates: list) -> SubmitThread:
        """Submit in a background thread; results land in the Runs dock."""
        thread = SubmitThread(self.submit, specs, estimates, self)
        thread.submitted.connect(self._on_submitted)
        thread.failed.connect(self._on_submit_failed)
        thread.finished.connect(self._on_thread_finished)
        self.submit_threads.append(thread)
        self.statusBar().showMessage(f"Submitting {len(specs)} run(s)…")
        thread.start()
        return thread

    def _on_submitted(self, entries: list) -> None:
        self.last_submitted = list(entries)
        self.run_views.bridge.refresh()  # the new runs appear in the run panel at once
        refused = [e for e in entries if e.get("state") == "refused"]
        if refused:
            QtWidgets.QMessageBox.warning(
                self,
                "Some runs were refused",
                "\n".join(
                    f"{e.get('name')}: {(e.get('error') or {}).get('message')}" for e in refused
                ),
            )
        queued = sum(e.get("state") == "queued" and not e.get("sweep") for e in entries)
        sweeps = [e for e in entries if e.get("sweep") and e.get("state") == "queued"]
        started = [f"{queued} run(s) queued"] if queued or not sweeps else []
        started += [f"sweep {e['id']} started (All runs ▸ Sweeps)" for e in sweeps]
        self.statusBar().showMessage("; ".join(started) + ".", 8000)
        self.runs_dock.raise_()

    def _test_in_chat(self, run_id: str) -> None:
        if self.tools.open_run_in_chat(run_id) is None:
            self.statusBar().showMessage("This run has no GGUF yet: export it first.", 6000)

    def _on_submit_failed(self, message: str) -> None:
        self.statusBar().showMessage("Submission failed.", 5000)
        QtWidgets.QMessageBox.warning(self, "Could not start the runs", message)

    def _on_thread_finished(self) -> None:
        self.submit_threads = [t for t in self.submit_threads if t.isRunning()]

    # -- compile state ---------------------------------------------------------------------------
    def _on_compiled(self, result) -> None:
        modules = result.modules
        ok = sum(m.spec is not None for m in modules)
        bad = len(modules) - ok
        nodes_with_errors = len({e.node_id for e in result.errors})
        if not modules:
            text = "No Fine-Tune node yet: add one from the palette and connect its inputs."
        elif bad:
            text = (
                f"{ok} of {len(modules)} Fine-Tune nodes ready · {nodes_with_errors} node(s) need "
                "attention (red badges; hover for details)"
            )
        else:
            text = (
                f"All {ok} Fine-Tune nodes ready to run (Ctrl+Shift+R runs all)"
                if ok > 1
                else "The Fine-Tune node is ready to run (Ctrl+R)"
            )
        self.status.setText(text)
        self._update_actions()

    def _update_actions(self, *_args) -> None:
        selected = self.canvas.selected()
        module = self.selected_module()
        self.duplicate_action.setEnabled(module is not None)
        self.sweep_action.setEnabled(module is not None)
        self.delete_action.setEnabled(bool(selected))
        modules = self.canvas.modules_of(selected)
        self.run_action.setEnabled(bool(modules) and all(self.canvas.module_ok(m) for m in modules))
        self.run_all_action.setEnabled(any(m.spec is not None for m in self.canvas.result.modules))

    # -- session ---------------------------------------------------------------------------------
    def showEvent(self, event: QtGui.QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self.default_sizes_pending:
            self.default_sizes_pending = False
            self.apply_default_sizes()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self.closed_down:
            dirty, live = self.canvas.dirty, live_run_count()
            answer = self.ask_quit(dirty, live) if dirty or live else "quit"
            if answer == "cancel" or (answer == "save" and not self.save()):
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop helper processes and threads; write the session and the window layout."""
        if self.closed_down:
            return
        self.closed_down = True
        self.autosave.stop()
        self.preview.stop()
        self.engine_ui.shutdown()
        self.tools.shutdown()
        self.run_views.shutdown()
        if self.confirm_dialog is not None:
            self.confirm_dialog.reject()
        for thread in self.submit_threads:
            thread.wait()
        self.submit_threads = []
        self.save_layout()
        self.settings.sync()
