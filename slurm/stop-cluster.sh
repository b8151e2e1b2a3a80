#!/usr/bin/env bash
# Stop the test cluster started by slurm/start-cluster.sh: the slurmds, slurmctld, slurmdbd, MariaDB and
# munged, each by the pid in its pid file (nothing else on the host is touched). State stays on disk, so a
# later start is fast; `--purge` also deletes $LAUNCHER_SLURM_HOME (job ids then start again at 1).
set -euo pipefail
HOME_DIR="${LAUNCHER_SLURM_HOME:-/var/tmp/launcher-slurm}"
RUN="$HOME_DIR/run"
purge=0
[[ "${1:-}" == "--purge" ]] && purge=1

stop_pid() {
  local f="$1" name="$2"
  [[ -f "$f" ]] || return 0
  local p; p="$(cat "$f")"
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
    echo "[stop-cluster] stopped $name (pid $p)"
  fi
  rm -f "$f"
}

for f in "$RUN"/slurmd-*.pid; do [[ -e "$f" ]] && stop_pid "$f" "$(basename "$f" .pid)"; done
stop_pid "$RUN/slurmctld.pid" slurmctld
stop_pid "$RUN/slurmdbd.pid" slurmdbd
stop_pid "$RUN/mysqld.pid" mariadb
stop_pid "$RUN/munged.pid" munged
if [[ $purge == 1 ]]; then
  rm -rf "$HOME_DIR"
  echo "[stop-cluster] removed $HOME_DIR"
fi
