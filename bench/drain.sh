#!/usr/bin/env bash
# Succeeds once the Portcullis queue of config $1 is empty (polls up to ${DRAIN_TIMEOUT:-300} s).
set -euo pipefail
cfg=$1; root=$(cd "$(dirname "$0")/.." && pwd -P)
end=$((SECONDS + ${DRAIN_TIMEOUT:-300}))
while (( SECONDS < end )); do
  [[ $(node "$root/bin/portcullis.js" queue list --json -c "$cfg") == "[]" ]] && exit 0
  sleep 0.5
done
echo "queue not empty after ${DRAIN_TIMEOUT:-300} s" >&2; exit 1
