# Which test cluster the scripts act on, from the environment (sourced by start.sh, stop.sh and node.sh;
# start.sh lists the variables). SLURM's own commands find the cluster through SLURM_CONF.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/netns.sh"
nodes="${LWZ_SLURM_NODES:-1}"
conf="${SLURM_CONF:-/etc/slurm/slurm.conf}"
state_dir="${LWZ_SLURM_DIR:-/tmp/lwz-slurm}"
export SLURM_CONF="$conf"
log() { echo "[lwz-slurm] $*"; }
