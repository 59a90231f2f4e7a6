// Package pwcheck checks passwords against stored bcrypt hashes, and
// remembers for a while the ones that matched, so that a client that logs
// in again and again with the right password pays for bcrypt once: web
// customers' logins (hub/accounts), console operators' (hub/operators) and
// kiosks' broker passwords (hub/fleet).
//
// A password is remembered as an HMAC-SHA256 under a key made for the
// process, never as itself nor as a plain hash that could be tried offline,
// together with the stored hash it matched. The caller reads the stored hash
// every time and hands it in: a password replaced on any hub, or from a
// shell, has a new hash, and the old password no longer matches from memory.
package pwcheck

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Cache remembers passwords that matched, by subject (a login, a kiosk id).
type Cache struct {
	ttl     time.Duration
	compare func(hash, password []byte) error
	key     [32]byte
	mu      sync.Mutex
	ok      map[string]entry
	sweepAt int // the size of ok at which expired entries are dropped
}

// entry is a password that matched hash at at.
type entry struct {
	hash string
	sum  [sha256.Size]byte
	at   time.Time
}

// New returns a cache that remembers a match for ttl (0: until the hash
// changes or Forget). compare checks a password against a hash; nil is
// bcrypt.CompareHashAndPassword.
func New(ttl time.Duration, compare func(hash, password []byte) error) *Cache {
	if compare == nil {
		compare = bcrypt.CompareHashAndPassword
	}
	c := &Cache{ttl: ttl, compare: compare, ok: map[string]entry{}, sweepAt: 1024}
	rand.Read(c.key[:])
	return c
}

func (c *Cache) sum(password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(password))
	var s [sha256.Size]byte
	m.Sum(s[:0])
	return s
}

// Known reports whether password matched hash for subject within the ttl:
// no bcrypt is paid.
func (c *Cache) Known(subject, hash, password string) bool {
	sum := c.sum(password)
	c.mu.Lock()
	e, ok := c.ok[subject]
	c.mu.Unlock()
	return ok && e.hash == hash && hmac.Equal(e.sum[:], sum[:]) && (c.ttl == 0 || time.Since(e.at) < c.ttl)
}

// Check reports whether password matches hash: from memory if it matched
// this same hash within the ttl, else by compare, and then remembers it.
func (c *Cache) Check(subject, hash, password string) bool {
	if c.Known(subject, hash, password) {
		return true
	}
	if c.compare([]byte(hash), []byte(password)) != nil {
		return false
	}
	sum := c.sum(password)
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ok) >= c.sweepAt && c.ttl > 0 {
		for s, e := range c.ok {
			if now.Sub(e.at) >= c.ttl {
				delete(c.ok, s)
			}
		}
		c.sweepAt = max(1024, 2*len(c.ok))
	}
	c.ok[subject] = entry{hash: hash, sum: sum, at: now}
	return true
}

// Forget drops what the cache remembers of subject.
func (c *Cache) Forget(subject string) {
	c.mu.Lock()
	delete(c.ok, subject)
	c.mu.Unlock()
}
