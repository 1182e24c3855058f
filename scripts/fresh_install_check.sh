#!/usr/bin/env bash
# CI step before the tests: what a new user does. A brand-new venv, a non-editable
# `pip install .` (only the declared dependencies, from PyPI; pip's cache keeps it fast),
# then the README's main job run from a directory outside the checkout, so a missing
# dependency or a file left out of the package fails here instead of on a user's machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/wfl_async_fresh.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$repo"
cd "$work"
# a jobs database of its own; the built-in `local` system needs no config.json
mkdir "$work/expyre"
EXPYRE_ROOT="$work/expyre" "$work/venv/bin/python" "$repo/examples/relax_on_local_system.py" "$work/run"
test -s "$work/run/relaxed.xyz"
echo "fresh install: OK ($("$work/venv/bin/python" -c 'import wfl_async; print(wfl_async.__file__)'))"
