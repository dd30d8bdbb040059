"""``python -m lbr``: the same command line as the ``lbr`` script.

Tests run the CLI as a real subprocess this way (to kill it with SIGKILL), without depending
on the console script being installed on PATH.
"""

from __future__ import annotations

from lbr.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
