package transfer

import (
	"errors"

	"github.com/keyshard/keyshard/engine"
)

// Errors callers test with errors.Is.
var (
	// ErrDamaged: an import file is truncated, altered or not an export;
	// the wrapping message says what is wrong. It wraps engine.ErrInvalid.
	ErrDamaged = &damagedError{}
	// errVerify: a copy does not hold what its source holds.
	errVerify = errors.New("copy differs from its source")
)

type damagedError struct{}

func (*damagedError) Error() string { return "import file is damaged or not a Keyshard export" }
func (*damagedError) Unwrap() error { return engine.ErrInvalid }
