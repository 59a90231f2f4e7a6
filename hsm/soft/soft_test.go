package soft_test

import (
	"bytes"
	"github.com/frank-postage/frank/hsm"
	"os"
	"path/filepath"
	"testing"

	"github.com/frank-postage/frank/hsm/hsmtest"
	"github.com/frank-postage/frank/hsm/soft"
)

func TestContract(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) (hsm.Module, func() (hsm.Session, error)) {
		k, err := soft.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		return k, func() (hsm.Session, error) { return k.Session() }
	})
}

func TestPersistsAndSeals(t *testing.T) {
	dir := t.TempDir()
	k, err := soft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.GenerateSigningKey("sign-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.GenerateMACKey("mac"); err != nil {
		t.Fatal(err)
	}
	s, _ := k.Session()
	mac1, _ := s.MAC("mac", []byte("x"))
	k.Close()

	k2, err := soft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := k2.Public("sign-1")
	if err != nil || !p2.Equal(pub) {
		t.Fatalf("reopened key: %v", err)
	}
	s2, _ := k2.Session()
	if mac2, _ := s2.MAC("mac", []byte("x")); !bytes.Equal(mac1, mac2) {
		t.Fatal("MAC changed across reopen")
	}

	fi, err := os.Stat(filepath.Join(dir, "master.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key mode %v, %v", fi.Mode(), err)
	}
	// Under another master key the sealed keys do not open.
	if err := os.WriteFile(filepath.Join(dir, "master.key"), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	k3, err := soft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k3.Public("sign-1"); err == nil {
		t.Fatal("key unsealed under the wrong master key")
	}
}

func TestRejectsBadLabel(t *testing.T) {
	k, _ := soft.Open(t.TempDir())
	if _, err := k.GenerateSigningKey("../escape"); err == nil {
		t.Fatal("path-like label accepted")
	}
}

// A key written over a .tmp a crash left readable by everyone is still
// readable by its owner only.
func TestKeyFileModeDespiteLeftoverTmp(t *testing.T) {
	dir := t.TempDir()
	k, err := soft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := os.WriteFile(filepath.Join(dir, "sign-2.key.json.tmp"), []byte("left by a crash"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := k.GenerateSigningKey("sign-2"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "sign-2.key.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
}
