#!/usr/bin/env bash
# Starts / stops fake-gcs-server (GCS JSON API emulator) on 127.0.0.1.
#
# Usage:
#   tests/scripts/fake-gcs.sh start <dir> <port> <owner_pid>
#   tests/scripts/fake-gcs.sh stop <dir>
#
# `start` runs fake-gcs-server over plain http with the filesystem backend rooted at
# <dir>/storage, in its own process group, logs to <dir>/fake-gcs.log, waits until
# GET /storage/v1/b answers, and starts a watchdog that kills it when <owner_pid> is gone.
# `stop` stops it, waits for it to exit, and is idempotent.
# Exit codes: 0 ready, 1 failed, 2 usage, 3 the port was already in use (retry with another).
#
# The binary is $FAKE_GCS_BIN if set, else the one tests/scripts/install-fake-gcs.sh installs
# into <repo root>/.venv (installed on demand).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    sed -n '/^# Usage:/,/^#$/p' "${BASH_SOURCE[0]}" | sed '$d' >&2
    exit 2
}

start() {
    [[ $# -eq 3 ]] || usage
    local dir="$1" port="$2" owner="$3"
    require_port "$port" port
    check_owner "$owner"
    require_dir "$dir"
    dir="$ABS_DIR"
    local logfile="$dir/fake-gcs.log"

    local bin="${FAKE_GCS_BIN:-}"
    if [[ -z "$bin" ]]; then
        bin="$("$(dirname "${BASH_SOURCE[0]}")/install-fake-gcs.sh" | tail -n 1)"
    fi
    if [[ ! -x "$bin" ]]; then
        log "fake-gcs-server binary '$bin' is not executable"
        exit 1
    fi

    stop_service "$dir" # a previous run in the same dir
    if port_in_use "$port"; then
        log "port $port is already in use"
        exit "$EXIT_PORT_IN_USE"
    fi

    mkdir -p "$dir/storage"
    {
        echo
        echo "===== $(date '+%F %T') fake-gcs.sh start on port $port ====="
    } >>"$logfile"
    launch "$dir" "$logfile" "$bin" -scheme http -host 127.0.0.1 -port "$port" \
        -backend filesystem -filesystem-root "$dir/storage" \
        -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port" -log-level info
    start_watchdog "$dir" "$owner"

    if ! wait_ready "fake-gcs-server (pid $SERVER_PID)" \
        http_ok "http://127.0.0.1:$port/storage/v1/b"; then
        fail_start "$dir" "$logfile"
    fi
    if ! port_owned_by "$port" "$SERVER_PID"; then
        log "port $port is also served by another process"
        stop_service "$dir"
        exit "$EXIT_PORT_IN_USE"
    fi
    echo "fake-gcs-server ready: http://127.0.0.1:$port (pid $SERVER_PID, log $logfile)"
}

case "${1:-}" in
    start)
        shift
        start "$@"
        ;;
    stop)
        [[ $# -eq 2 ]] || usage
        [[ -d "$2" ]] || exit 0
        stop_service "$2"
        ;;
    *) usage ;;
esac
