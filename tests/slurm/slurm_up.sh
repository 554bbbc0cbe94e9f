#!/usr/bin/env bash
# Start a one-node Slurm cluster (munged + slurmctld + slurmd) for tests, as root and
# without systemd: each daemon runs in the background with its own pid file (ours)
# and log file under $REMFLOW_SLURM_DIR. Idempotent: if the cluster is already up it
# only says so. Installs slurm-wlm and munge with apt-get if slurmctld is missing.
#
#   sudo tests/slurm/slurm_up.sh      # prints `export SLURM_CONF=...` and friends
#   sinfo; sbatch --gres=gpu:1 --wrap 'echo $CUDA_VISIBLE_DEVICES'; squeue -t all
#   sudo tests/slurm/slurm_down.sh
#
# The node has the machine's CPUs, ~90% of its available memory and one fake GPU
# (gres.conf File=/dev/null): GPU requests are scheduled and recorded, nothing is
# confined. No accounting database, so `sacct` does not work; use squeue/scontrol
# (MinJobAge=600 keeps finished jobs visible for 10 minutes). The config lives in
# $REMFLOW_SLURM_DIR/etc and /etc/slurm/slurm.conf is linked to it (never replaced if
# it is something else), because job steps need the default location.
#
# Exit status: 0 up (stdout: `export NAME=value` lines), 77 not root and not already
# up (nothing can be started), 1 anything else (message on stderr, logs named).
# Environment: REMFLOW_SLURM_DIR (state, default /tmp/remflow-slurm),
# REMFLOW_SLURM_PORT (slurmctld port, slurmd uses port+1; default 6817),
# REMFLOW_SLURM_TIMEOUT (seconds to wait for the node, default 90).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin

STATE_DIR=${REMFLOW_SLURM_DIR:-/tmp/remflow-slurm}
CTLD_PORT=${REMFLOW_SLURM_PORT:-6817}
TIMEOUT=${REMFLOW_SLURM_TIMEOUT:-90}
CONF_DIR=$STATE_DIR/etc
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
MUNGE_DIR=$STATE_DIR/munge
export SLURM_CONF=$CONF_DIR/slurm.conf
NODE=$(hostname -s)

