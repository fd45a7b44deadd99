#!/usr/bin/env bash
# Runs the @supabase/auth-js client tests (test/authjs.test.mjs) against
# tenants owned by node a, through node b, which owns none: every request is
# forwarded from b to a. Two `keyshard serve --node` processes share a
# catalog in a PostgreSQL database made for the run and dropped after it
# (KEYSHARD_TEST_POSTGRES_DSN, default the local test server). Called by
# .ci/run; runnable by hand from any directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
base_dsn="${KEYSHARD_TEST_POSTGRES_DSN:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
db="ks_authjs_nodes_$$"
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	psql "$base_dsn" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
go build -o "$work/keyshard" ./cmd/keyshard
(cd test && npm ci --no-audit --no-fund --loglevel=error)
psql "$base_dsn" -qc "CREATE DATABASE $db"
dsn=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/"+sys.argv[2])))' "$base_dsn" "$db")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export KEYSHARD_ADMIN_TOKEN=authjs-nodes-admin-token
export KEYSHARD_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
declare -A url
url[a]="http://127.0.0.1:$(free_port)"
url[b]="http://127.0.0.1:$(free_port)"
while [[ "${url[a]}" == "${url[b]}" ]]; do url[b]="http://127.0.0.1:$(free_port)"; done
# Both nodes stand for one service: one public URL (tokens' iss), b's here,
# as a load balancer's would be.
for node in a b; do
	"$work/keyshard" serve --data "$work/$node" --addr "${url[$node]#http://}" --argon2-memory-kib 1024 --argon2-time 1 \
		--catalog "$dsn" --postgres-dsn "$dsn" --node "$node" --public-url "${url[b]}" \
		>"$work/$node.log" 2>&1 &
	pids+=($!)
	for i in $(seq 1 100); do
		if curl -fsS "${url[$node]}/healthz" >/dev/null 2>&1; then break; fi
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then cat "$work/$node.log"; exit 1; fi
		sleep 0.1
	done
done

auth=(-H "Authorization: Bearer $KEYSHARD_ADMIN_TOKEN" -H "Content-Type: application/json")
a=${url[a]}
b=${url[b]}
# Tenants made through a are a's; approve and keys go through b (forwarded).
for pair in "authjs-a:sqlite" "authjs-b:postgres" "authjs-hs:sqlite"; do
	slug=${pair%%:*}
	owner=$(curl -fsS "${auth[@]}" -X POST "$a/admin/tenants" -d "{\"slug\":\"$slug\",\"backend\":\"${pair#*:}\"}" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["node"])')
	[[ "$owner" == "a" ]] || { echo "tenant $slug is on node $owner, not a" >&2; exit 1; }
	curl -fsS "${auth[@]}" -X POST "$b/admin/tenants/$slug/approve" >/dev/null
done
curl -fsS "${auth[@]}" -X POST "$b/admin/tenants/authjs-hs/signing-keys" -d '{"algorithm":"HS256","immediately":true}' >/dev/null
KEYSHARD_TENANT_A_SERVICE_KEY=$(curl -fsS "${auth[@]}" -X POST "$b/admin/tenants/authjs-a/service-key" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["service_key"])')
export KEYSHARD_TENANT_A_SERVICE_KEY
export KEYSHARD_TENANT_A_URL="$b/t/authjs-a" KEYSHARD_TENANT_B_URL="$b/t/authjs-b" KEYSHARD_TENANT_HS_URL="$b/t/authjs-hs"

status=0
node --test test/authjs.test.mjs || status=$?
# The run went through b: b forwarded, a served.
forwarded=$(curl -fsS "$b/metrics" | awk '/^keyshard_forwarded_requests_total\{outcome="ok"\}/ {print $2}')
echo "requests forwarded by node b to node a: ${forwarded:-0}"
if [[ -z "$forwarded" || "${forwarded%.*}" -lt 20 ]]; then
	echo "node b forwarded too few requests: the test did not go through it" >&2
	status=1
fi
if [[ $status -ne 0 ]]; then
	for node in a b; do
		echo "--- keyshard serve log of node $node" >&2
		cat "$work/$node.log" >&2
	done
fi
exit $status
