#!/usr/bin/env bash
# Start a test SLURM cluster (idempotent): render slurm.conf from slurm.conf.in, start slurmctld then
# slurmd (no systemd), wait until every node is idle and a step runs on all of them. Needs root and
# slurm-wlm. One node is this host (127.0.0.1); with LWZ_SLURM_NODES=N (N > 1) the nodes lwzn1..N live
# in network namespaces of their own (netns.sh), slurmctld on the host's bridge address.
#
# Environment (all optional):
#   LWZ_SLURM_NODES            nodes                            (default 1)
#   SLURM_CONF                 where to write slurm.conf        (default /etc/slurm/slurm.conf)
#   LWZ_SLURM_DIR              state, spool, pid and log files  (default /tmp/lwz-slurm)
#   LWZ_SLURM_PARTITION        partition name                   (default debug)
#   LWZ_SLURM_CPUS             CPUs each node advertises        (default max(nproc, 8))
#   LWZ_SLURMCTLD_PORT         slurmctld's port                 (default 6817)
#   LWZ_SLURMD_TIMEOUT         seconds until a silent node is DOWN (default 30)
#   LWZ_SLURM_START_TIMEOUT    seconds to wait for idle nodes   (default 60)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
partition="${LWZ_SLURM_PARTITION:-debug}"
timeout_s="${LWZ_SLURM_START_TIMEOUT:-60}"
nproc_now="$(nproc)"
cpus="${LWZ_SLURM_CPUS:-$(( nproc_now > 8 ? nproc_now : 8 ))}"
mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"

if (( nodes > 1 )); then
    names=(); addrs=()
    for (( i = 1; i <= nodes; i++ )); do names+=("$(netns_node_name "$i")"); addrs+=("$(netns_node_addr "$i")"); done
    ctld_addr="$NETNS_CTLD_ADDR"
else
    names=("$(hostname -s)"); addrs=(127.0.0.1)
    ctld_addr=127.0.0.1
fi

show_logs=0  # set once the daemons are launched: their logs then explain failures
fail() {
    echo "[lwz-slurm] ERROR: $*" >&2
    (( show_logs )) && for f in "$state_dir/slurmctld.log" "$state_dir"/slurmd-*.log; do
        [[ -f "$f" ]] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
node_states() { sinfo --noheader --partition "$partition" --Node --format '%N %T' 2>/dev/null; }
all_idle() { [[ "$(node_states | awk '$2 == "idle"' | wc -l)" == "$nodes" ]]; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

for cmd in slurmctld slurmd sinfo scontrol sbatch srun; do
    command -v "$cmd" >/dev/null || fail "'$cmd' not found; install it with: apt-get install -y slurm-wlm"
done

# `scontrol ping` answers at once when slurmctld is down; sinfo would retry for ~9 s.
controller_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

if controller_up && [[ "$(node_states | awk '$2 ~ /^(idle|mixed|allocated|completing)$/' | wc -l)" == "$nodes" ]]; then
    log "already up: $nodes node(s) in partition $partition (config $conf)"
    exit 0
fi

(( nodes > 1 )) && netns_up "$nodes"
mkdir -p "$state_dir/ctld" "$(dirname "$conf")"
rendered="$(mktemp)"
sed -e "s|@CTLD_HOST@|$(hostname -s)|g" -e "s|@CTLD_ADDR@|$ctld_addr|g" \
    -e "s|@STATE_DIR@|$state_dir|g" -e "s|@SLURMD_TIMEOUT@|${LWZ_SLURMD_TIMEOUT:-30}|g" \
    -e "s|@CTLD_PORT@|${LWZ_SLURMCTLD_PORT:-6817}|g" -e "s|@SLURMD_PORT@|${LWZ_SLURMD_PORT:-6818}|g" \
    "$here/slurm.conf.in" > "$rendered"
for (( i = 0; i < nodes; i++ )); do
    echo "NodeName=${names[i]} NodeAddr=${addrs[i]} CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN" >> "$rendered"
done
echo "PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >> "$rendered"
install -m 0644 "$rendered" "$conf"
rm -f "$rendered"
log "wrote $conf: ${names[*]}, CPUs=$cpus each (nproc $nproc_now), RealMemory=${mem_mb}MB, partition $partition"

# Daemons that run but do not answer (or run an old config) are restarted.
for pidfile in "$state_dir/slurmctld.pid" "$state_dir"/slurmd-*.pid; do
    if pid_alive "$pidfile"; then
        log "stopping unresponsive $(basename "$pidfile" .pid) (pid $(cat "$pidfile"))"
        kill "$(cat "$pidfile")"
        sleep 1
    fi
done

show_logs=1
slurmctld || fail "slurmctld did not start"
log "started slurmctld on $ctld_addr (log $state_dir/slurmctld.log)"
for (( i = 0; i < nodes; i++ )); do
    mkdir -p "$state_dir/d-${names[i]}"
    if (( nodes > 1 )); then
        netns_exec "$((i + 1))" slurmd -N "${names[i]}" || fail "slurmd ${names[i]} did not start"
    else
        slurmd || fail "slurmd did not start"
    fi
    log "started slurmd ${names[i]} at ${addrs[i]} (log $state_dir/slurmd-${names[i]}.log)"
done

start=$SECONDS
while (( SECONDS - start < timeout_s )); do
    if all_idle; then
        # A recovered node state can say idle before slurmd registers: run a real step on every node.
        timeout 30 srun --partition "$partition" --nodes "$nodes" --ntasks "$nodes" --quiet true \
            || fail "the nodes are idle but a test step (srun true) failed"
        log "ready in $(( SECONDS - start )) s: partition $partition, ${names[*]} idle, srun works"
        exit 0
    fi
    for name in $(node_states | awk '$2 ~ /^(down|drain|inval)/ {print $1}'); do
        scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true
    done
    sleep 0.5
done
fail "nodes not idle after ${timeout_s} s ($(node_states | tr '\n' ' ')); see the logs above"
