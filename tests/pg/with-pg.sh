#!/usr/bin/env bash
# with-pg.sh CMD [ARGS...]: run CMD with a throwaway PostgreSQL server.
#
# initdb in a temporary directory, the server on 127.0.0.1 on a free port
# (and a Unix socket in that directory), SAGA_PG_URL exported to CMD, and
# the server stopped and the directory removed when CMD ends, also on
# failure or a signal. PostgreSQL refuses to run as root: as root the
# cluster belongs to the unprivileged user "postgres" (created by Debian's
# package) or SAGA_PG_USER. Installs postgresql from Debian if missing.
# Extra server settings: SAGA_PG_CONF="name=value name=value".
# SAGA_PG_RESTARTABLE=1: a test that stops and starts the server itself
# (tests/hostile/killloop.py): the port is drawn below the kernel's
# ephemeral range (one bind(0) hands out could be taken while the server is
# down), and SAGA_PG_CTL is exported: a command line (words separated by
# spaces) that runs pg_ctl as the server's user with -D and -l set, to
# which the test appends "stop -m immediate" or "-w -o "$SAGA_PG_OPTS"
# start".
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "with-pg: installing postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends postgresql >&2
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

as_user=()
if [ "$(id -u)" -eq 0 ]; then
    user=${SAGA_PG_USER:-postgres}
    id "$user" > /dev/null 2>&1 || useradd --system --no-create-home "$user"
    as_user=(runuser -u "$user" --)
fi

dir=$(mktemp -d /tmp/saga-pg.XXXXXX)
chmod 755 "$dir"
[ ${#as_user[@]} -eq 0 ] || chown "${user}:" "$dir"

stop() {
    "${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop \
        > /dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${as_user[@]}" "$bindir/initdb" -D "$dir/data" -U saga --auth=trust \
    -E UTF8 --locale=C.UTF-8 > "$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }

# A free port: ask the kernel for one, then hand it to the server. Another
# process could take it in between; then the start fails and we try again.
for try in 1 2 3 4 5; do
    if [ "${SAGA_PG_RESTARTABLE:-0}" = 1 ]; then
        port=$(python3 -c 'import random, socket
r = random.SystemRandom()
while True:
    p = 20000 + r.randrange(12000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()')
    else
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1"
    for kv in ${SAGA_PG_CONF:-}; do opts="$opts -c $kv"; done
    if "${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
        -w -t 60 -o "$opts" start > /dev/null 2>&1; then
        break
    fi
    [ "$try" -lt 5 ] || { cat "$dir/server.log" >&2; exit 1; }
done

export SAGA_PG_URL="postgresql://saga@127.0.0.1:$port/postgres"
if [ "${SAGA_PG_RESTARTABLE:-0}" = 1 ]; then
    export SAGA_PG_CTL="${as_user[*]} $bindir/pg_ctl -D $dir/data -l $dir/server.log"
    export SAGA_PG_OPTS="$opts"
fi
echo "with-pg: server on $SAGA_PG_URL (data in $dir)" >&2
"$@"
