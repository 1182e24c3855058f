# Shared helpers for scripts/testinfra/*.sh.  Source it, do not run it.
# shellcheck shell=bash disable=SC2034  # variables are used by the sourcing scripts

TESTINFRA_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TESTINFRA_SCRIPTS/../.." && pwd)"
RUNTIME="${WFL_ASYNC_TESTINFRA_DIR:-/tmp/wfl_async_testinfra}"
OPT=/opt/wfl_async_testinfra          # installed things (torque wrappers, PBS bin dir)
PIDDIR="$RUNTIME/pids"                # one NAME.pid per daemon we started
HOST_S="$(hostname -s)"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
TEST_USER=wfltest
TEST_UID=2000
TEST_HOME=/home/wfltest

log() { printf '[testinfra %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_alive PIDFILE COMM: true if PIDFILE names a live (not zombie) process
# whose /proc/PID/comm is COMM (pids wrap fast, so never trust a bare pid).
pid_alive() {
    local pidfile=$1 comm=$2 pid stat
    [[ -s $pidfile ]] || return 1
    pid=$(tr -dc 0-9 <"$pidfile")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }                 # fields after "(comm) "
    [[ ${stat%% *} != Z ]]            # a zombie has exited already
}

# record_pid NAME PIDFILE_OF_DAEMON: copy a daemon's own pid file into $PIDDIR
# together with its expected comm, so stop_all.sh knows what to stop.
record_pid() {
    local name=$1 src=$2 comm=$3
    mkdir -p "$PIDDIR"
    tr -dc 0-9 <"$src" >"$PIDDIR/$name.pid"
    echo "$comm" >"$PIDDIR/$name.comm"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local timeout=$1 what=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for: $what"
        sleep 0.2
    done
}

# stop_pidfile NAME: SIGTERM the process recorded by record_pid, if it is
# still the same program, and wait (up to 20 s) for it to exit.
stop_pidfile() {
    local name=$1 pidfile="$PIDDIR/$1.pid" comm pid
    [[ -f $pidfile ]] || return 0
    comm=$(cat "$PIDDIR/$name.comm" 2>/dev/null || true)
    if pid_alive "$pidfile" "$comm"; then
        pid=$(cat "$pidfile")
        log "stopping $name (pid $pid, $comm)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while pid_alive "$pidfile" "$comm" && ((SECONDS < deadline)); do sleep 0.2; done
        if pid_alive "$pidfile" "$comm"; then
            log "$name did not exit on SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile" "$PIDDIR/$name.comm"
}

# ensure_test_user: the unprivileged account jobs run as through the sshd,
# with a plain shell setup (no pyenv init), like a cluster account.
ensure_test_user() {
    id "$TEST_USER" >/dev/null 2>&1 || useradd -u "$TEST_UID" -U -m -d "$TEST_HOME" -s /bin/bash "$TEST_USER"
    # a locked password ('!') makes sshd refuse the account when UsePAM is no
    [[ "$(getent shadow "$TEST_USER" | cut -d: -f2)" != '!'* ]] || usermod -p '*' "$TEST_USER"
}

# The interpreter the tests run with (root's pyenv Python).
test_python() { python3 -c 'import sys; print(sys.executable)'; }
