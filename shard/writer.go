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
			b := s.drain(append(s.batch[:0], r))
			ctls := controls(b) // runBatch reuses b
			s.runBatch(b, flushAll(b))
			for _, f := range ctls {
				f()
			}
		case <-tick.C:
			// A fenced shard's database must not change: deferred
			// records wait for Unfence, or go to the new copy at Seal.
			if s.fence.state.Load() == fenceNone && s.deferred.due(time.Now()) {
				s.runBatch(nil, false)
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
				for _, f := range ctls {
					f()
				}
			}
			if s.fence.state.Load() != fenceSealed { // a sealed copy is no longer the tenant's
				s.flushErr = s.runBatch(nil, true)
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
	live := reqs[:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.reply <- err // the caller gave up before we began: do not write
			continue
		}
		live = append(live, r)
	}
	recs := s.deferred.take(time.Now(), all)
	if len(live) == 0 && len(recs) == 0 {
		return nil
	}
	start := time.Now()
	errs := make([]error, len(live))
	recOK, err := s.execBatch(live, recs, errs)
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
	for i, r := range live {
		r.reply <- errs[i]
	}
	return nil
}

// execBatch runs one transaction. errs[i] receives the outcome of reqs[i]
// when the batch as a whole commits. A panic (the driver panics on
// out-of-memory) fails the whole batch and throws the connection away.
func (s *Shard) execBatch(reqs []*request, recs []record, errs []error) (recOK int, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.panics.Add(1)
			writerPanics.Inc()
			s.discardConn()
			err = fmt.Errorf("%w: %v: %w", errWriterPanic, p, engine.ErrUnavailable)
		}
	}()
	if s.conn == nil {
		c, err := s.conns.OpenWriter(context.Background())
		if err != nil {
			return 0, fmt.Errorf("reopen shard writer: %w: %w", err, engine.ErrUnavailable)
		}
		s.conn = c
	}
	s.captured = s.captured[:0]
	if err := s.conn.Begin(); err != nil {
		return 0, err
	}
	for _, rec := range recs {
		opErr, fatal := s.runOne(rec.op)
		if fatal != nil {
			_ = s.conn.Rollback()
			return 0, fatal
		}
		// A record that fails alone (e.g. its user was deleted meanwhile) is
		// dropped rather than retried forever.
		if opErr == nil {
			recOK++
		}
	}
	for i, r := range reqs {
		opErr, fatal := s.runOne(r.op)
		if fatal != nil {
			_ = s.conn.Rollback()
			return 0, fatal
		}
		errs[i] = opErr
	}
	if err := s.conn.Commit(); err != nil {
		_ = s.conn.Rollback()
		return 0, fmt.Errorf("commit: %w", err)
	}
	if s.capture != nil {
		s.capture.add(s.captured)
	}
	return recOK, nil
}

// runOne runs op inside its own savepoint. opErr is op's failure, rolled back
// alone; fatal means the transaction itself is lost.
func (s *Shard) runOne(op engine.WriteFunc) (opErr, fatal error) {
	if err := s.conn.Savepoint(); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	var q engine.Querier = s.conn
	var rec *recorder
	if s.capture != nil {
		rec = &recorder{Querier: s.conn}
		q = rec
	}
	if opErr = op(q); opErr != nil {
		if err := s.conn.RollbackSavepoint(); err != nil {
			return nil, fmt.Errorf("rollback savepoint after %v: %w", opErr, err)
		}
		return opErr, nil
	}
	if err := s.conn.ReleaseSavepoint(); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	if rec != nil {
		s.captured = append(s.captured, rec.stmts...)
	}
	return nil, nil
}

// discardConn closes the write connection after a panic; the next batch
// opens a new one.
func (s *Shard) discardConn() {
	if s.conn == nil {
		return
	}
	func() {
		defer func() { _ = recover() }() // the connection may be unusable
		_ = s.conn.Rollback()
		_ = s.conn.Close()
	}()
	s.conn = nil
}
