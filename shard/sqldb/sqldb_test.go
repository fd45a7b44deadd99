package sqldb_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/sqldb"
)

func TestNamespace(t *testing.T) {
	good := "abcdefghijklmnopqrstuvwxyz"
	if ns, err := sqldb.Namespace(good); err != nil || ns != "t_"+good {
		t.Fatalf("Namespace(%q) = %q, %v", good, ns, err)
	}
	for _, bad := range []string{"", "acme", `abcdefghijklmnopqrstuvwxy"`, "abcdefghijklmnopqrstuvwx;-",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "../../../../../../etc/pas", `x"; DROP SCHEMA public; --`} {
		if ns, err := sqldb.Namespace(bad); !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("Namespace(%q) = %q, %v; want ErrInvalid", bad, ns, err)
		}
	}
	if got := sqldb.QuoteIdent(`a"b`); got != `"a""b"` {
		t.Errorf("QuoteIdent = %s", got)
	}
}

func TestSplitStatements(t *testing.T) {
	got := sqldb.SplitStatements(`-- header comment
CREATE TABLE a (
    x TEXT NOT NULL DEFAULT 'a;b', -- trailing comment
    y BIGINT
);

CREATE INDEX a_y ON a(y);
INSERT INTO a (x) VALUES ('--not a comment');
`)
	want := []string{
		"CREATE TABLE a (\n    x TEXT NOT NULL DEFAULT 'a;b', -- trailing comment\n    y BIGINT\n)",
		"CREATE INDEX a_y ON a(y)",
		"INSERT INTO a (x) VALUES ('--not a comment')",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SplitStatements:\n got %q\nwant %q", got, want)
	}
}
