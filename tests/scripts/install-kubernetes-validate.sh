#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI; validates Kubernetes manifests offline against the
# resource schemas it ships) into the project-local virtualenv <repo root>/.venv, and prints the
# command's absolute path as the last line of stdout.
#
# Usage: tests/scripts/install-kubernetes-validate.sh
#
# Idempotent: when the command is already in the venv it only prints the path (no network).
# Progress messages go to stderr so that stdout is just the path. Callers that may run
# concurrently (tests) serialize on a lock file; `make setup` runs it before the tests.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="$REPO_ROOT/.venv"
BIN="$VENV/bin/kubernetes-validate"

if [[ ! -x "$BIN" ]]; then
    if [[ ! -x "$VENV/bin/pip" ]]; then
        echo "creating virtualenv $VENV ..." >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV" >&2
    fi
    echo "pip-installing kubernetes-validate into $VENV ..." >&2
    "$VENV/bin/pip" install --disable-pip-version-check --quiet kubernetes-validate >&2
    if [[ ! -x "$BIN" ]]; then
        echo "install-kubernetes-validate.sh: installed the package but found no $BIN" >&2
        exit 1
    fi
fi
echo "$BIN"
