#!/usr/bin/env bash
# Node-kill chaos on kind: stop the worker (a docker container) that runs a storage pod of
# ZONE, wait, then start it again. Writes must continue (each PG keeps >= 4 of 6 segments)
# and the workload Job must still verify.
#
#   examples/chaos-kill-node.sh [CLUSTER=demo] [ZONE=zone-b] [DOWN_SECONDS=60] [POD_INDEX=0]
set -euo pipefail
cluster=${1:-demo}
zone=${2:-zone-b}
down=${3:-60}
index=${4:-0}
pod="${cluster}-${zone}-${index}"
node=$(kubectl get pod "$pod" -o jsonpath='{.spec.nodeName}')
[ -n "$node" ] || { echo "pod $pod has no node" >&2; exit 1; }
echo "$(date -u +%T) killing node $node (runs $pod, zone $zone)"
docker kill "$node" >/dev/null
kubectl get ac "$cluster"
sleep "$down"
kubectl get ac "$cluster"
echo "$(date -u +%T) restarting node $node"
docker start "$node" >/dev/null
kubectl wait --for=condition=Ready "node/$node" --timeout=180s
kubectl wait --for=condition=Ready "ac/$cluster" --timeout=300s
kubectl get ac "$cluster"
