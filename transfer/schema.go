// Package transfer takes a tenant's data out (export), brings it in
// (import) and moves it between data directories and backends while the
// server keeps serving it. It reads and writes rows only through
// engine.Shard / engine.Querier and engine.Storage, so it works the same on
// every backend; the SQLite file format is written with the SQLite driver.
package transfer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SchemaVersion is the shard schema version the table list below describes.
// A migration that changes a table must change Tables and this constant;
// TestTables_MatchSchema fails until it does. The fence table (0008) is
// not tenant data: it is never copied, and an import resets it.
const SchemaVersion = 8

// NotCopied are the shard's tables that Tables leaves out on purpose.
var NotCopied = []string{"fence"}

// Kind is a column's portable type.
type Kind byte

// Column kinds. Times are int64 Unix microseconds; flags are ints 0/1.
const (
	KindInt  Kind = 'i'
	KindText Kind = 't'
	KindBlob Kind = 'b'
)

// Column is one column of a shard table.
type Column struct {
	Name string
	Kind Kind
	// Secret columns are exported only with include-secrets; without it
	// they are written as their empty value.
	Secret bool
}

// Table is one shard table, with its primary key columns first in Columns.
type Table struct {
	Name    string
	Columns []Column
	KeyLen  int // the first KeyLen columns are the primary key
	// Secret tables are exported only with include-secrets.
	Secret bool
	// AutoID: the key is an integer the database assigns (AUTOINCREMENT).
	AutoID bool
}

