#!/usr/bin/env bash
# Node-kill chaos on kind: `docker kill` the worker that runs a storage pod of ZONE (never
# the worker of the workload Job or of the operator), keep it down, then start it again.
# Writes must go on (each PG keeps >= 4 of 6 segments); after repair.nodeLossTimeout the
# operator rebuilds the lost segments on the zone's spare worker (kind-config.yaml has
# three workers per zone), and the workload Job must still verify.
#
#   examples/chaos-kill-node.sh [CLUSTER=demo] [ZONE=zone-b] [DOWN_SECONDS=90]
set -euo pipefail
cluster=${1:-demo}
zone=${2:-zone-b}
down=${3:-90}
avoid=$( { kubectl get pods -l job-name=tidemark-workload -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}';
           kubectl get pods -A -l app.kubernetes.io/component=operator -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}'; } | sort -u)
node=""
for pod in $(kubectl get pods -l "tidemark.dev/cluster=${cluster},tidemark.dev/zone=${zone}" -o name); do
  candidate=$(kubectl get "$pod" -o jsonpath='{.spec.nodeName}')
  if [ -n "$candidate" ] && ! grep -qx "$candidate" <<<"$avoid"; then node=$candidate; victim=$pod; break; fi
done
[ -n "$node" ] || { echo "no worker in $zone holds a storage pod of $cluster without also running the workload or the operator" >&2; exit 1; }
echo "$(date -u +%T) killing node $node (runs ${victim#pod/}, zone $zone)"
docker kill "$node" >/dev/null
kubectl get ac "$cluster"
sleep "$down"
kubectl get ac "$cluster"
echo "$(date -u +%T) restarting node $node"
docker start "$node" >/dev/null
kubectl wait --for=condition=Ready "node/$node" --timeout=180s
kubectl wait --for=condition=Degraded=false "ac/$cluster" --timeout=600s
kubectl get ac "$cluster"
