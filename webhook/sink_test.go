package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/internal/netguard"
)

func TestPublicIP(t *testing.T) {
	for ip, want := range map[string]bool{
		"8.8.8.8": true, "1.1.1.1": true, "2606:4700::1111": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.5.4": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "::1": false, "fe80::1": false, "fd00::1": false, "::ffff:127.0.0.1": false,
		"224.0.0.1": false, "::": false,
	} {
		if got := netguard.PublicIP(net.ParseIP(ip)); got != want {
			t.Errorf("PublicIP(%s) = %v, want %v", ip, got, want)
		}
	}
}

// TestSink_RefusesPrivateAfterResolution: "localhost" passes no literal
// check, but the address it resolves to is refused at connect time; with
// AllowPrivate it is reached.
func TestSink_RefusesPrivateAfterResolution(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	e := &Endpoint{ID: "wh_x", URL: "http://localhost:" + port + "/", secret: "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	m := event.Message{EventID: "evt_1", Payload: []byte(`{}`)}
	_, err := NewSink(SinkConfig{}).send(context.Background(), e, m)
	if !errors.Is(err, ErrPrivateAddress) || hits != 0 {
		t.Fatalf("delivery to localhost without AllowPrivate: %v (hits %d)", err, hits)
	}
	if _, err := NewSink(SinkConfig{AllowPrivate: true}).send(context.Background(), e, m); err != nil || hits != 1 {
		t.Fatalf("with AllowPrivate: %v (hits %d)", err, hits)
	}
	// Redirects are not followed: a 3xx is a failed delivery.
	redir := httptest.NewServer(http.RedirectHandler("http://169.254.169.254/", http.StatusFound))
	defer redir.Close()
	e.URL = redir.URL
	if status, err := NewSink(SinkConfig{AllowPrivate: true}).send(context.Background(), e, m); err == nil || status != http.StatusFound {
		t.Fatalf("a redirect: %d %v", status, err)
	}
}

func TestSink_Backoff(t *testing.T) {
	s := NewSink(SinkConfig{})
	total := time.Duration(0)
	for i := range Schedule {
		d := s.Backoff(i)
		if d < Schedule[i]*9/10 || d > Schedule[i]*11/10 {
			t.Fatalf("attempt %d: %v, want %v ± 10%%", i, d, Schedule[i])
		}
		total += Schedule[i]
	}
	if total < 60*time.Hour || total > 80*time.Hour {
		t.Fatalf("the schedule spans %v, want about three days", total)
	}
}