// Tables lists the shard tables in foreign-key order: a table comes after
// every table it references.
var Tables = []Table{
	{Name: "users", KeyLen: 1, Columns: []Column{
		{"id", KindText, false}, {"aud", KindText, false}, {"role", KindText, false},
		{"email", KindText, false}, {"phone", KindText, false}, {"encrypted_password", KindText, true},
		{"email_confirmed_at", KindInt, false}, {"phone_confirmed_at", KindInt, false},
		{"last_sign_in_at", KindInt, false}, {"last_seen_at", KindInt, false},
		{"raw_app_meta_data", KindText, false}, {"raw_user_meta_data", KindText, false},
		{"banned_until", KindInt, false}, {"is_anonymous", KindInt, false},
		{"created_at", KindInt, false}, {"updated_at", KindInt, false}, {"deleted_at", KindInt, false},
		{"confirmation_sent_at", KindInt, false}, {"recovery_sent_at", KindInt, false}, {"invited_at", KindInt, false},
		{"email_change", KindText, false}, {"email_change_sent_at", KindInt, false},
		{"email_change_confirm_status", KindInt, false}, {"reauthentication_sent_at", KindInt, false},
		{"email_confirmed_by", KindText, false},
	}},
	{Name: "identities", KeyLen: 1, Columns: []Column{
		{"id", KindText, false}, {"user_id", KindText, false}, {"provider", KindText, false},
		{"provider_id", KindText, false}, {"identity_data", KindText, false}, {"email", KindText, false},
		{"last_sign_in_at", KindInt, false}, {"created_at", KindInt, false}, {"updated_at", KindInt, false},
	}},
	{Name: "sessions", KeyLen: 1, Columns: []Column{
		{"id", KindText, false}, {"user_id", KindText, false}, {"aal", KindText, false},
		{"user_agent", KindText, false}, {"ip", KindText, false}, {"not_after", KindInt, false},
		{"refreshed_at", KindInt, false}, {"created_at", KindInt, false}, {"updated_at", KindInt, false},
		{"amr", KindText, false},
	}},
	{Name: "refresh_tokens", KeyLen: 1, Secret: true, AutoID: true, Columns: []Column{
		{"id", KindInt, false}, {"token_hash", KindText, false}, {"user_id", KindText, false},
		{"session_id", KindText, false}, {"parent", KindText, false}, {"revoked", KindInt, false},
		{"created_at", KindInt, false}, {"updated_at", KindInt, false},
	}},
	// Mailed one-time tokens and PKCE flow states are live credentials
	// (stored hashed) that only a restore carries.
	{Name: "one_time_tokens", KeyLen: 1, Secret: true, Columns: []Column{
		{"id", KindText, false}, {"user_id", KindText, false}, {"kind", KindText, false},
		{"token_hash", KindText, false}, {"code_hash", KindText, false}, {"relates_to", KindText, false}, {"flow_state_id", KindText, false},
		{"created_at", KindInt, false}, {"expires_at", KindInt, false},
	}},
	{Name: "flow_states", KeyLen: 1, Secret: true, Columns: []Column{
		{"id", KindText, false}, {"user_id", KindText, false}, {"code_challenge", KindText, false},
		{"code_challenge_method", KindText, false}, {"authentication_method", KindText, false},
		{"auth_code_hash", KindText, false}, {"auth_code_issued_at", KindInt, false},
		{"created_at", KindInt, false}, {"expires_at", KindInt, false},
	}},
	// Upstream identity providers: the client secret is sealed under the
	// master key for this tenant; login states in flight are live.
	{Name: "identity_providers", KeyLen: 1, Columns: []Column{
		{"id", KindText, false}, {"kind", KindText, false}, {"issuer", KindText, false}, {"client_id", KindText, false},
		{"client_secret", KindBlob, true}, {"scopes", KindText, false}, {"authorization_url", KindText, false},
		{"token_url", KindText, false}, {"userinfo_url", KindText, false}, {"mapping", KindText, false},
		{"enabled", KindInt, false}, {"created_at", KindInt, false}, {"updated_at", KindInt, false},
	}},
	{Name: "upstream_states", KeyLen: 1, Secret: true, Columns: []Column{
		{"id_hash", KindText, false}, {"provider_id", KindText, false}, {"redirect_to", KindText, false},
		{"code_verifier", KindText, false}, {"nonce", KindText, false}, {"flow_state_id", KindText, false},
		{"link_user_id", KindText, false}, {"expires_at", KindInt, false}, {"created_at", KindInt, false},
	}},
	// OAuth: a client's secret hash is a credential; the browser cookies,
	// pending authorization requests and device codes are live credentials
	// (stored hashed) that only a restore carries.
	{Name: "oauth_clients", KeyLen: 1, Columns: []Column{
		{"id", KindText, false}, {"name", KindText, false}, {"client_type", KindText, false},
		{"token_endpoint_auth_method", KindText, false}, {"secret_hash", KindText, true},
		{"redirect_uris", KindText, false}, {"post_logout_redirect_uris", KindText, false},
		{"grant_types", KindText, false}, {"scopes", KindText, false}, {"skip_consent", KindInt, false},
		{"logo_uri", KindText, false}, {"client_uri", KindText, false}, {"registration_type", KindText, false},
		{"created_at", KindInt, false}, {"updated_at", KindInt, false},
	}},
	{Name: "oauth_consents", KeyLen: 2, Columns: []Column{
		{"user_id", KindText, false}, {"client_id", KindText, false}, {"scopes", KindText, false},
		{"created_at", KindInt, false}, {"updated_at", KindInt, false},
	}},
	{Name: "oauth_grants", KeyLen: 1, Columns: []Column{
		{"session_id", KindText, false}, {"client_id", KindText, false}, {"scopes", KindText, false},
		{"auth_time", KindInt, false}, {"amr", KindText, false}, {"created_at", KindInt, false},
	}},
	{Name: "oauth_browser_sessions", KeyLen: 1, Secret: true, Columns: []Column{
		{"token_hash", KindText, false}, {"session_id", KindText, false}, {"expires_at", KindInt, false},
		{"created_at", KindInt, false},
	}},
	{Name: "oauth_auth_requests", KeyLen: 1, Secret: true, Columns: []Column{
		{"id", KindText, false}, {"client_id", KindText, false}, {"request", KindText, false},
		{"user_id", KindText, false}, {"auth_time", KindInt, false}, {"amr", KindText, false},
		{"done", KindInt, false}, {"code_hash", KindText, false}, {"session_id", KindText, false},
		{"used_at", KindInt, false}, {"expires_at", KindInt, false}, {"created_at", KindInt, false},
	}},
	{Name: "oauth_device_codes", KeyLen: 1, Secret: true, Columns: []Column{
		{"device_code_hash", KindText, false}, {"user_code", KindText, false}, {"client_id", KindText, false},
		{"scopes", KindText, false}, {"state", KindText, false}, {"user_id", KindText, false},
		{"auth_time", KindInt, false}, {"amr", KindText, false}, {"interval_s", KindInt, false},
		{"last_poll_at", KindInt, false}, {"expires_at", KindInt, false}, {"created_at", KindInt, false},
	}},
	{Name: "oauth_revoked_tokens", KeyLen: 1, Columns: []Column{
		{"jti", KindText, false}, {"expires_at", KindInt, false},
	}},
	// A webhook endpoint's signing secrets are credentials; its delivery
	// log carries payloads (user emails), kept like the audit log.
	{Name: "webhook_endpoints", KeyLen: 1, Columns: []Column{
		{"id", KindText, false}, {"url", KindText, false}, {"events", KindText, false}, {"enabled", KindInt, false},
		{"secret", KindText, true}, {"previous_secret", KindText, true}, {"previous_until", KindInt, false},
		{"disabled_reason", KindText, false}, {"created_at", KindInt, false}, {"updated_at", KindInt, false},
	}},
	{Name: "webhook_deliveries", KeyLen: 1, AutoID: true, Columns: []Column{
		{"id", KindInt, false}, {"endpoint_id", KindText, false}, {"event_id", KindText, false}, {"event_type", KindText, false},
		{"attempt", KindInt, false}, {"status", KindInt, false}, {"latency_ms", KindInt, false}, {"error", KindText, false},
		{"payload", KindText, false}, {"created_at", KindInt, false},
	}},
	{Name: "audit_log", KeyLen: 1, AutoID: true, Columns: []Column{
		{"id", KindInt, false}, {"action", KindText, false}, {"actor_id", KindText, false},
		{"actor_email", KindText, false}, {"ip", KindText, false}, {"payload", KindText, false},
		{"created_at", KindInt, false},
	}},
	// The outbox is secret: a mail's row carries its one-time link or code.
	{Name: "outbox", KeyLen: 1, Secret: true, AutoID: true, Columns: []Column{
		{"id", KindInt, false}, {"event_id", KindText, false}, {"topic", KindText, false},
		{"event_type", KindText, false}, {"payload", KindText, false}, {"attempts", KindInt, false},
		{"next_at", KindInt, false}, {"last_error", KindText, false}, {"created_at", KindInt, false},
	}},
	{Name: "signing_keys", KeyLen: 1, Secret: true, Columns: []Column{
		{"kid", KindText, false}, {"algorithm", KindText, false}, {"public_key", KindBlob, false},
		{"private_key", KindBlob, false}, {"active", KindInt, false}, {"created_at", KindInt, false},
		{"retired_at", KindInt, false},
	}},
	{Name: "settings", KeyLen: 1, Columns: []Column{
		{"key", KindText, false}, {"value", KindText, false},
	}},
}

