"""What every command group of the command line shares: JSON output, the run index, the run shape
DESIGN.md fixes, and the one way a command's failure reaches the terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import TunegraphError

if TYPE_CHECKING:
    from engine.store.index import Store


def print_json(obj: Any) -> None:
    """Print `obj` as indented JSON on stdout (dates and paths as strings)."""
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def open_store() -> Store:
    """The run index of this data directory."""
    from engine.store.index import Store

    return Store()


def run_out(run: dict) -> dict:
    """A run in exactly the DESIGN.md "JSON shapes" keys (the store adds a few of its own)."""
    from engine.store.queries import RUN_KEYS

    return {key: run[key] for key in RUN_KEYS}


def run_guarded(command: Callable[[], int], debug: bool = False) -> int:
    """Run `command` as `tunegraph` does: a TunegraphError becomes one sentence on stderr (exit 1,
    re-raised with `debug`), Ctrl-C exits 130 and a closed pipe ends quietly; returns the exit code."""
    try:
        return command()
    except TunegraphError as err:
        if debug:
            raise
        print(f"tunegraph: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tunegraph logs RUN | head`
        sys.stderr.close()
        return 0
