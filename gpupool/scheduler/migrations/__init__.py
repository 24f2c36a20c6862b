"""Alembic migrations shipped inside the package (see gpupool.scheduler.migrate).

``HEAD`` is the newest revision id; the CLI compares the database's revision
with it without loading Alembic (a test checks it matches the scripts' head).
Whoever adds a migration updates HEAD.
"""

HEAD = "0007_job_classes"
