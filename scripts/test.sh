#!/usr/bin/env bash
# The test command (README, CI): install the package and its test/docs tools, check that a
# fresh non-editable install runs the README's main job, start the real daemons (Slurm, SGE,
# Torque-style PBS commands on Slurm, an sshd on 127.0.0.1:2222), then run each step below in
# order; the first failing step fails the run. Extra arguments go to pytest. To add a step,
# write a function and add its name to STEPS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lint() { python3 -m ruff check wfl_async tests benchmarks; }
typecheck() { python3 -m mypy; }                 # settings (files, strictness) in pyproject.toml
layers() { lint-imports; }                       # the layer table of docs/architecture.md ([tool.importlinter])
docs() { python3 -m sphinx -W --keep-going -q -b html docs docs/_build/html; }   # warnings are errors
fresh_install() { local status=0; wait "$fresh_pid" || status=$?; cat "$fresh_log"; rm -f "$fresh_log"; return "$status"; }
# The tests run in two passes (docs/test-infrastructure.md, "How the tests run"): first every test
# not marked `serial`, in WFL_ASYNC_TEST_WORKERS pytest-xdist workers at once (remote tests mostly
# wait for the daemons; --dist loadgroup keeps the tests of one xdist_group in one worker), then the
# `serial` ones alone (they change a daemon's state that every other test would see). Both passes
# run even if the first fails; each lists its slowest 30 tests at the end, so the next engineer sees
# where the time goes. A pass that selects nothing (pytest's exit status 5, e.g. with -k) is fine
# when the other ran tests. (-m is taken by the passes.)
tests() {
    local concurrent=0 serial=0
    python3 -m pytest --runremote -n "${WFL_ASYNC_TEST_WORKERS:-6}" --dist loadgroup --durations=30 \
        -m "not serial" "$@" || concurrent=$?
    python3 -m pytest --runremote --durations=30 -m serial "$@" || serial=$?
    if ((concurrent == 5 && serial == 5)); then return 5; fi
    for status in "$concurrent" "$serial"; do
        ((status == 0 || status == 5)) || return "$status"
    done
}

STEPS=(lint typecheck layers docs fresh_install tests)

python3 -m pip install --quiet --disable-pip-version-check -e '.[test,compare,docs,gap]'
# a new user's install (new venv, non-editable, README main job from another directory): started
# now, in the background, beside the daemons' start and the static steps; its step waits for it
fresh_log="$(mktemp "${TMPDIR:-/tmp}/wfl_async_fresh_log.XXXXXX")"
bash scripts/fresh_install_check.sh >"$fresh_log" 2>&1 &
fresh_pid=$!
bash scripts/testinfra/start_all.sh
bash scripts/testinfra/clear_queues.sh   # the daemons may be a machine's long-running ones: empty queues first
bash scripts/testinfra/prune_run_dirs.sh # and old runs' job directories deleted, so the disk does not fill
# shellcheck disable=SC1091
source "${WFL_ASYNC_TESTINFRA_DIR:-/tmp/wfl_async_testinfra}/env.sh"
for step in "${STEPS[@]}"; do
    echo "== $step" >&2
    start=$SECONDS
    if [ "$step" = tests ]; then "$step" "$@"; else "$step"; fi
    echo "== $step: ok in $((SECONDS - start)) s" >&2
done
