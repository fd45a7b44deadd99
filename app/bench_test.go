package app_test

import (
	"context"
	"testing"

	"github.com/keyshard/keyshard/app"
)

// BenchmarkEngine_Tenant measures the request path's tenant step on a cache
// hit: resolve the slug from the catalog's memory, check the status, pin the
// open shard, re-check the catalog, release.
//
//	go test -run '^$' -bench Engine_Tenant ./app/
func BenchmarkEngine_Tenant(b *testing.B) {
	ctx := context.Background()
	a, err := app.Open(ctx, app.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	if _, err := a.Engine.CreateTenant(ctx, "acme", "Acme", ""); err != nil {
		b.Fatal(err)
	}
	if _, err := a.Engine.ApproveTenant(ctx, "acme"); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for range b.N {
			ts, err := a.Engine.Tenant(ctx, "acme")
			if err != nil {
				b.Fatal(err)
			}
			ts.Release()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ts, err := a.Engine.Tenant(ctx, "acme")
				if err != nil {
					b.Error(err)
					return
				}
				ts.Release()
			}
		})
	})
}
