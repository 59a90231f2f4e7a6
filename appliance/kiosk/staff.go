package kiosk

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"strings"
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

// staffSessions are the touchscreen's staff logins. Until the hub
// manages the store's staff, a PIN is checked against the bcrypt hash of
// the kiosk's own file and a badge against its badges. Once it does, the
// hub checks each PIN and badge (protocol.TopicStaff) and sends only the
// members' names: their hashes stay at the hub, so a stolen kiosk holds
// nothing to guess them from, and the hub counts every guess. A badge
// scanned at the kiosk logs in the next PIN-less login within a minute,
// so staff scan then tap "Staff".
type staffSessions struct {
	mu        sync.Mutex
	local     []staffMember // from the kiosk's own file
	managed   bool          // the hub checks logins; names are who may log in
	names     []string
	store     string // the store the last config named
	tokens    map[string]staffToken
	badgeAt   time.Time
	badgeName string

	// ask checks a PIN or a badge at the hub: the member's name, "" for
	// a wrong one, or how long the hub refuses to check any.
	ask func(ctx context.Context, pin, badge string) (name string, wait time.Duration, err error)

	fails       int       // wrong PINs in a row
	lockouts    int       // lockouts in a row
	lockedUntil time.Time // no PIN is checked before then
	now         func() time.Time
}

// staffMember is one who may open staff mode by the kiosk's own file.
type staffMember struct {
	pinHash  []byte
	badgeSum [sha256.Size]byte // of the badge's code
	badge    bool
}

// localName names a login by the kiosk's own file; central ones are
// "staff/" and the member's name.
const localName = "local"

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
		s.local = append(s.local, staffMember{pinHash: []byte(pinHash)})
	}
	for _, b := range badges {
		s.local = append(s.local, staffMember{badgeSum: sha256.Sum256([]byte(b)), badge: true})
	}
}

// setCentral puts the hub's list of store's staff in force (managed), or
// the kiosk's own file's again. A login of someone no longer listed ends
// at once, and every login ends when the kiosk moved to another store. A
// config that names no store (the hub does not know the kiosk, or retired
// it) does not put the file's PIN back once the hub managed the staff: no
// one logs in.
func (s *staffSessions) setCentral(managed bool, names []string, store string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if store == "" && s.managed {
		managed, names = true, nil
	}
	moved := store != s.store && s.store != ""
	s.managed, s.names, s.store = managed, names, store
	for t, tok := range s.tokens {
		if moved || !s.mayLocked(tok.name) {
			delete(s.tokens, t)
		}
	}
	if moved || !s.mayLocked(s.badgeName) {
		s.badgeAt = time.Time{}
	}
}

// mayLocked reports whether a login named name may stand; s.mu is held.
func (s *staffSessions) mayLocked(name string) bool {
	if !s.managed {
		return name == localName
	}
	n, ok := strings.CutPrefix(name, "staff/")
	return ok && slices.Contains(s.names, n)
}

// whose asks who a PIN or badge belongs to: the hub once it manages the
// store's staff, else the kiosk's own file.
func (s *staffSessions) whose(ctx context.Context, pin, badge string) (name string, wait time.Duration, err error) {
	s.mu.Lock()
	managed, local := s.managed, s.local
	s.mu.Unlock()
	if managed {
		if s.ask == nil {
			return "", 0, protocol.Errorf(protocol.CodeServiceUnavailable, "staff logins are checked at the hub")
		}
		n, wait, err := s.ask(ctx, pin, badge)
		if n != "" {
			n = "staff/" + n
		}
		return n, wait, err
	}
	sum := sha256.Sum256([]byte(badge))
	for _, m := range local {
		switch {
		case pin != "" && len(m.pinHash) > 0 && bcrypt.CompareHashAndPassword(m.pinHash, []byte(pin)) == nil,
			badge != "" && m.badge && subtle.ConstantTimeCompare(m.badgeSum[:], sum[:]) == 1:
			return localName, 0, nil
		}
	}
	return "", 0, nil
}

// hasPINs reports whether any PIN can open staff mode here, so that a
// kiosk with none does not count wrong ones.
func (s *staffSessions) hasPINs() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.managed || slices.ContainsFunc(s.local, func(m staffMember) bool { return len(m.pinHash) > 0 })
}

// login returns a session token for a right PIN or badge, or "" and, when
// PINs are locked out (here or at the hub), how long until the next may
// be tried. An error is a login that could not be checked: the hub did
// not answer.
func (s *staffSessions) login(ctx context.Context, pin, badge string) (string, time.Duration, error) {
	name := ""
	switch {
	case pin != "":
		s.mu.Lock()
		wait := s.lockedUntil.Sub(s.now())
		s.mu.Unlock()
		if wait > 0 {
			return "", wait, nil
		}
		if !s.hasPINs() {
			break
		}
		n, wait, err := s.whose(ctx, pin, "")
		if err != nil || wait > 0 {
			return "", wait, err
		}
		name = n
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
		n, wait, err := s.whose(ctx, "", badge)
		if err != nil || wait > 0 {
			return "", wait, err
		}
		name = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" && pin == "" && badge == "" && s.now().Sub(s.badgeAt) < time.Minute && s.mayLocked(s.badgeName) {
		name, s.badgeAt = s.badgeName, time.Time{}
	}
	// A check that crossed a change between the kiosk's file and the
	// hub's staff counts for neither.
	if name == "" || (name == localName) == s.managed {
		return "", 0, nil
	}
	if badge != "" {
		s.fails, s.lockouts = 0, 0
	}
	t := rand.Text()
	s.tokens[t] = staffToken{at: s.now(), name: name}
	return t, 0, nil
}

// badgeSeen takes a badge scanned at the kiosk: its member's next tap on
// "Staff" within a minute logs in.
func (s *staffSessions) badgeSeen(ctx context.Context, code string) {
	name, _, err := s.whose(ctx, "", code)
	if err != nil || name == "" {
		return
	}
	s.mu.Lock()
	s.badgeAt, s.badgeName = s.now(), name
	s.mu.Unlock()
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

// name names the login of a live token, for the log: "local" (the
// kiosk's own file) or "staff/" and the member's name; "" for none.
func (s *staffSessions) name(token string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[token].name
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
