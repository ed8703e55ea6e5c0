#!/usr/bin/env bash
# Runs a command in a fresh network namespace whose only interface is the loopback, so that any
# Ray it starts (ray.init, ray start, pylenet sweep, pylenet train --workers) registers as
# 127.0.0.1 and sends nothing off this machine. Needs root (unshare -n). Example:
#   bench/ray_netns.sh python bench/dp_throughput.py --data ../shared/data/mnist
#   bench/ray_netns.sh pylenet sweep --data ../shared/data/mnist --space 'lr=loguniform(0.005,0.2)'
# Inside: lo is up; RAY_TMPDIR, a Ray auth token of its own (RAY_AUTH_TOKEN_PATH) and
# GLOO_SOCKET_IFNAME=lo are set. When the command ends, every process left in the namespace
# (Ray's daemons) is ended, by pid.
set -euo pipefail
if [ "$#" -eq 0 ]; then echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; fi
if [ "$(id -u)" -ne 0 ]; then echo "$0: needs root to create a network namespace (unshare -n)" >&2; exit 1; fi
here=$(cd "$(dirname "$0")/.." && pwd)
exec unshare -n -- bash -c '
    set -u
    ip link set lo up
    tmp=$(mktemp -d /tmp/plr-XXXXXX)   # short: Ray puts socket paths under it
    od -An -tx1 -N32 /dev/urandom | tr -d " \n" > "$tmp/auth_token"
    export RAY_TMPDIR="$tmp" RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$tmp/auth_token"
    export GLOO_SOCKET_IFNAME=lo RAY_USAGE_STATS_ENABLED=0
    export PYTHONPATH="'"$here"'${PYTHONPATH:+:$PYTHONPATH}"
    "$@"; rc=$?
    me=$$; ns=$(readlink /proc/self/ns/net)
    for sig in TERM KILL; do
        for d in /proc/[0-9]*; do
            pid=${d#/proc/}
            [ "$pid" = "$me" ] && continue
            [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$ns" ] && kill -s "$sig" "$pid" 2>/dev/null
        done
        sleep 2
    done
    rm -rf "$tmp"
    exit "$rc"
' ray_netns "$@"
