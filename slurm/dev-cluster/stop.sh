#!/usr/bin/env bash
# Stop the dev cluster's daemons, each by its PID file (never by name), and wait until they have exited.
#   bash slurm/dev-cluster/stop.sh               # slurmd, slurmctld, slurmdbd, MariaDB, munged (if start.sh started it)
#   bash slurm/dev-cluster/stop.sh --slurm-only  # the three Slurm daemons only (start.sh uses it on a config change)
# Idempotent. The state dir ($FVQ_SLURM_DIR, default /tmp/fvq-slurm) stays: logs, queued jobs and accounting
# survive, and the next start.sh picks them up. Jobs already running are not cancelled (scancel them first).
set -Euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"
STATE="$FVQ_SLURM_DIR" RUN="$FVQ_SLURM_DIR/run"

die() { echo "slurm dev cluster: $1" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "stop.sh needs root (the daemons run as root, munge and mysql)"
[ -d "$STATE" ] || exit 0
if [ -z "${FVQ_SLURM_LOCKED:-}" ]; then   # not while start.sh runs (unless start.sh itself calls us)
    exec 9>"$STATE/.lock"
    flock -w 300 9 || die "another start.sh/stop.sh holds $STATE/.lock for 300 s"
fi

# stop PIDFILE:COMM...: SIGTERM each process named in a PIDFILE that is alive and is COMM (a recycled PID is
# left alone), then wait up to 20 s for all of them; SIGKILL what is left.
stop() {
    local item pid i
    local -A names=()
    for item in "$@"; do
        pid="$(cat "${item%%:*}" 2>/dev/null)" || continue
        [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${item##*:}" ] || continue
        kill -TERM "$pid" 2>/dev/null && names[$pid]="${item##*:}"
    done
    for ((i = 0; i < 100 && ${#names[@]} > 0; i++)); do
        for pid in "${!names[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "stopped ${names[$pid]} ($pid)"; unset "names[$pid]"; }
        done
        ((${#names[@]} == 0)) || sleep 0.2
    done
    for pid in "${!names[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        echo "killed ${names[$pid]} ($pid): it ignored SIGTERM for 20 s"
    done
}

# Slurm first (slurmctld keeps what it could not send to slurmdbd in its state dir), then what it needs.
stop "$RUN/slurmd.pid:slurmd" "$RUN/slurmctld.pid:slurmctld" "$RUN/slurmdbd.pid:slurmdbd"
[ "${1:-}" = --slurm-only ] && exit 0
stop "$STATE/mysql/mariadbd.pid:mariadbd" "$RUN/munged.pid:munged"
exit 0
