#!/bin/bash
# Cancel every job left in the test daemons' queues (Slurm, and with it the PBS-style commands;
# SGE) by an earlier run that was stopped half way: a test run starts with empty queues, as on a
# fresh machine. Every test lists the queue, so 3,000 held jobs left by an interrupted run make
# every poll of every later test slow. Only for these test daemons: never run it against a real
# cluster.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for user in root "$TEST_USER"; do
    left=$(squeue -h -u "$user" -o %i 2>/dev/null | wc -l)
    if ((left > 0)); then
        log "cancelling $left Slurm job(s) of $user left by an earlier run"
        scancel -u "$user" || true
    fi
done
left=$(qstat -u '*' 2>/dev/null | awk 'NR > 2' | wc -l)
if ((left > 0)); then
    log "deleting $left SGE job(s) left by an earlier run"
    qdel -f -u '*' >/dev/null 2>&1 || true
fi
