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
tests() { python3 -m pytest --runremote "$@"; }

STEPS=(lint typecheck layers docs tests)

python3 -m pip install --quiet --disable-pip-version-check -e '.[test,compare,docs,gap]'
# a new user's install (new venv, non-editable, README main job from another directory)
bash scripts/fresh_install_check.sh
bash scripts/testinfra/start_all.sh
# shellcheck disable=SC1091
source "${WFL_ASYNC_TESTINFRA_DIR:-/tmp/wfl_async_testinfra}/env.sh"
for step in "${STEPS[@]}"; do
    echo "== $step" >&2
    start=$SECONDS
    if [ "$step" = tests ]; then "$step" "$@"; else "$step"; fi
    echo "== $step: ok in $((SECONDS - start)) s" >&2
done
