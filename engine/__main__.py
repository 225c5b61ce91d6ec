"""`python -m engine NAME ARGS…` runs the process entry point NAME (engine.rundir.ENTRY_POINTS).

The command line is `tunegraph` (`python -m app`); this door exists for launchers and debugging.
"""

import runpy
import sys

from engine.rundir import ENTRY_POINTS, entry_module


def main(argv: list[str]) -> int:
    """Run one entry point as `__main__` with the rest of argv."""
    if not argv or argv[0] not in ENTRY_POINTS:
        names = ", ".join(ENTRY_POINTS)
        print(f"usage: python -m engine NAME [ARGS…] with NAME one of: {names}", file=sys.stderr)
        print("The command line is `tunegraph` (python -m app).", file=sys.stderr)
        return 2
    sys.argv = [entry_module(argv[0]), *argv[1:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
