package transfer

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// replayBatch is the statements replayed by one operation on the copy.
const replayBatch = 2000

// replay runs captured statements on dst in order. Each must change as
// many rows as it did on the source: otherwise the copy has diverged and
// the move stops.
func replay(ctx context.Context, dst engine.Shard, stmts []shard.Stmt) error {
	for len(stmts) > 0 {
		n := min(len(stmts), replayBatch)
		batch := stmts[:n]
		stmts = stmts[n:]
		err := dst.Write(ctx, func(tx engine.Querier) error {
			for _, st := range batch {
				n, err := tx.Exec(st.SQL, st.Args...)
				if err != nil {
					return fmt.Errorf("replay %q: %w", st.SQL, err)
				}
				if n != st.Changed {
					return fmt.Errorf("replay %q changed %d rows, the source %d: %w", st.SQL, n, st.Changed, errVerify)
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

// readSequences returns the next-id state of every AutoID table of a
// snapshot: for SQLite its sqlite_sequence (an AUTOINCREMENT never reuses
// an id, even of a deleted row), elsewhere the largest id.
func readSequences(p *pinned, backend string) (map[string]int64, error) {
	out := make(map[string]int64)
	err := p.do(func(q engine.Querier) error {
		for _, t := range Tables {
			if !t.AutoID {
				continue
			}
			var max int64
			if err := q.QueryRow("SELECT coalesce(max(" + t.Columns[0].Name + "), 0) FROM " + t.Name).Scan(&max); err != nil {
				return err
			}
			if backend == engine.BackendSQLite {
				var seq int64
				err := q.QueryRow("SELECT seq FROM sqlite_sequence WHERE name = ?", t.Name).Scan(&seq)
				if err != nil && !errors.Is(err, engine.ErrNoRows) {
					return err
				}
				max = maxInt(max, seq)
			}
			out[t.Name] = max
		}
		return nil
	})
	return out, err
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// setSequences makes the copy's next ids those of the source, so that a
// replayed INSERT gets the id it got on the source.
func setSequences(tx engine.Querier, backend string, seqs map[string]int64) error {
	for table, v := range seqs {
		if v <= 0 {
			continue
		}
		var err error
		switch backend {
		case engine.BackendSQLite:
			var n int64
			n, err = tx.Exec("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", v, table)
			if err == nil && n == 0 {
				_, err = tx.Exec("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", table, v)
			}
		case engine.BackendPostgres:
			var got int64
			err = tx.QueryRow("SELECT setval(pg_get_serial_sequence('"+table+"', 'id'), ?)", v).Scan(&got)
		case engine.BackendMySQL:
			// ALTER TABLE … AUTO_INCREMENT would commit the batch. InnoDB
			// already continues after the largest id copied; a source whose
			// counter is past its largest id (its newest rows deleted) may
			// give replayed INSERTs other ids, which the row-count checks
			// and the final verification catch: the move then fails safely.
		}
		if err != nil {
			return fmt.Errorf("sequence of %s: %w", table, err)
		}
	}
	return nil
}

// digestsOf computes the digests of every table through q.
func digestsOf(ctx context.Context, q engine.Querier) (map[string]Digest, error) {
	out := make(map[string]Digest, len(Tables))
	for i := range Tables {
		d, err := hashTable(ctx, q, &Tables[i], nil)
		if err != nil {
			return nil, err
		}
		out[Tables[i].Name] = d
	}
	return out, nil
}

// hashTable reads every row of t through q, passes each with its hash to
// each (when not nil), and returns the table's digest.
func hashTable(ctx context.Context, q engine.Querier, t *Table, each func(Row, rowHash)) (Digest, error) {
	var d digester
	var buf []byte
	err := scanTable(ctx, q, t, false, func(r Row) error {
		var h rowHash
		h, buf = hashRow(buf, r)
		d.add(h)
		if each != nil {
			each(r, h)
		}
		return nil
	})
	return d.digest(), err
}
