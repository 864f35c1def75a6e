"""The `probation` command line: run the service or its parts, manage the database and
users, run the benchmarks and the simulator.

Every command is listed here; the commands themselves are in `serve` (the service and
its production processes), `ops` (schema, users, dead letters), `benchmarks` (`bench …`)
and `simulation` (`simulate`, `score`, `demo`).
"""

from __future__ import annotations

import typer

from probation.cli import ops, serve, simulation
from probation.cli.benchmarks import bench_app

app = typer.Typer(help="Probation electronic monitoring backend.", no_args_is_help=True)

app.command()(serve.serve)
app.command()(serve.api)
app.command()(serve.ingest)
app.command()(serve.scheduler)
app.add_typer(ops.db_app, name="db")
app.add_typer(ops.user_app, name="user")
app.add_typer(ops.audit_app, name="audit")
app.command("dead-letters")(ops.dead_letters)
app.add_typer(bench_app, name="bench")
app.command()(simulation.simulate)
app.command()(simulation.score)
app.command()(simulation.demo)
app.command()(ops.version)

__all__ = ["app"]
