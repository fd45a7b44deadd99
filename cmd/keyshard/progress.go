package main

import (
	"bytes"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newBar returns the progress display of a long command on stderr: a bar
// redrawn in place on a terminal; elsewhere (a log, CI) a plain line every
// 5 seconds; nothing when quiet. max -1 is unknown; bytes shows sizes in
// kB/MB, else counts of unit.
func newBar(max int64, desc, unit string, bytes, quiet bool) *progressbar.ProgressBar {
	opts := []progressbar.Option{progressbar.OptionSetDescription(desc), progressbar.OptionSetVisibility(!quiet)}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionSetItsString(unit))
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		opts = append(opts, progressbar.OptionSetWriter(os.Stderr))
	} else {
		opts = append(opts, progressbar.OptionSetWriter(&lines{w: os.Stderr}), progressbar.OptionThrottle(5*time.Second),
			progressbar.OptionUseANSICodes(false), progressbar.OptionSetWidth(20), progressbar.OptionSetPredictTime(false))
	}
	return progressbar.NewOptions64(max, opts...)
}

// lines turns a bar's in-place redraws into one line each, for output that
// is not a terminal.
type lines struct{ w io.Writer }

func (l *lines) Write(p []byte) (int, error) {
	for _, part := range bytes.Split(p, []byte("\r")) {
		if part = bytes.TrimSpace(part); len(part) > 0 {
			if _, err := l.w.Write(append(part, '\n')); err != nil {
				return 0, err
			}
		}
	}
	return len(p), nil
}
