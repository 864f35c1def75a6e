"""Probation electronic monitoring: the app shell and the supervision domains.

Shell: `app`, `api/` (thin routes), `deps`, `context`, `errors`, `i18n`, `settings`,
`pagination`, `fields`, `idempotency`, `cli`. Domains, each with its `models` and
`service`: `users`, `subjects`, `cases`, `zones`, `tracks`, `audit`, `desk` (the alert
desk). `runtime/` composes the processes (embedded servers, workers, scheduler).
"""

__version__ = "0.1.0"
