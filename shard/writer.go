package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// run is the writer goroutine: it owns s.conn, takes everything queued, and
// commits it in one transaction. There is no timer-based delay: a lone write
// commits at once, and under load the batch grows by itself while the
// previous commit is in progress.
func (s *Shard) run() {
	defer s.wg.Done()
	tick := time.NewTicker(s.opts.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case r := <-s.queue:
			if r.read != nil {
				// A read never waits for a sync to start.
				queueDepth.Dec()
				s.runReads([]*request{r})
				continue
			}
			s.busy.Store(true)
			if s.flusher != nil {
				s.flusher.awaitPickup()
			}
			b := s.drain(append(s.batch[:0], r))
			ctls := controls(b) // runBatch reuses b
			all := flushAll(b)
			s.runBatch(b, all)
			if (all || len(ctls) > 0) && s.flusher != nil {
				// A fence or a move's control acts on what is durable.
				_ = s.flusher.wait(context.Background())
			}
			for _, f := range ctls {
				f()
			}
			s.busy.Store(false)
		case <-tick.C:
			// A fenced shard's database must not change: deferred
			// records wait for Unfence, or go to the new copy at Seal.
			if s.fence.state.Load() == fenceNone && s.deferred.due(time.Now()) {
				s.busy.Store(true)
				s.runBatch(nil, false)
				s.busy.Store(false)
			}
		case <-s.stop:
			// Close set s.closed before closing stop: nothing more is
			// enqueued, so draining until empty takes every request.
			for {
				b := s.drain(s.batch[:0])
				if len(b) == 0 {
					break
				}
				ctls := controls(b)
				s.runBatch(b, false)
				if len(ctls) > 0 && s.flusher != nil {
					_ = s.flusher.wait(context.Background())
				}
				for _, f := range ctls {
					f()
				}
			}
			if s.fence.state.Load() != fenceSealed { // a sealed copy is no longer the tenant's
				s.flushErr = s.runBatch(nil, true)
			}
			if s.flusher != nil {
				s.flusher.close() // syncs and answers what is pending
				if err := s.flusher.failed(); err != nil && s.flushErr == nil {
					s.flushErr = err
				}
			}
			return
		}
	}
}

// flushAll reports whether a fence's barrier is among reqs.
func flushAll(reqs []*request) bool {
	for _, r := range reqs {
		if r.flushAll {
			return true
		}
	}
	return false
}

// drain appends queued requests to b without blocking, up to MaxBatch.
func (s *Shard) drain(b []*request) []*request {
	for len(b) < s.opts.MaxBatch {
		select {
		case r := <-s.queue:
			b = append(b, r)
		default:
			queueDepth.Sub(float64(len(b)))
			return b
		}
	}
	queueDepth.Sub(float64(len(b)))
	return b
}

// runBatch commits reqs and the due deferred records (all of them when all is
// set) in one transaction, then answers every caller. It returns the error
// that failed the whole batch, if any.
func (s *Shard) runBatch(reqs []*request, all bool) error {
	reqs = s.runReads(reqs)
	live := reqs[:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.reply <- err // the caller gave up before we began: do not write
			continue
		}
		live = append(live, r)
	}
	if s.flusher != nil {
		if err := s.flusher.failed(); err != nil {
			// A failed sync leaves unknown what reached the disk: no
			// more writes until the shard is reopened.
			s.stats.failed.Add(int64(len(live)))
			for _, r := range live {
				r.reply <- err
			}
			return err
		}
	}
	recs := s.deferred.take(time.Now(), all)
	if len(live) == 0 && len(recs) == 0 {
		return nil
	}
	if s.flusher != nil {
		s.flusher.begin()
	}
	start := time.Now()
	errs := make([]error, len(live))
	recOK, err := s.execBatch(live, recs, errs)
	// After the commit is visible, before anyone is answered: a read that
	// saw the old generation may have read the old data.
	s.gen.Store(generations.Add(1))
	commitSeconds.Observe(time.Since(start).Seconds())
	batchSize.Observe(float64(len(live) + len(recs)))
	s.stats.batches.Add(1)
	if n := int64(len(live) + len(recs)); n > s.stats.maxBatch.Load() {
		s.stats.maxBatch.Store(n)
	}
	if err != nil {
		if errors.Is(err, engine.ErrBusy) {
			s.stats.busy.Add(1)
			rejections.WithLabelValues("busy").Inc()
		}
		s.stats.failed.Add(int64(len(live)))
		if n := s.deferred.restore(recs); n > 0 {
			s.stats.deferredDropped.Add(int64(n))
		}
		for _, r := range live {
			r.reply <- err
		}
		if s.flusher != nil {
			s.flusher.commit(nil, nil) // what it may have committed is synced too
		}
		return err
	}
	var ok int64
	for i := range live {
		if errs[i] == nil {
			ok++
		} else {
			s.stats.failed.Add(1)
		}
	}
	s.stats.writes.Add(ok)
	s.stats.deferredWritten.Add(int64(recOK))
	s.stats.deferredDropped.Add(int64(len(recs) - recOK))
	// Book-keep before answering: a caller that was answered must find its
	// keys debounced and the counters up to date.
	s.deferred.written(recs, time.Now())
	if s.flusher != nil {
		// Operations that failed were rolled back: answered now. The
		// others once a sync covering this commit has returned.
		for i, r := range live {
			if errs[i] != nil {
				r.reply <- errs[i]
			}
		}
		s.flusher.commit(live, errs)
		return nil
	}
	for i, r := range live {
		r.reply <- errs[i]
	}
	return nil
}

