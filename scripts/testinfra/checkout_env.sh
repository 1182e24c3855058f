#!/bin/bash
# Run the tests of a second checkout (e.g. a git worktree) against the daemons that
# start_all.sh already started, without sharing run directories with other checkouts:
#   bash scripts/testinfra/checkout_env.sh NAME   (from the checkout)  then
#   source /tmp/wfl_async_testinfra/checkouts/NAME/env.sh
# writes a config.json whose jobs import wfl_async from this checkout and whose rundirs
# are this checkout's own.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
name=${1:?usage: checkout_env.sh NAME}
[[ -f $RUNTIME/expyre/config.json ]] || die "run scripts/testinfra/start_all.sh first"
out="$RUNTIME/checkouts/$name"
mkdir -p "$out/expyre"
d=$REPO_ROOT
while [[ $d != / ]]; do chmod o+x "$d"; d=$(dirname "$d"); done
SRC=$REPO_ROOT OUT=$out NAME=$name RUNTIME=$RUNTIME TEST_HOME=$TEST_HOME TEST_USER=$TEST_USER \
python3 - <<'PY'
import json, os, pwd, re
rt, out, name, src = os.environ["RUNTIME"], os.environ["OUT"], os.environ["NAME"], os.environ["SRC"]
user = pwd.getpwnam(os.environ["TEST_USER"])
config = json.load(open(f"{rt}/expyre/config.json"))
for sys_name, entry in config["systems"].items():
    entry["commands"] = [re.sub(r"export PYTHONPATH=[^$]*", f"export PYTHONPATH={src}", c)
                         for c in entry["commands"]]
    rundir = entry["rundir"].replace("/wfl_async_run/", f"/wfl_async_run_{name}/") \
        .replace(f"{rt}/run/", f"{out}/run/")
    entry["rundir"] = rundir
    os.makedirs(rundir, exist_ok=True)
    if entry.get("host"):
        for d in (os.path.dirname(rundir), rundir):
            os.chown(d, user.pw_uid, user.pw_gid)
json.dump(config, open(f"{out}/expyre/config.json", "w"), indent=2)
PY
cat >"$out/env.sh" <<EOT
export WFL_ASYNC_TESTINFRA_DIR=$RUNTIME
export EXPYRE_ROOT=$out/expyre
export USER=\${USER:-\$(id -un)}
EOT
log "source $out/env.sh to test $REPO_ROOT"
