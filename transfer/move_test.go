package transfer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/sqlite"
	"github.com/keyshard/keyshard/transfer"
)

func TestService_Move(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		e := newEnv(t)
		ten := e.tenant("acme", engine.BackendSQLite)
		e.seed("acme", 300)
		before := e.digests("acme")
		oldPath, _ := sqlite.Path(e.Dir, ten.ID)
		disk2 := filepath.Join(t.TempDir(), "disk2")
		res, err := e.Svc.Move(context.Background(), "acme", transfer.MoveOptions{Backend: engine.BackendSQLite, Location: disk2})
		if err != nil {
			t.Fatal(err)
		}
		if res.Tenant.Location != disk2 || res.Tenant.Epoch != ten.Epoch+1 {
			t.Fatalf("after move: %+v", res.Tenant)
		}
		if _, err := os.Stat(oldPath); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("old copy still there: %v", err)
		}
		newPath, _ := sqlite.Path(disk2, ten.ID)
		if _, err := os.Stat(newPath); err != nil {
			t.Fatalf("new copy: %v", err)
		}
		if got := e.digests("acme"); !equal(got, before) {
			t.Fatalf("content changed by the move:\n%v\n%v", got, before)
		}
		if !equal(res.Tables, before) {
			t.Fatalf("move reports %v, want %v", res.Tables, before)
		}
		// And back to the data directory.
		res, err = e.Svc.Move(context.Background(), "acme", transfer.MoveOptions{Backend: engine.BackendSQLite, Location: e.Dir})
		if err != nil {
			t.Fatal(err)
		}
		if res.Tenant.Location != "" {
			t.Fatalf("location back home: %q", res.Tenant.Location)
		}
		if _, err := os.Stat(newPath); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("disk2 copy still there: %v", err)
		}
		if got := e.digests("acme"); !equal(got, before) {
			t.Fatalf("content changed by the move back")
		}
	})
	t.Run("AcrossBackends", func(t *testing.T) {
		e := newEnv(t)
		bs := e.backends()
		if len(bs) < 2 {
			t.Skip("only sqlite is configured: set KEYSHARD_TEST_POSTGRES_DSN and/or KEYSHARD_TEST_MYSQL_DSN for the cross-backend moves")
		}
		// sqlite → postgres → mysql → sqlite (whichever are configured).
		e.tenant("acme", bs[0])
		e.seed("acme", 120)
		before := e.digests("acme")
		for _, to := range append(bs[1:], bs[0]) {
			res, err := e.Svc.Move(context.Background(), "acme", transfer.MoveOptions{Backend: to})
			if err != nil {
				t.Fatalf("move to %s: %v", to, err)
			}
			if res.Tenant.Backend != to {
				t.Fatalf("after the move to %s: %+v", to, res.Tenant)
			}
			if got := e.digests("acme"); !equal(got, before) {
				t.Fatalf("content changed by the move to %s:\n got %v\nwant %v", to, got, before)
			}
		}
	})
	t.Run("FailureLeavesTenant", func(t *testing.T) {
		// A capture overflowing its limit fails the move before the flip:
		// the tenant stays where it was, served, and the partial copy goes.
		e := newEnv(t)
		ten := e.tenant("acme", engine.BackendSQLite)
		e.seed("acme", 300)
		e.Svc.CaptureLimit = 1
		disk2 := filepath.Join(t.TempDir(), "disk2")
		wrote := false
		_, err := e.Svc.Move(context.Background(), "acme", transfer.MoveOptions{Backend: engine.BackendSQLite, Location: disk2,
			Progress: func(p transfer.Progress) {
				if p.Phase != "copy" || wrote {
					return
				}
				wrote = true // writes during the copy: captured, past the limit
				ts, err := e.App.Engine.Tenant(context.Background(), "acme")
				if err != nil {
					t.Error(err)
					return
				}
				defer ts.Release()
				for i := 0; i < 3; i++ {
					if err := ts.Write(context.Background(), func(tx engine.Querier) error {
						_, err := tx.Exec(`INSERT INTO audit_log (action, payload, created_at) VALUES ('during', '{}', 1)`)
						return err
					}); err != nil {
						t.Error(err)
					}
				}
			}})
		if !errors.Is(err, engine.ErrOverloaded) {
			t.Fatalf("move with a capture past its limit: %v, want ErrOverloaded", err)
		}
		got, err := e.App.Engine.Get(context.Background(), "acme")
		if err != nil || got.Location != "" || got.Epoch != ten.Epoch {
			t.Fatalf("tenant after a failed move: %+v, %v", got, err)
		}
		newPath, _ := sqlite.Path(disk2, ten.ID)
		if _, err := os.Stat(newPath); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the partial copy is left: %v", err)
		}
		// Not fenced any more: writes go on, and the writes made during
		// the failed move are there.
		if n := e.count("acme", "SELECT count(*) FROM audit_log WHERE action = 'during'"); n != 3 {
			t.Fatalf("writes during the failed move: %d, want 3", n)
		}
		ts, err := e.App.Engine.Tenant(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		defer ts.Release()
		if err := ts.Write(context.Background(), func(tx engine.Querier) error {
			_, err := tx.Exec(`INSERT INTO audit_log (action, payload, created_at) VALUES ('after', '{}', 1)`)
			return err
		}); err != nil {
			t.Fatalf("write after a failed move: %v", err)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		e := newEnv(t)
		e.tenant("acme", engine.BackendSQLite)
		for _, o := range []transfer.MoveOptions{
			{Backend: engine.BackendSQLite},                  // already there
			{Backend: engine.BackendSQLite, Location: e.Dir}, // the same, spelt out
			{Backend: "oracle"},
		} {
			if _, err := e.Svc.Move(context.Background(), "acme", o); !errors.Is(err, engine.ErrInvalid) {
				t.Errorf("move %+v: %v, want ErrInvalid", o, err)
			}
		}
		if _, err := e.Svc.Move(context.Background(), "nope", transfer.MoveOptions{Backend: engine.BackendSQLite, Location: t.TempDir()}); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Errorf("move unknown: %v", err)
		}
	})
}

func equal(a, b map[string]transfer.Digest) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
