#!/bin/bash
# Stop the daemons that start_*.sh recorded in $RUNTIME/pids (each checked by
# /proc/PID/comm first).  Keeps configuration, spools and job history.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Clients first, servers last; ssh control masters exit by themselves (60 s).
for name in sge_execd sge_qmaster sshd_mfa sshd_jump sshd slurmd slurmctld munged; do
    stop_pidfile "$name"
done
log "stopped"
