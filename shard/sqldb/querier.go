package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// execer is what *sql.Conn and *sql.Tx have in common.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// querier implements engine.Querier with the scanning rules of the SQLite
// querier, so that the same code runs on every backend: NULL scans as the
// zero value into *string, *int64, *bool..., as nil into pointers to them.
type querier struct {
	x execer
	d *Dialect
}

func (q querier) prepare(query string, args []any) (string, []any, error) {
	if q.x == nil {
		return "", nil, errors.New("sqldb: connection not acquired")
	}
	out := make([]any, len(args))
	for i, a := range args {
		v, err := argValue(a)
		if err != nil {
			return "", nil, fmt.Errorf("sqldb: argument %d: %w", i+1, err)
		}
		out[i] = v
	}
	return q.d.rebind(query), out, nil
}

func argValue(a any) (any, error) {
	switch v := a.(type) {
	case nil, string, int64, float64:
		return v, nil
	case int:
		return int64(v), nil
	case bool: // flags are integer columns on every backend
		if v {
			return int64(1), nil
		}
		return int64(0), nil
	case []byte:
		if v == nil {
			return nil, nil
		}
		return v, nil
	case *string:
		if v == nil {
			return nil, nil
		}
		return *v, nil
	case *int64:
		if v == nil {
			return nil, nil
		}
		return *v, nil
	case driver.Valuer:
		dv, err := v.Value()
		if err != nil {
			return nil, err
		}
		if _, again := dv.(driver.Valuer); again {
			return nil, errors.New("valuer returned a valuer")
		}
		return argValue(dv)
	case time.Time:
		return v.UnixMicro(), nil
	}
	return nil, fmt.Errorf("unsupported argument type %T", a)
}

// Exec runs a statement and returns the rows it changed.
func (q querier) Exec(query string, args ...any) (int64, error) {
	query, args, err := q.prepare(query, args)
	if err != nil {
		return 0, err
	}
	res, err := q.x.ExecContext(context.Background(), query, args...)
	if err != nil {
		return 0, q.d.Translate(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, q.d.Translate(err)
	}
	return n, nil
}

// Query runs a statement returning rows.
func (q querier) Query(query string, args ...any) (engine.Rows, error) {
	query, args, err := q.prepare(query, args)
	if err != nil {
		return nil, err
	}
	rs, err := q.x.QueryContext(context.Background(), query, args...)
	if err != nil {
		return nil, q.d.Translate(err)
	}
	return &rows{rs: rs, d: q.d}, nil
}

// QueryRow runs a statement and scans its first row.
func (q querier) QueryRow(query string, args ...any) engine.Row {
	r, err := q.Query(query, args...)
	if err != nil {
		return errRow{err}
	}
	return oneRow{r.(*rows)}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type oneRow struct{ r *rows }

func (o oneRow) Scan(dest ...any) error {
	defer o.r.Close()
	if !o.r.Next() {
		if err := o.r.Err(); err != nil {
			return err
		}
		return engine.ErrNoRows
	}
	if err := o.r.Scan(dest...); err != nil {
		return err
	}
	return o.r.Close()
}

type rows struct {
	rs   *sql.Rows
	d    *Dialect
	vals []any
	ptrs []any
}

func (r *rows) Next() bool { return r.rs.Next() }
func (r *rows) Err() error { return r.d.Translate(r.rs.Err()) }
func (r *rows) Close() error {
	return r.d.Translate(r.rs.Close())
}

func (r *rows) Scan(dest ...any) error {
	if len(r.vals) != len(dest) {
		r.vals = make([]any, len(dest))
		r.ptrs = make([]any, len(dest))
		for i := range r.vals {
			r.ptrs[i] = &r.vals[i]
		}
	}
	if err := r.rs.Scan(r.ptrs...); err != nil {
		return r.d.Translate(err)
	}
	for i, d := range dest {
		if err := assign(d, r.vals[i]); err != nil {
			return fmt.Errorf("sqldb: column %d: %w", i, err)
		}
	}
	return nil
}

// assign stores a driver value into a scan destination with SQLite's
// leniency (text and integers convert both ways; NULL is the zero value).
func assign(d any, v any) error {
	switch p := d.(type) {
	case *string:
		*p = asString(v)
		return nil
	case *int64:
		n, err := asInt(v)
		*p = n
		return err
	case *int:
		n, err := asInt(v)
		*p = int(n)
		return err
	case *bool:
		n, err := asInt(v)
		*p = n != 0
		return err
	case *float64:
		f, err := asFloat(v)
		*p = f
		return err
	case *[]byte:
		switch b := v.(type) {
		case nil:
			*p = nil
		case []byte:
			*p = append([]byte(nil), b...)
		default:
			*p = []byte(asString(v))
		}
		return nil
	case **string:
		if v == nil {
			*p = nil
		} else {
			s := asString(v)
			*p = &s
		}
		return nil
	case **int64:
		if v == nil {
			*p = nil
			return nil
		}
		n, err := asInt(v)
		*p = &n
		return err
	case *any:
		if b, ok := v.([]byte); ok {
			v = append([]byte(nil), b...)
		}
		*p = v
		return nil
	case sql.Scanner:
		return p.Scan(v)
	}
	if rv := reflect.ValueOf(d); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		return fmt.Errorf("unsupported scan destination %T", d)
	}
	return errors.New("scan destination is not a non-nil pointer")
}

func asString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		if x {
			return "1"
		}
		return "0"
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

func asInt(v any) (int64, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case int64:
		return x, nil
	case int32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%d overflows int64", x)
		}
		return int64(x), nil
	case float64:
		return int64(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case string:
		return strconv.ParseInt(x, 10, 64)
	case []byte:
		return strconv.ParseInt(string(x), 10, 64)
	case time.Time:
		return x.UnixMicro(), nil
	}
	return 0, fmt.Errorf("cannot convert %T to an integer", v)
}

func asFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case string:
		return strconv.ParseFloat(x, 64)
	case []byte:
		return strconv.ParseFloat(string(x), 64)
	}
	n, err := asInt(v)
	return float64(n), err
}
