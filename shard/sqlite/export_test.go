package sqlite

// SetSyncHook makes every Sync (pipelined durability) call f first, failing
// with its error; nil removes it. Set it while no shard syncs.
func SetSyncHook(f func() error) { syncHook = f }

// IdleHosts is the number of writer connections kept for reuse.
func IdleHosts() int {
	hosts.mu.Lock()
	defer hosts.mu.Unlock()
	return len(hosts.idle)
}

// DrainHosts closes every idle writer connection kept for reuse.
func DrainHosts() {
	hosts.mu.Lock()
	idle := hosts.idle
	hosts.idle = nil
	hosts.mu.Unlock()
	for _, db := range idle {
		_ = db.Close()
	}
}
