"""Persistence and the live scheduler: ORM, migrations, unit of work, repository,
service operations, snapshots and scheduling rounds. The CLI and any other
front end reach the database only through this package."""
