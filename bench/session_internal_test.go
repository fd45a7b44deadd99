package bench

import (
	"encoding/json"
	"testing"
)

// A refresh's answer as the server writes it (shortened user).
const sessionAnswer = `{"access_token":"eyJh.eyJz.c2ln","token_type":"bearer","expires_in":3600,"expires_at":1765000000,"refresh_token":"0006abcDEF","user":{"id":"u","app_metadata":{"provider":"email","providers":["email"]},"user_metadata":{"access_token":"nested","x":[1,{"refresh_token":"deeper"}]},"identities":[]}}`

// TestDecodeSession: the top-level tokens, not keys of the same name
// nested in the user; escapes decoded; a key the answer lacks, or holds as
// no string, leaves the field as it was; a body that is not JSON is an
// error.
func TestDecodeSession(t *testing.T) {
	var want sessionBody
	if err := json.Unmarshal([]byte(sessionAnswer), &want); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		body    string
		want    sessionBody
		wantErr bool
	}{
		{body: sessionAnswer, want: want},
		{body: `{"user":{"access_token":"nested"},"refresh_token":"r","access_token":"a"}`, want: sessionBody{"a", "r"}},
		{body: ` { "access_token" : "a\u0041\"" , "note":"} ] {\"", "refresh_token" : "r" } `, want: sessionBody{`aA"`, "r"}},
		{body: `{"access_token":"a"}`, want: sessionBody{"a", "old-r"}},
		{body: `{"access_token":null,"refresh_token":7}`, want: sessionBody{"old-a", "old-r"}},
		{body: `{"access_token":"a"`, want: sessionBody{"old-a", "old-r"}, wantErr: true},
		{body: `{"access_token":"a"} x`, want: sessionBody{"old-a", "old-r"}, wantErr: true},
		{body: ``, want: sessionBody{"old-a", "old-r"}, wantErr: true},
	} {
		got := sessionBody{AccessToken: "old-a", RefreshToken: "old-r"}
		err := decodeSession([]byte(c.body), &got)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("%s:\n got %+v, %v\nwant %+v, error %v", c.body, got, err, c.want, c.wantErr)
		}
	}
}

func BenchmarkDecodeSession(b *testing.B) {
	body := []byte(sessionAnswer)
	b.Run("gjson", func(b *testing.B) {
		for b.Loop() {
			var sb sessionBody
			if err := decodeSession(body, &sb); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			var sb sessionBody
			if err := json.Unmarshal(body, &sb); err != nil {
				b.Fatal(err)
			}
		}
	})
}
