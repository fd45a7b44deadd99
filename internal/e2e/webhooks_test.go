package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestWebhooks_SIGKILL kills the server in the middle of signups and
// deliveries, several times. After the last restart every acknowledged
// signup's user.created has reached the receiver (verified with the
// Standard Webhooks library) at least once, and every duplicate carries
// the same webhook-id.
func TestWebhooks_SIGKILL(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	var mu sync.Mutex
	ids := map[string]map[string]int{} // email → webhook-id → deliveries
	secrets := map[string]string{}     // tenant id → endpoint secret
	var bad atomic.Int64
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var env struct {
			TenantID string `json:"tenant_id"`
			Actor    struct {
				Email string `json:"email"`
			} `json:"actor"`
		}
		_ = json.Unmarshal(body, &env)
		mu.Lock()
		defer mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(secrets[env.TenantID])
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		if err != nil {
			bad.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if ids[env.Actor.Email] == nil {
			ids[env.Actor.Email] = map[string]int{}
		}
		ids[env.Actor.Email][r.Header.Get("webhook-id")]++
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()

	c := newCluster(t, "", "--outbound-allow-private")
	s := c.start()
	tenants := s.createTenants("hooks", 4)
	for _, tn := range tenants {
		key := s.must(200, "POST", "/admin/tenants/"+tn.Slug+"/service-key", c.adminToken, nil).str("service_key")
		ep := s.must(201, "POST", "/t/"+tn.Slug+"/admin/webhooks", key, map[string]any{"url": rc.URL + "/" + tn.Slug, "events": []string{"user.created"}})
		mu.Lock()
		secrets[tn.ID] = ep.str("secret")
		mu.Unlock()
	}
	var acked sync.Map // email → true
	var n atomic.Int64
	const kills = 4
	for k := 0; k < kills; k++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 400 && ctx.Err() == nil; i++ {
					tn := tenants[int(n.Load())%len(tenants)]
					email := fmt.Sprintf("u%d@hooks.test", n.Add(1))
					r := s.do(ctx, "POST", "/t/"+tn.Slug+"/signup", "", map[string]any{"email": email, "password": "password1"})
					if r.Status == 200 {
						acked.Store(email, true)
					}
				}
			}()
		}
		time.Sleep(time.Duration(300+k*200) * time.Millisecond)
		s.kill()
		cancel()
		wg.Wait()
		s = c.start()
	}
	want := 0
	acked.Range(func(any, any) bool { want++; return true })
	if want == 0 {
		t.Fatal("no signup was acknowledged")
	}
	var missing []string
	err := waitFor(90*time.Second, func() bool {
		missing = missing[:0]
		mu.Lock()
		defer mu.Unlock()
		acked.Range(func(k, _ any) bool {
			if len(ids[k.(string)]) == 0 {
				missing = append(missing, k.(string))
			}
			return true
		})
		return len(missing) == 0
	})
	s.stop()
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		t.Fatalf("%d of %d acknowledged signups never reached the receiver (e.g. %v)", len(missing), want, missing[:min(5, len(missing))])
	}
	dups := 0
	for email, byID := range ids {
		if len(byID) != 1 {
			t.Errorf("%s was delivered under %d webhook-ids: %v", email, len(byID), byID)
		}
		for _, n := range byID {
			dups += n - 1
		}
	}
	if bad.Load() != 0 {
		t.Errorf("%d deliveries failed signature verification", bad.Load())
	}
	t.Logf("%d kills; %d signups acknowledged, all delivered; %d users delivered in all; %d duplicate deliveries (same webhook-id)", kills, want, len(ids), dups)
}
