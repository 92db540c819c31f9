#!/usr/bin/env bash
# Stop the single-node test SLURM cluster started by start.sh; `--purge` also deletes its
# state, spool and log folder and the generated slurm.conf.
set -euo pipefail

conf="${SLURM_CONF:-/etc/slurm/slurm.conf}"
state_dir="${LWZ_SLURM_DIR:-/tmp/lwz-slurm}"
log() { echo "[lwz-slurm] $*"; }

if scontrol ping >/dev/null 2>&1; then
    scontrol shutdown
    log "asked slurmctld and slurmd to shut down"
fi
for daemon in slurmctld slurmd; do
    pid_file="$state_dir/$daemon.pid"
    [[ -f "$pid_file" ]] || continue
    pid="$(cat "$pid_file")"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$daemon (pid $pid) still running; sending SIGKILL"
        kill -9 "$pid"
    fi
    rm -f "$pid_file"
    log "$daemon stopped"
done

if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$state_dir" "$conf"
    log "removed $state_dir and $conf"
fi
