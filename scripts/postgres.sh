#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks: Debian's postgresql, trust auth on 127.0.0.1.
#   scripts/postgres.sh start DIR [PORT]   installs postgresql if missing, starts a cluster in DIR, prints its URL
#   scripts/postgres.sh stop DIR           stops it (the folder can then be deleted)
set -euo pipefail
action=${1:?start or stop}
dir=${2:?data folder}
port=${3:-55432}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_owner() {  # the server refuses to run as root: run it as the postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
  start)
    if [ -z "$(pg_bin)" ]; then
      echo "installing Debian's postgresql with apt-get (the events suite's PostgreSQL half)" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
        || { echo "could not install Debian's postgresql (needs root and the package registry)" >&2; exit 1; }
    fi
    bin=$(pg_bin)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='recsys'" \
      | grep -q 1 || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres recsys
    echo "postgresql://postgres@127.0.0.1:$port/recsys"
    ;;
  stop)
    bin=$(pg_bin)
    [ -n "$bin" ] && [ -f "$dir/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
  *) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
