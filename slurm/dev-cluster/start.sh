#!/usr/bin/env bash
# A real single-node Slurm 22.05 on this machine (Debian 12, root, no systemd): partition a100 (default) with
# two fake A100 GRES, accounting through slurmdbd + MariaDB (submitit reads job state with sacct; without
# accounting job.result() of a crashed job waits forever).
#
#   bash slurm/dev-cluster/start.sh      # install if missing, configure, start what is not running
#   source slurm/dev-cluster/env.sh      # SLURM_CONF for sbatch/squeue/sacct/submitit in this shell
#   bash slurm/dev-cluster/stop.sh       # stop the daemons; state and logs stay for inspection
#
# Idempotent: a daemon is started only if the process in its PID file is dead (starting a second slurmd kills
# the running one). State (configs, logs, PID files, MariaDB data, Slurm spool): $FVQ_SLURM_DIR, default
# /tmp/fvq-slurm. Nothing is written under /etc/slurm. Limits are not enforced (no cgroups here).
# Exit status: 0 up (one line on stdout); 1 failure; 3 cannot install (not root, no apt-get, apt failed).
# Every failure is one line on stderr.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"
STATE="$FVQ_SLURM_DIR"
ETC="$STATE/etc" RUN="$STATE/run" LOG="$STATE/log" DB="$STATE/mysql"
SOCK="$DB/mysqld.sock"           # MariaDB listens on this unix socket only (--skip-networking)
CLUSTER=fvqdev
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"

die() { echo "slurm dev cluster: $1" >&2; exit "${2:-1}"; }
trap 'die "unexpected failure at start.sh line $LINENO: $BASH_COMMAND (logs in $LOG)"' ERR

# alive PIDFILE COMM: the process named in PIDFILE exists and is COMM (guards against a recycled PID).
alive() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# wait_for SECONDS WHAT CMD...: poll CMD (every 0.2 s) until it succeeds, or fail naming WHAT.
wait_for() {
    local secs="$1" what="$2"; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "$what not ready after ${secs}s (logs in $LOG)"
        sleep 0.2
    done
}

# launch NAME CMD...: start a daemon that detaches itself, with the lock (fd 9) closed; fail naming its log.
launch() {
    local name="$1"; shift
    "$@" </dev/null >>"$LOG/$name.log" 2>&1 9>&- || die "$name did not start (see $LOG/$name.log)"
}

# write_conf PATH MODE: stdin -> PATH if the content differs; sets CHANGED=1 when it did.
CHANGED=0
write_conf() {
    local tmp="$1.new"
    cat >"$tmp"
    chmod "$2" "$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; CHANGED=1; fi
}

[ "$(id -u)" = 0 ] || die "needs root (installs Debian packages and runs the Slurm daemons as root)" 3
mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/slurmd" "$STATE/dev" 2>/dev/null \
    || die "cannot create the state dir $STATE (set FVQ_SLURM_DIR to a writable path)"
chmod 755 "$STATE"   # MariaDB runs as mysql and must reach $DB
# One start.sh/stop.sh at a time (e.g. two test sessions); daemons are started with fd 9 closed.
exec 9>"$STATE/.lock"
flock -w 300 9 || die "another start.sh/stop.sh holds $STATE/.lock for 300 s"

# --- 1. packages -----------------------------------------------------------------------------------------
installed() {
    local b
    for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/sacct /usr/sbin/slurmdbd \
             /usr/sbin/munged /usr/bin/munge /usr/sbin/mariadbd /usr/bin/mariadb-install-db /usr/bin/mariadb; do
        [ -x "$b" ] || return 1
    done
}
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends \
        $PKGS >>"$LOG/apt.log" 2>&1
}
if ! installed; then
    command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get: install $PKGS" 3
    # No daemon may start from a package's postinst (no systemd; we start them ourselves below).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    fi
    ok=1
    apt_install || { apt-get -o DPkg::Lock::Timeout=120 update >>"$LOG/apt.log" 2>&1 && apt_install; } || ok=0
    [ "$ok" = 1 ] || die "apt-get install $PKGS failed (see $LOG/apt.log)" 3
    installed || die "installed $PKGS but a daemon binary is still missing (see $LOG/apt.log)" 3
fi

# --- 2. configuration ------------------------------------------------------------------------------------
HOST="$(hostname -s)"
CPUS="$(nproc --all)"  # --all: plain nproc obeys OMP_NUM_THREADS (=1 in tests), not the node
# A RealMemory above what slurmd detects drains the node; take slurmd's own figure.
MEM="$(SLURM_CONF=/dev/null timeout 10 slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' \
      | head -n1 || true)"
[[ "$MEM" =~ ^[0-9]+$ ]] || die "slurmd -C reported no RealMemory"

for i in 0 1; do ln -sfn /dev/null "$STATE/dev/fake-a100-$i"; done   # GRES File= must stat() as a char device

