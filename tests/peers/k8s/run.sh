#!/usr/bin/env bash
# One etcd (Debian etcd-server) + kube-apiserver 1.20.2 on loopback for a test process.
# usage: run.sh DIR APISERVER PORT ETCD_CLIENT_PORT ETCD_PEER_PORT TOKEN
# Writes certificates into DIR (ca.crt is the CA the kubeconfig trusts), creates DIR/ready once
# /readyz answers ok, and on SIGTERM/SIGINT (or its parent dying: the harness starts it with
# setpriv --pdeathsig) stops both servers and removes DIR, etcd's 64 MB WAL included.
set -euo pipefail
DIR=$1 APISERVER=$2 PORT=$3 ETCD_CLIENT=$4 ETCD_PEER=$5 TOKEN=$6
pids=()
cleanup() {
  trap - TERM INT EXIT
  # The API server first, while etcd still answers: it stops in a second instead of retrying.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$DIR"
  exit 0
}
trap cleanup TERM INT EXIT
mkdir -p "$DIR"
cd "$DIR"

# A CA and a serving certificate for 127.0.0.1 (rustls checks the IP SAN), a service-account key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt \
  -days 2 -subj /CN=hecate-test-kube-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
  -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
# The admin token, and a second user in no group (every right it has, a test grants with RBAC).
printf '%s,hecate,1000,"system:masters"\n%s-limited,hecate-limited,1001\n' "$TOKEN" "$TOKEN" >tokens.csv

etcd --name hecate-test --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "hecate-test=http://127.0.0.1:$ETCD_PEER" >etcd.log 2>&1 &
pids+=($!)

# No controller-manager runs, so the ServiceAccount admission plugin (which waits for the
# token controller) is off.
"$APISERVER" --etcd-servers="http://127.0.0.1:$ETCD_CLIENT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$PORT" --insecure-port=0 --tls-cert-file=server.crt --tls-private-key-file=server.key \
  --cert-dir="$DIR/certs" --token-auth-file=tokens.csv --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=sa.pub \
  --service-account-signing-key-file=sa.key --service-cluster-ip-range=10.96.0.0/24 \
  --disable-admission-plugins=ServiceAccount >apiserver.log 2>&1 &
pids+=($!)

for _ in $(seq 1 1200); do
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a server exited; see $DIR/*.log" >&2; tail -5 etcd.log apiserver.log >&2; cleanup; }; done
  code=$(curl -s --cacert ca.crt -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz" || true)
  if [ "$code" = 200 ]; then touch ready; break; fi
  sleep 0.1
done
[ -e ready ] || { echo "kube-apiserver not ready within 120 s" >&2; tail -5 etcd.log apiserver.log >&2; cleanup; }
# `wait` returns when a signal arrives, so the trap runs at once.
while true; do wait -n "${pids[@]}" || true; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a server exited" >&2; tail -5 etcd.log apiserver.log >&2; cleanup; }; done; done
