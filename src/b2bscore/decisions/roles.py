"""`b2bscore db grant-app-role ROLE`: the service's database role, unable to rewrite the audit.

Migrations run as the owner of the tables (B2BSCORE_MIGRATION_DATABASE_URL); the service
runs as another role that may only INSERT and SELECT audit rows. Only a table's owner
(or a superuser) can ALTER it, disable or drop its triggers, and only a role granted
UPDATE, DELETE or TRUNCATE can run them: the application's role is granted none of these.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Annotated, Final

import typer

if TYPE_CHECKING:
    # Imported where used: every `b2bscore` command loads this module, and SQLAlchemy
    # would add a second and more to the start of commands that never touch a database.
    from sqlalchemy.ext.asyncio import AsyncConnection

AUDIT_TABLE: Final = "decisions"
# Insert-only beside it: the notes of rows that committed after their request's 503.
APPEND_ONLY_TABLES: Final = (AUDIT_TABLE, "late_commits")
# What the application role may do to the audit table, and what it must never hold.
AUDIT_GRANTS: Final = ("SELECT", "INSERT")
AUDIT_REFUSED: Final = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")
_ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class RoleError(Exception):
    """The role cannot be made a safe application role."""


def _quoted(role: str) -> str:
    if not _ROLE_NAME.fullmatch(role):
        raise RoleError(f"role names are letters, digits and _ (got {role!r})")
    return f'"{role}"'


async def grant_app_role(connection: AsyncConnection, role: str) -> list[str]:
    """Grant role exactly what the service needs, as the owner; the audit table's grants.

    The other tables of the schema get SELECT, INSERT, UPDATE, DELETE (keys, tenants);
    the audit table SELECT and INSERT only. Refused for a superuser, the owner of the
    audit table or a member of the owner's role: such a role could undo any grant.
    """
    from sqlalchemy import text

    quoted = _quoted(role)
    found = (
        await connection.execute(
            text(
                "SELECT r.rolsuper, pg_has_role(r.oid, c.relowner, 'MEMBER') "
                "FROM pg_roles r, pg_class c "
                "WHERE r.rolname = :role AND c.oid = CAST(:table AS regclass)"
            ),
            {"role": role, "table": AUDIT_TABLE},
        )
    ).one_or_none()
    if found is None:
        raise RoleError(f"role {role!r} does not exist (CREATE ROLE {role} LOGIN PASSWORD ...)")
    superuser, owner = found
    if superuser or owner:
        raise RoleError(
            f"role {role!r} is a superuser or owns the audit table: it can disable the "
            "append-only triggers; use a role of its own for the service"
        )
    database = (await connection.execute(text("SELECT current_database()"))).scalar_one()
    statements = [
        f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}',
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
        *(f"REVOKE ALL ON {table} FROM {quoted}" for table in APPEND_ONLY_TABLES),
        *(
            f"GRANT {', '.join(AUDIT_GRANTS)} ON {table} TO {quoted}"
            for table in APPEND_ONLY_TABLES
        ),
        f"REVOKE ALL ON alembic_version FROM {quoted}",
        f"GRANT SELECT ON alembic_version TO {quoted}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
    ]
    for statement in statements:
        await connection.execute(text(statement))
    held = [
        privilege
        for privilege in AUDIT_GRANTS + AUDIT_REFUSED
        if (
            await connection.execute(
                text("SELECT has_table_privilege(:role, :table, :privilege)"),
                {"role": role, "table": AUDIT_TABLE, "privilege": privilege},
            )
        ).scalar_one()
    ]
    if set(held) != set(AUDIT_GRANTS):
        # PUBLIC or another role it belongs to still grants more: fail, do not pretend.
        raise RoleError(f"role {role!r} still holds {held} on {AUDIT_TABLE}")
    return held


async def _grant(url: str, role: str) -> list[str]:
    from b2bscore.kit.db import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            return await grant_app_role(connection, role)
    finally:
        await engine.dispose()


def grant_app_role_command(
    role: Annotated[str, typer.Argument(help="The (existing) login role the service runs as.")],
) -> None:
    """Grant ROLE what the service needs and no more: INSERT and SELECT on the audit table.

    Runs as the owner (B2BSCORE_MIGRATION_DATABASE_URL); run it again after each upgrade.
    """
    from b2bscore.kit.settings import Settings

    settings = Settings()
    url = settings.resolved_migration_database_url
    if not url.startswith("postgresql"):
        typer.echo(
            "SQLite has no roles: its audit table is guarded by triggers and 0600 files",
            err=True,
        )
        raise typer.Exit(code=2)
    try:
        held = asyncio.run(_grant(url, role))
    except RoleError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"role {role} may {' and '.join(held)} on {AUDIT_TABLE}, nothing more")
