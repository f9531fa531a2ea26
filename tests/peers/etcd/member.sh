#!/bin/sh
# One member of a three-member etcd cluster on 127.0.0.1 (Debian's etcd-server 3.4), in the
# foreground (exec), so whoever starts it knows its PID. Adapted from ../shared/peers/etcd.
#   member.sh NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER DATA_DIR
# INITIAL_CLUSTER is `m1=http://127.0.0.1:P1,m2=...`. The flags that form the cluster only count
# the first time (an empty DATA_DIR); later starts rejoin from the data dir. `/health` on the
# client port is {"health":"true"} only while the cluster has a leader, which needs a quorum
# (2 of 3): one member started alone after all three stopped never becomes healthy.
set -eu
name=$1; client=$2; peer=$3; cluster=$4; data=$5
exec etcd --name "$name" --data-dir "$data" \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token hecate-test \
  --heartbeat-interval 100 --election-timeout 1000
