#!/bin/bash
# Install and start everything (Slurm, sshd, the site-shaped sshds, SGE; PBS = Torque-style commands
# on Slurm), then write the runtime dir: expyre/config.json and env.sh.
# Usage: scripts/testinfra/start_all.sh   (a quick no-op when all is running)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$RUNTIME"
timings=()
step() {
    local name=$1 t0 t1; t0=$(date +%s%N)
    bash "$TESTINFRA_SCRIPTS/$name.sh"
    t1=$(date +%s%N)
    timings+=("$(printf '%-12s %6.1f s' "$name" "$(((t1 - t0) / 1000000))e-3")")
}
step install
step start_slurm
step start_sshd
step start_sshd_sites
step start_sge

# --- runtime dir: expyre/config.json, env.sh, run dirs ------------------------
SRC="${WFL_ASYNC_SOURCE_DIR:-$REPO_ROOT}"
[[ -d $SRC/wfl_async ]] || die "no wfl_async/ under $SRC (set WFL_ASYNC_SOURCE_DIR)"
PY=$(test_python)
# The test user's jobs import wfl_async from this checkout: let it traverse the parents.
d=$SRC
while [[ $d != / ]]; do chmod o+x "$d"; d=$(dirname "$d"); done
(cd / && su "$TEST_USER" -c "PYTHONPATH=$(printf '%q' "$SRC") $PY -c 'import wfl_async.jobs.worker'") \
    || die "$TEST_USER cannot import wfl_async from $SRC"
mkdir -p "$RUNTIME/expyre" "$RUNTIME/expyre_orig"
for s in local slurm sge pbs; do mkdir -p "$RUNTIME/run/$s"; done
for s in local_ssh slurm_ssh sge_ssh pbs_ssh; do
    install -d -o "$TEST_USER" -g "$TEST_USER" "$TEST_HOME/wfl_async_run" "$TEST_HOME/wfl_async_run/$s"
done

RUNTIME="$RUNTIME" SRC="$SRC" PYDIR="$(dirname "$PY")" OPT="$OPT" TEST_HOME="$TEST_HOME" \
"$PY" - <<'EOF'
import json, os
rt, opt, home = os.environ["RUNTIME"], os.environ["OPT"], os.environ["TEST_HOME"]
commands = [f"export PATH={os.environ['PYDIR']}:$PATH",
            f"export PYTHONPATH={os.environ['SRC']}${{PYTHONPATH:+:$PYTHONPATH}}"]
def part(name, cores):
    return {name: {"num_cores": cores, "max_time": "1h", "max_mem": "16GB"}}
base = {
    "local": dict(scheduler="local", header=[], partitions=part("local", 2)),
    "slurm": dict(scheduler="slurm", partitions=part("debug", 2), header=[
        "#SBATCH --nodes={num_nodes}", "#SBATCH --ntasks={num_cores}",
        "#SBATCH --ntasks-per-node={num_cores_per_node}", "#SBATCH --partition={partition}"]),
    "sge": dict(scheduler="sge", partitions=part("all.q", 2),
                header=["#$ -pe smp {num_cores}", "#$ -q {partition}"]),
    "pbs": dict(scheduler="pbs", partitions=part("debug", 2),
                header=["#PBS -l nodes={num_nodes}:ppn={num_cores_per_node}", "#PBS -q {partition}"],
                pre_submit_cmds=[f"export PATH={opt}/pbs/bin:$PATH"]),
}
systems = {}
for name, sysdef in base.items():
    sysdef.setdefault("pre_submit_cmds", [])
    systems[name] = dict(host=None, rundir=f"{rt}/run/{name}", commands=commands, **sysdef)
    systems[name + "_ssh"] = dict(
        host="wfl-async-test", rundir=f"{home}/wfl_async_run/{name}_ssh", commands=commands,
        ssh_config=f"{rt}/ssh_config",   # wfl_async extension: asyncssh client config
        remsh_cmd=f"{rt}/bin/ssh-wfl-test",  # one-word ssh for original ExPyRe/rsync
        **sysdef)
def write(path, systems):
    with open(path + ".tmp", "w") as f:
        json.dump({"systems": systems}, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
write(f"{rt}/expyre/config.json", systems)
# original ExPyRe raises TypeError on keys it does not know: a copy without ours
write(f"{rt}/expyre_orig/config.json",
      {n: {k: v for k, v in d.items() if k != "ssh_config"} for n, d in systems.items()})
EOF

cat >"$RUNTIME/env.sh" <<EOF
# source me: environment for tests against the wfl_async test infrastructure
export WFL_ASYNC_TESTINFRA_DIR=$RUNTIME
export EXPYRE_ROOT=$RUNTIME/expyre
export USER=\${USER:-\$(id -un)}
EOF

log "runtime dir $RUNTIME ready (source $RUNTIME/env.sh)"
printf '  %s\n' "${timings[@]}" >&2
