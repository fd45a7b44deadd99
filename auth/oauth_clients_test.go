package auth

import "testing"

func TestCheckRedirectURI(t *testing.T) {
	for _, c := range []struct {
		uri, typ string
		ok       bool
	}{
		{"https://app.example/cb", ClientConfidential, true},
		{"https://app.example/cb?x=1", ClientConfidential, true},
		{"http://127.0.0.1:8080/cb", ClientConfidential, true},
		{"http://localhost/cb", ClientPublic, true},
		{"http://[::1]:9/cb", ClientPublic, true},
		{"http://app.example/cb", ClientConfidential, false},
		{"https://app.example/cb#frag", ClientConfidential, false},
		{"https://app.example/cb#", ClientConfidential, false},
		{"/relative", ClientConfidential, false},
		{"javascript:alert(1)", ClientPublic, false},
		{"data:text/html,x", ClientPublic, false},
		{"com.example.app:/oauth", ClientPublic, true},
		{"com.example.app:/oauth", ClientConfidential, false},
		{"https:///nohost", ClientConfidential, false},
	} {
		err := checkRedirectURI(c.uri, c.typ)
		if (err == nil) != c.ok {
			t.Errorf("%s (%s): err %v, want ok %v", c.uri, c.typ, err, c.ok)
		}
	}
}

func TestOAuthClientRequest_Apply(t *testing.T) {
	str := func(s string) *string { return &s }
	list := func(s ...string) *[]string { return &s }
	for _, c := range []struct {
		name string
		req  OAuthClientRequest
		ok   bool
		want func(*OAuthClient) bool
	}{
		{"confidential defaults", OAuthClientRequest{Name: str("A"), RedirectURIs: list("https://a.example/cb")}, true,
			func(c *OAuthClient) bool {
				return c.AuthMethod == AuthSecretBasic && len(c.Scopes) == 4 && len(c.GrantTypes) == 2
			}},
		{"public is none", OAuthClientRequest{Name: str("A"), Type: str(ClientPublic), RedirectURIs: list("http://127.0.0.1/cb")}, true,
			func(c *OAuthClient) bool { return c.AuthMethod == AuthNone }},
		{"no name", OAuthClientRequest{RedirectURIs: list("https://a.example/cb")}, false, nil},
		{"public with a secret method", OAuthClientRequest{Name: str("A"), Type: str(ClientPublic), AuthMethod: str(AuthSecretPost), RedirectURIs: list("https://a.example/cb")}, false, nil},
		{"public client credentials", OAuthClientRequest{Name: str("A"), Type: str(ClientPublic), GrantTypes: list(GrantClientCredentials)}, false, nil},
		{"code without redirect", OAuthClientRequest{Name: str("A")}, false, nil},
		{"machine client needs no redirect", OAuthClientRequest{Name: str("A"), GrantTypes: list(GrantClientCredentials)}, true, nil},
		{"unknown grant", OAuthClientRequest{Name: str("A"), GrantTypes: list("implicit")}, false, nil},
		{"unknown scope", OAuthClientRequest{Name: str("A"), GrantTypes: list(GrantClientCredentials), Scopes: list("admin")}, false, nil},
	} {
		cl := &OAuthClient{Type: ClientConfidential}
		err := c.req.apply(cl)
		if (err == nil) != c.ok || err == nil && c.want != nil && !c.want(cl) {
			t.Errorf("%s: err %v, client %+v", c.name, err, cl)
		}
	}
}

func TestNormalizeUserCode(t *testing.T) {
	for in, want := range map[string]string{
		"BCDF-GHJK": "BCDF-GHJK", "bcdfghjk": "BCDF-GHJK", " bcdf ghjk ": "BCDF-GHJK",
		"BCDF-GHJA": "", "BCDF-GHJ": "", "BCDF-GHJKL": "", "": "",
	} {
		if got := NormalizeUserCode(in); got != want {
			t.Errorf("NormalizeUserCode(%q) = %q, want %q", in, got, want)
		}
	}
}
