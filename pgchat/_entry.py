"""The `pgchat` console script: the command line, or one line saying which extra it needs."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from pgchat.cli import main as cli
    except ModuleNotFoundError as exc:
        if exc.name not in ("click", "yoyo"):
            raise
        sys.stderr.write("pgchat: error: the command line needs its extra: "
                         "pip install 'pgchat[cli]' (or 'pgchat[embedded]' for a local server)\n")
        sys.exit(2)
    cli()
