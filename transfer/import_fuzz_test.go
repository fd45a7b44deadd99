package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/transfer"
)

// FuzzImport feeds arbitrary bytes, and mutations of a real ndjson export,
// to Import: it must either create a tenant (then deleted again) or refuse
// with an error wrapping engine.ErrInvalid, never panic, never fail another
// way, and a refused file must leave no tenant behind.
func FuzzImport(f *testing.F) {
	e := newEnv(f)
	e.tenant("src", engine.BackendSQLite)
	e.seed("src", 3)
	for _, secrets := range []bool{false, true} {
		var buf bytes.Buffer
		if _, err := e.Svc.Export(context.Background(), "src", &buf, transfer.ExportOptions{Format: transfer.FormatNDJSON, IncludeSecrets: secrets}); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
		f.Add(buf.Bytes()[:buf.Len()/2])
	}
	f.Add([]byte(""))
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"format":"keyshard-ndjson","version":1}` + "\n"))
	f.Add([]byte("SQLite format 3\x00 truncated"))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		before, err := e.App.Engine.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Svc.Import(ctx, bytes.NewReader(data), transfer.ImportOptions{Slug: "imported"})
		after, lerr := e.App.Engine.List(ctx)
		if lerr != nil {
			t.Fatal(lerr)
		}
		if err != nil {
			if !errors.Is(err, engine.ErrInvalid) {
				t.Fatalf("import refused with %v; want an error wrapping ErrInvalid", err)
			}
			if len(after) != len(before) {
				t.Fatalf("a refused import left %d tenants, had %d", len(after), len(before))
			}
			return
		}
		if err := e.App.Engine.DeleteTenant(ctx, "imported"); err != nil {
			t.Fatalf("delete the imported tenant: %v", err)
		}
	})
}

// TestImport_RandomMutations is FuzzImport's check over a fixed number of
// random byte mutations of a real export, in plain `go test` (the fuzzer's
// coverage instrumentation of the SQLite engine makes `-fuzz` run about one
// input per second here). The seed is printed; set KEYSHARD_MUTATION_SEED
// to replay.
func TestImport_RandomMutations(t *testing.T) {
	e := newEnv(t)
	e.tenant("src", engine.BackendSQLite)
	e.seed("src", 3)
	var nd bytes.Buffer
	if _, err := e.Svc.Export(context.Background(), "src", &nd, transfer.ExportOptions{Format: transfer.FormatNDJSON, IncludeSecrets: true}); err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("KEYSHARD_MUTATION_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("KEYSHARD_MUTATION_SEED=%d", seed)
	rng := rand.New(rand.NewSource(seed))
	ctx := context.Background()
	var refused, imported int
	for i := 0; i < 150; i++ {
		d := append([]byte(nil), nd.Bytes()...)
		switch rng.Intn(3) {
		case 0: // flip bytes
			for k := 0; k < 1+rng.Intn(4); k++ {
				d[rng.Intn(len(d))] ^= byte(1 + rng.Intn(255))
			}
		case 1: // cut
			d = d[:rng.Intn(len(d))]
		case 2: // splice a line elsewhere
			a, b := rng.Intn(len(d)), rng.Intn(len(d))
			d = append(d[:min(a, b)], append([]byte("\n{\"table\":\"users\",\"row\":[]}\n"), d[min(a, b):]...)...)
		}
		before, _ := e.App.Engine.List(ctx)
		_, err := e.Svc.Import(ctx, bytes.NewReader(d), transfer.ImportOptions{Slug: "imported"})
		after, _ := e.App.Engine.List(ctx)
		if err != nil {
			refused++
			if !errors.Is(err, engine.ErrInvalid) {
				t.Fatalf("mutation %d refused with %v; want an error wrapping ErrInvalid", i, err)
			}
			if len(after) != len(before) {
				t.Fatalf("mutation %d: a refused import left a tenant", i)
			}
			continue
		}
		imported++
		if err := e.App.Engine.DeleteTenant(ctx, "imported"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("150 mutations: %d refused, %d imported (a change the checksums do not cover, e.g. white space)", refused, imported)
	if refused == 0 {
		t.Fatal("no mutation was refused: the checks do not run")
	}
}
