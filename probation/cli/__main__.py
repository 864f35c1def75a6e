"""`python -m probation.cli …` (as the `probation` script)."""

from probation.cli import app

app()
