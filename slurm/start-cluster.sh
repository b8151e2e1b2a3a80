#!/usr/bin/env bash
# Start a real single-host SLURM cluster for tests and demos: munged, MariaDB, slurmdbd (accounting, which
# submitit needs to see cancelled and failed jobs), slurmctld and one or two slurmd.
#
#   slurm/start-cluster.sh [--nodes 1|2]      # default 2; then: source $LAUNCHER_SLURM_HOME/env.sh
#
# Idempotent: installs the Debian packages when missing, leaves running daemons alone, restarts slurmctld
# and the slurmds only when the generated slurm.conf changed (e.g. switching to two-node mode).
# Two-node mode runs two slurmd on this host (node1, node2), each on its own port: enough for a real
# multi-node job (one task per node, one torchrun per node, one world).
# All state (configs, spool, logs, database, munge key) lives under $LAUNCHER_SLURM_HOME
# (default /var/tmp/launcher-slurm); stop with slurm/stop-cluster.sh. Nothing here needs systemd.
set -euo pipefail

NODES="${LAUNCHER_SLURM_NODES:-2}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --nodes=*) NODES="${1#*=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "start-cluster.sh: unknown argument '$1' (use --nodes 1|2)" >&2; exit 2 ;;
  esac
done
[[ "$NODES" == 1 || "$NODES" == 2 ]] || { echo "start-cluster.sh: --nodes must be 1 or 2, got '$NODES'" >&2; exit 2; }

HOME_DIR="${LAUNCHER_SLURM_HOME:-/var/tmp/launcher-slurm}"
# Non-default ports so that this cluster never collides with a system slurm or MySQL on the same host.
PORT_BASE="${LAUNCHER_SLURM_PORT_BASE:-16800}"
CTLD_PORT=$((PORT_BASE + 17)); DBD_PORT=$((PORT_BASE + 19)); NODE_PORT0=$((PORT_BASE + 21))
DB_PORT=$((PORT_BASE + 6))
HOST="$(hostname -s)"
ETC="$HOME_DIR/etc"; RUN="$HOME_DIR/run"; LOG="$HOME_DIR/log"; SPOOL="$HOME_DIR/spool"
MUNGE_DIR="$HOME_DIR/munge"; MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"; DB_DIR="$HOME_DIR/mysql"
export SLURM_CONF="$ETC/slurm.conf"

log() { echo "[start-cluster] $*"; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit="$1" what="$2"; shift 2
  for _ in $(seq 1 $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "start-cluster.sh: $what did not come up within ${limit}s; see $LOG" >&2; exit 1
}

# ------------------------------------------------------------------------------------------ packages
need_install=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge slurmdbd:slurmdbd mariadbd:mariadb-server; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x "/usr/sbin/${pair%%:*}" ]] || need_install+=("${pair#*:}")
done
if [[ ${#need_install[@]} -gt 0 ]]; then
  log "installing ${need_install[*]} (apt-get, about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get or dpkg holding the lock is waited for (APT_LOCK_WAIT s, default 300), not an instant failure.
  lock_wait=(-o "DPkg::Lock::Timeout=${APT_LOCK_WAIT:-300}")
  apt-get "${lock_wait[@]}" update -q >/dev/null
  # policy-rc.d keeps the packages' init scripts from starting system daemons we do not use.
  apt-get "${lock_wait[@]}" install -y -q "${need_install[@]}" >/dev/null
fi
export PATH="/usr/sbin:$PATH"

mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$MUNGE_DIR" "$DB_DIR"

# ------------------------------------------------------------------------------------------- munge
if ! alive "$RUN/munged.pid"; then
  if [[ ! -f "$MUNGE_DIR/munge.key" ]]; then
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0600 "$MUNGE_DIR/munge.key"
  # munged refuses a socket folder that others cannot traverse ("Socket is inaccessible").
  chmod 0755 "$HOME_DIR" "$MUNGE_DIR"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" --pid-file="$RUN/munged.pid" \
    --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
  wait_for 10 munged test -S "$MUNGE_SOCKET"
  log "munged up"
fi

# ----------------------------------------------------------------------------------------- mariadb
DB_PASS_FILE="$ETC/db.pass"
[[ -f "$DB_PASS_FILE" ]] || { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$DB_PASS_FILE"; chmod 0600 "$DB_PASS_FILE"; }
DB_PASS="$(cat "$DB_PASS_FILE")"
mysql_cli() { mariadb --socket="$RUN/mysqld.sock" -uroot "$@"; }
if ! alive "$RUN/mysqld.pid"; then
  fresh_db=0
  if [[ ! -d "$DB_DIR/mysql" ]]; then
    mariadb-install-db --user=root --datadir="$DB_DIR" --auth-root-authentication-method=socket \
      --skip-test-db > "$LOG/mariadb-install.log" 2>&1
    fresh_db=1
  fi
  nohup mariadbd --user=root --datadir="$DB_DIR" --socket="$RUN/mysqld.sock" --pid-file="$RUN/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$LOG/mariadb.log" \
    --innodb-buffer-pool-size=32M --skip-name-resolve > /dev/null 2>&1 &
  wait_for 30 mariadb mysql_cli -e "select 1"
  if [[ $fresh_db == 1 ]]; then
    mysql_cli -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
                  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  fi
  log "mariadb up"
fi

# ----------------------------------------------------------------------------------------- configs
node_lines=""
for i in $(seq 1 "$NODES"); do
  node_lines+="NodeName=node$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((NODE_PORT0 + i - 1)) CPUs=2 RealMemory=8000 State=UNKNOWN"$'\n'
done
new_conf="$(cat <<EOF
# Generated by slurm/start-cluster.sh ($NODES node(s) on $HOST); edits are overwritten.
ClusterName=launcher
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire=10: a requeued job may start again after 10 s instead of 120 s.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
# No cgroups in this sandbox: track processes by parent, do not bind tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MpiDefault=none
KillWait=5
InactiveLimit=0
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# slurmctld takes the munge socket for its slurmdbd connection from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
AccountingStoreFlags=job_comment
${node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)"
conf_changed=0
if [[ ! -f "$SLURM_CONF" ]] || [[ "$(cat "$SLURM_CONF")" != "$new_conf" ]]; then
  printf '%s\n' "$new_conf" > "$SLURM_CONF"
  conf_changed=1
fi
# slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF and insists on mode 0600.
cat > "$ETC/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdAddr=127.0.0.1
DbdHost=$HOST
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 0600 "$ETC/slurmdbd.conf.new"
mv "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf"
cat > "$HOME_DIR/env.sh" <<EOF
# source this to use the test cluster: sbatch, squeue, sacct, scontrol and submitit read SLURM_CONF.
export SLURM_CONF=$SLURM_CONF
export PATH=/usr/sbin:\$PATH
EOF

# ---------------------------------------------------------------------------------------- slurmdbd
if ! alive "$RUN/slurmdbd.pid"; then
  slurmdbd
  wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT"
  log "slurmdbd up"
fi

# --------------------------------------------------------------------------------- slurmctld, slurmd
stop_pid() { local f="$1"; if alive "$f"; then local p; p="$(cat "$f")"; kill "$p"; for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done; fi; rm -f "$f"; }
if [[ $conf_changed == 1 ]]; then
  log "slurm.conf changed ($NODES node(s)): (re)starting slurmctld and slurmd"
  for f in "$RUN"/slurmd-*.pid; do [[ -e "$f" ]] && stop_pid "$f"; done
  stop_pid "$RUN/slurmctld.pid"
fi
if ! alive "$RUN/slurmctld.pid"; then
  # -i: ignore state that no longer matches the config (a node removed when leaving two-node mode).
  slurmctld -i
  wait_for 30 slurmctld scontrol ping
  log "slurmctld up"
fi
# Make sure the cluster is registered in accounting (slurmctld does it on start; this covers a race).
sacctmgr -i add cluster launcher >/dev/null 2>&1 || true
for i in $(seq 1 "$NODES"); do
  mkdir -p "$SPOOL/node$i"
  if ! alive "$RUN/slurmd-node$i.pid"; then
    slurmd -N "node$i"
  fi
done
wait_for 30 "slurmd (nodes idle)" bash -c "[[ \$(sinfo -h -N -t idle,mix,alloc -o %N | sort -u | wc -l) -ge $NODES ]]"
log "cluster ready: $NODES node(s); export SLURM_CONF=$SLURM_CONF (or: source $HOME_DIR/env.sh)"