// optimisticAttempts bounds the tries of a batch without savepoints; after
// that many operations failed, the rest runs with a savepoint each.
const optimisticAttempts = 3

// execBatch runs the batch and commits it. errs[i] receives the outcome of
// reqs[i] when the batch as a whole commits; a record that fails alone (e.g.
// its user was deleted meanwhile) is dropped rather than retried forever.
//
// The batch first runs without savepoints: SAVEPOINT and RELEASE are two
// statements per operation, round trips on a server backend. An operation
// that fails there rolls the attempt back; it is answered its error and the
// batch runs again without it, so it still fails alone and its effects are
// never committed. Operations may therefore run more than once, only the
// last run counting (engine.WriteFunc). After optimisticAttempts tries the
// remaining operations run with a savepoint each, as they always did.
//
// A panic (the driver panics on out-of-memory) fails the whole batch and
// throws the connection away.
func (s *Shard) execBatch(reqs []*request, recs []record, errs []error) (recOK int, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.panics.Add(1)
			writerPanics.Inc()
			s.discardConn()
			err = fmt.Errorf("%w: %v: %w", errWriterPanic, p, engine.ErrUnavailable)
		}
	}()
	if err := s.ensureConn(); err != nil {
		return 0, err
	}
	recFailed := make([]bool, len(recs))
	// While a move captures this shard's statements, savepoints from the
	// start: an aborted attempt still consumes PostgreSQL sequence and InnoDB
	// auto-increment values, and the copy replays inserts that take its own
	// next ids, so burnt ids on the source would part the two copies' ids.
	withSavepoints := s.capture != nil
	for attempt := 1; ; attempt++ {
		done, err := s.tryBatch(reqs, recs, errs, recFailed, withSavepoints || attempt >= optimisticAttempts)
		if err != nil {
			return 0, err
		}
		if done {
			break
		}
	}
	for _, failed := range recFailed {
		if !failed {
			recOK++
		}
	}
	return recOK, nil
}

// tryBatch runs the operations not yet failed (errs[i] == nil, !recFailed[i])
// in one transaction and commits it. Without savepoints, the first operation
// to fail is marked failed, the transaction rolled back, and done is false.
// err is a failure of the transaction itself.
func (s *Shard) tryBatch(reqs []*request, recs []record, errs []error, recFailed []bool, savepoints bool) (done bool, err error) {
	s.captured = s.captured[:0]
	if err := s.conn.Begin(); err != nil {
		return false, err
	}
	if s.opts.Fenced {
		if err := s.checkFence(); err != nil {
			_ = s.conn.Rollback()
			return false, err
		}
	}
	abort := func() (bool, error) {
		if err := s.conn.Rollback(); err != nil {
			return false, fmt.Errorf("rollback after a failed operation: %w", err)
		}
		return false, nil
	}
	for i, rec := range recs {
		if recFailed[i] {
			continue
		}
		opErr, fatal := s.runOne(rec.op, savepoints)
		if fatal != nil {
			_ = s.conn.Rollback()
			return false, fatal
		}
		if opErr != nil {
			recFailed[i] = true
			if !savepoints {
				return abort()
			}
		}
	}
	for i, r := range reqs {
		if errs[i] != nil {
			continue
		}
		opErr, fatal := s.runOne(r.op, savepoints)
		if fatal != nil {
			_ = s.conn.Rollback()
			return false, fatal
		}
		if opErr != nil {
			errs[i] = opErr
			if !savepoints {
				return abort()
			}
		}
	}
	if err := s.conn.Commit(); err != nil {
		_ = s.conn.Rollback()
		return false, fmt.Errorf("commit: %w", err)
	}
	if s.capture != nil {
		s.capture.add(s.captured)
	}
	return true, nil
}

