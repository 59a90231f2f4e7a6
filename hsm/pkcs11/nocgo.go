//go:build !cgo

package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"errors"

	"github.com/frank-postage/frank/hsm"
)

// Config names the module and token.
type Config struct {
	Module, Token, PIN string
}

// ErrNoCgo is returned by every call: PKCS#11 modules are C libraries.
var ErrNoCgo = errors.New("pkcs11: this binary was built without cgo; build the hub with CGO_ENABLED=1 to use an HSM")

// Token is unavailable without cgo.
type Token struct{}

// Session is unavailable without cgo.
type Session struct{}

// The one key-store contract.
var (
	_ hsm.Module  = (*Token)(nil)
	_ hsm.Session = (*Session)(nil)
)

// Open fails without cgo.
func Open(Config) (*Token, error) { return nil, ErrNoCgo }

func (*Token) Close() error                                        { return ErrNoCgo }
func (*Token) GenerateSigningKey(string) (*ecdsa.PublicKey, error) { return nil, ErrNoCgo }
func (*Token) GenerateMACKey(string) error                         { return ErrNoCgo }
func (*Token) Public(string) (*ecdsa.PublicKey, error)             { return nil, ErrNoCgo }
func (*Token) Session() (*Session, error)                          { return nil, ErrNoCgo }
func (*Session) Close() error                                      { return ErrNoCgo }
func (*Session) Signer(string) (crypto.Signer, error)              { return nil, ErrNoCgo }
func (*Session) MAC(string, []byte) ([]byte, error)                { return nil, ErrNoCgo }
