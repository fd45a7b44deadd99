#!/usr/bin/env bash
# Runs the @supabase/auth-js client tests against a live `keyshard serve`
# with two tenants (the email tests make their own, and receive the mails on
# a loopback SMTP server; the upstream login tests make their own, and log in
# through an OpenID provider on loopback). Called by .ci/run; runnable by hand
# from any directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pid=""
cleanup() {
	if [[ -n "$pid" ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
go build -o "$work/keyshard" ./cmd/keyshard
(cd test && npm ci --no-audit --no-fund --loglevel=error)

# Free loopback ports: HTTP, and SMTP for the mails. test/email.test.mjs
# listens on the SMTP port itself (smtp-server) as soon as it loads; the
# server only connects there when a tenant's mail leaves the outbox.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
smtp_port=$(free_port)
while [[ "$smtp_port" == "$port" ]]; do smtp_port=$(free_port); done
export KEYSHARD_TEST_SMTP_PORT=$smtp_port
data="$work/data"
export KEYSHARD_ADMIN_TOKEN=authjs-test-admin-token
export KEYSHARD_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Small Argon2 parameters: this test checks compatibility, not cost.
# --outbound-allow-private: test/upstream.test.mjs's OpenID provider is on
# loopback, which the server refuses otherwise.
"$work/keyshard" serve --data "$data" --addr "127.0.0.1:$port" --argon2-memory-kib 1024 --argon2-time 1 \
	--outbound-allow-private \
	--smtp-url "smtp://127.0.0.1:$smtp_port" --smtp-from "Keyshard Test <noreply@keyshard.test>" \
	>"$work/serve.log" 2>&1 &
pid=$!

base="http://127.0.0.1:$port"
for i in $(seq 1 100); do
	if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$pid" 2>/dev/null; then cat "$work/serve.log"; exit 1; fi
	sleep 0.1
done
auth=(-H "Authorization: Bearer $KEYSHARD_ADMIN_TOKEN" -H "Content-Type: application/json")
# AUTHJS_BACKENDS places tenant a and tenant b (default: both on SQLite), e.g.
# AUTHJS_BACKENDS="postgres mysql" with KEYSHARD_POSTGRES_DSN and KEYSHARD_MYSQL_DSN set.
read -r backend_a backend_b <<<"${AUTHJS_BACKENDS:-sqlite sqlite}"
# test/email.test.mjs and test/upstream.test.mjs make their own tenants, one on each.
export KEYSHARD_BASE_URL="$base" KEYSHARD_BACKEND_A="$backend_a" KEYSHARD_BACKEND_B="$backend_b"
created=()
drop_tenants() {
	for slug in "${created[@]}"; do
		curl -fsS "${auth[@]}" -X DELETE "$base/admin/tenants/$slug" >/dev/null || true
	done
}
for pair in "authjs-a:$backend_a" "authjs-b:$backend_b" "authjs-hs:$backend_a"; do
	slug=${pair%%:*}
	curl -fsS "${auth[@]}" -X POST "$base/admin/tenants" -d "{\"slug\":\"$slug\",\"backend\":\"${pair#*:}\"}" >/dev/null
	created+=("$slug")
	curl -fsS "${auth[@]}" -X POST "$base/admin/tenants/$slug/approve" >/dev/null
done

# Tenant authjs-hs signs with an HS256 secret, as Supabase's legacy JWT secret.
curl -fsS "${auth[@]}" -X POST "$base/admin/tenants/authjs-hs/signing-keys" -d '{"algorithm":"HS256","immediately":true}' >/dev/null

# The tenant administrator's key of tenant a, for auth-js's admin API.
KEYSHARD_TENANT_A_SERVICE_KEY=$(curl -fsS "${auth[@]}" -X POST "$base/admin/tenants/authjs-a/service-key" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["service_key"])')
export KEYSHARD_TENANT_A_SERVICE_KEY

export KEYSHARD_TENANT_A_URL="$base/t/authjs-a"
export KEYSHARD_TENANT_B_URL="$base/t/authjs-b"
export KEYSHARD_TENANT_HS_URL="$base/t/authjs-hs"
# The OAuth browser test saves a screenshot of each hosted page here.
export KEYSHARD_SCREENSHOTS="${KEYSHARD_SCREENSHOTS:-$root/test/screenshots}"
status=0
node --test test/authjs.test.mjs test/email.test.mjs test/upstream.test.mjs test/browser.test.mjs test/oauth-browser.test.mjs || status=$?
echo "screenshots of the hosted OAuth pages: $KEYSHARD_SCREENSHOTS"
ls "$KEYSHARD_SCREENSHOTS" 2>/dev/null || true
drop_tenants # their schemas/databases, on a server backend
if [[ $status -ne 0 ]]; then
	echo "--- keyshard serve log" >&2
	cat "$work/serve.log" >&2
fi
exit $status
