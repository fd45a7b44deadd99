package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBench_CLI(t *testing.T) {
	if keyshardBin == "" {
		t.Skip("no go tool to build the binary")
	}
	out := filepath.Join(t.TempDir(), "bench.json")
	cmd := exec.Command(keyshardBin, "bench", "--workload", "mixed,refresh", "--requests", "60", "--duration", "30s",
		"--concurrency", "4", "--users", "4", "--argon2-memory-kib", "64", "--argon2-time", "1",
		"--hash-rate-duration", "200ms", "--synchronous", "NORMAL", "--quiet", "--json", out)
	cmd.Env = append(os.Environ(), "KEYSHARD_ADMIN_TOKEN=", "KEYSHARD_URL=")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keyshard bench: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), "mixed mix: user=65%,refresh=30%,update=4.8%,login=0.15%,signup=0.05%") {
		t.Errorf("output does not state the mix:\n%s", b)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		HashRate float64 `json:"hash_rate"`
		Results  []struct {
			Workload     string           `json:"workload"`
			StatusCounts map[string]int64 `json:"status_counts"`
			HashRate     float64          `json:"hash_rate"`
		} `json:"results"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || rep.Results[0].Workload != "mixed" || rep.Results[1].Workload != "refresh" {
		t.Fatalf("results %s", raw)
	}
	for _, r := range rep.Results {
		if r.StatusCounts["200"] != 60 || r.HashRate <= 0 || r.HashRate != rep.HashRate {
			t.Errorf("%s: status counts %v hash rate %v (report %v)", r.Workload, r.StatusCounts, r.HashRate, rep.HashRate)
		}
	}
}

func TestBench_CLIErrors(t *testing.T) {
	if keyshardBin == "" {
		t.Skip("no go tool to build the binary")
	}
	for _, tc := range []struct {
		args []string
		want string // in the output
	}{
		{[]string{"bench", "--workload", "nope"}, "unknown workload"},
		{[]string{"bench", "--mix", "user=1,bogus=2"}, "bogus"},
		{[]string{"bench", "--url", "http://127.0.0.1:1", "--hash-rate-duration", "0"}, "--admin-token"},
		{[]string{"bench", "--url", "http://127.0.0.1:1", "--admin-token", "x", "--gomaxprocs", "2", "--hash-rate-duration", "0"}, "--gomaxprocs"},
		{[]string{"bench", "--client-addresses", "-1"}, "--client-addresses"},
		{[]string{"bench", "--client-addresses", "131073"}, "--client-addresses"},
	} {
		cmd := exec.Command(keyshardBin, tc.args...)
		cmd.Env = append(os.Environ(), "KEYSHARD_ADMIN_TOKEN=")
		b, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("keyshard %v: want an error, got success:\n%s", tc.args, b)
		} else if !strings.Contains(string(b), tc.want) {
			t.Errorf("keyshard %v: the error does not name %q:\n%s", tc.args, tc.want, b)
		}
	}
}
