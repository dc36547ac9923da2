#!/usr/bin/env bash
# Build the systemd base image used by the lab and by molecule, locally, without a
# registry: debootstrap a Debian bookworm minbase and `docker import` it. The tag
# carries a hash of this recipe, so the image is rebuilt only when the recipe changes.
# Prints the image tag on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,iputils-ping,procps,ca-certificates,gnupg,curl,less"
RECIPE_HASH=$( (cat "$0"; echo "$PACKAGES") | sha256sum | cut -c1-12)
IMAGE=${DINE360_BASE_IMAGE:-dine360/debian-systemd:bookworm-$RECIPE_HASH}
log() { printf '\033[1;34m[base-image]\033[0m %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "cached: $IMAGE"
  docker tag "$IMAGE" dine360/debian-systemd:bookworm >/dev/null
  echo "$IMAGE"; exit 0
fi

# The machine's own Debian mirror, rather than a hard-coded host.
mirror() {
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
  [ -n "$m" ] || m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '{print $2}' | grep -E 'debian/?$' | grep -v security | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

if command -v debootstrap >/dev/null 2>&1 || { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1; }; then
  MIRROR=$(mirror)
  DIR=$(mktemp -d /var/tmp/dine360-rootfs.XXXXXX)
  trap 'rm -rf "$DIR"' EXIT
  log "debootstrap bookworm from $MIRROR (about a minute)"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$DIR" "$MIRROR" >/var/tmp/dine360-debootstrap.log 2>&1 \
    || { tail -n 20 /var/tmp/dine360-debootstrap.log >&2; exit 1; }
  # The same mirror inside the containers; no recommends; container-friendly systemd.
  echo "deb $MIRROR bookworm main" > "$DIR/etc/apt/sources.list"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$DIR/etc/apt/apt.conf.d/90dine360"
  for unit in getty.target systemd-logind.service console-getty.service systemd-timesyncd.service; do
    ln -sf /dev/null "$DIR/etc/systemd/system/$unit"
  done
  # Keep the package lists debootstrap fetched: apt caches look fresh to Ansible.
  rm -rf "$DIR"/var/cache/apt/archives/*.deb
  tar -C "$DIR" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' - "$IMAGE" >/dev/null
else
  # A laptop without debootstrap: build from Debian's official image when a registry answers.
  log "debootstrap unavailable: building from debian:bookworm"
  printf 'FROM debian:bookworm\nENV container=docker\nRUN apt-get update && apt-get install -y --no-install-recommends %s && rm -rf /var/lib/apt/lists/*\nCMD ["/lib/systemd/systemd"]\n' \
    "${PACKAGES//,/ }" | docker build -t "$IMAGE" - >&2
fi
docker tag "$IMAGE" dine360/debian-systemd:bookworm >/dev/null
log "built $IMAGE"
echo "$IMAGE"
