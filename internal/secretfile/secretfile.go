// Package secretfile creates files that hold generated secrets (the admin
// token, the master key) so that a reader never sees a partial file: the
// content is written and synced under a temporary name, then linked into
// place only if no other process got there first.
package secretfile

import (
	"errors"
	"os"
	"path/filepath"
)

// Create makes path hold data, with mode 0600, atomically. When path
// already exists it is left as it is and created is false: the caller reads
// it (another process generated the secret first).
func Create(path string, data []byte) (created bool, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return false, err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return false, werr
	}
	// link, unlike rename, refuses to replace a file another process made.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the new name durable; best effort on odd filesystems
		d.Close()
	}
	return true, nil
}
