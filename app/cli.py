"""The `sec` command line: administration of the service (keys, migrations, serving) here,
and the user's commands (datasets, jobs, artifacts, deploy, predict) from `sec_client.cli`."""

from __future__ import annotations

from typing import Annotated

import typer

from app.settings import get_settings
from sec_client.cli import register

cli = typer.Typer(
    help="SEC: compression as a service. Administration (serve, create-key, migrate) and the"
    " API's user commands (datasets, jobs, artifacts, deploy, predict).",
    no_args_is_help=True,
)


@cli.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if it does not exist.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
) -> None:
    """Create an API key for TENANT and print it once (it is stored only as a hash)."""
    from app.db.session import make_engine, make_sessionmaker, unit_of_work
    from app.tenants import service

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            row = service.get_or_create_tenant(session, tenant)
            key, plaintext = service.create_api_key(session, row.id, name)
            tenant_id, key_id = row.id, key.id
    finally:
        engine.dispose()
    typer.echo(f"tenant {tenant!r} ({tenant_id}), key {key_id}. Store the key now:", err=True)
    typer.echo(plaintext)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the database migrations (to SEC_DATABASE_URL)."""
    from app.db.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    typer.echo(f"database at {revision}", err=True)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Start the API and a worker together (the embedded one-command mode)."""
    from app.launcher import run_embedded

    raise typer.Exit(run_embedded(host=host, port=port))


register(cli)  # after the operator commands, so `sec --help` lists those first


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