// checkFence reads the tenant's fencing token in the batch's transaction
// (see Options.Fenced): a token above the shard's epoch fails the batch and
// every later one; a token below it is raised to it.
func (s *Shard) checkFence() error {
	if s.fencedOut.Load() {
		return engine.ErrFenced
	}
	q := s.opts.FenceQuery
	if q == "" {
		q = DefaultFenceQuery
	}
	var token int64
	if err := s.conn.QueryRow(q).Scan(&token); err != nil {
		return fmt.Errorf("read the fencing token: %w: %w", err, engine.ErrUnavailable)
	}
	switch {
	case token > s.opts.Epoch:
		s.fencedOut.Store(true)
		fencedBatches.Inc()
		if s.opts.OnFenced != nil {
			go s.opts.OnFenced(s.opts.TenantID, s.opts.Epoch)
		}
		return engine.ErrFenced
	case token < s.opts.Epoch:
		if _, err := s.conn.Exec(`UPDATE fence SET epoch = ? WHERE id = 1 AND epoch < ?`, s.opts.Epoch, s.opts.Epoch); err != nil {
			return fmt.Errorf("raise the fencing token: %w", err)
		}
	}
	return nil
}

// runOne runs op, inside its own savepoint when savepoints is set. opErr is
// op's failure (rolled back alone with a savepoint; without one the caller
// rolls back the transaction); fatal means the transaction itself is lost.
func (s *Shard) runOne(op engine.WriteFunc, savepoints bool) (opErr, fatal error) {
	if savepoints {
		if err := s.conn.Savepoint(); err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
	}
	var q engine.Querier = s.conn
	var rec *recorder
	if s.capture != nil {
		rec = &recorder{Querier: s.conn}
		q = rec
	}
	if opErr = op(q); opErr != nil {
		if savepoints {
			if err := s.conn.RollbackSavepoint(); err != nil {
				return nil, fmt.Errorf("rollback savepoint after %v: %w", opErr, err)
			}
		}
		return opErr, nil
	}
	if savepoints {
		if err := s.conn.ReleaseSavepoint(); err != nil {
			return nil, fmt.Errorf("release savepoint: %w", err)
		}
	}
	if rec != nil {
		s.captured = append(s.captured, rec.stmts...)
	}
	return nil, nil
}

// ensureConn reopens the write connection discarded after a panic.
func (s *Shard) ensureConn() error {
	if s.conn != nil {
		return nil
	}
	c, err := s.conns.OpenWriter(context.Background())
	if err != nil {
		return fmt.Errorf("reopen shard writer: %w: %w", err, engine.ErrUnavailable)
	}
	s.conn = c
	if sy, ok := c.(Syncer); ok && s.flusher != nil {
		s.syncer.Store(sy)
	}
	return nil
}

// discardConn closes the write connection after a panic; the next batch
// opens a new one.
func (s *Shard) discardConn() {
	if s.conn == nil {
		return
	}
	if s.flusher != nil {
		// The commits handed over are synced through this connection.
		_ = s.flusher.waitHandedOver(context.Background())
	}
	func() {
		defer func() { _ = recover() }() // the connection may be unusable
		_ = s.conn.Rollback()
		if d, ok := s.conn.(Discarder); ok {
			_ = d.Discard()
		} else {
			_ = s.conn.Close()
		}
	}()
	s.conn = nil
}
