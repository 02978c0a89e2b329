#!/usr/bin/env bash
# PostgreSQL server binaries (Debian's `postgresql` package) for tests/test_mlflow_server.py.
# Used by `make postgres-deps` (a prerequisite of `make test`). The test starts its own throwaway
# cluster in a temp folder (tests/postgres_server.py); nothing here starts a server.
# Exit 0 when initdb is present afterwards, 1 otherwise (with the reason on stderr).
set -u
have() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
if have; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "postgres_deps: no apt-get here; install the PostgreSQL server yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "postgres_deps: not root and no password-less sudo; run: sudo apt-get install -y postgresql" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
LOG=/tmp/maskpipe-postgres-deps.log
if ! $SUDO apt-get install -y -q postgresql >"$LOG" 2>&1; then
  $SUDO apt-get update -q >>"$LOG" 2>&1
  $SUDO apt-get install -y -q postgresql >>"$LOG" 2>&1
fi
if have; then
  echo "postgres_deps: installed $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)"
  exit 0
fi
echo "postgres_deps: PostgreSQL could not be installed (log: $LOG):" >&2
tail -5 "$LOG" >&2
exit 1