// secretSettings are settings rows exported only with include-secrets.
var secretSettings = map[string]bool{"service_key_sha256": true, "smtp_pass": true}

// TableByName returns the table called name.
func TableByName(name string) (*Table, bool) {
	for i := range Tables {
		if Tables[i].Name == name {
			return &Tables[i], true
		}
	}
	return nil, false
}

// quote quotes an identifier for every backend (MySQL runs with
// ANSI_QUOTES): "key" is a reserved word in MySQL.
func quote(name string) string { return `"` + name + `"` }

func (t *Table) columnList() string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = quote(c.Name)
	}
	return strings.Join(names, ", ")
}

func (t *Table) selectSQL(ordered bool) string {
	q := "SELECT " + t.columnList() + " FROM " + quote(t.Name)
	if ordered {
		q += " ORDER BY " + t.keyList()
	}
	return q
}

func (t *Table) keyList() string {
	names := make([]string, t.KeyLen)
	for i := range names {
		names[i] = quote(t.Columns[i].Name)
	}
	return strings.Join(names, ", ")
}

func (t *Table) keyWhere() string {
	parts := make([]string, t.KeyLen)
	for i := range parts {
		parts[i] = quote(t.Columns[i].Name) + " = ?"
	}
	return strings.Join(parts, " AND ")
}

func (t *Table) insertSQL() string {
	return "INSERT INTO " + quote(t.Name) + " (" + t.columnList() + ") VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", len(t.Columns)), ", ") + ")"
}

// insertManySQL is an INSERT of n rows.
func (t *Table) insertManySQL(n int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(t.Columns)), ", ") + ")"
	return "INSERT INTO " + quote(t.Name) + " (" + t.columnList() + ") VALUES " +
		strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
}

