#!/usr/bin/env bash
# Starts / stops the Cloud Spanner emulator with its REST gateway on 127.0.0.1.
#
# Usage:
#   tests/scripts/spanner-emulator.sh start <dir> <grpc_port> <http_port> <owner_pid> \
#       [--partition-token-alive-seconds N] [--fault-injection]
#   tests/scripts/spanner-emulator.sh stop <dir>
#
# `start` runs gateway_main (which starts emulator_main itself) in its own process group, logs to
# <dir>/spanner-emulator.log, waits until the REST API answers and both ports are owned by the
# new processes, and starts a watchdog that kills the group when <owner_pid> is gone.
# Exit codes: 0 ready, 1 failed, 2 usage, 3 a port was already in use (retry with other ports).
#
# --partition-token-alive-seconds N   emulator_main --override_change_stream_partition_token_alive_seconds=N
#                                     (partitions move/split/merge every N..2N seconds)
# --fault-injection                   emulator_main --enable_fault_injection (random aborts).
#                                     gateway_main has the same flag and forwards it to emulator_main.
#
# The emulator binaries are looked up in $SPANNER_EMULATOR_BIN_DIR, else in
# "$(gcloud info --format='value(installation.sdk_root)')/bin/cloud_spanner_emulator", else under
# /usr/lib/google-cloud-sdk, /usr/share/google-cloud-sdk or /google-cloud-sdk.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    sed -n '/^# Usage:/,/^#$/p' "${BASH_SOURCE[0]}" | sed '$d' >&2
    exit 2
}

find_bin_dir() {
    if [[ -n "${SPANNER_EMULATOR_BIN_DIR:-}" ]]; then
        echo "$SPANNER_EMULATOR_BIN_DIR"
        return
    fi
    local sdk=""
    if command -v gcloud >/dev/null 2>&1; then
        sdk="$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)"
    fi
    local root
    for root in "$sdk" /usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk /google-cloud-sdk; do
        if [[ -n "$root" && -x "$root/bin/cloud_spanner_emulator/gateway_main" ]]; then
            echo "$root/bin/cloud_spanner_emulator"
            return
        fi
    done
    echo "/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator"
}

start() {
    [[ $# -ge 4 ]] || usage
    local dir="$1" grpc_port="$2" http_port="$3" owner="$4"
    shift 4
    local -a extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --partition-token-alive-seconds)
                [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage
                extra+=("--override_change_stream_partition_token_alive_seconds" "$2")
                shift 2
                ;;
            --fault-injection)
                extra+=("--enable_fault_injection")
                shift
                ;;
            *) usage ;;
        esac
    done
    require_port "$grpc_port" grpc_port
    require_port "$http_port" http_port
    check_owner "$owner"
    require_dir "$dir"
    dir="$ABS_DIR"
    local logfile="$dir/spanner-emulator.log"

    local bin_dir
    bin_dir="$(find_bin_dir)"
    if [[ ! -x "$bin_dir/gateway_main" || ! -x "$bin_dir/emulator_main" ]]; then
        log "no gateway_main/emulator_main in $bin_dir (install the Google Cloud SDK's cloud-spanner-emulator component or set SPANNER_EMULATOR_BIN_DIR)"
        exit 1
    fi

    stop_service "$dir" # a previous run in the same dir
    local p
    for p in "$grpc_port" "$http_port"; do
        if port_in_use "$p"; then
            log "port $p is already in use"
            exit "$EXIT_PORT_IN_USE"
        fi
    done

    : >"$logfile"
    launch "$dir" "$logfile" "$bin_dir/gateway_main" \
        --hostname 127.0.0.1 --grpc_port "$grpc_port" --http_port "$http_port" \
        --grpc_binary "$bin_dir/emulator_main" "${extra[@]}"
    start_watchdog "$dir" "$owner"

    if ! wait_ready "spanner emulator (pid $SERVER_PID)" \
        http_ok "http://127.0.0.1:$http_port/v1/projects/revrepl-readiness/instances"; then
        fail_start "$dir" "$logfile"
    fi
    # The REST gateway answers only through emulator_main, so both are up. Make sure both ports
    # are ours: emulator_main binds with SO_REUSEPORT and would share a port with a stranger.
    if ! port_owned_by "$grpc_port" "$SERVER_PID" || ! port_owned_by "$http_port" "$SERVER_PID"; then
        log "port $grpc_port or $http_port is also served by another process"
        stop_service "$dir"
        exit "$EXIT_PORT_IN_USE"
    fi
    echo "spanner emulator ready: grpc 127.0.0.1:$grpc_port, rest http://127.0.0.1:$http_port (pid $SERVER_PID, log $logfile)"
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