write_conf "$ETC/slurm.conf" 644 <<EOF
# Written by slurm/dev-cluster/start.sh; edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire + a scheduling cycle before it restarts: keep both short (~14 s).
AuthInfo=cred_expire=10
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
JobRequeue=1
# SIGTERM -> SIGKILL after 5 s: submitit's jobs ignore SIGTERM, so a requeued job would hold its node 30 s.
KillWait=5
MailProg=/bin/true
MaxArraySize=10001
# Refuse at submit what no node of the partition can run (else it pends forever with PartitionConfig).
EnforcePartLimits=ALL
MaxJobCount=50000
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups in this sandbox: nothing enforces CPU or memory limits.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node and jobs stop running side by side.
DefMemPerCPU=1024
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu,gres/gpu:a100
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:a100:2 State=UNKNOWN
PartitionName=a100 Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

write_conf "$ETC/gres.conf" 644 <<EOF
# Two fake A100s: symlinks to /dev/null (a GPU without File= is dropped and the node drains).
AutoDetect=off
NodeName=$HOST Name=gpu Type=a100 File=$STATE/dev/fake-a100-[0-1]
EOF

write_conf "$ETC/slurmdbd.conf" 600 <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=fvq_slurm_acct
EOF

slurm_daemons_alive() {
    alive "$RUN/slurmctld.pid" slurmctld || alive "$RUN/slurmd.pid" slurmd || alive "$RUN/slurmdbd.pid" slurmdbd
}
if [ "$CHANGED" = 1 ] && slurm_daemons_alive; then
    FVQ_SLURM_LOCKED=1 bash "$HERE/stop.sh" --slurm-only >/dev/null || die "config changed; could not stop Slurm"
fi

# --- 3. daemons ------------------------------------------------------------------------------------------
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if ! munge_ok 2>/dev/null; then
    [ -s /etc/munge/munge.key ] || { mungekey -c -k /etc/munge/munge.key >>"$LOG/munged.log" 2>&1 \
        || die "no /etc/munge/munge.key and mungekey could not create one"; }
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    alive "$RUN/munged.pid" munged || launch munged runuser -u munge -- /usr/sbin/munged
    # The munged we started is ours to stop; a munged someone else runs is left alone by stop.sh.
    cp /run/munge/munged.pid "$RUN/munged.pid" 2>/dev/null || true
    wait_for 10 munge munge_ok
fi

db_ok() { mariadb --no-defaults --socket="$SOCK" -uroot -e 'SELECT 1'; }
if [ ! -d "$DB/mysql" ]; then
    rm -rf "$DB" && install -d -o mysql -g mysql -m 0700 "$DB"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB" --auth-root-authentication-method=socket \
        --skip-test-db >>"$LOG/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
fi
if ! alive "$DB/mariadbd.pid" mariadbd; then
    touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
    # mariadbd does not daemonise: detach it (never a foreground daemon in a shell someone waits on).
    launch mariadb setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB" --socket="$SOCK" \
        --pid-file="$DB/mariadbd.pid" --skip-networking --log-error="$LOG/mariadb.log" --skip-log-bin \
        --innodb-buffer-pool-size=32M --innodb-lock-wait-timeout=900 --max-connections=50
fi
wait_for 30 MariaDB db_ok

export MYSQL_UNIX_PORT="$SOCK"   # slurmdbd's MariaDB client finds the socket through this
alive "$RUN/slurmdbd.pid" slurmdbd || launch slurmdbd slurmdbd
clusters() { timeout 5 sacctmgr -n -P show cluster format=cluster; }
wait_for 30 slurmdbd clusters
# Register the cluster before slurmctld first starts, or the controller never reports to accounting.
if ! clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    timeout 10 sacctmgr -i add cluster "$CLUSTER" >>"$LOG/sacctmgr.log" 2>&1 \
        || die "sacctmgr add cluster $CLUSTER failed (see $LOG/sacctmgr.log)"
fi

alive "$RUN/slurmctld.pid" slurmctld || launch slurmctld slurmctld -i
alive "$RUN/slurmd.pid" slurmd || launch slurmd slurmd

# --- 4. wait until the node takes jobs and sacct answers ------------------------------------------------
# sinfo/sacct hang ~30 s when a daemon is down: every probe runs under timeout.
node_state() { timeout 5 sinfo -h -n "$HOST" -p a100 -o %T 2>/dev/null | head -n1; }
resumed_at=-1 end=$((SECONDS + 60))
while :; do
    st="$(node_state || true)"
    case "$st" in
        idle | mixed | allocated | completing) break ;;
        drain* | down* | fail*)
            # A drain left in the saved state by an earlier run: resume once, then give up with the reason.
            if ((resumed_at < 0)); then
                timeout 5 scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                resumed_at=$SECONDS
            elif ((SECONDS > resumed_at + 10)); then
                die "node $HOST is $st: $(timeout 5 sinfo -h -R -o %E 2>/dev/null | head -n1)"
            fi ;;
    esac
    ((SECONDS < end)) || die "node $HOST not idle after 60s (state '${st:-no answer}'; logs in $LOG)"
    sleep 0.2
done
wait_for 30 sacct timeout 5 sacct -n -X -S now-1hours -o JobID

echo "slurm dev cluster up: partition a100, node $HOST, $CPUS cpus, 2 fake a100"
