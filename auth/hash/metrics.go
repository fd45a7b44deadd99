package hash

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of every pool in the process together (normally one).
var (
	workersGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "keyshard_hash_workers",
		Help: "Password hashing workers.",
	})
	busyGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "keyshard_hash_busy_workers",
		Help: "Password hashing workers hashing now.",
	})
	queueGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "keyshard_hash_queue_length",
		Help: "Hash requests admitted and waiting for a worker.",
	})
	hashSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyshard_hash_duration_seconds",
		Help:    "Time of one password hash or verification.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 12),
	})
	workerStarts = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_hash_worker_starts_total",
		Help: "Hash worker processes started (one at startup; more mean one died or could not start).",
	})
	rescuedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_hash_rescued_total",
		Help: "Hashes computed in the server process, one at a time, because the worker process (SCHED_IDLE) got no CPU: every one of its threads had been on its hash for half the budget (or four start-up hash times, at most the budget), or one of its hashes took that long: other work kept every core busy.",
	})
	abandonedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_hash_abandoned_total",
		Help: "Admitted hash requests refused (429) after waiting three budgets (at least 1 s) without a result.",
	})
	refusedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_hash_admissions_refused_total",
		Help: "Hash requests refused because their expected wait exceeded the budget.",
	})
)
