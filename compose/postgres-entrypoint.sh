#!/bin/bash
# Entrypoint of the registry-free PostgreSQL image made by scripts/docker-images (Debian's postgresql).
# Behaves like the official postgres image for what the acceptance stack uses:
#   POSTGRES_PASSWORD          password of POSTGRES_USER (required unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER              superuser name (default postgres)
#   POSTGRES_DB                database created on first start (default: POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  auth for TCP connections (default md5 when a password is set; with the
#                              default scram-sha-256 password storage that means SCRAM, as libpq expects)
#   POSTGRES_INITDB_ARGS       extra initdb arguments
#   PGDATA                     data directory (default /var/lib/postgresql/data, the volume)
#   /docker-entrypoint-initdb.d/*.sql and *.sh run once, on first start.
# The server listens on all interfaces inside the container; local (socket) connections are trusted.
set -euo pipefail

if [[ "${1:-postgres}" != postgres ]]; then exec "$@"; fi
shift || true

POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

log() { printf '[postgres-entrypoint] %s\n' "$*" >&2; }
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [[ -z "${POSTGRES_HOST_AUTH_METHOD:-}" ]]; then
    if [[ -n "${POSTGRES_PASSWORD:-}" ]]; then POSTGRES_HOST_AUTH_METHOD=md5
    else
        log "POSTGRES_PASSWORD is not set; set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow any connection"
        exit 1
    fi
fi

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
chmod 2775 /run/postgresql

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "initialising a new cluster in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB, host auth $POSTGRES_HOST_AUTH_METHOD)"
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    chown postgres "$pwfile"
    pwopt=()
    [[ -n "${POSTGRES_PASSWORD:-}" ]] && pwopt=(--pwfile="$pwfile")
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words by contract
    as_pg initdb -D "$PGDATA" --username="$POSTGRES_USER" "${pwopt[@]}" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    printf '\n# acceptance: allow connections from the compose network\nhost all all all %s\n' \
        "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

    # A temporary server on the socket only, to create the database and run init scripts.
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" -w start >/dev/null
    psql_cmd=(as_pg psql -v ON_ERROR_STOP=1 -h /run/postgresql -U "$POSTGRES_USER" --no-psqlrc -q)
    if [[ "$POSTGRES_DB" != postgres ]]; then
        printf 'CREATE DATABASE "%s";\n' "$POSTGRES_DB" | "${psql_cmd[@]}" -d postgres
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [[ -e "$f" ]] || continue
        case "$f" in
            *.sql) log "running $f"; "${psql_cmd[@]}" -d "$POSTGRES_DB" -f "$f" ;;
            *.sh) log "running $f"; bash "$f" ;;
            *) log "ignoring $f" ;;
        esac
    done
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "cluster ready"
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
    postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"
