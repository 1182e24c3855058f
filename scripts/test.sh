#!/usr/bin/env bash
# The test command (README, CI): install the package and test tools, start the real
# daemons (Slurm, SGE, Torque-style PBS commands on Slurm, an sshd on 127.0.0.1:2222),
# check that a fresh non-editable install runs the README's main job, then run every test against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test,compare,gap]'
# a new user's install (new venv, non-editable, README main job from another directory)
bash scripts/fresh_install_check.sh
bash scripts/testinfra/start_all.sh
# shellcheck disable=SC1091
source "${WFL_ASYNC_TESTINFRA_DIR:-/tmp/wfl_async_testinfra}/env.sh"
python3 -m pytest --runremote "$@"
