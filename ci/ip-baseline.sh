#!/usr/bin/env bash
# The benchmark baseline: the standard lab's topology (a router joining target,
# admin, outsider, resolver and web, dual stack, documentation addresses) built
# and torn down CYCLES times with ip(8), the way a shell script would do it.
# Namespaces are NAMED (pc-bench-<pid>-<host>) because that is how ip(8) works;
# a trap deletes every one of them on exit, error or interrupt.
#
# Every command names its namespace (`ip -n NS`, `ip netns exec NS`): nothing here
# touches the machine's own network namespace.
#
# Usage: ci/ip-baseline.sh [CYCLES]   (needs root)
# Prints: ip-baseline cycles=N total_ms=T per_cycle_ms=P
set -euo pipefail

cycles=${1:-20}
prefix="pc-bench-$$"
hosts=(router target admin outsider resolver web)

cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${prefix}-" || true); do
    ip netns del "$ns" 2>/dev/null || echo "ip-baseline: cannot delete $ns" >&2
  done
}
# Signals exit (running the EXIT trap) instead of cleaning up and carrying on.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ "$(id -u)" -ne 0 ]; then
  echo "ip-baseline: needs root (network namespaces): run with sudo" >&2
  exit 2
fi

# leaf  v4-network-base(first three octets) v4-last-octet-of-network  v6-net-number
plan=(
  "target   192.0.2    0  1"
  "admin    198.51.100 0  2"
  "outsider 203.0.113  0  3"
  "resolver 192.0.2    16 4"
  "web      192.0.2    32 5"
)

up() {
  local h leaf net base n
  for h in "${hosts[@]}"; do
    ip netns add "$prefix-$h"
    ip netns exec "$prefix-$h" sysctl -qw \
      net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
      net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
      net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0
    ip -n "$prefix-$h" link set lo up
  done
  ip netns exec "$prefix-router" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  for line in "${plan[@]}"; do
    read -r leaf net base n <<<"$line"
    local r="$prefix-router" l="$prefix-$leaf"
    ip -n "$r" link add "to-$leaf" type veth peer name eth0 netns "$l"
    ip -n "$r" link set "to-$leaf" up
    ip -n "$r" addr add "$net.$((base + 1))/28" dev "to-$leaf"
    ip -n "$r" addr add "2001:db8:$n::1/64" dev "to-$leaf" nodad
    ip -n "$l" link set eth0 up
    ip -n "$l" addr add "$net.$((base + 2))/28" dev eth0
    ip -n "$l" addr add "2001:db8:$n::2/64" dev eth0 nodad
    ip -n "$l" route add default via "$net.$((base + 1))"
    ip -n "$l" -6 route add default via "2001:db8:$n::1"
  done
}

down() {
  local h
  for h in "${hosts[@]}"; do
    ip netns del "$prefix-$h"
  done
}

start=$(date +%s%N)
for ((i = 0; i < cycles; i++)); do
  up
  down
done
end=$(date +%s%N)
total_ms=$(((end - start) / 1000000))
awk -v c="$cycles" -v t="$total_ms" \
  'BEGIN { printf "ip-baseline cycles=%d total_ms=%.1f per_cycle_ms=%.2f\n", c, t, t / c }'
