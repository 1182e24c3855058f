#!/bin/bash
# Start munged + a single-node Slurm 22.05 (slurmctld + slurmd) on loopback.
# The node advertises 64 CPUs; partition "debug".  No-op when already running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

S="$RUNTIME/slurm"
mkdir -p "$S/state" "$S/spool" "$PIDDIR"
chmod 755 "$RUNTIME" "$S"

# --- munge (must run as user munge, which owns the key) ---------------------
MUNGE_PID=/run/munge/munged.pid
if ! pid_alive "$MUNGE_PID" munged; then
    install -d -o munge -g munge -m 755 /run/munge
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
    wait_for 10 "munged pid file" pid_alive "$MUNGE_PID" munged
fi
record_pid munged "$MUNGE_PID" munged
wait_for 10 "munge -n | unmunge" bash -c 'munge -n | unmunge'

# --- slurm.conf (Slurm commands read /etc/slurm/slurm.conf) -----------------
conf=$(cat <<EOF
# Written by scripts/testinfra/start_slurm.sh: single-node test cluster.
ClusterName=wflasync
SlurmctldHost=$HOST_S(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
# no cgroups in this container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# memory of each job sampled every 1 s; a job above its --mem is killed (jobcomp: FAILED, signal 9;
# slurmstepd writes "Exceeded job memory limit" to its stderr): the out-of-memory tests need a real
# kill, and without cgroups here task/cgroup cannot give one
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/none
# finished jobs: sacct -c -P -o JobID,State,ExitCode
JobCompType=jobcomp/filetxt
JobCompLoc=$S/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,default_queue_depth=1000,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# memory is a consumable resource (OverMemoryKill needs a limit); a job without --mem gets 4 GB a CPU (RealMemory is claimed, not real: config_overrides)
DefMemPerCPU=4096
# forget finished jobs from squeue after 10 s (default 300)
MinJobAge=10
# room for the 10,000 held jobs of benchmarks/bounded_commands.py beside the tests' own (default 10000)
MaxJobCount=20000
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$HOST_S NodeAddr=127.0.0.1 CPUs=64 RealMemory=1000000 State=UNKNOWN
PartitionName=debug Nodes=$HOST_S Default=YES MaxTime=INFINITE State=UP
EOF
)
mkdir -p /etc/slurm
conf_changed=0
if [[ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]]; then
    printf '%s\n' "$conf" >/etc/slurm/slurm.conf
    conf_changed=1
fi

# --- daemons -------------------------------------------------------------------
started=0
if ! pid_alive "$S/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
    wait_for 20 "slurmctld pid file" pid_alive "$S/slurmctld.pid" slurmctld
    started=1
elif ((conf_changed)); then
    log "slurm.conf changed: scontrol reconfigure"
    scontrol reconfigure
fi
record_pid slurmctld "$S/slurmctld.pid" slurmctld
if ! pid_alive "$S/slurmd.pid" slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd
    wait_for 20 "slurmd pid file" pid_alive "$S/slurmd.pid" slurmd
    started=1
fi
record_pid slurmd "$S/slurmd.pid" slurmd

# up = idle, or mixed/allocated when jobs run (a trailing * = not responding)
node_up() { [[ "$(sinfo -h -n "$HOST_S" -o %T)" =~ ^(idle|mixed|allocated|completing)$ ]]; }
wait_for 30 "sinfo shows $HOST_S up" node_up
# sacct -c opens the file for appending even to read it, and every root
# "sacct -c" resets its mode to 0644: let the test user own it so its sacct works.
ensure_test_user
touch "$S/jobcomp.txt"; chown "$TEST_USER" "$S/jobcomp.txt"

if ((started)); then
    # A trivial job must complete (poll: sbatch --wait polls only every few s).
    mkdir -p "$S/smoke"
    jid=$(sbatch --parsable -o "$S/smoke/%j.out" -D "$S/smoke" --wrap true)
    job_done() { scontrol -o show job "$jid" | grep -q 'JobState=COMPLETED'; }
    wait_for 60 "trivial Slurm job $jid completes" job_done
fi
log "slurm ready: $(sinfo -h -o '%P %D %c %T' | tr '\n' ' ')"
