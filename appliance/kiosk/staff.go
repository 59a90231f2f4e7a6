package kiosk

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/protocol"
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
// against each member's bcrypt hash; a badge against their badge. The
// members are the store's staff from the hub's central config once it
// manages them, else the PIN and badges of the kiosk's own file. A badge
// scanned at the kiosk logs in the next PIN-less login within a minute, so
// staff scan then tap "Staff".
type staffSessions struct {
	mu        sync.Mutex
	local     []staffMember // from the kiosk's own file
	members   []staffMember // in force
	tokens    map[string]staffToken
	badgeAt   time.Time
	badgeName string

	fails       int       // wrong PINs in a row
	lockouts    int       // lockouts in a row
	lockedUntil time.Time // no PIN is checked before then
	now         func() time.Time
}

// staffMember is one who may open staff mode.
type staffMember struct {
	name     string
	pinHash  []byte
	badgeSum [sha256.Size]byte // of the badge's code
	badge    bool
}

// staffToken is a live login and whose it is.
type staffToken struct {
	at   time.Time
	name string
}

func (s *staffSessions) init(pinHash string, badges []string) {
	s.tokens = map[string]staffToken{}
	if s.now == nil {
		s.now = time.Now
	}
	if pinHash != "" {
		s.local = append(s.local, staffMember{name: "local", pinHash: []byte(pinHash)})
	}
	for _, b := range badges {
		s.local = append(s.local, staffMember{name: "local", badgeSum: sha256.Sum256([]byte(b)), badge: true})
	}
	s.members = s.local
}

// setCentral puts the hub's list of the store's staff in force (managed),
// or the kiosk's own file's again. A login of someone no longer listed
// ends at once.
func (s *staffSessions) setCentral(managed bool, list []protocol.StaffCredential) {
	members := s.local
	if managed {
		members = nil
		for _, c := range list {
			m := staffMember{name: "staff/" + c.Name, pinHash: []byte(c.PINHash)}
			if b, err := hex.DecodeString(c.BadgeSHA256); err == nil && len(b) == sha256.Size {
				m.badgeSum, m.badge = [sha256.Size]byte(b), true
			}
			members = append(members, m)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members = members
	for t, tok := range s.tokens {
		if !slices.ContainsFunc(members, func(m staffMember) bool { return m.name == tok.name }) {
			delete(s.tokens, t)
		}
	}
	if !slices.ContainsFunc(members, func(m staffMember) bool { return m.name == s.badgeName }) {
		s.badgeAt = time.Time{}
	}
}

// byBadge returns the member whose badge code this is.
func (s *staffSessions) byBadge(code string) (string, bool) {
	sum := sha256.Sum256([]byte(code))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.members {
		if m.badge && subtle.ConstantTimeCompare(m.badgeSum[:], sum[:]) == 1 {
			return m.name, true
		}
	}
	return "", false
}

// login returns a session token for a right PIN or badge, or "" and, when
// PINs are locked out, how long until the next may be tried.
func (s *staffSessions) login(pin, badge string) (string, time.Duration) {
	name := ""
	switch {
	case pin != "":
		s.mu.Lock()
		wait := s.lockedUntil.Sub(s.now())
		members := s.members
		s.mu.Unlock()
		if wait > 0 {
			return "", wait
		}
		hashed := false
		for _, m := range members {
			if len(m.pinHash) > 0 {
				hashed = true
				if bcrypt.CompareHashAndPassword(m.pinHash, []byte(pin)) == nil {
					name = m.name
					break
				}
			}
		}
		if !hashed {
			break
		}
		s.mu.Lock()
		if name != "" {
			s.fails, s.lockouts = 0, 0
		} else if s.fails++; s.fails >= pinAttempts {
			s.fails = 0
			s.lockedUntil = s.now().Add(min(pinLockout<<s.lockouts, 24*time.Hour))
			s.lockouts = min(s.lockouts+1, 10)
		}
		s.mu.Unlock()
	case badge != "":
		name, _ = s.byBadge(badge)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" && pin == "" && badge == "" && s.now().Sub(s.badgeAt) < time.Minute {
		name, s.badgeAt = s.badgeName, time.Time{}
	}
	if name == "" {
		return "", 0
	}
	if badge != "" {
		s.fails, s.lockouts = 0, 0
	}
	t := rand.Text()
	s.tokens[t] = staffToken{at: s.now(), name: name}
	return t, 0
}

func (s *staffSessions) badgeSeen(code string) {
	if name, ok := s.byBadge(code); ok {
		s.mu.Lock()
		s.badgeAt, s.badgeName = s.now(), name
		s.mu.Unlock()
	}
}

// check renews a live token.
func (s *staffSessions) check(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.tokens[token]
	if !ok || s.now().Sub(tok.at) > staffTTL {
		delete(s.tokens, token)
		return false
	}
	tok.at = s.now()
	s.tokens[token] = tok
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
	for t, tok := range s.tokens {
		if s.now().Sub(tok.at) <= staffTTL {
			return true
		}
		delete(s.tokens, t)
	}
	return false
}