func (t *Table) updateSQL() string {
	sets := make([]string, 0, len(t.Columns)-t.KeyLen)
	for _, c := range t.Columns[t.KeyLen:] {
		sets = append(sets, quote(c.Name)+" = ?")
	}
	return "UPDATE " + quote(t.Name) + " SET " + strings.Join(sets, ", ") + " WHERE " + t.keyWhere()
}

func (t *Table) deleteSQL() string {
	return "DELETE FROM " + quote(t.Name) + " WHERE " + t.keyWhere()
}

// Row is one row's values in Table.Columns order: nil, int64, string or
// []byte.
type Row []any

// normalize turns a scanned value into the column kind's Go type, so that
// rows read from any backend compare and hash alike.
func normalize(c Column, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch c.Kind {
	case KindInt:
		switch x := v.(type) {
		case int64:
			return x, nil
		case int:
			return int64(x), nil
		case int32:
			return int64(x), nil
		case bool:
			if x {
				return int64(1), nil
			}
			return int64(0), nil
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
				return int64(x), nil
			}
		case []byte:
			return strconv.ParseInt(string(x), 10, 64)
		case string:
			return strconv.ParseInt(x, 10, 64)
		}
	case KindText:
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		}
	case KindBlob:
		switch x := v.(type) {
		case []byte:
			return append([]byte(nil), x...), nil
		case string:
			return []byte(x), nil
		}
	}
	return nil, fmt.Errorf("column %s: value of type %T is not %s", c.Name, v, c.Kind)
}

func (k Kind) String() string {
	switch k {
	case KindInt:
		return "integer"
	case KindText:
		return "text"
	case KindBlob:
		return "blob"
	}
	return "unknown"
}

// appendValue appends the canonical encoding of v: a tag byte, then the
// value (8 bytes big-endian for an int, a length-prefixed byte string for
// text and blobs).
func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 0)
	case int64:
		b = append(b, 1)
		return binary.BigEndian.AppendUint64(b, uint64(x))
	case string:
		b = append(b, 2)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...)
	case []byte:
		b = append(b, 3)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...)
	}
	panic(fmt.Sprintf("transfer: unnormalized value %T", v))
}

// rowHash is the SHA-256 of a row's canonical encoding, cut to 16 bytes.
type rowHash [16]byte

func hashRow(buf []byte, r Row) (rowHash, []byte) {
	buf = buf[:0]
	for _, v := range r {
		buf = appendValue(buf, v)
	}
	sum := sha256.Sum256(buf)
	var h rowHash
	copy(h[:], sum[:16])
	return h, buf
}

// keyOf is a map key for a row's primary key.
func (t *Table) keyOf(r Row) string {
	var b []byte
	for _, v := range r[:t.KeyLen] {
		b = appendValue(b, v)
	}
	return string(b)
}

// Digest is a table's row count and an order-independent checksum of its
// rows: the sums, modulo 2^64, of the two 8-byte halves of every row's
// hash. Rows read in any order from any backend give the same digest.
type Digest struct {
	Rows int64  `json:"rows"`
	Sum  string `json:"checksum"`
}

// digester accumulates a Digest.
type digester struct {
	n      int64
	hi, lo uint64
}

func (d *digester) add(h rowHash) {
	d.n++
	d.hi += binary.BigEndian.Uint64(h[:8])
	d.lo += binary.BigEndian.Uint64(h[8:])
}

func (d *digester) remove(h rowHash) {
	d.n--
	d.hi -= binary.BigEndian.Uint64(h[:8])
	d.lo -= binary.BigEndian.Uint64(h[8:])
}

func (d *digester) digest() Digest {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], d.hi)
	binary.BigEndian.PutUint64(b[8:], d.lo)
	return Digest{Rows: d.n, Sum: hex.EncodeToString(b[:])}
}

// decodeValue decodes one value written by appendValue and returns it with
// the bytes it used.
func decodeValue(b []byte) (any, int) {
	switch b[0] {
	case 1:
		return int64(binary.BigEndian.Uint64(b[1:9])), 9
	case 2, 3:
		l, n := binary.Uvarint(b[1:])
		s := b[1+n : 1+n+int(l)]
		if b[0] == 2 {
			return string(s), 1 + n + int(l)
		}
		return append([]byte(nil), s...), 1 + n + int(l)
	}
	return nil, 1
}
