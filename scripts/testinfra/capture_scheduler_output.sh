#!/bin/bash
# Capture real submit/status/hold/cancel output of Slurm, SGE and the
# Torque-style (PBS) commands, as root directly and as wfltest through the
# sshd, into tests/data/scheduler_output/ (fixtures for parser tests).
# Needs start_all.sh first.  Takes about 2 minutes (waits for MinJobAge).
# Usage: capture_scheduler_output.sh [slurm|sge|pbs ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${CAPTURE_OUT:-$REPO_ROOT/tests/data/scheduler_output}
SSH="$RUNTIME/bin/ssh-wfl-test-cm"
PBS_PATH="export PATH=$OPT/pbs/bin:\$PATH"
WEIRD="wfl job 'sq' \"dq\" ümlaut"     # job name with spaces, quotes, non-ASCII
Q_WEIRD=$(printf %q "$WEIRD")
NASTY="N_wfl'sq'\"dq\"|pipe,comma=eq"    # what SGE (and sbatch's #PBS -N) accept
Q_NASTY=$(printf %q "$NASTY")
mkdir -p "$OUT"

# run CMD: in the work dir, as root (MODE=root) or as wfltest via ssh (MODE=ssh)
run() {
    if [[ $MODE == root ]]; then (cd "$WD" && USER=root bash -c "$1")
    else "$SSH" wfl-async-test "cd $WD && $1"; fi
}
# save WHAT CMD: run CMD, stdout -> $OUT/<sched>_<what>_<mode>.txt, and
# describe it (command, user, exit code, stderr) in the manifest.
save() {
    local f="${SCHED}_$1_$MODE.txt" rc=0
    run "$2" >"$OUT/$f" 2>"$WD_LOCAL/stderr" || rc=$?
    {
        printf '\n### %s\n\n- user: %s\n- command: `%s`\n- exit code: %s\n' "$f" \
            "$([[ $MODE == root ]] && echo root || echo "wfltest (through sshd)")" "$2" "$rc"
        [[ -s $WD_LOCAL/stderr ]] && printf -- '- stderr:\n\n```\n%s\n```\n' "$(cat "$WD_LOCAL/stderr")"
        [[ -n ${NOTE:-} ]] && printf -- '- note: %s\n' "$NOTE"
    } >>"$MANIFEST"
    NOTE=
    SAVED="$OUT/$f"
}
setup_mode() {   # MODE -> WD (where jobs run), WD_LOCAL (scratch on this side)
    WD_LOCAL="$RUNTIME/capture/$SCHED-$MODE"
    rm -rf "$WD_LOCAL"; mkdir -p "$WD_LOCAL"
    if [[ $MODE == root ]]; then WD=$WD_LOCAL
    else WD=$TEST_HOME/capture/$SCHED; "$SSH" wfl-async-test "rm -rf $WD; mkdir -p $WD"; fi
    MANIFEST="$WD_LOCAL/manifest.md"; : >"$MANIFEST"
}
gone() {   # gone CMD: wait (up to 60 s) until CMD fails, i.e. the job left the listing
    local deadline=$((SECONDS + 60))
    while run "$1" >/dev/null 2>&1 && ((SECONDS < deadline)); do sleep 1; done
}
job_script() {   # job_script FILE BODY: header lines of $SCHED, then BODY
    { echo '#!/bin/bash'; printf '%s\n' "${HEADER[@]}"; echo "$2"; } | run "cat > $1"
}

