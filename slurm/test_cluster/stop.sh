#!/usr/bin/env bash
# Stop the single-node test SLURM cluster started by start.sh; `--purge` also deletes its
# state, spool and log folder and the generated slurm.conf.
set -euo pipefail

conf="${SLURM_CONF:-/etc/slurm/slurm.conf}"
state_dir="${LWZ_SLURM_DIR:-/tmp/lwz-slurm}"
log() { echo "[lwz-slurm] $*"; }

# Read the pids first: the daemons delete their pid files as they exit.
declare -A pids=()
for daemon in slurmctld slurmd; do
    [[ -f "$state_dir/$daemon.pid" ]] && pids[$daemon]="$(cat "$state_dir/$daemon.pid")"
done

if scontrol ping 2>/dev/null | grep -q 'is UP'; then
    scontrol shutdown
    log "asked slurmctld and slurmd to shut down"
fi
for daemon in "${!pids[@]}"; do
    pid="${pids[$daemon]}"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$daemon (pid $pid) still running after 10 s; sending SIGKILL"
        kill -9 "$pid"
    fi
    rm -f "$state_dir/$daemon.pid"
    log "$daemon stopped"
done

if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$state_dir" "$conf"
    log "removed $state_dir and $conf"
fi
