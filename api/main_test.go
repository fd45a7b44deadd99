package api_test

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

// TestMain quiets the default logger, through which the OAuth library
// logs every refusal the tests provoke; the server's own logger is each
// test's.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}
