"""`gpupool serve`: the HTTP API over gpupool.scheduler's service layer.

The server is the only process holding the database URL. Every route runs the
same service function the CLI command of the same name runs, inside one
gpupool.scheduler.database.unit_of_work on a process-wide engine, with the
authenticated user's name as the actor, and returns the same ``*_view`` dict
that command prints with ``--json``. See docs/service.md.

Modules: ``app`` (the factory), ``settings``, ``auth`` (bearer tokens, failed
login limits), ``problems`` (RFC 9457 errors), ``middleware`` (request ids,
access log, latency histogram, body size limit), ``metrics`` (Prometheus),
``logs`` (JSON log lines), ``schemas`` (request and response models) and
``routes/`` (one module per resource).
"""
