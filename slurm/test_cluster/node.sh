#!/usr/bin/env bash
# Lose or bring back one node of the multi-node test cluster (LWZ_SLURM_NODES > 1, as start.sh):
#   node.sh lose N      its link goes down and its slurmd and every task on it are killed, as when a
#                       machine dies (peers see silence, not a closed connection; SLURM marks it DOWN
#                       after SlurmdTimeout and requeues its jobs)
#   node.sh restore N   the link comes back and slurmd starts again (ReturnToService=2 returns the node)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
action="${1:?usage: node.sh lose|restore N}" index="${2:?usage: node.sh lose|restore N}"
name="$(netns_node_name "$index")"

case "$action" in
    lose)
        ip link set "lwzv$index" down
        pids="$(ip netns pids "$NETNS_PREFIX$index")"
        [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
        rm -f "$state_dir/slurmd-$name.pid"
        log "lost $name: link down, slurmd and its tasks killed" ;;
    restore)
        ip link set "lwzv$index" up
        netns_exec "$index" slurmd -N "$name"
        log "restored $name: link up, slurmd started" ;;
    *) echo "usage: node.sh lose|restore N" >&2; exit 2 ;;
esac
