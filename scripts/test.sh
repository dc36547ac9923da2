#!/usr/bin/env bash
# The project's test command (CI runs exactly this through .ci/run):
#   scripts/test.sh            lint, sanity, unit tests, molecule (the whole platform, Odoo included)
#   scripts/test.sh --quick    everything but molecule
# It sets the machine up first (scripts/setup.sh is idempotent). Odoo's source is ODOO_SOURCE,
# or Odoo's 17.0 archive in ../shared/odoo (scripts/odoo-source.sh). The minutes each step
# took are printed at the end and kept in .artifacts/test-steps.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
COLL=$ROOT/collections/ansible_collections/dine360/saas
STEPS=$ROOT/.artifacts/test-steps.md
mkdir -p "$ROOT/.artifacts"
printf '| Step | Seconds |\n|---|---:|\n' > "$STEPS"
t0=$(date +%s)
ts=$t0
step_name=""
step() {
  local now; now=$(date +%s)
  [ -z "$step_name" ] || printf '| %s | %d |\n' "$step_name" $(( now - ts )) >> "$STEPS"
  step_name=$*; ts=$now
  [ -z "$step_name" ] || printf '\n\033[1;35m== %s\033[0m\n' "$*"
}
trap 'step; printf "\nminutes so far (%s):\n" "$STEPS"; cat "$STEPS"' EXIT

step "set-up (scripts/setup.sh)"
"$ROOT/scripts/setup.sh"
export PATH="$VENV/bin:$PATH"

step "yamllint"
yamllint -s .

step "ansible-lint (production profile)"
ansible-lint --profile production --offline

step "argument specs match defaults"
python tools/check_argument_specs.py

step "ansible-test sanity (no ignore entries)"
if ls "$COLL"/tests/sanity/ignore-*.txt >/dev/null 2>&1; then
  echo "sanity ignore files are not allowed: $(ls "$COLL"/tests/sanity/ignore-*.txt)" >&2; exit 1
fi
# ansible-test bootstraps pip in its venvs with a script from ci-files.testing.ansible.com,
# which CI cannot reach: install an equivalent that uses ensurepip and the package index.
pipver=$(python -c 'from ansible_test._internal.python_requirements import get_venv_packages as g; from ansible_test._internal.host_configs import NativePythonConfig as N; print(g(N(version="3.11"))["pip"])' 2>/dev/null || echo 24.2)
mkdir -p ~/.ansible/test/cache
cp tools/get_pip_offline.py ~/.ansible/test/cache/"get_pip_${pipver//./_}.py"
(cd "$COLL" && ansible-test sanity --python 3.11 --venv --color no)

step "unit tests"
# Three workers: most of the time is ansible-playbook runs and their waits (525 s serial, 354 s here).
python -m pytest -q -p no:cacheprovider -n 3 --ignore=tests/ha tests/ "$COLL/tests/unit"

if [ "${1:-}" != "--quick" ]; then
  # The Odoo the scenario deploys, recorded for the scenario's inventory.
  step "Odoo source for the scenario"
  scripts/odoo-source.sh molecule/default/group_vars/all/odoo_source.yml
  # molecule test's sequence, one step at a time so that each is timed; a failed step
  # still removes the containers.
  for s in destroy syntax create prepare converge idempotence verify destroy; do
    step "molecule $s"
    molecule "$s" -s default || { rc=$?; [ "$s" = destroy ] || molecule destroy -s default || true; exit $rc; }
  done
fi
step
printf '| **total** | %d |\n' $(( $(date +%s) - t0 )) >> "$STEPS"
trap - EXIT
printf '\n\033[1;35m== all tests passed in %d s\033[0m\n' $(( $(date +%s) - t0 ))
cat "$STEPS"
