// Package hash hashes and verifies passwords with Argon2id on a pool of
// worker goroutines shared by all tenants, admitting a request only while
// its expected wait fits a latency budget.
package hash

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Params are Argon2id parameters.
type Params struct {
	MemoryKiB uint32 // m
	Time      uint32 // t (iterations)
	Threads   uint8  // p
	SaltLen   uint32 // bytes of random salt
	KeyLen    uint32 // bytes of derived key
}

// DefaultParams are OWASP's minimum recommendation for Argon2id: 19 MiB,
// two passes, one lane.
var DefaultParams = Params{MemoryKiB: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

func (p Params) withDefaults() Params {
	if p.MemoryKiB == 0 {
		p.MemoryKiB = DefaultParams.MemoryKiB
	}
	if p.Time == 0 {
		p.Time = DefaultParams.Time
	}
	if p.Threads == 0 {
		p.Threads = DefaultParams.Threads
	}
	if p.SaltLen == 0 {
		p.SaltLen = DefaultParams.SaltLen
	}
	if p.KeyLen == 0 {
		p.KeyLen = DefaultParams.KeyLen
	}
	return p
}

// Validate reports parameters Argon2id cannot use or that are unsafe.
func (p Params) Validate() error {
	switch {
	case p.Time < 1:
		return errors.New("argon2 time must be at least 1")
	case p.Threads < 1:
		return errors.New("argon2 threads must be at least 1")
	case p.MemoryKiB < 8*uint32(p.Threads):
		return errors.New("argon2 memory must be at least 8 KiB per thread")
	case p.SaltLen < 8 || p.KeyLen < 16:
		return errors.New("argon2 salt must be at least 8 bytes and the key 16")
	}
	return nil
}

var b64 = base64.RawStdEncoding

// hashArgon2id returns the PHC string of password under p with a fresh salt,
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, computing the key with run.
func hashArgon2id(run kdfFunc, password string, p Params) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	key, err := deriveKey(run, []byte(password), salt, p)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// deriveKey computes the Argon2id key of password and salt under p with run.
func deriveKey(run kdfFunc, password, salt []byte, p Params) ([]byte, error) {
	res, err := run(kdfRequest{Password: password, Salt: salt, Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads, KeyLen: p.KeyLen})
	if err == nil && res.Err != "" {
		err = fmt.Errorf("%w: %s", ErrWorkerFailed, res.Err) // a recovered panic
	}
	return res.Key, err
}

// ErrUnknownFormat: a stored hash is neither Argon2id PHC nor bcrypt.
var ErrUnknownFormat = errors.New("unknown password hash format")

// phc is a parsed Argon2id PHC string.
type phc struct {
	params Params
	salt   []byte
	key    []byte
}

// Bounds on stored parameters, so that a corrupt or hostile hash cannot make
// a worker allocate gigabytes or spin for minutes (a login of its account
// would hold a worker that long, and past workerCallTimeout take the worker
// process and the hashes of other logins down with it).
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 64
	// maxWork bounds memory × passes: 4 GiB of blocks to fill, a few
	// seconds of one core (OWASP's 19 MiB × 2 is 38 MiB).
	maxWork = 4 << 20 // KiB
	// maxBcryptCost bounds imported bcrypt hashes: cost 16 takes seconds,
	// each step doubles it (31 would take days). Common costs are 10–12.
	maxBcryptCost = 16
)

