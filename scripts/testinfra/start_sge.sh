#!/bin/bash
# Start Son of Grid Engine (sge_qmaster + sge_execd) on this host with queue
# all.q (64 slots) and PE "smp"; root and wfltest may submit.
# No-op when already running and configured.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

G="$RUNTIME/sge"          # our generated qconf files and the smoke job
mkdir -p "$G" "$PIDDIR"
chmod 755 "$RUNTIME" "$G"
QMASTER_PID=/var/spool/gridengine/qmaster/qmaster.pid
# execd names its spool dir after its resolved name, "localhost" here
execd_alive() {
    local f
    for f in /var/spool/gridengine/execd/{localhost,$HOST_S}/execd.pid; do
        pid_alive "$f" sge_execd && EXECD_PID=$f && return 0
    done
    return 1
}
started=0

# 127.0.0.1 reverse-resolves to "localhost"; without this alias qmaster
# rejects its own clients ("not identical to ...").  Must exist before start.
ALIASES=$SGE_ROOT/$SGE_CELL/common/host_aliases
grep -qx "$HOST_S localhost" "$ALIASES" 2>/dev/null || echo "$HOST_S localhost" >>"$ALIASES"

if ! pid_alive "$QMASTER_PID" sge_qmaster; then
    log "starting sge_qmaster"
    /usr/sbin/sge_qmaster
    wait_for 20 "sge_qmaster pid file" pid_alive "$QMASTER_PID" sge_qmaster
    started=1
fi
record_pid sge_qmaster "$QMASTER_PID" sge_qmaster
wait_for 20 "qmaster answers qconf" qconf -sh

# --- cluster configuration (each step only when not yet in place) -------------
# global config: root may submit (min_uid/min_gid 0), fast accounting flush.
# qconf -Mconf takes the config name from the file name, so it must be "global".
if ! qconf -sconf global | grep -qE '^min_uid +0$'; then
    qconf -sconf global | sed -E \
        -e 's/^(min_uid|min_gid) .*/\1 0/' \
        -e 's/^load_report_time .*/load_report_time 00:00:05/' \
        -e 's/flush_time=[0-9:]+/flush_time=00:00:01/' >"$G/global"
    qconf -Mconf "$G/global"
fi
# scheduler: run every second (default 15 s) and on every submit/finish.
if ! qconf -ssconf | grep -qE '^schedule_interval +0:0:1$'; then
    qconf -ssconf | sed -E \
        -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec 1/' \
        -e 's/^flush_finish_sec .*/flush_finish_sec 1/' \
        -e 's/^job_load_adjustments .*/job_load_adjustments NONE/' \
        -e 's/^queue_sort_method .*/queue_sort_method seqno/' >"$G/sched_conf"
    qconf -Msconf "$G/sched_conf"
fi
qconf -ss 2>/dev/null | grep -qx "$HOST_S" || qconf -as "$HOST_S"
qconf -sh 2>/dev/null | grep -qx "$HOST_S" || qconf -ah "$HOST_S"
if ! qconf -sel 2>/dev/null | grep -qx "$HOST_S"; then
    printf '%s\n' "hostname $HOST_S" "load_scaling NONE" "complex_values NONE" \
        "user_lists NONE" "xuser_lists NONE" "projects NONE" "xprojects NONE" \
        "usage_scaling NONE" "report_variables NONE" >"$G/exechost"
    qconf -Ae "$G/exechost"
fi
if ! qconf -spl 2>/dev/null | grep -qx smp; then
    cat >"$G/pe_smp" <<'EOF'
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    qconf -Ap "$G/pe_smp"
fi
# h_vmem (per slot) is what a job's memory request becomes (wfl_async's escalation after an
# out-of-memory end, docs/escalation.md): it must be requestable; execd then enforces it as each
# process's address-space limit (ulimit -v: an allocation above it fails, MemoryError in Python).
# That is SGE's default complex; put it back if a site's copy changed it (no qmaster restart).
if ! qconf -sc | awk '$1 == "h_vmem" && $5 == "YES" {ok=1} END {exit !ok}'; then
    qconf -sc | awk '$1 == "h_vmem" {$5 = "YES"} {print}' >"$G/complex"
    qconf -Mc "$G/complex"
fi
# all.q: 64 slots on this host, PE smp only (the template's "make smp mpi"
# names PEs that do not exist), no load thresholds (2 busy cores would put
# the queue in alarm state), bash honouring the script's #! line.
if ! qconf -sql 2>/dev/null | grep -qx all.q; then
    qconf -sq | sed -E \
        -e 's/^qname .*/qname all.q/' \
        -e "s/^hostlist .*/hostlist $HOST_S/" \
        -e 's/^load_thresholds .*/load_thresholds NONE/' \
        -e 's/^pe_list .*/pe_list smp/' \
        -e 's/^slots .*/slots 64/' \
        -e 's#^shell .*#shell /bin/bash#' \
        -e 's/^shell_start_mode .*/shell_start_mode unix_behavior/' >"$G/all.q"
    qconf -Aq "$G/all.q"
fi

# --- execution daemon --------------------------------------------------------
if ! execd_alive; then
    log "starting sge_execd"
    /usr/sbin/sge_execd
    wait_for 20 "sge_execd pid file" execd_alive
    execd_alive
    started=1
fi
record_pid sge_execd "$EXECD_PID" sge_execd
# A job whose directory vanished before it started (a run stopped half way, its temporary
# directories removed) fails "before prolog", and SGE then puts the whole queue in error state
# (E), which outlives a restart: nothing is scheduled again until an admin clears it. On these
# test daemons that means the jobs of a dead run: delete them and clear the state.
queue_states() { qstat -f -q "all.q@$HOST_S" | awk -v q="all.q@$HOST_S" '$1 == q {print $6}'; }
if [[ $(queue_states) == *E* ]]; then
    log "all.q@$HOST_S is in error state: $(qstat -explain E -f -q "all.q@$HOST_S" | grep -m1 -o 'marked QERROR.*')"
    log "deleting the SGE jobs an earlier, stopped run left and clearing the error state"
    qdel -f -u '*' >/dev/null 2>&1 || true
    qmod -c "all.q@$HOST_S" >/dev/null
fi
# queue instance usable: listed with a load value and no state flags (u = unknown)
queue_ok() { qstat -f -q "all.q@$HOST_S" | awk -v q="all.q@$HOST_S" '$1 == q && NF == 5 && $4 != "-NA-" {ok=1} END {exit !ok}'; }
wait_for 60 "all.q@$HOST_S reported by execd" queue_ok

if ((started)); then
    rm -f "$G/smoke.done"
    printf '#!/bin/bash\ntouch %s/smoke.done\n' "$G" >"$G/smoke.sh"
    jid=$(qsub -terse -N smoke -o "$G/smoke.out" -j y "$G/smoke.sh")
    wait_for 60 "trivial SGE job $jid completes" test -e "$G/smoke.done"
    gone() { ! qstat | awk '{print $1}' | grep -qx "$jid"; }
    wait_for 30 "SGE job $jid leaves qstat" gone
fi
log "sge ready: $(qstat -g c | awk '$1 == "all.q"')"
