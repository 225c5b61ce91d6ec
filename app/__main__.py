"""`python -m app` is the `tunegraph` command: the window, or the command line."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
