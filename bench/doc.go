// Package bench holds Keyshard's performance instruments: today the
// engine-level measurements that size the shard cache; the HTTP load
// generator (`keyshard bench`) lands with its own issue.
package bench
