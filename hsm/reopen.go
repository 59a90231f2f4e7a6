package hsm

import (
	"crypto"
	"errors"
	"sync"
)

// ReopeningSession is a Session that opens a new session when its own is
// lost (ErrSessionLost: the HSM restarted or failed over) and tries the
// call once more on it. The hub's ledger keeps one session for the life
// of the process to make and check control codes; without this, one HSM
// restart would stop every sale until the hub restarts. Like any Session
// it is one goroutine's at a time (the ledger serializes its calls).
type ReopeningSession struct {
	open   func() (Session, error)
	mu     sync.Mutex
	s      Session
	closed bool
}

// errReopeningClosed is a call on a ReopeningSession after its Close.
var errReopeningClosed = errors.New("hsm: session closed")

// Reopening opens a session with open, and reopens it with open when it
// is lost.
func Reopening(open func() (Session, error)) (*ReopeningSession, error) {
	s, err := open()
	if err != nil {
		return nil, err
	}
	return &ReopeningSession{open: open, s: s}, nil
}

// session is the current session, opening one if the last reopen failed.
// The open is made without r.mu: one the HSM leaves hanging must not hold
// up Close.
func (r *ReopeningSession) session() (Session, error) {
	r.mu.Lock()
	s, closed := r.s, r.closed
	r.mu.Unlock()
	if closed {
		return nil, errReopeningClosed
	}
	if s != nil {
		return s, nil
	}
	s, err := r.open()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.closed { // closed while the open hung: the session is no one's
		r.mu.Unlock()
		s.Close()
		return nil, errReopeningClosed
	}
	if cur := r.s; cur != nil { // another caller's open came first
		r.mu.Unlock()
		s.Close()
		return cur, nil
	}
	r.s = s
	r.mu.Unlock()
	return s, nil
}

// lost drops s if it is still the current session, and closes it.
func (r *ReopeningSession) lost(s Session) {
	r.mu.Lock()
	if r.s == s {
		r.s = nil
	}
	r.mu.Unlock()
	s.Close() // a lost session's close fails too; it only frees the handle
}

// MAC is Session.MAC, on a new session if the current one is lost.
func (r *ReopeningSession) MAC(label string, data []byte) ([]byte, error) {
	for try := 0; ; try++ {
		s, err := r.session()
		if err != nil {
			return nil, err
		}
		out, err := s.MAC(label, data)
		if err == nil || !errors.Is(err, ErrSessionLost) || try > 0 {
			return out, err
		}
		r.lost(s)
	}
}

// Signer is Session.Signer, on a new session if the current one is lost.
// The signer is bound to the session it came from: if that session is
// lost later, ask again.
func (r *ReopeningSession) Signer(label string) (crypto.Signer, error) {
	for try := 0; ; try++ {
		s, err := r.session()
		if err != nil {
			return nil, err
		}
		sg, err := s.Signer(label)
		if err == nil || !errors.Is(err, ErrSessionLost) || try > 0 {
			return sg, err
		}
		r.lost(s)
	}
}

// Close closes the current session.
func (r *ReopeningSession) Close() error {
	r.mu.Lock()
	s := r.s
	r.s, r.closed = nil, true
	r.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Close()
}
