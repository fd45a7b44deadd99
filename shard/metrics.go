package shard

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of all shards together: never labelled by tenant.
var (
	queueDepth = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "keyshard_shard_writer_queue_depth",
		Help: "Write operations queued for shard writers, all shards together.",
	})
	batchSize = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyshard_shard_batch_size",
		Help:    "Operations and deferred records committed per transaction.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
	})
	commitSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyshard_shard_commit_duration_seconds",
		Help:    "Time to run and commit one batch transaction.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	syncSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyshard_shard_sync_duration_seconds",
		Help:    "Time of one sync of committed batches with pipelined durability (SQLite: fdatasync of the WAL), which runs while the writer commits the next batch.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	rejections = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "keyshard_shard_rejections_total",
		Help: "Writes refused, by reason: overloaded (queue full), busy (lock timeout), deferred_full.",
	}, []string{"reason"})
	fencedBatches = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_shard_fenced_total",
		Help: "Write batches refused because the tenant's fencing token says another node owns it now.",
	})
	writerPanics = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_shard_writer_panics_total",
		Help: "Panics recovered in shard writers; each discarded its connection.",
	})
	openShards = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "keyshard_shard_cache_open_shards",
		Help: "Shards open in the shard cache.",
	})
	cacheHits = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_shard_cache_hits_total",
		Help: "Acquires served by an open shard.",
	})
	cacheMisses = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_shard_cache_misses_total",
		Help: "Acquires that had to open a shard.",
	})
	cacheEvictions = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_shard_cache_evictions_total",
		Help: "Shards closed by the cache (capacity, eviction requests, shutdown).",
	})
	closeErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_shard_close_errors_total",
		Help: "Shards the cache closed whose close failed (final flush or checkpoint).",
	})
	openSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyshard_shard_open_duration_seconds",
		Help:    "Time to open a shard, migrations check included.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
	})
)

func init() {
	for _, r := range []string{"overloaded", "busy", "deferred_full"} {
		rejections.WithLabelValues(r)
	}
}
