package hash_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/engine"
)

var small = hash.Params{MemoryKiB: 64, Time: 1, Threads: 1}

func newPool(tb testing.TB, cfg hash.Config) *hash.Pool {
	tb.Helper()
	p, err := hash.NewPool(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

func TestPool_HashVerify(t *testing.T) {
	ctx := context.Background()
	p := newPool(t, hash.Config{Params: small, Workers: 2})

	t.Run("OK", func(t *testing.T) {
		h, err := p.Hash(ctx, "correct horse")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Count(h, "$") != 5 {
			t.Fatalf("PHC string %q", h)
		}
		ok, stale, err := p.Verify(ctx, h, "correct horse")
		if err != nil || !ok || stale {
			t.Fatalf("verify: ok=%v stale=%v err=%v", ok, stale, err)
		}
		ok, _, err = p.Verify(ctx, h, "wrong horse")
		if err != nil || ok {
			t.Fatalf("wrong password: ok=%v err=%v", ok, err)
		}
	})
	t.Run("StaleParams", func(t *testing.T) {
		other := newPool(t, hash.Config{Params: hash.Params{MemoryKiB: 128, Time: 1, Threads: 1}, Workers: 1})
		h, err := other.Hash(ctx, "pw")
		if err != nil {
			t.Fatal(err)
		}
		ok, stale, err := p.Verify(ctx, h, "pw")
		if err != nil || !ok || !stale {
			t.Fatalf("ok=%v stale=%v err=%v", ok, stale, err)
		}
	})
	t.Run("Bcrypt", func(t *testing.T) {
		b, err := bcrypt.GenerateFromPassword([]byte("imported"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		ok, stale, err := p.Verify(ctx, string(b), "imported")
		if err != nil || !ok || !stale {
			t.Fatalf("ok=%v stale=%v err=%v", ok, stale, err)
		}
		ok, _, err = p.Verify(ctx, string(b), "nope")
		if err != nil || ok {
			t.Fatalf("ok=%v err=%v", ok, err)
		}
	})
	t.Run("ErrUnknownFormat", func(t *testing.T) {
		for _, h := range []string{"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
			"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
			"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=64$x$y",
			// Within the memory and pass bounds, but 5 GiB of work.
			"$argon2id$v=19$m=1048576,t=5,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"} {
			if _, _, err := p.Verify(ctx, h, "pw"); !errors.Is(err, hash.ErrUnknownFormat) {
				t.Fatalf("%q: err %v", h, err)
			}
		}
	})
	t.Run("ErrBcryptCostTooHigh", func(t *testing.T) {
		b, err := bcrypt.GenerateFromPassword([]byte("imported"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		// The same hash claiming cost 17 (seconds) and 31 (days): refused
		// before any work.
		for _, cost := range []string{"17", "31"} {
			h := strings.Replace(string(b), "$04$", "$"+cost+"$", 1)
			start := time.Now()
			_, _, err := p.Verify(ctx, h, "imported")
			if !errors.Is(err, hash.ErrUnknownFormat) {
				t.Errorf("cost %s: err %v, want ErrUnknownFormat", cost, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("cost %s: refused after %s", cost, d)
			}
		}
	})
	t.Run("Dummy", func(t *testing.T) {
		if err := p.VerifyDummy(ctx, "anything"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ErrClosed", func(t *testing.T) {
		q := newPool(t, hash.Config{Params: small, Workers: 1})
		q.Close()
		if _, err := q.Hash(ctx, "pw"); !errors.Is(err, engine.ErrClosed) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestParams_Validate(t *testing.T) {
	for _, p := range []hash.Params{{MemoryKiB: 4, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, {MemoryKiB: 64, Time: 0, Threads: 1, SaltLen: 16, KeyLen: 32}} {
		if p.Validate() == nil {
			t.Fatalf("%+v accepted", p)
		}
	}
	if _, err := hash.NewPool(hash.Config{Params: hash.Params{MemoryKiB: 4, Time: 1, Threads: 1}}); err == nil {
		t.Fatal("NewPool accepted 4 KiB")
	}
}

// BenchmarkArgon2id_OWASP measures raw hashes per second with the default
// (OWASP) parameters on every core: go test -run - -bench OWASP ./auth/hash
func BenchmarkArgon2id_OWASP(b *testing.B) {
	p := newPool(b, hash.Config{Params: hash.DefaultParams, Budget: 1 << 62})
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Hash(ctx, "benchmark password"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
}
