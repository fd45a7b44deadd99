package nodes

import (
	"database/sql"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/keyshard/keyshard/shard"
)

// Statements cross between nodes with their arguments' types: an int64
// stays an integer (not a float), bytes stay bytes (not a string).
func TestWireStmt_KeepsTypes(t *testing.T) {
	in := shard.Stmt{SQL: "INSERT INTO t VALUES (?,?,?,?,?,?)", Changed: 1,
		Args: []any{int64(1) << 60, "text ☃", []byte{0, 1, 255}, nil, 2.5, true, []byte(nil), ptr("p"), (*int64)(nil), sql.NullString{String: "v", Valid: true}}}
	ws, err := encodeStmt(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ws)
	if err != nil {
		t.Fatal(err)
	}
	var back wireStmt
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	out, err := back.decode()
	if err != nil {
		t.Fatal(err)
	}
	want := []any{int64(1) << 60, "text ☃", []byte{0, 1, 255}, nil, 2.5, int64(1), nil, "p", nil, "v"}
	if out.SQL != in.SQL || out.Changed != 1 || !reflect.DeepEqual(out.Args, want) {
		t.Fatalf("round trip: %#v, want %#v", out, want)
	}
	if _, err := encodeStmt(shard.Stmt{Args: []any{struct{}{}}}); err == nil {
		t.Fatal("an argument of an unknown type was sent")
	}
	if _, err := (wireStmt{Args: []wireArg{{T: "x"}}}).decode(); err == nil {
		t.Fatal("an argument of an unknown wire type was accepted")
	}
}

func ptr[T any](v T) *T { return &v }

func TestTenantOf(t *testing.T) {
	for path, want := range map[string]string{
		"/t/acme/token":                   "acme",
		"/t/acme":                         "acme",
		"/admin/tenants/acme/move":        "acme",
		"/admin/tenants/acme":             "acme",
		"/admin/tenants":                  "",
		"/admin/nodes":                    "",
		"/t/ACME/x":                       "",
		"/t/../x":                         "",
		"/_node/tenants/abc/stage":        "",
		"/t/aaaaaaaaaaaaaaaaaaaaaaaaaa/x": "aaaaaaaaaaaaaaaaaaaaaaaaaa",
	} {
		got, ok := tenantOf(path)
		if got != want || ok != (want != "") {
			t.Errorf("tenantOf(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}