# sub [WHAT] CMD: submit (saving the output when WHAT is given); the id (last
# word of the output, or SGE's "Your job N") goes to LAST and MINE, so that
# only our own jobs get cancelled.
sub() {
    local out; if (($# == 2)); then save "$1" "$2"; out=$(cat "$SAVED"); else out=$(run "$1"); fi
    LAST=$(sed -nE 's/^Your job ([0-9]+).*/\1/p; s/^Submitted batch job ([0-9]+)$/\1/p; s/^([0-9]+)$/\1/p' <<<"$out" | tail -1)
    [[ -n $LAST ]] && MINE+=("$LAST")
}
# Runs of this script share the schedulers with whatever else root runs, so a
# root listing may show other jobs too; we cancel only ours.

capture_slurm() {
    HEADER=('#SBATCH --job-name=testjob' '#SBATCH --time=1:00:00' '#SBATCH --output=job.testjob.stdout'
            '#SBATCH --error=job.testjob.stderr' '#SBATCH --nodes=1' '#SBATCH --ntasks=2'
            '#SBATCH --ntasks-per-node=2' '#SBATCH --partition=debug')
    job_script job.sh 'sleep 300'
    HEADER=("${HEADER[@]/testjob/shortjob}" '#SBATCH --time=1'); job_script fail.sh 'exit 3'; job_script ok.sh 'true'
    local run_id pend_id; MINE=()
    sub 'sbatch --parsable fail.sh'; sub 'sbatch --parsable ok.sh'
    sub sbatch_parsable 'sbatch --parsable job.sh'; run_id=$LAST
    sub sbatch_plain 'sbatch job.sh'
    sub sbatch_parsable_weird_name "sbatch --parsable -J $Q_WEIRD job.sh"
    sub "sbatch --parsable -J $Q_NASTY job.sh"   # a | in the name
    sub sbatch_hold 'sbatch --parsable --hold job.sh'
    sub 'sbatch --parsable --begin=now+3600 job.sh'; pend_id=$LAST
    sub "sbatch --parsable --dependency=afterok:$run_id job.sh"
    NOTE="scontrol hold by root (an operator) gives JobHeldAdmin, by the job owner JobHeldUser" \
        save scontrol_hold "scontrol hold $pend_id"
    # needs the whole node: pending (Resources); niced so it does not hold back
    # other users' jobs (later jobs of ours may still wait with reason Priority)
    sub 'sbatch --parsable --nice=1000 --ntasks=64 --ntasks-per-node=64 job.sh'
    sub 'sbatch --parsable job.sh'
    sleep 4
    NOTE="RUNNING; PENDING held by user/admin, BeginTime, Dependency, Resources, Priority" \
        save squeue 'squeue -h -u "$(id -un)" -o "%i|%T|%r"'
    NOTE="-t all: also COMPLETED/FAILED/CANCELLED jobs (until MinJobAge); plain squeue omits them" \
        save squeue_all_states 'squeue -h -u "$(id -un)" -t all -o "%i|%T|%r|%j"'
    save squeue_with_name 'squeue -h -u "$(id -un)" -o "%i|%T|%r|%j"'
    save squeue_expyre 'squeue --user $USER --noheader -O jobid:20,state:30,reason:200'
    save squeue_default 'squeue -u "$(id -un)"'
    save scontrol_show_job "scontrol show job $run_id"
    save scontrol_release "scontrol release $pend_id"
    save scancel "scancel $pend_id"
    sleep 1
    save squeue_after_cancel 'squeue -h -u "$(id -un)" -o "%i|%T|%r"'
    local ids; ids=$(IFS=,; echo "${MINE[*]}")
    NOTE="then waited until MinJobAge=10 made squeue forget them" save scancel_all "scancel ${MINE[*]}"
    gone "squeue -h -j $run_id"
    NOTE="all ids unknown: empty output, exit 0" save squeue_vanished "squeue -h -j $ids -o '%i|%T|%r'"
    NOTE="one unknown id: error, exit 1" save squeue_vanished_one "squeue -h -j $run_id -o '%i|%T|%r'"
    save scontrol_show_job_vanished "scontrol show job $run_id"
    NOTE="jobcomp/filetxt is space-separated key=value: names with spaces garble it" \
        save sacct_jobcomp "sacct -c -P -n -j $ids -o JobID,JobName,State,ExitCode"
}

capture_sge() {
    HEADER=('#$ -N N_testjob' '#$ -l h_rt=1:00:00' '#$ -o job.testjob.stdout' '#$ -e job.testjob.stderr'
            '#$ -S /bin/bash' '#$ -r n' '#$ -cwd' '#$ -pe smp 2' '#$ -q all.q')
    job_script job.sh 'sleep 300'
    HEADER=("${HEADER[@]/testjob/shortjob}"); job_script fail.sh 'exit 3'; job_script err100.sh 'exit 100'
    local run_id pend_id; MINE=()
    sub 'qsub -terse fail.sh'
    NOTE="exit 100 puts a job into error state (Eqw)" sub qsub_err100 'qsub -terse err100.sh'
    sub qsub_terse 'qsub -terse job.sh'; run_id=$LAST
    sub qsub_plain 'qsub job.sh'
    NOTE="SGE rejects spaces and non-ASCII in names (also : @ * /, leading digit)" \
        save qsub_terse_name_with_space "qsub -terse -N $Q_WEIRD job.sh"
    sub qsub_terse_weird_name "qsub -terse -N $Q_NASTY job.sh"
    sub qsub_hold 'qsub -terse -h job.sh'
    sub "qsub -terse -a $(date -d '+1 hour' +%Y%m%d%H%M) job.sh"; pend_id=$LAST
    sub "qsub -terse -hold_jid $run_id job.sh"          # dependency
    sub 'qsub -terse -pe smp 100 job.sh'                # never fits
    save qhold "qhold $pend_id"
    sleep 5
    NOTE="r, qw, hqw (qsub -h, qhold, -hold_jid), qw with -a, Eqw; finished jobs are not listed" \
        save qstat_u 'qstat -u "$(id -un)"'
    save qstat_plain 'qstat'
    save qstat_xml 'qstat -xml -u "$(id -un)"'
    save qstat_j "qstat -j $run_id"
    save qrls "qrls $pend_id"
    save qdel "qdel $pend_id"
    NOTE="includes ids of jobs that had finished already" save qdel_all "qdel ${MINE[*]}"
    sleep 1
    NOTE="1 s after qdel: running jobs take a moment to go" save qstat_after_qdel_1s 'qstat -u "$(id -un)"'
    gone "qstat -j $run_id"
    save qstat_after_qdel 'qstat -u "$(id -un)"'
    save qstat_j_vanished "qstat -j $run_id"
    save qacct_j "qacct -j $run_id"
    save qacct_j_exit3 "qacct -j ${MINE[0]}"
}

capture_pbs() {
    HEADER=('#PBS -N N_testjob' '#PBS -l walltime=1:00:00' '#PBS -o job.testjob.stdout' '#PBS -e job.testjob.stderr'
            '#PBS -S /bin/bash' '#PBS -r n' '#PBS -l nodes=1:ppn=2' '#PBS -q debug')
    job_script job.sh 'sleep 300'
    HEADER=("#PBS -N $WEIRD" "${HEADER[@]:1}"); job_script space.sh 'sleep 300'
    HEADER=("#PBS -N $NASTY" "${HEADER[@]:1}"); job_script weird.sh 'sleep 300'
    HEADER=("${HEADER[@]/#\#PBS -N */#PBS -N shortjob}"); job_script fail.sh 'exit 3'
    local P="$PBS_PATH;" run_id pend_id; MINE=()
    sub "$P qsub fail.sh"
    sub qsub "$P qsub job.sh"; run_id=$LAST
    NOTE="#PBS -N with quotes and | in the script (sbatch itself reads #PBS lines)" \
        sub qsub_weird_name "$P qsub weird.sh"
    NOTE="#PBS -N with spaces: sbatch splits the #PBS line on blanks" \
        save qsub_script_name_with_space "$P qsub space.sh"
    NOTE="the wrapper pastes -N unquoted into a shell command line" \
        save qsub_N_weird_name "$P qsub -N $Q_WEIRD job.sh"
    sub qsub_hold "$P qsub -h job.sh"
    sub "$P qsub -a now+3600 job.sh"; pend_id=$LAST
    sub "$P qsub -W depend=afterok:$run_id job.sh"
    save qhold "$P qhold $pend_id"
    sleep 4
    NOTE="R, Q (held jobs show Q too), C (finished); all users' jobs" save qstat "$P qstat"
    save qstat_a "$P qstat -a"
    save qstat_u "$P qstat -u \"\$(id -un)\""
    save qstat_f "$P qstat -f $run_id"
    save qstat_f_held "$P qstat -f $pend_id"
    NOTE="ExPyRe's status command; this wrapper has no -w/-x" save qstat_expyre "$P qstat -w -x -a"
    save qrls "$P qrls $pend_id"
    save qdel "$P qdel $pend_id"
    save qdel_all "$P qdel ${MINE[*]}"
    sleep 1
    NOTE="C = completed or cancelled, until MinJobAge" save qstat_after_qdel "$P qstat"
    gone "$P qstat $run_id"
    save qstat_vanished "$P qstat $run_id"
    save qdel_vanished "$P qdel $run_id"
    save qstat_f_vanished "$P qstat -f $run_id"
}

scheds=("$@"); ((${#scheds[@]})) || scheds=(slurm sge pbs)
for SCHED in "${scheds[@]}"; do
    for MODE in root ssh; do
        log "capturing $SCHED as $MODE"
        setup_mode
        "capture_$SCHED"
        { echo "## $SCHED, $MODE"; cat "$MANIFEST"; } >"$OUT/${SCHED}_${MODE}_README.md"
    done
done
log "wrote $OUT"
