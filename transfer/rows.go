package transfer

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyshard/keyshard/engine"
)

// beginSnapshot is the statement that starts a read transaction seeing one
// consistent state of the whole shard, by backend.
func beginSnapshot(backend string) string {
	switch backend {
	case engine.BackendPostgres:
		return "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
	case engine.BackendMySQL:
		return "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
	}
	return "BEGIN" // SQLite: the snapshot is taken at the first read
}

// Snapshot runs fn on a read connection of sh inside one read transaction,
// so that every query fn makes sees the same state of the shard while
// writes continue.
func Snapshot(ctx context.Context, sh engine.Shard, backend string, fn func(q engine.Querier) error) error {
	return sh.Read(engine.LongRead(ctx), func(q engine.Querier) (err error) {
		if _, err := q.Exec(beginSnapshot(backend)); err != nil {
			return fmt.Errorf("begin snapshot: %w", err)
		}
		defer func() {
			if _, cerr := q.Exec("COMMIT"); cerr != nil && err == nil {
				err = fmt.Errorf("end snapshot: %w", cerr)
			}
		}()
		return fn(q)
	})
}

// scanTable calls fn for every row of t, in primary key order when
// ordered. The row passed to fn is fresh: fn may keep it.
func scanTable(ctx context.Context, q engine.Querier, t *Table, ordered bool, fn func(Row) error) error {
	rows, err := q.Query(t.selectSQL(ordered))
	if err != nil {
		return fmt.Errorf("read %s: %w", t.Name, err)
	}
	defer rows.Close()
	raw := make([]any, len(t.Columns))
	dest := make([]any, len(t.Columns))
	for i := range raw {
		dest[i] = &raw[i]
	}
	n := 0
	for rows.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("read %s: %w", t.Name, err)
		}
		r := make(Row, len(t.Columns))
		for i, c := range t.Columns {
			if r[i], err = normalize(c, raw[i]); err != nil {
				return fmt.Errorf("read %s: %w", t.Name, err)
			}
			raw[i] = nil
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", t.Name, err)
	}
	return nil
}

// countRows returns the number of rows of every table.
func countRows(q engine.Querier, tables []Table) (map[string]int64, error) {
	out := make(map[string]int64, len(tables))
	for _, t := range tables {
		var n int64
		if err := q.QueryRow("SELECT count(*) FROM " + t.Name).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", t.Name, err)
		}
		out[t.Name] = n
	}
	return out, nil
}

// change is one row to write to a copy: inserted, updated or deleted.
type change struct {
	op  byte // 'i', 'u', 'd'
	row Row
}

// writeBatchSize is the rows written by one operation of the target's
// writer: large enough to amortize the commit, small enough to keep the
// target's other writers (there are none during a copy) and memory low.
const writeBatchSize = 1000

// insertRows is the most rows one INSERT statement carries (17 columns ×
// 100 rows stays far below every backend's limit on parameters).
const insertRows = 100

// applyChanges writes changes to t on dst, writeBatchSize rows per
// operation. Every statement must change exactly one row: anything else
// means the copy is not what we think it is.
func applyChanges(ctx context.Context, dst engine.Shard, t *Table, changes []change) error {
	upd, del := t.updateSQL(), t.deleteSQL()
	for len(changes) > 0 {
		n := min(len(changes), writeBatchSize)
		batch := changes[:n]
		changes = changes[n:]
		err := dst.Write(ctx, func(tx engine.Querier) error {
			args := make([]any, 0, len(t.Columns))
			for i := 0; i < len(batch); i++ {
				c := batch[i]
				var q string
				args = args[:0]
				want := int64(1)
				switch c.op {
				case 'i':
					// A run of inserts goes as multi-row INSERTs: one round
					// trip per insertRows rows on a server backend.
					j := i
					for j < len(batch) && j-i < insertRows && batch[j].op == 'i' {
						args = append(args, batch[j].row...)
						j++
					}
					q, want = t.insertManySQL(j-i), int64(j-i)
					i = j - 1
				case 'u':
					q = upd
					args = append(append(args, c.row[t.KeyLen:]...), c.row[:t.KeyLen]...)
				case 'd':
					q = del
					args = append(args, c.row[:t.KeyLen]...)
				}
				n, err := tx.Exec(q, args...)
				if err != nil {
					return fmt.Errorf("write %s: %w", t.Name, err)
				}
				if n != want {
					return fmt.Errorf("write %s: %c changed %d rows, want %d", t.Name, c.op, n, want)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// errStop ends a scan early without an error.
var errStop = errors.New("stop")
