package bench

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_open_fds 40
go_goroutines 12
keyshard_http_requests_total{code="200",method="GET",route="/t/:tenant/user"} 1000
keyshard_http_requests_total{code="200",method="GET",route="/metrics"} 3
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 3 || s.sum("process_cpu_seconds_total") != 12.5 || s.sum("keyshard_http_requests_total", `route="/t/:tenant/user"`) != 1000 {
		t.Fatalf("parsed %v", s)
	}
	before := Sample{"process_cpu_seconds_total": 10}
	if d := delta(before, s, "process_cpu_seconds_total"); d != 2.5 {
		t.Fatalf("CPU delta %v", d)
	}
}
