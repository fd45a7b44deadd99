package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/internal/testbackend"
)

// TestAuth_LoginThrottleOutlivesTheProcess: failed logins counted by one
// process still count in the next that serves the tenant (a restart, or
// another node after a move): the counts start from the tenant's audit log.
func TestAuth_LoginThrottleOutlivesTheProcess(t *testing.T) {
	dir := t.TempDir()
	cfg := app.ServerConfig{Storage: app.Config{DataDir: dir}, Hash: hash.Config{Params: authTestParams},
		MasterKey: bytes.Repeat([]byte{9}, token.MasterKeySize), AdminToken: "admin-secret"}
	post := func(url, body string) int {
		res, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	login := func(base, password string) int {
		b, _ := json.Marshal(map[string]string{"email": "victim@example.com", "password": password})
		return post(base+"/token?grant_type=password", string(b))
	}

	first := testbackend.OpenServer(t, cfg)
	hs := httptest.NewServer(first.Handler())
	ctx := context.Background()
	if _, err := first.Engine.CreateTenant(ctx, "acme", "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Engine.ApproveTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	base := hs.URL + "/t/acme"
	if code := post(base+"/signup", `{"email":"victim@example.com","password":"correct horse battery"}`); code != 200 {
		t.Fatalf("signup: %d", code)
	}
	for i := 0; i < 10; i++ { // the default pair limit
		if code := login(base, "wrong guess"); code != 400 {
			t.Fatalf("failed login %d: %d", i, code)
		}
	}
	if code := login(base, "correct horse battery"); code != 429 {
		t.Fatalf("login past the pair limit: %d, want 429", code)
	}
	hs.Close()
	if err := first.Close(); err != nil { // flushes the buffered audit rows
		t.Fatal(err)
	}

	second := testbackend.OpenServer(t, cfg)
	defer second.Close()
	hs2 := httptest.NewServer(second.Handler())
	defer hs2.Close()
	if code := login(hs2.URL+"/t/acme", "correct horse battery"); code != 429 {
		t.Fatalf("the next process let the guessed pair in at once: %d, want 429", code)
	}
}
