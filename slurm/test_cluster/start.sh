#!/usr/bin/env bash
# Start the single-node test SLURM cluster (idempotent): render slurm.conf from slurm.conf.in,
# start slurmctld then slurmd (no systemd), wait until the node is idle. Needs root and slurm-wlm.
#
# Environment (all optional):
#   SLURM_CONF                 where to write slurm.conf        (default /etc/slurm/slurm.conf)
#   LWZ_SLURM_DIR              state, spool, pid and log files  (default /tmp/lwz-slurm)
#   LWZ_SLURM_PARTITION        partition name                   (default debug)
#   LWZ_SLURM_CPUS             CPUs the node advertises         (default max(nproc, 8))
#   LWZ_SLURM_START_TIMEOUT    seconds to wait for an idle node (default 60)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="${SLURM_CONF:-/etc/slurm/slurm.conf}"
state_dir="${LWZ_SLURM_DIR:-/tmp/lwz-slurm}"
partition="${LWZ_SLURM_PARTITION:-debug}"
timeout_s="${LWZ_SLURM_START_TIMEOUT:-60}"
host="$(hostname -s)"
nproc_now="$(nproc)"
cpus="${LWZ_SLURM_CPUS:-$(( nproc_now > 8 ? nproc_now : 8 ))}"
mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"

log() { echo "[lwz-slurm] $*"; }
show_logs=0  # set once the daemons are launched: their logs then explain failures
fail() {
    echo "[lwz-slurm] ERROR: $*" >&2
    (( show_logs )) && for f in "$state_dir/slurmctld.log" "$state_dir/slurmd.log"; do
        [[ -f "$f" ]] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
node_state() { sinfo --noheader --partition "$partition" --Node --format '%T' 2>/dev/null | head -n 1; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

for cmd in slurmctld slurmd sinfo scontrol sbatch srun; do
    command -v "$cmd" >/dev/null || fail "'$cmd' not found; install it with: apt-get install -y slurm-wlm"
done

# `scontrol ping` answers at once when slurmctld is down; sinfo would retry for ~9 s.
controller_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

controller_up && case "$(node_state)" in
    idle|mixed|allocated|completing)
        log "already up: node $host in partition $partition is $(node_state) (config $conf)"
        exit 0 ;;
esac

mkdir -p "$state_dir/ctld" "$state_dir/d" "$(dirname "$conf")"
rendered="$(mktemp)"
sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" \
    -e "s|@STATE_DIR@|$state_dir|g" -e "s|@PARTITION@|$partition|g" \
    -e "s|@CTLD_PORT@|${LWZ_SLURMCTLD_PORT:-6817}|g" -e "s|@SLURMD_PORT@|${LWZ_SLURMD_PORT:-6818}|g" \
    "$here/slurm.conf.in" > "$rendered"
install -m 0644 "$rendered" "$conf"
rm -f "$rendered"
log "wrote $conf: node $host, CPUs=$cpus (nproc $nproc_now), RealMemory=${mem_mb}MB, partition $partition"

# Daemons that run but do not answer (or run an old config) are restarted.
for daemon in slurmctld slurmd; do
    if pid_alive "$state_dir/$daemon.pid"; then
        log "stopping unresponsive $daemon (pid $(cat "$state_dir/$daemon.pid"))"
        kill "$(cat "$state_dir/$daemon.pid")"
        sleep 1
    fi
done

export SLURM_CONF="$conf"
show_logs=1
slurmctld || fail "slurmctld did not start"
log "started slurmctld (log $state_dir/slurmctld.log)"
slurmd || fail "slurmd did not start"
log "started slurmd (log $state_dir/slurmd.log)"

start=$SECONDS
while (( SECONDS - start < timeout_s )); do
    current="$(node_state)"
    case "$current" in
        idle)
            # A recovered node state can say idle before slurmd registers: run a real step.
            timeout 30 srun --partition "$partition" --ntasks 1 --quiet true \
                || fail "node $host is idle but a test step (srun true) failed"
            log "ready in $(( SECONDS - start )) s: partition $partition, node $host idle, srun works"
            exit 0 ;;
        down*|drain*|drained*|inval*)
            scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
fail "node $host not idle after ${timeout_s} s (state '$(node_state)'); see the logs above"
