package bench

import (
	"encoding/json"
	"strings"
)

// decodeSession reads the access and refresh tokens of a GoTrue session
// answer into out, setting only the fields whose keys the answer holds (as
// encoding/json does).
//
// A refresh's answer is ≈ 2 KB, most of it the user, and the generator
// reads two strings from it: encoding/json validated and walked all of it,
// 36 % of the generator's CPU under the refresh workload (≈ 11 µs per
// request, on the cores the measured server runs on). This scan walks the
// top-level object once and skips nested values by depth. On every body
// encoding/json decodes, it answers what encoding/json answers: anything it
// does not expect in the top-level object or a token (an escape, non-ASCII,
// a key that matches only without case) goes to encoding/json. It does not
// validate what it skips: an answer malformed inside a skipped value (the
// user) still yields its tokens, where encoding/json would fail.
func decodeSession(body []byte, out *sessionBody) error {
	if access, refresh, seen, ok := scanSession(body); ok {
		if seen&seenAccess != 0 {
			out.AccessToken = access
		}
		if seen&seenRefresh != 0 {
			out.RefreshToken = refresh
		}
		return nil
	}
	return json.Unmarshal(body, out)
}

const (
	seenAccess = 1 << iota
	seenRefresh
)

// scanSession returns the top-level "access_token" and "refresh_token"
// string values of body and which of them it holds; ok is false when it
// cannot be sure (the caller then decodes with encoding/json).
func scanSession(b []byte) (access, refresh string, seen int, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", "", 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return "", "", 0, skipSpace(b, i+1) == len(b)
	}
	for {
		key, next, ok := plainString(b, i)
		if !ok {
			return "", "", 0, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return "", "", 0, false
		}
		i = skipSpace(b, i+1)
		var end int
		switch key {
		case "access_token", "refresh_token":
			v, e, ok := plainString(b, i)
			if !ok {
				return "", "", 0, false
			}
			if key == "access_token" {
				access, seen = v, seen|seenAccess
			} else {
				refresh, seen = v, seen|seenRefresh
			}
			end = e
		default:
			// encoding/json matches keys without regard to case.
			if strings.EqualFold(key, "access_token") || strings.EqualFold(key, "refresh_token") {
				return "", "", 0, false
			}
			e, ok := skipValue(b, i)
			if !ok {
				return "", "", 0, false
			}
			end = e
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return "", "", 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return access, refresh, seen, skipSpace(b, i+1) == len(b)
		default:
			return "", "", 0, false
		}
	}
}

// plainString reads the JSON string at b[i] that is printable ASCII with no
// escape (as tokens are; encoding/json rewrites invalid UTF-8), and returns
// it and the index past its closing quote.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", 0, false
		}
	}
	return "", 0, false
}

// skipValue returns the index past the JSON value at b[i]: a string, an
// object or array (skipped by depth, strings inside honoured), or a literal
// or number (up to the next delimiter; encoding/json validates bodies this
// scan gives up on, and a literal's shape does not change the tokens).
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, ok := skipString(b, j)
				if !ok {
					return 0, false
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) && !delimiter(b[j]) {
			j++
		}
		return j, j > i
	}
}

// skipString returns the index past the JSON string at b[i], escapes
// included.
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

func delimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}
