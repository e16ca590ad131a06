package client

import (
	"net"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// connSet tracks open app connections so shutdown can wait for them and
// reset the ones still open at the drain deadline.
type connSet struct {
	mu    sync.Mutex
	m     map[net.Conn]struct{}
	empty chan struct{} // closed when m becomes empty while someone waits
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	if len(s.m) == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
	s.mu.Unlock()
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// wait blocks until no connection is open or timeout passes; it reports
// whether the set emptied.
func (s *connSet) wait(timeout time.Duration) bool {
	s.mu.Lock()
	if len(s.m) == 0 {
		s.mu.Unlock()
		return true
	}
	if s.empty == nil {
		s.empty = make(chan struct{})
	}
	empty := s.empty
	s.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-empty:
		return true
	case <-t.C:
		return false
	}
}

func (s *connSet) resetAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		tunnel.Reset(c)
	}
}
