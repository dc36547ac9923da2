#!/usr/bin/env bash
# The local lab: the DB tier (and Redis) in three systemd containers, monitoring (and the
# lab's ACME and DNS test servers) in a fourth, two app servers that are also the web
# balancers. Odoo's source is ODOO_SOURCE (a checkout of Odoo 17 or a git URL) or, without
# it, the one recorded by the last `up`, or the Odoo 17.0 archive in ../shared/odoo
# (scripts/odoo-source.sh); it is recorded in inventories/lab/group_vars/all/odoo_source.yml
# (git-ignored), so later commands need nothing exported.
#
#   scripts/lab.sh up      set up the machine if needed, create the containers,
#                          run playbooks/site.yml, print how to connect
#   scripts/lab.sh info    print how to connect (and refresh .artifacts/lab-topology.json)
#   scripts/lab.sh down    remove the containers, the network and the backup volume (keeps secrets)
#   scripts/lab.sh purge   down, and forget the lab's secrets and certificates
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
NET=dine360-lab
SUBNET=10.89.0.0/24
IPRANGE=10.89.0.192/26   # Docker's own allocations stay clear of the nodes and the VIP
NODES=(pg1:10.89.0.11 pg2:10.89.0.12 pg3:10.89.0.13 mon1:10.89.0.21 app1:10.89.0.31 app2:10.89.0.32)
VIP=10.89.0.100
WEB_VIP=10.89.0.110
DOMAIN=dine360.test
SECRETS=inventories/lab/group_vars/all/secrets.yml
ODOO_VARS=inventories/lab/group_vars/all/odoo_source.yml
ACME_CA=.artifacts/lab-acme-ca.pem
log() { printf '\033[1;32m[lab]\033[0m %s\n' "$*"; }

# The same container settings as molecule/default/molecule.yml (systemd as PID 1 without
# --privileged: see README "Tests").
RUN_OPTS=(--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined
          --security-opt apparmor=unconfined --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw
          --tmpfs /run --tmpfs /run/lock --tmpfs /tmp --stop-signal SIGRTMIN+3)

# The topology JSON the tests and benchmarks read (tools/topology.yml), from the inventory as it
# is now: after editing the tenant list, `info` brings it up to date.
topology() {
  mkdir -p .artifacts
  "$VENV/bin/ansible-playbook" -i inventories/lab tools/topology.yml -e topology_path="$ROOT/.artifacts/lab-topology.json" >/dev/null
}

create() {
  docker network inspect "$NET" >/dev/null 2>&1 || {
    log "creating network $NET ($SUBNET)"
    docker network create --subnet "$SUBNET" --ip-range "$IPRANGE" "$NET" >/dev/null
  }
  local image node name ip
  image=$("$ROOT/scripts/base-image.sh")
  for node in "${NODES[@]}"; do
    name=${node%%:*}; ip=${node#*:}
    if ! docker container inspect "dine360-lab-$name" >/dev/null 2>&1; then
      log "creating container dine360-lab-$name ($ip)"
      # PostgreSQL nodes share a volume standing for the backup mount (CephFS/NFS).
      local extra=()
      [[ $name == pg* ]] && extra=(-v dine360-lab-backup:/mnt/backup)
      # App servers share a volume standing for the shared Odoo filestore (NFS/EFS).
      [[ $name == app* ]] && extra=(-v dine360-lab-odoo-data:/var/lib/odoo)
      docker run -d --name "dine360-lab-$name" --hostname "$name" --network "$NET" --ip "$ip" \
        "${RUN_OPTS[@]}" "${extra[@]}" "$image" >/dev/null
    else
      docker start "dine360-lab-$name" >/dev/null
    fi
  done
  for node in "${NODES[@]}"; do
    name=${node%%:*}
    for _ in $(seq 1 30); do
      state=$(docker exec "dine360-lab-$name" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && break; sleep 1
    done
  done
}

info() {
  cat <<INFO

  dine360 lab — DB tier on the VIP $VIP
    write endpoint   postgresql://<user>@$VIP:5000/<db>   (primary, through PgBouncer)
    read endpoint    postgresql://<user>@$VIP:5001/<db>   (replicas, through PgBouncer)
    HAProxy stats    http://$VIP:7000/   user haproxy, password in $SECRETS
                     (curl -su haproxy:\$(sed -n 's/^haproxy_stats_password: "\\(.*\\)"/\\1/p' $SECRETS) http://$VIP:7000/\;csv)
    HAProxy metrics  http://$VIP:7000/metrics
    Prometheus       http://10.89.0.21:9090/   (alerts: http://10.89.0.21:9090/classic/alerts; Debian's build has the classic UI)
    Alertmanager     http://10.89.0.21:9093/
    Odoo             https://<tenant>.$DOMAIN/ on the web VIP $WEB_VIP, e.g.
                     curl --cacert $ACME_CA --resolve pizza-roma.$DOMAIN:443:$WEB_VIP https://pizza-roma.$DOMAIN/web/login
                     admin password of a tenant (user admin): .venv/bin/ansible localhost -m debug -a "msg={{ saas_password_seed | dine360.saas.tenant_password('odoo-admin', 'pizza-roma') }}"
    Redis Sentinel   docker exec -e REDISCLI_AUTH=\$(sed -n 's/^redis_password: "\\(.*\\)"/\\1/p' $SECRETS) dine360-lab-pg1 redis-cli -p 26379 sentinel get-master-addr-by-name dine360
    Patroni          docker exec dine360-lab-pg1 patronictl -c /etc/patroni/patroni.yml list
    superuser shell  docker exec -it -u postgres dine360-lab-pg1 psql
    topology JSON    .artifacts/lab-topology.json  (for tests/ha and bench/)
INFO
  docker exec dine360-lab-pg1 patronictl -c /etc/patroni/patroni.yml list 2>/dev/null || true
}

case "${1:-up}" in
  up)
    "$ROOT/scripts/setup.sh"
    create
    python3 scripts/gen_secrets.py "$SECRETS"
    "$ROOT/scripts/odoo-source.sh" "$ODOO_VARS" >/dev/null
    log "starting the lab's ACME (Pebble) and DNS (BIND9) test servers on mon1"
    "$VENV/bin/ansible-playbook" -i inventories/lab molecule/default/prepare_acme.yml
    log "running playbooks/site.yml"
    start=$(date +%s)
    "$VENV/bin/ansible-playbook" -i inventories/lab playbooks/site.yml "${@:2}"
    log "site.yml took $(( $(date +%s) - start )) s"
    topology
    # The test ACME CA (Pebble's), for curl and browsers on this machine.
    docker exec dine360-lab-app1 cat /usr/local/share/dine360/acme-test-ca.pem > "$ACME_CA"
    info ;;
  info) topology; info ;;
  down)
    for node in "${NODES[@]}"; do docker rm -f "dine360-lab-${node%%:*}" >/dev/null 2>&1 || true; done
    docker network rm "$NET" >/dev/null 2>&1 || true
    # The backups belong to the cluster just removed; a new cluster must not archive over them.
    docker volume rm dine360-lab-backup dine360-lab-odoo-data >/dev/null 2>&1 || true
    log "lab removed with its backup and filestore volumes (secrets kept in $SECRETS)" ;;
  purge)
    "$0" down
    rm -rf "$SECRETS" .secrets/lab "$ACME_CA" .artifacts/lab-topology.json
    log "lab secrets and certificates removed" ;;
  *) echo "usage: $0 up|info|down|purge" >&2; exit 2 ;;
esac
