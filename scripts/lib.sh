# Helpers shared by the bash scripts in scripts/ (sourced, never run):
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Messages go to stderr as "[<script name>] ..."; set LOG_PREFIX before sourcing for another prefix.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_PREFIX="${LOG_PREFIX:-$(basename "$0")}"

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { log "ERROR: $*"; exit "${DIE_STATUS:-1}"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.1f", b - a }'; }  # seconds from $1 to $2 (or now)
usage() { sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }  # the script's header comment
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# System packages (a Docker engine, Chromium, debootstrap) are installed only in CI or when asked for.
may_install() { [[ "${CI:-}" == true || "${INSTALL_PACKAGES:-0}" == 1 ]]; }

# apt-get install PACKAGE... as root, quietly; the package lists are fetched when there are none, and fetched
# again once if the install fails (they may be stale). Output goes to $APT_LOG, whose end is shown on failure.
apt_install() {
    local apt_log="${APT_LOG:-/tmp/acceptance-apt.log}" rc=0
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        as_root apt-get update -qq >>"$apt_log" 2>&1 || rc=$?
    fi
    if [[ $rc -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$apt_log" 2>&1 \
            || { log "apt-get install failed; refreshing package lists and retrying"; \
                 as_root apt-get update -qq >>"$apt_log" 2>&1 && \
                 as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$apt_log" 2>&1; } \
            || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then log "apt-get failed; last lines of $apt_log:"; tail -n 20 "$apt_log" >&2; fi
    return $rc
}

# The docker client to use: $DOCKER, else the engine's own /usr/bin/docker (Debian's docker.io puts a client of the
# engine's version there; another on PATH may be much newer than the engine), else `docker` on PATH.
docker_client() {
    if [[ -n "${DOCKER:-}" ]]; then echo "$DOCKER"
    elif [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker
    else command -v docker || echo docker
    fi
}

# Run a module of tools/ (python -m MODULE ARGS...) with the project's .venv, from the project root.
run_tool() {
    [[ -x "$ROOT/.venv/bin/python" ]] || { echo "$LOG_PREFIX: no .venv in $ROOT: run scripts/bootstrap first" >&2; exit 2; }
    cd "$ROOT" && exec "$ROOT/.venv/bin/python" -m "$@"
}
