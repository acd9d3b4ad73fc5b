#!/usr/bin/env bash
# Installs MariaDB (server + client) from Debian's apt if `mariadbd` is not on the machine yet,
# and the `openssl` CLI (the TLS tests make their certificates with it) if it is missing.
#
# Usage: tests/scripts/install-mariadb.sh
#
# Idempotent: does nothing (and needs no network) when `mariadbd` is already installed. Must run
# as root (or with sudo available). The machine image stops apt from starting a system service;
# the tests start their own servers with tests/scripts/mariadb.sh.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if command -v mariadbd >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    echo "mariadbd already installed: $(command -v mariadbd)"
    exit 0
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-mariadb.sh: mariadbd is missing and we are not root (no sudo either)" >&2
        exit 1
    fi
fi

echo "installing mariadb-server, mariadb-client and openssl with apt..."
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends mariadb-server mariadb-client openssl

for tool in mariadbd openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-mariadb.sh: apt finished but $tool is still not on PATH" >&2
        exit 1
    fi
done
echo "mariadbd installed: $(command -v mariadbd)"
