package tunnel

import "sync/atomic"

// CredentialStore holds the current credentials of an agent. Reloads and
// OCSP stapling replace them whole; handshakes read them with Load, so a
// new handshake uses the new material and open sessions are untouched.
type CredentialStore struct {
	p atomic.Pointer[Credentials]
}

// NewCredentialStore returns a store holding c.
func NewCredentialStore(c *Credentials) *CredentialStore {
	s := &CredentialStore{}
	s.p.Store(c)
	return s
}

// Load returns the current credentials. Use it as TLSPolicy.Credentials.
func (s *CredentialStore) Load() *Credentials { return s.p.Load() }

// Store replaces the credentials.
func (s *CredentialStore) Store(c *Credentials) { s.p.Store(c) }

// Replace stores next only if the store still holds old, so a refresh
// computed from old credentials never undoes a reload that happened
// meanwhile.
func (s *CredentialStore) Replace(old, next *Credentials) bool {
	return s.p.CompareAndSwap(old, next)
}
