package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTransfer_Commands exports, imports and moves tenants with the binary:
// offline on the data directory, and through a running server with --url.
func TestTransfer_Commands(t *testing.T) {
	needBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	tenantJSON(t, "tenant", "create", "--slug", "acme", "--data", data)
	tenantJSON(t, "tenant", "approve", "acme", "--data", data)
	out := filepath.Join(t.TempDir(), "acme.ndjson")
	// ndjson is imported pending and approved; sqlite with --approve.
	for _, format := range []string{"ndjson", "sqlite"} {
		ok(t, nil, "export", "acme", "-o", out, "--format", format, "--include-secrets", "--data", data, "--quiet")
		b, err := os.ReadFile(out)
		if err != nil || len(b) == 0 {
			t.Fatalf("export %s: %v, %d bytes", format, err, len(b))
		}
		args, want := []string{"import", out, "--slug", "copy-" + format, "--data", data, "--quiet"}, "pending"
		if format == "sqlite" {
			args, want = append(args, "--approve"), "active"
		}
		r := ok(t, nil, args...)
		var res struct {
			Tenant struct{ Slug, Status string }
			Format string
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Tenant.Slug != "copy-"+format || res.Tenant.Status != want || res.Format != format {
			t.Fatalf("import %s: %v %s", format, err, r.stdout)
		}
		if want == "pending" {
			if tn := tenantJSON(t, "tenant", "approve", "copy-"+format, "--data", data); tn.Status != "active" {
				t.Fatalf("approve the import: %+v", tn)
			}
		}
	}
	if got := listed(t, data); got["copy-ndjson"] != "active" || got["copy-sqlite"] != "active" {
		t.Fatalf("tenants after imports: %v", got)
	}
	// A damaged file: a clear error, no tenant.
	if err := os.WriteFile(out, []byte(`{"format":"keyshard-ndjson"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := keyshard(t, "", nil, "import", out, "--slug", "broken", "--data", data, "--quiet"); r.code == 0 || !strings.Contains(r.stderr, "damaged") {
		t.Fatalf("import of a damaged file: exit %d\n%s", r.code, r.stderr)
	}
	if _, ok := listed(t, data)["broken"]; ok {
		t.Fatalf("a damaged import created a tenant")
	}

	// Move: refused without --url or --offline; offline to another dir.
	if r := keyshard(t, "", nil, "move", "copy-ndjson", "--to", "sqlite", "--data", data); r.code == 0 || !strings.Contains(r.stderr, "--offline") {
		t.Fatalf("move without --url or --offline: exit %d\n%s", r.code, r.stderr)
	}
	disk2 := filepath.Join(t.TempDir(), "disk2")
	ok(t, nil, "move", "copy-ndjson", "--to", "sqlite", "--to-dir", disk2, "--offline", "--data", data, "--quiet")
	if tn := tenantJSON(t, "tenant", "show", "copy-ndjson", "--data", data); tn.Location != disk2 || tn.Epoch != 2 {
		t.Fatalf("after the offline move: %+v", tn)
	}

	// Through a running server.
	const token = "transfer-test-token"
	env := []string{"KEYSHARD_ADMIN_TOKEN=" + token}
	srv := startServe(t, data, env)
	r := ok(t, env, "move", "acme", "--to", "sqlite", "--to-dir", disk2, "--url", srv.url, "--data", data, "--quiet")
	if !strings.Contains(r.stdout, `"fenced_ns"`) {
		t.Fatalf("move --url output: %s", r.stdout)
	}
	code, body := srv.call(t, "GET", "/admin/tenants/acme", token, nil)
	if code != 200 || !strings.Contains(string(body), disk2) {
		t.Fatalf("tenant after move --url: %d %s", code, body)
	}
	if c := srv.stop(t); c != 0 {
		t.Fatalf("serve exit %d", c)
	}
}
