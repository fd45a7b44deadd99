package bench

import (
	"encoding/json"
	"testing"
)

var sessionBodies = []string{
	`{"access_token":"a.b.c","token_type":"bearer","expires_in":3600,"expires_at":1765000000,"refresh_token":"0006abc","user":{"id":"u","app_metadata":{"provider":"email","providers":["email"]},"user_metadata":{"access_token":"nested","x":[1,{"refresh_token":"deeper"}]},"identities":[]}}`,
	`{"user":{"access_token":"nested"},"refresh_token":"r","access_token":"a"}`,
	` { "access_token" : "a" , "refresh_token" : "r" } `,
	`{"access_token":"a\u0041","refresh_token":"r"}`, // escaped: encoding/json decides
	`{"access_token":"a","refresh_token":"r","note":"a \"quoted\" } ] {"}`,
	`{"Access_Token":"x","refresh_token":"r"}`, // keys match without case in encoding/json
	`{"access_token":"a","access_token":"b"}`,  // the last wins
	`{"access_token":null,"refresh_token":"r"}`,
	`{"access_token":"a","n":-1.5e3,"t":true,"f":false,"z":null}`,
	`{}`,
	`{"access_token":"a"`,
	`{"access_token":"a"} x`,
	`[]`,
	``,
}

// TestDecodeSession_AsEncodingJSON: on every body encoding/json decodes,
// decodeSession answers what it answers, nested and escaped keys included.
func TestDecodeSession_AsEncodingJSON(t *testing.T) {
	fast := 0
	for _, body := range sessionBodies {
		var want sessionBody
		wantErr := json.Unmarshal([]byte(body), &want)
		var got sessionBody
		err := decodeSession([]byte(body), &got)
		if (err != nil) != (wantErr != nil) || got != want {
			t.Errorf("%s:\n got %+v, %v\nwant %+v, %v", body, got, err, want, wantErr)
		}
		if _, _, _, ok := scanSession([]byte(body)); ok {
			fast++
		}
	}
	// The scan itself, not its fallback, answers the plain shapes: the
	// first three bodies, the one with a quoted brace, and the last-wins one.
	if fast < 6 {
		t.Errorf("the scan answered %d bodies itself, want at least 6", fast)
	}
}

// TestDecodeSession_KeepsAbsentFields: like encoding/json, a field whose
// key the answer lacks keeps what out held.
func TestDecodeSession_KeepsAbsentFields(t *testing.T) {
	out := sessionBody{AccessToken: "old-a", RefreshToken: "old-r"}
	if err := decodeSession([]byte(`{"access_token":"a"}`), &out); err != nil || out != (sessionBody{AccessToken: "a", RefreshToken: "old-r"}) {
		t.Fatalf("got %+v, %v", out, err)
	}
}

func FuzzDecodeSession(f *testing.F) {
	for _, b := range sessionBodies {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		want := sessionBody{AccessToken: "before-a", RefreshToken: "before-r"}
		if json.Unmarshal([]byte(body), &want) != nil {
			return // encoding/json refuses it; the scan may give up or not
		}
		got := sessionBody{AccessToken: "before-a", RefreshToken: "before-r"}
		if err := decodeSession([]byte(body), &got); err != nil || got != want {
			t.Fatalf("%q: got %+v, %v; want %+v", body, got, err, want)
		}
	})
}

func BenchmarkDecodeSession(b *testing.B) {
	body := []byte(sessionBodies[0])
	b.Run("scan", func(b *testing.B) {
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
