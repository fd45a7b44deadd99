package shard

// QueueLen returns the number of requests waiting in the writer queue, so
// tests can tell that the requests they sent are queued before releasing a
// blocked writer.
func (s *Shard) QueueLen() int { return len(s.queue) }
