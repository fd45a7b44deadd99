package main

import (
	"flag"
	"io"
	"os"
	"testing"
)

// --sqlite-kept-wal-kib: 0 keeps no WAL (app.Config's negative), a value is
// taken as KiB, and what is not a number of KiB in range is refused; the
// environment variable goes through the same parsing.
func TestStorageFlags_KeptWAL(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
		want int
		err  bool
	}{
		{args: nil, want: 0},
		{args: []string{"--sqlite-kept-wal-kib", "64"}, want: 64},
		{args: []string{"--sqlite-kept-wal-kib", "0"}, want: -1},
		{env: "0", want: -1},
		{env: "128", want: 128},
		{args: []string{"--sqlite-kept-wal-kib", "-1"}, err: true},
		{args: []string{"--sqlite-kept-wal-kib", "9007199254740992"}, err: true},
		{args: []string{"--sqlite-kept-wal-kib", "1048577"}, err: true},
		{args: []string{"--sqlite-kept-wal-kib", "256K"}, err: true},
	} {
		t.Setenv("KEYSHARD_SQLITE_KEPT_WAL_KIB", c.env) // restored after the test
		if c.env == "" {
			os.Unsetenv("KEYSHARD_SQLITE_KEPT_WAL_KIB")
		}
		var f storageFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.register(fs)
		err := parse(fs, c.args)
		if (err != nil) != c.err {
			t.Fatalf("%v env %q: error %v, want error %t", c.args, c.env, err, c.err)
		}
		if err == nil && f.cfg.KeptWALKiB != c.want {
			t.Fatalf("%v env %q: KeptWALKiB %d, want %d", c.args, c.env, f.cfg.KeptWALKiB, c.want)
		}
	}
}
