#!/usr/bin/env bash
# Starts / stops one MariaDB server (a "MySQL shard" for tests) on 127.0.0.1.
#
# Usage:
#   tests/scripts/mariadb.sh start <dir> <port> <owner_pid> [extra mariadbd options...]
#   tests/scripts/mariadb.sh stop <dir>
#
# `start` initialises <dir>/data with mariadb-install-db on first use (root with no password,
# reachable over TCP as root@127.0.0.1), then runs mariadbd in its own process group with its
# socket at <dir>/mysqld.sock and its log at <dir>/mariadb.log, waits until it answers on both
# the socket and TCP, and starts a watchdog that kills it when <owner_pid> is gone. Starting
# again with the same <dir> reuses the data (stop + start = a restart that keeps the data).
# `stop` shuts the server down cleanly (SIGTERM), waits for it to exit, and is idempotent.
# Exit codes: 0 ready, 1 failed, 2 usage, 3 the port was already in use (retry with another).
#
# Server defaults: utf8mb4 (MariaDB's own default is latin1), 64 MiB buffer pool, 16 MiB redo log.
# Needs mariadbd (run tests/scripts/install-mariadb.sh first).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

usage() {
    sed -n '/^# Usage:/,/^#$/p' "${BASH_SOURCE[0]}" | sed '$d' >&2
    exit 2
}

admin() {
    local dir="$1"
    shift
    mariadb-admin --no-defaults --user=root --connect-timeout=2 "$@" >/dev/null 2>&1
}

ready() {
    local dir="$1" port="$2"
    admin "$dir" --socket="$dir/mysqld.sock" ping &&
        admin "$dir" --protocol=tcp --host=127.0.0.1 --port="$port" ping
}

start() {
    [[ $# -ge 3 ]] || usage
    local dir="$1" port="$2" owner="$3"
    shift 3
    require_port "$port" port
    check_owner "$owner"
    for b in mariadbd mariadb-install-db mariadb-admin; do
        if ! command -v "$b" >/dev/null 2>&1; then
            log "$b not found: run tests/scripts/install-mariadb.sh"
            exit 1
        fi
    done
    require_dir "$dir"
    dir="$ABS_DIR"
    local logfile="$dir/mariadb.log"
    if ((${#dir} > 90)); then
        log "directory path too long for a unix socket: $dir"
        exit 2
    fi

    stop_service "$dir" # a previous run in the same dir
    if port_in_use "$port"; then
        log "port $port is already in use"
        exit "$EXIT_PORT_IN_USE"
    fi

    # Each server gets its own tmpdir: a starting mariadbd deletes every `#sql*` file in its
    # tmpdir, which breaks other servers' bootstraps when they share /tmp.
    mkdir -p "$dir/tmp"
    local -a common=(--no-defaults --user="$(id -un)" --datadir="$dir/data"
        --tmpdir="$dir/tmp" --innodb-log-file-size=16M)
    if [[ ! -d "$dir/data/mysql" ]]; then
        rm -rf "$dir/data"
        mkdir -p "$dir/data"
        if ! mariadb-install-db "${common[@]}" --auth-root-authentication-method=normal \
            --skip-test-db >"$dir/install-db.log" 2>&1; then
            log "mariadb-install-db failed"
            print_log_tail "$dir/install-db.log"
            exit 1
        fi
    fi

    {
        echo
        echo "===== $(date '+%F %T') mariadb.sh start on port $port ====="
    } >>"$logfile"
    launch "$dir" "$logfile" mariadbd "${common[@]}" \
        --bind-address=127.0.0.1 --port="$port" --socket="$dir/mysqld.sock" \
        --pid-file="$dir/mysqld.pid" --skip-name-resolve --innodb-buffer-pool-size=64M \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --max-connections=500 "$@"
    start_watchdog "$dir" "$owner"

    if ! wait_ready "mariadbd (pid $SERVER_PID)" ready "$dir" "$port"; then
        fail_start "$dir" "$logfile"
    fi
    if ! port_owned_by "$port" "$SERVER_PID"; then
        log "port $port is also served by another process"
        stop_service "$dir"
        exit "$EXIT_PORT_IN_USE"
    fi
    echo "mariadb ready: mysql://root@127.0.0.1:$port (pid $SERVER_PID, log $logfile)"
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
