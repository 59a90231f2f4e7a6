// Package hsmtest is the contract every key-store backend must meet. Each
// backend's tests call Run with a fresh module.
package hsmtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// Run runs the contract. open returns a module and a way to open sessions
// on it. Modules may be shared between subtests: every label the contract
// creates is unique to its subtest.
func Run(t *testing.T, open func(t *testing.T) (hsm.Module, func() (hsm.Session, error))) {
	t.Run("SignVerifiesAsIndicium", func(t *testing.T) {
		L := labeler()
		m, session := open(t)
		pub, err := m.GenerateSigningKey(L("sign-1"))
		if err != nil {
			t.Fatal(err)
		}
		s := mustSession(t, session)
		signer, err := s.Signer(L("sign-1"))
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Equal(signer.Public()) {
			t.Fatal("signer's public key differs from the generated one")
		}
		in := prototest.Indicia[0].Fields
		if err := in.Sign(signer); err != nil {
			t.Fatal(err)
		}
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.VerifyIndicium(b, pub); err != nil {
			t.Fatalf("verify: %v", err)
		}
		again, err := m.Public(L("sign-1"))
		if err != nil || !again.Equal(pub) {
			t.Fatalf("Public = %v, %v", again, err)
		}
	})
	t.Run("MACIsStableAndKeyed", func(t *testing.T) {
		L := labeler()
		m, session := open(t)
		for _, l := range []string{L("mac-1"), L("mac-2")} {
			if err := m.GenerateMACKey(l); err != nil {
				t.Fatal(err)
			}
		}
		s := mustSession(t, session)
		a, err := s.MAC(L("mac-1"), []byte("serial=1,ar=0,dr=0"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := s.MAC(L("mac-1"), []byte("serial=1,ar=0,dr=0"))
		c, _ := s.MAC(L("mac-1"), []byte("serial=1,ar=0,dr=1"))
		d, _ := s.MAC(L("mac-2"), []byte("serial=1,ar=0,dr=0"))
		if len(a) != sha256.Size || !bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(a, d) {
			t.Fatalf("MACs: %x %x %x %x", a, b, c, d)
		}
	})
	t.Run("MissingKeys", func(t *testing.T) {
		L := labeler()
		_, session := open(t)
		s := mustSession(t, session)
		if _, err := s.Signer(L("nope")); !errors.Is(err, hsm.ErrNoKey) {
			t.Errorf("Signer: %v, want ErrNoKey", err)
		}
		if _, err := s.MAC(L("nope"), nil); !errors.Is(err, hsm.ErrNoKey) {
			t.Errorf("MAC: %v, want ErrNoKey", err)
		}
	})
	t.Run("DuplicateLabel", func(t *testing.T) {
		L := labeler()
		m, _ := open(t)
		if _, err := m.GenerateSigningKey(L("dup")); err != nil {
			t.Fatal(err)
		}
		if _, err := m.GenerateSigningKey(L("dup")); !errors.Is(err, hsm.ErrKeyExists) {
			t.Errorf("second key: %v, want ErrKeyExists", err)
		}
	})
	t.Run("KindsDoNotMix", func(t *testing.T) {
		L := labeler()
		m, session := open(t)
		if err := m.GenerateMACKey(L("mac")); err != nil {
			t.Fatal(err)
		}
		s := mustSession(t, session)
		if _, err := s.Signer(L("mac")); !errors.Is(err, hsm.ErrNoKey) {
			t.Errorf("signer from a MAC key: %v, want ErrNoKey", err)
		}
	})
	t.Run("SessionPerGoroutine", func(t *testing.T) {
		L := labeler()
		m, session := open(t)
		pub, err := m.GenerateSigningKey(L("sign"))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := range 4 {
			wg.Go(func() {
				s, err := session()
				if err != nil {
					errs <- err
					return
				}
				defer s.Close()
				signer, err := s.Signer(L("sign"))
				if err != nil {
					errs <- err
					return
				}
				for i := range 50 {
					d := sha256.Sum256(fmt.Appendf(nil, "%d/%d", w, i))
					der, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
					if err != nil {
						errs <- err
						return
					}
					if !ecdsa.VerifyASN1(pub, d[:], der) {
						errs <- errors.New("signature does not verify")
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

var labelSeq atomic.Int64

// labeler returns a function that makes labels unique to one subtest.
func labeler() func(string) string {
	p := fmt.Sprintf("c%d-%d-", time.Now().UnixNano()%1_000_000, labelSeq.Add(1))
	return func(s string) string { return p + s }
}

func mustSession(t *testing.T, session func() (hsm.Session, error)) hsm.Session {
	t.Helper()
	s, err := session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
