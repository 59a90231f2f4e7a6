package fleet

import (
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/accounts/pwcheck"
)

// UnknownHash is the hash Authenticate compares a password for an unknown
// kiosk id against: nil until it first did.
func UnknownHash(r *Registry) []byte { return r.unknown }

// ForgetUnknownHash drops that hash, so that the next comparison for an
// unknown id makes it again and shows it was made.
func ForgetUnknownHash(r *Registry) { r.unknownOnce, r.unknown = sync.Once{}, nil }

// CountCompares has r count, from now on, the bcrypt comparisons of
// passwords with kiosks' stored hashes (it forgets the ones that matched).
func CountCompares(r *Registry) *atomic.Int64 {
	n := new(atomic.Int64)
	r.ok = pwcheck.New(0, func(hash, password []byte) error {
		n.Add(1)
		return bcrypt.CompareHashAndPassword(hash, password)
	})
	return n
}
