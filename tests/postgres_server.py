"""A throwaway PostgreSQL server for tests: Debian's `postgresql` package, a cluster in a temp
folder, a unix socket in that folder and TCP on 127.0.0.1 at a free port, trust authentication.

PostgreSQL refuses to run as root, so under root (CI, containers) initdb and the server run as
the `postgres` user the package creates (else `nobody`), in a temp folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server did not start; the message says why."""


def find_bindir() -> Path:
    """/usr/lib/postgresql/<newest version>/bin (Debian), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(
        "PostgreSQL not installed (run tests/postgres_deps.sh: apt-get install postgresql)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer:
    """``with PostgresServer() as pg: pg.create_database("mlflow"); pg.uri("mlflow")``."""

    def __init__(self, user: str = "maskpipe"):
        self.bindir = find_bindir()
        self.user = user
        self.port = free_port()
        self.account = _run_as_user()
        # not under pytest's tmp_path: its root-owned 0700 parents would lock the postgres user out
        self.root = Path(tempfile.mkdtemp(prefix="maskpipe-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)

    def _preexec(self):
        account = self.account
        if account is None:
            return None

        def drop():
            os.setgid(account.pw_gid)
            os.setgroups([])
            os.setuid(account.pw_uid)

        return drop

    def _run(self, *args: str, timeout: float = 120) -> None:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.root),
        }
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self._preexec(),
            env=env,
            cwd=self.root,
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{log}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        conn = psycopg.connect(self.uri("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def query(self, database: str, sql: str, args: tuple = ()) -> list[tuple]:
        import psycopg

        conn = psycopg.connect(self.uri(database))
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``url`` until it answers 200 (False on timeout or when ``proc`` exits)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False
