#!/bin/bash
# Delete what earlier test and benchmark runs left in the test daemons' run directories (the test
# user's wfl_async_run*/<system>/ and the runtime's run/<system>/) once it is older than
# WFL_ASYNC_PRUNE_HOURS (default 6): every CI run leaves about 2 GiB of job directories there, and
# a day of runs filled this machine's disk once. Only for these test daemons' directories.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

minutes=$((${WFL_ASYNC_PRUNE_HOURS:-6} * 60))
for root in "$TEST_HOME"/wfl_async_run*/*/ "$RUNTIME"/run/*/; do
    [[ -d $root ]] || continue
    old=$(find "$root" -mindepth 1 -maxdepth 1 -mmin "+$minutes" | wc -l)
    if ((old > 0)); then
        log "deleting $old run director(y/ies) older than ${WFL_ASYNC_PRUNE_HOURS:-6} h under $root"
        find "$root" -mindepth 1 -maxdepth 1 -mmin "+$minutes" -exec rm -rf {} +
    fi
done
