package api_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/keyshard/keyshard/app"
)

// BenchmarkRecoverKnownUnknown: POST /recover for an address with an
// account and one without, alternating on one connection, so that both
// see the same machine. Reports each one's median and P90 latency in
// microseconds: the answers are the same, and should take about the same
// time (both do one shard write; only the known one's write carries a
// token and a mail).
//
//	go test -run '^$' -bench RecoverKnownUnknown -benchtime 2000x ./api/
func BenchmarkRecoverKnownUnknown(b *testing.B) {
	mb := newMailbox(b)
	e := newAuthEnv(b, authEnvOptions{mail: mb.config(), events: app.EventsConfig{Interval: 50 * time.Millisecond}})
	base := e.tenant("acme")
	key := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	if r := e.call("PATCH", base+"/admin/config/auth", key, map[string]any{"smtp_max_frequency": 0, "rate_limit_email_sent": 1_000_000,
		"site_url": "http://app.example.com"}); r.Status != 200 {
		b.Fatalf("config: %d %s", r.Status, r.Raw)
	}
	if r := e.signup(base, "known@example.com", "correct horse 1"); r.Status != 200 {
		b.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	hist := map[string]*hdrhistogram.Histogram{
		"known":   hdrhistogram.New(1, 10_000_000, 3),
		"unknown": hdrhistogram.New(1, 10_000_000, 3),
	}
	body := map[string][]byte{"known": []byte(`{"email":"known@example.com"}`), "unknown": []byte(`{"email":"unknown@example.com"}`)}
	b.ResetTimer()
	for i := range b.N {
		which := "known"
		if i%2 == 1 {
			which = "unknown"
		}
		start := time.Now()
		resp, err := client.Post(base+"/recover", "application/json", bytes.NewReader(body[which]))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", which, resp.StatusCode)
		}
		_ = hist[which].RecordValue(time.Since(start).Microseconds())
	}
	b.StopTimer()
	for _, which := range []string{"known", "unknown"} {
		b.ReportMetric(float64(hist[which].ValueAtQuantile(50)), which+"-p50-µs")
		b.ReportMetric(float64(hist[which].ValueAtQuantile(90)), which+"-p90-µs")
	}
}
