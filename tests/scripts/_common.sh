#!/usr/bin/env bash
# Helpers shared by spanner-emulator.sh, mariadb.sh and fake-gcs.sh. Sourced, not run.
#
# Conventions for every service directory <dir>:
#   <dir>/server.pid     pid of the server; it leads its own process group (pgid == pid)
#   <dir>/watchdog.pid   pid of the watchdog that kills the group when the owner process is gone
#   <dir>/<name>.log     the server's stdout + stderr
# Exit codes of the `start` commands: 0 ready, 1 failed, 2 usage, 3 a port was already in use
# (the caller should pick other ports and try again).

# Absolute path of this file, for the watchdog to source.
COMMON_SH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
# How long `start` waits for readiness and `stop` waits for exit (seconds).
START_TIMEOUT="${REVREPL_SERVICE_START_TIMEOUT_SECS:-90}"
STOP_TIMEOUT="${REVREPL_SERVICE_STOP_TIMEOUT_SECS:-30}"
POLL_INTERVAL=0.1
EXIT_PORT_IN_USE=3

log() { echo "$(basename "$0"): $*" >&2; }

# read_stat PID: parse /proc/PID/stat without forking; sets STAT_STATE, STAT_PGID and
# STAT_START (start time, to tell a reused pid apart). Returns 1 when there is no such process.
read_stat() {
    local line rest
    STAT_STATE="" STAT_PGID="" STAT_START=""
    [[ "${1:-}" =~ ^[0-9]+$ ]] || return 1
    { IFS= read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    rest="${line##*) }" # fields from 3 on; the command name (field 2) may contain spaces
    local -a f
    read -r -a f <<<"$rest"
    STAT_STATE="${f[0]}" STAT_PGID="${f[2]}" STAT_START="${f[19]}"
}

# is_running PID: the process exists and is not a zombie. (PID 1 of some containers reaps late.)
is_running() {
    read_stat "${1:-}" || return 1
    [[ -n "$STAT_STATE" && "$STAT_STATE" != Z && "$STAT_STATE" != X ]]
}

# group_alive PGID: some non-zombie process is still in process group PGID.
group_alive() {
    local stat p
    for stat in /proc/[0-9]*/stat; do
        p="${stat#/proc/}"
        p="${p%/stat}"
        if read_stat "$p" && [[ "$STAT_PGID" == "$1" && "$STAT_STATE" != Z && "$STAT_STATE" != X ]]; then
            return 0
        fi
    done
    return 1
}

now_ms() { date +%s%3N; }

# wait_group_exit PGID TIMEOUT_SECS: poll until the group is empty; 1 on timeout.
wait_group_exit() {
    local deadline=$(($(now_ms) + $2 * 1000))
    while group_alive "$1"; do
        (($(now_ms) < deadline)) || return 1
        sleep "$POLL_INTERVAL"
    done
}

# kill_group PGID: SIGTERM the group, wait, then SIGKILL whatever is left.
kill_group() {
    local pgid="$1"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    if ! wait_group_exit "$pgid" "$STOP_TIMEOUT"; then
        log "process group $pgid did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
        kill -KILL -- "-$pgid" 2>/dev/null || true
        wait_group_exit "$pgid" 10 || log "process group $pgid still alive after SIGKILL"
    fi
}

# port_in_use PORT: something listens on 127.0.0.1:PORT (or on all addresses).
port_in_use() {
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# port_owned_by PORT PGID: every listener on PORT belongs to process group PGID and there is at
# least one. Needed because gRPC servers (emulator_main) bind with SO_REUSEPORT, so a second
# emulator on the same port starts "fine" and the two silently share connections. Without `ss`
# the check is skipped.
port_owned_by() {
    command -v ss >/dev/null 2>&1 || return 0
    local lines line pid found=0
    lines="$(ss -ltnpH "sport = :$1" 2>/dev/null)" || return 0
    [[ -n "$lines" ]] || return 1
    while IFS= read -r line; do
        # Listeners of other users' processes show no pid: not ours.
        [[ "$line" =~ pid=([0-9]+) ]] || return 1
        while [[ "$line" =~ pid=([0-9]+)(.*) ]]; do
            pid="${BASH_REMATCH[1]}"
            line="${BASH_REMATCH[2]}"
            read_stat "$pid" && [[ "$STAT_PGID" == "$2" ]] || return 1
            found=1
        done
    done <<<"$lines"
    ((found))
}

# http_ok URL: GET URL answers 2xx.
http_ok() {
    curl --silent --fail --output /dev/null --max-time 2 --noproxy '*' "$1" 2>/dev/null
}

# print_log_tail FILE...: the last lines of each log, to stderr.
print_log_tail() {
    local f
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        echo "----- last 40 lines of $f -----" >&2
        grep -v -e '^WARNING: proto:' -e '^	previously from:' -e '^	currently from:' \
            -e '^See https://protobuf.dev' -e '^$' "$f" | tail -n 40 >&2 || true
        echo "----- end of $f -----" >&2
    done
}

# check_owner OWNER_PID: the owner must exist when we start, or the watchdog would kill the
# server at once.
check_owner() {
    if ! is_running "$1"; then
        log "owner pid '$1' is not a running process"
        exit 2
    fi
}

# launch DIR LOG CMD...: start CMD in the background in a new session (so its own process group:
# pgid == pid), stdin from /dev/null, stdout + stderr appended to LOG, cwd DIR. Sets SERVER_PID
# and writes DIR/server.pid.
launch() {
    local dir="$1" logfile="$2"
    shift 2
    # A background child of a non-interactive shell is never a process-group leader, so setsid
    # runs the command in the same process (no fork) and $! is the server's own pid.
    (cd "$dir" && exec setsid "$@" </dev/null >>"$logfile" 2>&1) &
    SERVER_PID=$!
    echo "$SERVER_PID" >"$dir/server.pid"
}

# watchdog_loop OWNER_PID SERVER_PID SERVER_STARTTIME: runs inside the watchdog process.
watchdog_loop() {
    local owner="$1" server="$2" start="$3"
    while is_running "$owner" && is_running "$server" && [[ "$STAT_START" == "$start" ]]; do
        sleep 0.5
    done
    if is_running "$server" && [[ "$STAT_START" == "$start" ]]; then
        echo "$(date '+%F %T') owner $owner is gone; stopping process group $server"
        kill_group "$server"
    fi
}

# start_watchdog DIR OWNER_PID: after launch; kills the server's process group once OWNER_PID
# disappears (even if the owner was SIGKILLed), and exits by itself when the server exits.
start_watchdog() {
    local dir="$1" owner="$2" start
    read_stat "$SERVER_PID" || true
    start="$STAT_START"
    # Not in the server's group (so stopping the server does not kill it first), and detached from
    # the caller's stdio so whoever waits on the caller's output is not held up.
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'source "$1"; watchdog_loop "$2" "$3" "$4"' watchdog \
        "$COMMON_SH" "$owner" "$SERVER_PID" "$start" \
        </dev/null >>"$dir/watchdog.log" 2>&1 &
    echo "$!" >"$dir/watchdog.pid"
}

# wait_ready DESCRIPTION CHECK_CMD...: poll CHECK_CMD until it succeeds. Returns 1 when the server
# exits first or the deadline passes.
wait_ready() {
    local what="$1"
    shift
    local deadline=$(($(now_ms) + START_TIMEOUT * 1000))
    while ! "$@"; do
        if ! is_running "$SERVER_PID"; then
            log "$what exited during startup"
            return 1
        fi
        if (($(now_ms) >= deadline)); then
            log "$what not ready after ${START_TIMEOUT}s"
            return 1
        fi
        sleep "$POLL_INTERVAL"
    done
}

# fail_start DIR LOGS...: stop what was started, print the logs' tails, exit 1 (or 3 when the
# logs say a port was taken).
fail_start() {
    local dir="$1"
    shift
    stop_service "$dir"
    print_log_tail "$@"
    if cat "$@" 2>/dev/null | grep -qi 'address already in use'; then
        exit "$EXIT_PORT_IN_USE"
    fi
    exit 1
}

# stop_service DIR: stop the server's group and its watchdog. Idempotent.
stop_service() {
    local dir="$1" pid wpid
    pid="$(cat "$dir/server.pid" 2>/dev/null || true)"
    if is_running "$pid"; then
        kill_group "$pid"
    elif [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"; then
        kill_group "$pid" # the leader died but children remain
    fi
    wpid="$(cat "$dir/watchdog.pid" 2>/dev/null || true)"
    if is_running "$wpid"; then
        kill -TERM -- "-$wpid" 2>/dev/null || true # its own group: the loop and its `sleep`
    fi
    rm -f "$dir/server.pid" "$dir/watchdog.pid"
}

# require_dir DIR: DIR exists (created if missing) and is made absolute in ABS_DIR.
require_dir() {
    mkdir -p "$1"
    # shellcheck disable=SC2034 # read by the scripts that source this file
    ABS_DIR="$(cd "$1" && pwd)"
}

# require_port VALUE NAME
require_port() {
    if ! [[ "$1" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
        log "$2 '$1' is not a port number"
        exit 2
    fi
}
