"""A team MLflow tracking server: runs and the model registry in PostgreSQL, artifacts in a folder
or a bucket, served through the server (`--serve-artifacts`), so clients need no storage credentials.

    make mlflow-server MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:secret@db-host:5432/mlflow \\
                       MLFLOW_ARTIFACTS_DESTINATION=/srv/mlflow-artifacts     # or s3://bucket/prefix
    python -m maskpipe.mlflow_server --backend-store-uri postgresql://... --artifacts-destination ...

Clients then `export MLFLOW_TRACKING_URI=http://<server>:5000` and `dvc repro` / `dvc exp run`
log there (maskpipe.tracking leaves the artifact location to the server for http URIs).
Bound to 127.0.0.1 unless ``--host`` says otherwise: MLflow's server has no authentication of
its own, so expose it only behind a proxy or on a trusted network.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


class ServerConfigError(ValueError):
    """A server setting that cannot work; the message says which and how to fix it."""


def artifacts_uri(destination: str) -> str:
    """A bucket URI as given; a folder as an absolute file URI (created if missing)."""
    if "://" in destination:
        return destination
    folder = Path(destination).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def check_backend(backend_store_uri: str) -> None:
    """Refuse what would fail later with a less clear message."""
    if not backend_store_uri:
        raise ServerConfigError(
            "no backend store: pass --backend-store-uri postgresql://USER:PASSWORD@HOST:PORT/DB "
            "(or set MLFLOW_BACKEND_STORE_URI); README 'Working as a team' shows how to create the database"
        )
    scheme = backend_store_uri.split("://", 1)[0].split("+", 1)[0]
    if scheme == "postgresql":
        try:
            # SQLAlchemy 2.1 maps postgresql:// to psycopg 3 (2.0 mapped it to psycopg2)
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ServerConfigError(
                "a postgresql:// store needs the psycopg driver: pip install 'maskpipe[team]' "
                "(psycopg[binary])"
            ) from exc


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
) -> list[str]:
    """The `mlflow server` command line (this interpreter's mlflow)."""
    check_backend(backend_store_uri)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_uri(artifacts_destination),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(int(port)),
        "--workers",
        str(int(workers)),
    ]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow 3's server starts six Huey job-consumer processes for GenAI scorers, which maskpipe does
    # not use: they slowed startup and outlived a SIGTERM of the server here. Set it to true to keep them.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def main(
    backend_store_uri: str = typer.Option(
        "",
        envvar="MLFLOW_BACKEND_STORE_URI",
        help="postgresql://USER:PASSWORD@HOST:PORT/DB (sqlite:///x.db works too)",
    ),
    artifacts_destination: str = typer.Option(
        "mlartifacts-server",
        envvar="MLFLOW_ARTIFACTS_DESTINATION",
        help="a folder, or s3:// gs:// wasbs:// URI",
    ),
    host: str = typer.Option(
        DEFAULT_HOST, envvar="MLFLOW_HOST", help="bind address (0.0.0.0 = every interface)"
    ),
    port: int = typer.Option(DEFAULT_PORT, envvar="MLFLOW_PORT"),
    workers: int = typer.Option(1, help="server worker processes"),
    print_only: bool = typer.Option(False, "--print", help="print the command instead of running it"),
) -> None:
    """Start `mlflow server` on a PostgreSQL store with proxied artifacts."""
    try:
        cmd = server_command(backend_store_uri, artifacts_destination, host=host, port=port, workers=workers)
    except ServerConfigError as exc:
        typer.echo(f"mlflow-server: {exc}", err=True)
        raise typer.Exit(2) from None
    if print_only:
        typer.echo(" ".join(cmd))
        return
    shown = [c if not c.startswith("postgresql") else _hide_password(c) for c in cmd]
    typer.echo(f"mlflow-server: {' '.join(shown[2:])}", err=True)
    typer.echo(f"mlflow-server: clients: export MLFLOW_TRACKING_URI=http://{host}:{port}", err=True)
    if shutil.which("mlflow") is None and not (Path(sys.executable).parent / "mlflow").exists():
        typer.echo("mlflow-server: mlflow is not installed in this environment", err=True)
        raise typer.Exit(2)
    os.execve(sys.executable, cmd, server_env())  # replace this process: Ctrl-C reaches the server


def _hide_password(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


if __name__ == "__main__":
    typer.run(main)
