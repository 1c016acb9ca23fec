"""``python -m services.cli``: the ``cotn`` command, for child processes started by ``cotn run``."""

from services.cli.main import app

app(prog_name="cotn")
