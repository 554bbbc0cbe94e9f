#!/usr/bin/env bash
# Stop the test cluster started by slurm_up.sh: cancel its jobs, then stop exactly
# the slurmd, slurmctld and munged whose pids slurm_up.sh recorded, and any job step
# daemon (slurmstepd) of this cluster. Leaves nothing running; state and logs stay
# in $REMFLOW_SLURM_DIR for inspection. Safe to run when nothing is up.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

STATE_DIR=${REMFLOW_SLURM_DIR:-/tmp/remflow-slurm}
RUN_DIR=$STATE_DIR/run
export SLURM_CONF=$STATE_DIR/etc/slurm.conf

say() { echo "slurm_down: $*" >&2; }

# pid_of <pidfile> <program>: the recorded pid, if that process still runs that program.
pid_of() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}

# stop_pid <pid> <label>: TERM, wait up to 10 s, then KILL.
stop_pid() {
    local pid=$1 label=$2
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || { say "stopped $label ($pid)"; return 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    say "killed $label ($pid) after 10 s"
}

# Job step daemons of *this* cluster: they inherit slurmd's SLURM_CONF.
our_stepds() {
    local pid
    for pid in $(pgrep -x slurmstepd 2>/dev/null); do
        tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" && echo "$pid"
    done
}

ctld=$(pid_of "$RUN_DIR/slurmctld.pid" slurmctld)
if [ -n "$ctld" ]; then
    # Cancel every job of the test cluster so no job outlives it.
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
        say "cancelling jobs: $jobs"
        scancel $jobs 2>/dev/null
        for _ in $(seq 30); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

for name in slurmd slurmctld munged; do
    pid=$(pid_of "$RUN_DIR/$name.pid" "$name") && stop_pid "$pid" "$name"
    rm -f "$RUN_DIR/$name.pid"
done
for pid in $(our_stepds); do stop_pid "$pid" "slurmstepd"; done
# The default-path link slurm_up.sh made (only if it still points to our config).
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
    rm -f /etc/slurm/slurm.conf
fi
exit 0