say() { echo "slurm_up: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# A pid file names a live process of the expected program.
alive() {  # alive <pidfile> <program>
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null
}

install_packages() {
    say "slurmctld not found: installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' own services from starting (we start our own daemons);
    # only add a policy if the machine has none, and remove it afterwards.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
    fi
    apt-get update -q >"$STATE_DIR/apt.log" 2>&1 || { [ $added_policy -eq 1 ] && rm -f "$policy"; die "apt-get update failed, see $STATE_DIR/apt.log"; }
    apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$STATE_DIR/apt.log" 2>&1 \
        || { [ $added_policy -eq 1 ] && rm -f "$policy"; die "apt-get install failed, see $STATE_DIR/apt.log"; }
    [ $added_policy -eq 1 ] && rm -f "$policy"
    return 0
}

# What callers need, as shell assignments on stdout (eval-able; parsed by cluster.py).
report() {  # report <1 if this call started the cluster, else 0>
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export REMFLOW_SLURM_NODE=$NODE"
    echo "export REMFLOW_SLURM_PARTITION=main"
    echo "export REMFLOW_SLURM_LOGS=$LOG_DIR"
    echo "export REMFLOW_SLURM_STARTED=$1"
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1; }

mkdir -p "$STATE_DIR"
if alive "$RUN_DIR/munged.pid" munged && alive "$RUN_DIR/slurmctld.pid" slurmctld \
    && alive "$RUN_DIR/slurmd.pid" slurmd && [ -n "$(node_state)" ]; then
    say "already running (node $NODE: $(node_state)); logs in $LOG_DIR"
    report 0
    exit 0
fi
# Exit status 77 ("skip" for test harnesses): not root, so nothing can be started.
[ "$(id -u)" -eq 0 ] || { say "must run as root: it installs packages and starts munged, slurmctld and slurmd"; exit 77; }
# Something is half up (or stale pid files): start from a clean slate.
bash "$(dirname "$0")/slurm_down.sh" >/dev/null 2>&1 || true
# From here on a failure stops whatever this run started (logs stay for reading).
trap 'rc=$?; [ $rc -eq 0 ] || bash "$(dirname "$0")/slurm_down.sh" >/dev/null 2>&1; exit $rc' EXIT

command -v slurmctld >/dev/null && command -v munged >/dev/null || install_packages
for tool in slurmctld slurmd munged sinfo sbatch squeue scontrol; do
    command -v "$tool" >/dev/null || die "$tool still missing after installation"
done

mkdir -p "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR/ctld" "$STATE_DIR/spool"
# munged insists the key is private; the socket's directory must be searchable.
install -d -m 0755 "$MUNGE_DIR"
chmod 0755 "$STATE_DIR" "$RUN_DIR"

# --- configuration --------------------------------------------------------------
cpus=$(nproc)
avail_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
real_mb=$((avail_mb * 9 / 10))  # a bit under what is free, so slurmd never rejects it
[ "$real_mb" -ge 1024 ] || die "only ${avail_mb} MB memory available; need at least ~1.2 GB"

cat > "$SLURM_CONF" <<EOF
# Written by tests/slurm/slurm_up.sh: one-node test cluster, no accounting.
ClusterName=remflow-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket.2
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.daemon.pid
SlurmdPidFile=$RUN_DIR/slurmd.daemon.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: plain process tracking, no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs that ask for no memory get 256 MB per CPU instead of the whole node.
DefMemPerCPU=256
ReturnToService=2
# Finished jobs stay in slurmctld (squeue/scontrol) for 10 minutes:
# Snakemake's squeue status queries rely on this.
MinJobAge=600
KillWait=5
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# A fake GPU: jobs can request it and Slurm accounts for it; no device behind it.
cat > "$CONF_DIR/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=/dev/null
EOF
# slurmd reads cgroup.conf only with cgroup plugins; an empty one silences a warning.
: > "$CONF_DIR/cgroup.conf"

# Slurm's clients look for /etc/slurm/slurm.conf. SLURM_CONF would do for our own
# commands, but job steps do not always inherit it (the Snakemake jobstep plugin
# drops SLURM_* variables before its nested `srun`), so link the default path to our
# file. A config that is not ours is never replaced.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then
    :
elif [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    die "$SYSTEM_CONF exists and is not this test cluster's; refusing to replace it (this machine seems to have its own Slurm)"
else
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$SLURM_CONF" "$SYSTEM_CONF"
fi

# --- munge ------------------------------------------------------------------------
if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force
    else
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    fi
fi
chmod 0400 "$MUNGE_DIR/munge.key"

# start_daemon <name> <pidfile> <command...>: runs in its own session (so signals
# meant for the caller do not reach it), output to $LOG_DIR/<name>.out, pid written by us.
start_daemon() {
    local name=$1 pidfile=$2
    shift 2
    setsid "$@" >"$LOG_DIR/$name.out" 2>&1 </dev/null &
    echo $! > "$pidfile"
    sleep 0.5
    alive "$pidfile" "$name" || { tail -20 "$LOG_DIR/$name.out" "$LOG_DIR/$name.log" 2>/dev/null >&2; die "$name did not start (logs above, in $LOG_DIR)"; }
}

start_daemon munged "$RUN_DIR/munged.pid" munged --foreground --force \
    --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_DIR/munge.socket.2" \
    --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed"
for _ in $(seq 50); do [ -S "$MUNGE_DIR/munge.socket.2" ] && break; sleep 0.1; done
[ -S "$MUNGE_DIR/munge.socket.2" ] || die "munged socket did not appear; see $LOG_DIR/munged.out"

# -c: forget jobs of an earlier test cluster; -D: stay in the foreground (we background it).
# Our pid files (<name>.pid) are the ones slurm_down trusts; the daemons' own
# (*.daemon.pid) name the same processes since they do not fork with -D.
start_daemon slurmctld "$RUN_DIR/slurmctld.pid" slurmctld -D -c -f "$SLURM_CONF"
start_daemon slurmd "$RUN_DIR/slurmd.pid" slurmd -D -f "$SLURM_CONF"

# --- wait for the node ------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(node_state)
    case "$state" in
        idle*|mixed*|allocated*) break ;;
        down*|drain*)
            # A node that registered after the controller came up may start "down".
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    for daemon in slurmctld slurmd; do
        alive "$RUN_DIR/$daemon.pid" $daemon \
            || { tail -20 "$LOG_DIR/$daemon.out" >&2; die "$daemon died (log above, in $LOG_DIR/$daemon.log)"; }
    done
    sleep 1
done
case "$state" in
    idle*|mixed*|allocated*) ;;
    *) die "node $NODE not idle after ${TIMEOUT}s (state '${state:-no answer}'); logs: $LOG_DIR/{slurmctld,slurmd}.log, munged.out" ;;
esac

say "node $NODE is $state: $cpus CPUs, ${real_mb} MB, 1 fake GPU, partition 'main'"
say "logs: $LOG_DIR/slurmctld.log, slurmd.log, munged.out; config: $SLURM_CONF"
report 1
