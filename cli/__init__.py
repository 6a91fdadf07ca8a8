"""The ``aiops`` command line, one module per command group.

A top-level package above ``training`` and ``serving``: the entry point knows
every command, so it imports both siblings and neither of them imports it.
"""

from cli.main import main

__all__ = ["main"]
