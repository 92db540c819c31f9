# Network namespaces for the multi-node test cluster (sourced by start.sh and stop.sh; needs root).
#
# Node i (1-based) is the namespace lwz-n<i> with one interface, eth0 = 10.77.0.<10+i>/24, joined to the
# host's bridge lwzbr0 = 10.77.0.1/24 (where slurmctld listens) by the veth pair lwzv<i>. `netns_exec`
# starts a command in node i's namespace with /etc/netns/lwz-n<i>/hosts bind-mounted over /etc/hosts in a
# mount namespace of its own, so slurmd and the tasks it runs resolve every node's name, and this
# machine's host name resolves to the node's own address (as on a cluster: gloo and vLLM find their
# interface from the host name). The host's /etc/hosts is untouched. (Not `ip netns exec`: it remounts
# /sys, which hides the cgroup mounts slurmd looks for.)

NETNS_PREFIX=lwz-n
NETNS_BRIDGE=lwzbr0
NETNS_SUBNET=10.77.0
NETNS_CTLD_ADDR="$NETNS_SUBNET.1"

netns_node_name() { echo "lwzn$1"; }
netns_node_addr() { echo "$NETNS_SUBNET.$((10 + $1))"; }

# Create the bridge and `count` namespaces (whatever already exists is kept).
netns_up() {
    local count="$1" i ns veth
    if ! ip link show "$NETNS_BRIDGE" >/dev/null 2>&1; then
        ip link add "$NETNS_BRIDGE" type bridge
        ip addr add "$NETNS_CTLD_ADDR/24" dev "$NETNS_BRIDGE"
    fi
    ip link set "$NETNS_BRIDGE" up
    for (( i = 1; i <= count; i++ )); do
        ns="$NETNS_PREFIX$i" veth="lwzv$i"
        ip netns list | grep -qw "$ns" || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name "lwzp$i"
            ip link set "lwzp$i" netns "$ns"
            ip netns exec "$ns" ip link set "lwzp$i" name eth0
            ip netns exec "$ns" ip addr add "$(netns_node_addr "$i")/24" dev eth0
        fi
        ip link set "$veth" master "$NETNS_BRIDGE"
        ip link set "$veth" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip link set eth0 up
        mkdir -p "/etc/netns/$ns"
        netns_hosts "$count" "$i" > "/etc/netns/$ns/hosts"
    done
}

# Run a command as node `i` (network namespace and hosts file); it may daemonize.
netns_exec() {
    local i="$1"; shift
    unshare --mount --propagation private -- sh -c \
        'ns="$1"; shift; mount --bind "$0" /etc/hosts && exec nsenter --net="$ns" -- "$@"' \
        "/etc/netns/$NETNS_PREFIX$i/hosts" "/run/netns/$NETNS_PREFIX$i" "$@"
}

# The hosts file of node `self` among `count` nodes.
netns_hosts() {
    local count="$1" self="$2" i
    echo "127.0.0.1 localhost"
    echo "$NETNS_CTLD_ADDR lwzctl"
    for (( i = 1; i <= count; i++ )); do
        if (( i == self )); then
            echo "$(netns_node_addr "$i") $(netns_node_name "$i") $(hostname)"
        else
            echo "$(netns_node_addr "$i") $(netns_node_name "$i")"
        fi
    done
}

# Kill what still runs in the namespaces, then remove them, their veths, the bridge and /etc/netns entries.
netns_down() {
    local ns pids
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NETNS_PREFIX[0-9]*$"); do
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
        ip netns del "$ns"
        rm -rf "/etc/netns/$ns"
    done
    for veth in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^lwzv[0-9]*$' || true); do
        ip link del "$veth" 2>/dev/null || true
    done
    ip link show "$NETNS_BRIDGE" >/dev/null 2>&1 && ip link del "$NETNS_BRIDGE"
    rmdir /etc/netns 2>/dev/null || true
}
