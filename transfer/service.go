package transfer

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// Service exports, imports and moves tenants of one engine. Safe for
// concurrent use; one move or import per tenant at a time.
type Service struct {
	Engine *engine.Engine
	// Backends open shards outside the cache (a move's copy, a suspended
	// tenant's export) and offer the optional abilities of shard.Storage:
	// a FileStore stages exports and imports.
	Backends shard.Backends
	// TempDir holds staging files (default os.TempDir()). For large
	// tenants put it on a disk with room for one copy of a shard.
	TempDir string
	// FenceWait is the longest a write waits behind a move's fence before
	// it is answered engine.ErrMoving (default shard.DefaultFenceWait).
	FenceWait time.Duration
	// CatchUpRounds bounds the unfenced rounds that replay what was
	// written during the previous one before the fenced final step
	// (default 5).
	CatchUpRounds int
	// CaptureLimit bounds the statements captured between two rounds
	// (default DefaultCaptureLimit).
	CaptureLimit int

	mu     sync.Mutex // guards the fields below
	moving map[string]*Progress
}

// Progress is the state of a move, for a progress bar or the API.
type Progress struct {
	Tenant string `json:"tenant"`
	Phase  string `json:"phase"` // copy, catch-up, fenced, verify, cleanup, done, failed
	Table  string `json:"table,omitempty"`
	Rows   int64  `json:"rows"`  // rows read so far in this phase
	Total  int64  `json:"total"` // rows of the source when the move began
}

func (s *Service) tempDir() string {
	if s.TempDir != "" {
		return s.TempDir
	}
	return os.TempDir()
}

// storage returns a configured backend by name.
func (s *Service) storage(name string) (shard.Storage, error) {
	st, ok := s.Backends[name]
	if !ok {
		return nil, engine.Invalidf("backend %q is not configured on this server", name)
	}
	return st, nil
}

// fileStore returns the backend whose files are the export format: every
// export and import is staged in such a file.
func (s *Service) fileStore() (shard.FileStore, error) {
	for _, st := range s.Backends {
		if fs, ok := st.(shard.FileStore); ok {
			return fs, nil
		}
	}
	return nil, fmt.Errorf("no backend stores single files (export and import need SQLite): %w", engine.ErrUnavailable)
}

// begin marks a tenant busy with a move or import.
func (s *Service) begin(id string, p *Progress) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.moving == nil {
		s.moving = make(map[string]*Progress)
	}
	if _, ok := s.moving[id]; ok {
		return fmt.Errorf("tenant is already being moved: %w", engine.ErrConflict)
	}
	s.moving[id] = p
	return nil
}

func (s *Service) end(id string) {
	s.mu.Lock()
	delete(s.moving, id)
	s.mu.Unlock()
}

func (s *Service) setProgress(id string, f func(p *Progress)) {
	s.mu.Lock()
	if p, ok := s.moving[id]; ok {
		f(p)
	}
	s.mu.Unlock()
}

// MoveProgress returns the progress of the tenant's move in flight, if any.
func (s *Service) MoveProgress(tenantID string) (Progress, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.moving[tenantID]
	if !ok {
		return Progress{}, false
	}
	return *p, true
}
