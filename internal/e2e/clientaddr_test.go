package e2e_test

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestServe_RateLimitHeader: the serve flags reach the server. With
// --rate-limit-header (given through its KEYSHARD_ variable) the signup
// limit per address counts the addresses the header gives; a list of
// trusted proxies that is not one stops serve before it listens, naming
// the flag's fault.
func TestServe_RateLimitHeader(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	c := newCluster(t, "", "--signups-per-address", "1", "--trusted-proxies", "127.0.0.1")
	c.env = append(c.env, "KEYSHARD_RATE_LIMIT_HEADER=X-Real-IP")
	s := c.start()
	s.createTenants("proxied", 1)
	signup := func(email, client string) int {
		t.Helper()
		req, err := http.NewRequest("POST", s.base+"/t/proxied-0/signup", strings.NewReader(`{"email":"`+email+`","password":"password1"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Real-IP", client)
		res, err := s.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		email, client string
		want          int
	}{
		{"a@example.com", "203.0.113.1", 200},
		{"b@example.com", "203.0.113.2", 200},
		{"c@example.com", "203.0.113.1", 429},
	} {
		if st := signup(c.email, c.client); st != c.want {
			t.Fatalf("signup of %s from %s: %d, want %d", c.email, c.client, st, c.want)
		}
	}
	if !strings.Contains(c.allLogs(), `msg="client addresses from a proxy's header" header=X-Real-Ip trusted_proxies=127.0.0.1`) {
		t.Fatalf("no start line naming the header:\n%s", c.allLogs())
	}

	out, err := exec.Command(keyshardBin, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(),
		"--rate-limit-header", "X-Forwarded-For", "--trusted-proxies", "10.0.0.0/33").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "trusted proxies") || !strings.Contains(string(out), "10.0.0.0/33") {
		t.Fatalf("serve with a bad --trusted-proxies: %v\n%s", err, out)
	}
}
