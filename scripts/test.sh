#!/usr/bin/env bash
# The project's test command (CI runs exactly this through .ci/run):
#   scripts/test.sh            lint, sanity, unit tests, molecule (the HA scenario)
#   scripts/test.sh --quick    everything but molecule
# It sets the machine up first (scripts/setup.sh is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
COLL=$ROOT/collections/ansible_collections/dine360/saas
step() { printf '\n\033[1;35m== %s\033[0m\n' "$*"; }
"$ROOT/scripts/setup.sh"
export PATH="$VENV/bin:$PATH"
t0=$(date +%s)

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
python -m pytest -q -p no:cacheprovider --ignore=tests/ha tests/ "$COLL/tests/unit"

if [ "${1:-}" != "--quick" ]; then
  # The Odoo the scenario deploys: ODOO_SOURCE, or the Odoo 17.0 archive in ../shared/odoo
  # (unpacked once into .artifacts/odoo), recorded for the scenario's inventory.
  step "Odoo source for the scenario"
  scripts/odoo-source.sh molecule/default/group_vars/all/odoo_source.yml
  step "molecule: the platform (converge site.yml, idempotence, faults, Odoo in a browser)"
  molecule test -s default
fi
step "all tests passed in $(( $(date +%s) - t0 )) s"
