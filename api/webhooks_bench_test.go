package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/webhook"
)

// BenchmarkWebhookDelivery: 10,000 webhook.test events pending, spread
// over 1, 100 or 10,000 tenants with one endpoint each, delivered to a
// fast receiver on loopback by the server's background workers (defaults:
// 4 workers, 500 ms interval, 8 deliveries at once per tenant turn).
// Reports events delivered per second (from the first delivery to the
// last) and the lag from the event's commit to its arrival.
//
//	go test -run '^$' -bench WebhookDelivery -benchtime 1x ./api/
func BenchmarkWebhookDelivery(b *testing.B) {
	const events = 10_000
	counts := []int{1, 100, 10_000}
	if n, err := strconv.Atoi(os.Getenv("KEYSHARD_BENCH_TENANTS")); err == nil && n > 0 && events%n == 0 {
		counts = []int{n}
	}
	for _, tenants := range counts {
		b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
			for range b.N {
				benchDelivery(b, tenants, events)
			}
		})
	}
}

func benchDelivery(b *testing.B, tenants, events int) {
	b.StopTimer()
	workers, _ := strconv.Atoi(os.Getenv("KEYSHARD_BENCH_WORKERS")) // 0: the server's default
	cache, _ := strconv.Atoi(os.Getenv("KEYSHARD_BENCH_CACHE"))     // 0: the default capacity
	e := newAuthEnv(b, authEnvOptions{sync: "NORMAL", cache: cache, events: app.EventsConfig{Workers: workers, Webhooks: app.WebhooksConfig{AllowPrivate: true}}})
	var mu sync.Mutex
	lag := hdrhistogram.New(1, 600_000, 3) // ms
	var first, last time.Time
	got := 0
	done := make(chan struct{})
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var env struct {
			OccurredAt time.Time `json:"occurred_at"`
		}
		_ = json.Unmarshal(body, &env)
		now := time.Now()
		mu.Lock()
		if got == 0 {
			first = now
		}
		got++
		last = now
		_ = lag.RecordValue(max(now.Sub(env.OccurredAt).Milliseconds(), 1))
		if got == events {
			close(done)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()
	ctx := context.Background()
	type target struct {
		t  auth.Tenant
		id string
	}
	var ts []target
	for i := range tenants {
		slug := fmt.Sprintf("wh-%d", i)
		e.tenant(slug)
		sh, err := e.App.Engine.Tenant(ctx, slug)
		if err != nil {
			b.Fatal(err)
		}
		t := auth.Tenant{ID: sh.Tenant.ID, Shard: sh}
		url := rc.URL + "/" + slug
		ep, _, err := e.Server.Webhooks.Create(ctx, t, auth.Client{}, webhookRequest(url))
		if err != nil {
			b.Fatal(err)
		}
		ts = append(ts, target{t, ep.ID})
		sh.Release()
	}
	b.StartTimer()
	var wg sync.WaitGroup
	per := events / tenants
	sem := make(chan struct{}, 16)
	for _, tg := range ts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			sh, err := e.App.Engine.Tenant(ctx, tg.t.ID)
			if err != nil {
				b.Error(err)
				return
			}
			defer sh.Release()
			t := auth.Tenant{ID: tg.t.ID, Shard: sh}
			for range per {
				if _, err := e.Server.Webhooks.Test(ctx, t, auth.Client{}, tg.id); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("only %d of %d events delivered in 10 minutes", got, events)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	b.ReportMetric(float64(events)/last.Sub(first).Seconds(), "events/s")
	b.ReportMetric(float64(lag.ValueAtQuantile(50)), "lag-p50-ms")
	b.ReportMetric(float64(lag.ValueAtQuantile(95)), "lag-p95-ms")
}

func webhookRequest(url string) webhook.EndpointRequest {
	evs := []string{"webhook.test"}
	return webhook.EndpointRequest{URL: &url, Events: &evs}
}
