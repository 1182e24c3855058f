"""``python -m wfl_async.cli``: the same as the ``wfl-async`` command."""

from .main import run

run()
