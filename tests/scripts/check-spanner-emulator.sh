#!/usr/bin/env bash
# Checks that the Cloud Spanner emulator (shipped with the Google Cloud SDK on the machine
# image) is present, and says where to get it if not. It cannot be installed from the package
# registries this project may use, so this only checks.
#
# Usage: tests/scripts/check-spanner-emulator.sh
set -euo pipefail

sdk=""
if command -v gcloud >/dev/null 2>&1; then
    sdk="$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)"
fi
for root in "$sdk" /usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk /google-cloud-sdk; do
    if [[ -n "$root" && -x "$root/bin/cloud_spanner_emulator/gateway_main" ]]; then
        echo "spanner emulator: $root/bin/cloud_spanner_emulator"
        exit 0
    fi
done
echo "check-spanner-emulator.sh: the Cloud Spanner emulator is missing." >&2
echo "  Install the Google Cloud SDK component 'cloud-spanner-emulator'" >&2
echo "  (gcloud components install cloud-spanner-emulator, or the" >&2
echo "  google-cloud-cli-spanner-emulator package) and run make setup again." >&2
exit 1
