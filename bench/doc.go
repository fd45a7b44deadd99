// Package bench holds Keyshard's performance instruments: the HTTP load
// generator behind `keyshard bench` (open- and closed-loop load, setup of
// tenants and users through the real API, the workloads of issue 5, reports
// with the server's own /metrics), and the engine-level measurements that
// size the shard cache.
//
// A run is Setup (tenants and users, once), then one Run per workload. The
// latency of an open-loop request is measured from the moment it was due,
// not from when it was sent, so a stalled server cannot hide its backlog
// (no coordinated omission).
package bench