func parsePHC(s string) (phc, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return phc{}, ErrUnknownFormat
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return phc{}, fmt.Errorf("argon2 version %q: %w", parts[2], ErrUnknownFormat)
	}
	var out phc
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil {
			return phc{}, fmt.Errorf("argon2 parameter %q: %w", kv, ErrUnknownFormat)
		}
		switch k {
		case "m":
			out.params.MemoryKiB = uint32(n)
		case "t":
			out.params.Time = uint32(n)
		case "p":
			if n > 255 {
				return phc{}, fmt.Errorf("argon2 parallelism %d: %w", n, ErrUnknownFormat)
			}
			out.params.Threads = uint8(n)
		default:
			return phc{}, fmt.Errorf("argon2 parameter %q: %w", k, ErrUnknownFormat)
		}
	}
	var err error
	if out.salt, err = b64.DecodeString(parts[4]); err != nil {
		return phc{}, fmt.Errorf("argon2 salt: %w", ErrUnknownFormat)
	}
	if out.key, err = b64.DecodeString(parts[5]); err != nil {
		return phc{}, fmt.Errorf("argon2 hash: %w", ErrUnknownFormat)
	}
	out.params.SaltLen, out.params.KeyLen = uint32(len(out.salt)), uint32(len(out.key))
	if out.params.Validate() != nil || out.params.MemoryKiB > maxMemoryKiB || out.params.Time > maxTime ||
		uint64(out.params.MemoryKiB)*uint64(out.params.Time) > maxWork || len(out.key) > 1024 {
		return phc{}, fmt.Errorf("argon2 parameters out of range: %w", ErrUnknownFormat)
	}
	return out, nil
}

// verify checks password against encoded, which is Argon2id PHC or bcrypt,
// computing with run. stale reports that encoded does not use params (so a
// successful login should store a new hash).
func verify(run kdfFunc, encoded, password string, params Params) (ok, stale bool, err error) {
	if isBcrypt(encoded) {
		if cost, err := bcrypt.Cost([]byte(encoded)); err == nil && cost > maxBcryptCost {
			return false, false, fmt.Errorf("bcrypt cost %d above %d: %w", cost, maxBcryptCost, ErrUnknownFormat)
		}
		res, err := run(kdfRequest{Bcrypt: true, Hash: []byte(encoded), Password: []byte(password)})
		switch {
		case err != nil:
			return false, false, err
		case res.Err != "":
			return false, false, fmt.Errorf("bcrypt: %s: %w", res.Err, ErrUnknownFormat)
		}
		return res.Match, true, nil
	}
	h, err := parsePHC(encoded)
	if err != nil {
		return false, false, err
	}
	got, err := deriveKey(run, []byte(password), h.salt, h.params)
	if err != nil {
		return false, false, err
	}
	ok = subtle.ConstantTimeCompare(got, h.key) == 1
	stale = h.params != params
	return ok, stale, nil
}

// kdfRequest is one password computation: an Argon2id key, or a bcrypt
// comparison. It crosses the pipe to a worker process (gob).
type kdfRequest struct {
	ID                      uint64
	Bcrypt                  bool // compare Password with Hash; else derive an Argon2id key
	Password, Salt, Hash    []byte
	Time, MemoryKiB, KeyLen uint32
	Threads                 uint8
	// ctx: the caller's, when the pool knows it (not sent): a computation
	// whose worker process died is sent to a new one only while its caller
	// waits.
	ctx context.Context
}

// kdfResult answers a kdfRequest.
type kdfResult struct {
	ID    uint64
	Key   []byte // Argon2id
	Match bool   // bcrypt
	Err   string // bcrypt: a hash that cannot be compared; else a panic
}

// kdfFunc computes a request, in this process or in a worker process; its
// error means the computation could not be made (the worker died), never a
// wrong password.
type kdfFunc func(kdfRequest) (kdfResult, error)

// computeLocal computes r on the calling goroutine.
func computeLocal(r kdfRequest) kdfResult {
	out := kdfResult{ID: r.ID}
	if r.Bcrypt {
		err := bcrypt.CompareHashAndPassword(r.Hash, r.Password)
		switch {
		case err == nil:
			out.Match = true
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		default:
			out.Err = err.Error()
		}
		return out
	}
	out.Key = argon2.IDKey(r.Password, r.Salt, r.Time, r.MemoryKiB, r.Threads, r.KeyLen)
	return out
}

func localKDF(r kdfRequest) (kdfResult, error) { return computeLocal(r), nil }

func isBcrypt(s string) bool {
	return strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")
}
