package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkGetUser_Handler measures GET /user in the server's handler alone,
// with a recorder instead of a connection: no network, no load generator,
// so its CPU and allocations per request are steady on a noisy machine.
// The same token every time, so the verified-token and session caches hit,
// as they do for a client polling its user.
//
//	go test -run '^$' -bench GetUser_Handler -benchmem -count 5 ./api/
func BenchmarkGetUser_Handler(b *testing.B) {
	e := newAuthEnv(b, authEnvOptions{})
	base := e.tenant("bench")
	at := e.signup(base, "bench@example.com", "password1").str("access_token")
	h := e.Server.Handler()
	req := httptest.NewRequest(http.MethodGet, "/t/bench/user", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	serve := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve(); rec.Code != http.StatusOK || rec.Body.Len() == 0 {
		b.Fatalf("GET /user: %d %s", rec.Code, rec.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve()
	}
}
