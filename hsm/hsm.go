// Package hsm holds Frank's signing and MAC keys. Keys are created inside a
// module and never leave it: callers get a crypto.Signer for the P-256
// indicium key and a MAC function for register control codes. Two backends
// share one contract: soft (keys wrapped under a master key, for
// development) and pkcs11 (any PKCS#11 token; SoftHSM2 in tests).
package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"errors"
)

// Module is a key store, soft or PKCS#11: keys are made inside it and
// never leave. Declared here once; the backends assert they meet it, and
// hsmtest is the contract they are tested against.
type Module interface {
	GenerateSigningKey(label string) (*ecdsa.PublicKey, error)
	GenerateMACKey(label string) error
	Public(label string) (*ecdsa.PublicKey, error)
	Close() error
}

// Session is one goroutine's handle on a module; never shared.
type Session interface {
	Signer(label string) (crypto.Signer, error)
	MAC(label string, data []byte) ([]byte, error)
	Close() error
}

// Opener turns a backend's session opener, which returns its own session
// type, into one that returns a Session.
func Opener[S Session](open func() (S, error)) func() (Session, error) {
	return func() (Session, error) { return open() }
}

// Errors shared by the backends.
var (
	ErrNoKey     = errors.New("hsm: no such key")
	ErrKeyExists = errors.New("hsm: key already exists")
	ErrLabel     = errors.New("hsm: bad key label")
	// ErrKeyExportable refuses a key that can be, or once could be, read
	// out of the module: a copy may exist, so it must not sign postage.
	ErrKeyExportable = errors.New("hsm: key can leave the module")
	// ErrSessionLost is a session the module no longer knows: the HSM
	// restarted, failed over or was removed, or the login went. The
	// session is dead; a new one (after a new login) may work.
	ErrSessionLost = errors.New("hsm: session lost")
	// ErrNotLoggedIn is a session that works but is not logged in, so
	// the module hides its private keys: not the same as a key that is
	// not there. Errors that carry it carry ErrSessionLost too.
	ErrNotLoggedIn = errors.New("hsm: not logged in")
)

// ValidLabel keeps labels safe as file names and token attributes.
func ValidLabel(label string) bool {
	if label == "" || len(label) > 64 {
		return false
	}
	for _, c := range label {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
