#!/usr/bin/env bash
# Resolve the Odoo source the lab or the CI scenario deploys, and record it in a vars file
# (git-ignored) beside their inventory, so every later command finds it with nothing exported:
#
#   scripts/odoo-source.sh VARS_FILE
#
# In order of preference:
#   1. ODOO_SOURCE, when set: a checkout of Odoo 17 on this machine, or a git URL;
#   2. the source already recorded in VARS_FILE (a later `lab.sh up` keeps it);
#   3. the Odoo 17.0 archive beside the project (DINE360_ODOO_ARCHIVE, default
#      ../shared/odoo/odoo-17.0.tar.xz), unpacked once into .artifacts/odoo/ (git-ignored;
#      re-unpacked when the archive changes).
# Fails, naming ODOO_SOURCE, when none of them is there. Prints the source on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VARS_FILE=${1:?usage: scripts/odoo-source.sh VARS_FILE}
log() { printf '\033[1;34m[odoo-source]\033[0m %s\n' "$*" >&2; }

valid_dir() { [ -f "$1/odoo/release.py" ]; }
is_url() { [[ $1 =~ ^(https?|ssh|git|file):// || $1 =~ ^[^/@]+@[^:]+: ]]; }

recorded() {
  [ -f "$VARS_FILE" ] || return 0
  sed -n 's/^odoo_source: "\(.*\)"$/\1/p' "$VARS_FILE" | head -n1
}

unpack_archive() {
  local archive=${DINE360_ODOO_ARCHIVE:-$ROOT/../shared/odoo/odoo-17.0.tar.xz}
  [ -f "$archive" ] || return 1
  archive=$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")
  local dest=$ROOT/.artifacts/odoo stamp want
  stamp=$dest/.archive
  want="$archive $(stat -c '%s %Y' "$archive")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! valid_dir "$dest/odoo-17.0"; then
    log "unpacking $archive into $dest (about a minute)"
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -xJf "$archive" -C "$dest"
    valid_dir "$dest/odoo-17.0" || { echo "$archive holds no odoo-17.0/odoo/release.py" >&2; return 1; }
    echo "$want" > "$stamp"
  fi
  echo "$dest/odoo-17.0"
}

src=${ODOO_SOURCE:-}
if [ -n "$src" ]; then
  if ! is_url "$src"; then
    src=$(cd "$src" 2>/dev/null && pwd) || { echo "ODOO_SOURCE=$ODOO_SOURCE is not a directory" >&2; exit 1; }
    valid_dir "$src" || { echo "ODOO_SOURCE=$src holds no odoo/release.py: point it at a checkout of Odoo 17" >&2; exit 1; }
  fi
  why="ODOO_SOURCE"
else
  src=$(recorded)
  why="recorded in $VARS_FILE"
  if [ -z "$src" ] || { ! is_url "$src" && ! valid_dir "$src"; }; then
    src=$(unpack_archive) || {
      echo "No Odoo source: set ODOO_SOURCE to a checkout of Odoo 17 (or a git URL such as" \
           "https://github.com/odoo/odoo.git), or put Odoo's archive at ../shared/odoo/odoo-17.0.tar.xz" \
           "(or DINE360_ODOO_ARCHIVE)" >&2
      exit 1
    }
    why="the Odoo 17.0 archive"
  fi
fi

mkdir -p "$(dirname "$VARS_FILE")"
new=$(printf '%s\n' '---' \
  '# Written by scripts/odoo-source.sh (git-ignored): the Odoo source this environment deploys.' \
  '# Change it with ODOO_SOURCE=<checkout or git URL> on the next `scripts/lab.sh up`.' \
  "odoo_source: \"$src\"")
if [ "$(cat "$VARS_FILE" 2>/dev/null)" != "$new" ]; then
  printf '%s\n' "$new" > "$VARS_FILE"
fi
log "Odoo source: $src ($why)"
echo "$src"
