package auth

import (
	"regexp"
	"strings"
)

// NormalizeEmail trims and lower-cases an email address. Valid addresses
// are ASCII (see validateEmail), whose only normal form is themselves: two
// byte strings that differ are two addresses.
func NormalizeEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

// emailFormat is HTML's "valid e-mail address", the pattern GoTrue checks
// (with the checkmail package): ASCII letters, digits and
// .!#$%&'*+/=?^_`{|}~- before the @, then dot-separated labels of letters,
// digits and inner hyphens, none empty. Control, bidi and zero-width
// characters, invalid UTF-8, a second @ and an empty label (a..com) fail it.
var emailFormat = regexp.MustCompile("^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")

// validateEmail checks a normalized address as GoTrue does, with GoTrue's
// messages, and one rule more: the domain has a dot (GoTrue takes a@b,
// which no mail reaches).
func validateEmail(e string) error {
	switch {
	case e == "":
		return validationf("An email address is required")
	case len(e) > 255:
		return validationf("An email address is too long")
	case !emailFormat.MatchString(e) || !strings.Contains(e[strings.LastIndexByte(e, '@')+1:], "."):
		return validationf("Unable to validate email address: invalid format")
	}
	return nil
}
