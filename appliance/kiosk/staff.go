package kiosk

import (
	"crypto/rand"
	"crypto/subtle"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// staffTTL is how long a staff login lasts without use.
const staffTTL = 10 * time.Minute

// A PIN has four to eight digits, so guessing is slowed: after
// pinAttempts wrong PINs in a row, PIN logins wait pinLockout, which
// doubles with each lockout in a row (at most a day); a right PIN or badge
// resets it.
const (
	pinAttempts = 5
	pinLockout  = 5 * time.Minute
)

// staffSessions are the touchscreen's staff logins. A PIN is checked
// against a bcrypt hash from the config; a badge against the configured
// badge ids. A badge scanned at the kiosk logs in the next PIN-less login
// within a minute, so staff scan then tap "Staff".
type staffSessions struct {
	mu      sync.Mutex
	pinHash []byte
	badges  []string
	tokens  map[string]time.Time
	badgeAt time.Time

	fails       int       // wrong PINs in a row
	lockouts    int       // lockouts in a row
	lockedUntil time.Time // no PIN is checked before then
	now         func() time.Time
}

func (s *staffSessions) init(pinHash string, badges []string) {
	s.pinHash, s.badges, s.tokens = []byte(pinHash), badges, map[string]time.Time{}
	if s.now == nil {
		s.now = time.Now
	}
}

// login returns a session token for a right PIN or badge, or "" and, when
// PINs are locked out, how long until the next may be tried.
func (s *staffSessions) login(pin, badge string) (string, time.Duration) {
	ok := false
	switch {
	case pin != "" && len(s.pinHash) > 0:
		s.mu.Lock()
		wait := s.lockedUntil.Sub(s.now())
		s.mu.Unlock()
		if wait > 0 {
			return "", wait
		}
		ok = bcrypt.CompareHashAndPassword(s.pinHash, []byte(pin)) == nil
		s.mu.Lock()
		if ok {
			s.fails, s.lockouts = 0, 0
		} else if s.fails++; s.fails >= pinAttempts {
			s.fails = 0
			s.lockedUntil = s.now().Add(min(pinLockout<<s.lockouts, 24*time.Hour))
			s.lockouts = min(s.lockouts+1, 10)
		}
		s.mu.Unlock()
	case badge != "":
		for _, b := range s.badges {
			ok = ok || subtle.ConstantTimeCompare([]byte(b), []byte(badge)) == 1
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok && pin == "" && badge == "" && time.Since(s.badgeAt) < time.Minute {
		ok, s.badgeAt = true, time.Time{}
	}
	if !ok {
		return "", 0
	}
	if badge != "" {
		s.fails, s.lockouts = 0, 0
	}
	t := rand.Text()
	s.tokens[t] = time.Now()
	return t, 0
}

func (s *staffSessions) badgeSeen(code string) {
	for _, b := range s.badges {
		if subtle.ConstantTimeCompare([]byte(b), []byte(code)) == 1 {
			s.mu.Lock()
			s.badgeAt = time.Now()
			s.mu.Unlock()
			return
		}
	}
}

// check renews a live token.
func (s *staffSessions) check(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.tokens[token]
	if !ok || time.Since(at) > staffTTL {
		delete(s.tokens, token)
		return false
	}
	s.tokens[token] = time.Now()
	return true
}

func (s *staffSessions) logout(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, token)
}

// logoutAll ends every staff session: the kiosk was locked.
func (s *staffSessions) logoutAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// active reports whether any staff login is live: scanned sheets load
// only then.
func (s *staffSessions) active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, at := range s.tokens {
		if time.Since(at) <= staffTTL {
			return true
		}
		delete(s.tokens, t)
	}
	return false
}
