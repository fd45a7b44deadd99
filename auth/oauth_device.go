package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// UserCodeAlphabet is RFC 8628 §6.1's example: 20 consonants, no vowels
// (no words) and no look-alike characters; 8 of them are 34.5 bits.
const UserCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

// NormalizeUserCode brings a typed user code to its stored form: upper
// case, without separators, then XXXX-XXXX. It returns "" for anything
// that cannot be a user code.
func NormalizeUserCode(in string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(in) {
		switch {
		case r == '-' || r == ' ':
		case strings.ContainsRune(UserCodeAlphabet, r):
			b.WriteRune(r)
		default:
			return ""
		}
	}
	s := b.String()
	if len(s) != 8 {
		return ""
	}
	return s[:4] + "-" + s[4:]
}

func errDeviceCodeUnknown() *engine.Error {
	return newError(engine.KindNotFound, "oauth_user_code_not_found", "That code is unknown or expired. Check it and try again.")
}

// CreateDeviceCode stores a device authorization: the device code's hash
// and the user code.
func (s *Service) CreateDeviceCode(ctx context.Context, t Tenant, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`DELETE FROM oauth_device_codes WHERE expires_at < ?`, now.Add(-DeviceCodeTTL).UnixMicro()); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO oauth_device_codes (device_code_hash, user_code, client_id, scopes, state, amr, interval_s, expires_at, created_at)
			VALUES (?, ?, ?, ?, 'pending', '[]', ?, ?, ?)`, hashToken(deviceCode), userCode, clientID, mustJSON(scopes), DevicePollSeconds,
			expires.UnixMicro(), now.UnixMicro())
		return err
	})
	return writeError(err, engine.KindRateLimited)
}

const deviceColumns = `client_id, user_code, scopes, state, COALESCE(user_id, ''), COALESCE(auth_time, 0), amr, expires_at`

func scanDevice(row engine.Row) (*DeviceCode, error) {
	var d DeviceCode
	var scopes, amr string
	var authTime, expires int64
	if err := row.Scan(&d.ClientID, &d.UserCode, &scopes, &d.State, &d.UserID, &authTime, &amr, &expires); err != nil {
		return nil, err
	}
	d.Scopes, d.AMR = jsonList(scopes), jsonList(amr)
	if authTime != 0 {
		d.AuthTime = time.UnixMicro(authTime).UTC()
	}
	d.Expires = time.UnixMicro(expires).UTC()
	return &d, nil
}

// PollDeviceCode answers a device's poll: its state, and SlowDown when it
// polled sooner than its interval after the last poll (the interval then
// grows by 5 seconds, RFC 8628 §3.5).
func (s *Service) PollDeviceCode(ctx context.Context, t Tenant, clientID, deviceCode string) (*DeviceCode, error) {
	if deviceCode == "" || len(deviceCode) > 256 {
		return nil, errInvalidGrant("invalid device code")
	}
	h := hashToken(deviceCode)
	var d *DeviceCode
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		now := s.now().UnixMicro()
		var err error
		d, err = scanDevice(tx.QueryRow(`SELECT `+deviceColumns+` FROM oauth_device_codes WHERE device_code_hash = ?`, h))
		if errors.Is(err, engine.ErrNoRows) || err == nil && d.ClientID != clientID {
			d = nil
			return nil
		}
		if err != nil {
			return err
		}
		var interval int64
		var last *int64
		if err := tx.QueryRow(`SELECT interval_s, last_poll_at FROM oauth_device_codes WHERE device_code_hash = ?`, h).Scan(&interval, &last); err != nil {
			return err
		}
		if d.State == "pending" && last != nil && now-*last < interval*int64(time.Second/time.Microsecond) {
			d.SlowDown = true
			interval += 5
		}
		_, err = tx.Exec(`UPDATE oauth_device_codes SET last_poll_at = ?, interval_s = ? WHERE device_code_hash = ?`, now, interval, h)
		return err
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	if d == nil {
		return nil, errInvalidGrant("invalid device code")
	}
	return d, nil
}

// DeviceCodeByUserCode returns the pending, unexpired device
// authorization of a user code as typed.
func (s *Service) DeviceCodeByUserCode(ctx context.Context, t Tenant, typed string) (*DeviceCode, error) {
	code := NormalizeUserCode(typed)
	if code == "" {
		return nil, errDeviceCodeUnknown()
	}
	var d *DeviceCode
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		d, err = scanDevice(q.QueryRow(`SELECT `+deviceColumns+` FROM oauth_device_codes WHERE user_code = ?`, code))
		if errors.Is(err, engine.ErrNoRows) || err == nil && (d.State != "pending" || !d.Expires.After(s.now())) {
			return errDeviceCodeUnknown()
		}
		return err
	})
	return d, err
}

// DecideDeviceCode approves or denies a pending device authorization for
// the signed-in user.
func (s *Service) DecideDeviceCode(ctx context.Context, t Tenant, c Client, userCode string, bs *BrowserSession, approve bool) error {
	code := NormalizeUserCode(userCode)
	if code == "" {
		return errDeviceCodeUnknown()
	}
	now := s.now().UTC()
	state, typ := "denied", event.OAuthDeviceDenied
	if approve {
		state, typ = "approved", event.OAuthDeviceApproved
	}
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var clientID string
		err := tx.QueryRow(`SELECT client_id FROM oauth_device_codes WHERE user_code = ? AND state = 'pending' AND expires_at > ?`,
			code, now.UnixMicro()).Scan(&clientID)
		if errors.Is(err, engine.ErrNoRows) {
			return errDeviceCodeUnknown()
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE oauth_device_codes SET state = ?, user_id = ?, auth_time = ?, amr = ? WHERE user_code = ? AND state = 'pending'`,
			state, bs.User.ID, bs.AuthTime.UnixMicro(), mustJSON(bs.AMR), code); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: typ, Actor: event.User(bs.User.ID, bs.User.Email), IP: c.IP,
			Data: map[string]any{"client_id": clientID}, At: now})
	})
	return writeError(err, engine.KindUnavailable)
}
