"""Entry point of the frozen Tunegraph executable (PyInstaller): one program, GUI and CLI.

`tunegraph` with no command opens the desktop app, `tunegraph COMMAND …` is the command line
(app.main.main decides). A frozen app has no interpreter, so code that starts
`sys.executable -m MODULE …` (the supervisor, helper processes) is answered here too: `-m app ARGS`
is `tunegraph ARGS` and `-m MODULE ARGS` runs a bundled module. Modules that need torch exist only
in the engine environment (`tunegraph engine setup`) and fail here with ImportError.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys


def main() -> int:
    multiprocessing.freeze_support()
    if getattr(sys, "frozen", False):
        # uv (uv.exe) ships beside the executable; `tunegraph engine setup` finds it on PATH.
        here = os.path.dirname(os.path.realpath(sys.executable))
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    from app.main import main as app_main

    argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "-m":
        module, rest = argv[1], argv[2:]
        if module == "app":
            return app_main(rest)
        sys.argv = [module, *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
