#!/usr/bin/env bash
# Stop the test SLURM cluster started by start.sh (the same environment names it); a multi-node one
# (LWZ_SLURM_NODES > 1) also loses its network namespaces, veths and bridge. `--purge` also deletes
# the state, spool and log folder and the generated slurm.conf. Safe to run when nothing is up.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"

# Read the pids first: the daemons delete their pid files as they exit.
declare -A pids=()
for pidfile in "$state_dir/slurmctld.pid" "$state_dir"/slurmd-*.pid; do
    [[ -f "$pidfile" ]] && pids[$(basename "$pidfile" .pid)]="$(cat "$pidfile")"
done

if [[ -f "$conf" ]] && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    scontrol shutdown || true
    log "asked slurmctld and slurmd to shut down"
fi
for daemon in "${!pids[@]}"; do
    pid="${pids[$daemon]}"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$daemon (pid $pid) still running after 10 s; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state_dir/$daemon.pid"
    log "$daemon stopped"
done

if (( nodes > 1 )); then
    netns_down
    log "removed the network namespaces, veths and bridge"
fi
if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$state_dir" "$conf"
    log "removed $state_dir and $conf"
fi
