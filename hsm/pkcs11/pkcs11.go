//go:build cgo

// Package pkcs11 keeps Frank's keys in a PKCS#11 token (any HSM; SoftHSM2 in
// development and tests) through miekg/pkcs11. Keys are generated inside the
// token as sensitive, non-extractable objects, found again by label (and
// refused if they could ever have been read out), and used through one
// session per goroutine: sharing a session between goroutines crashes
// SoftHSM.
package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"

	"github.com/frank-postage/frank/hsm"
)

// Config names the module and token.
type Config struct {
	Module string // path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	Token  string // token label; the slot id changes after init, the label does not
	PIN    string // user PIN
}

// oidP256 is the DER encoding of the prime256v1 curve OID, for CKA_EC_PARAMS.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// A library may be initialized once per process, so tokens on the same
// module share one context.
var (
	modMu   sync.Mutex
	modules = map[string]*module{}
)

type module struct {
	ctx  *p11.Ctx
	refs int
	// logins counts the open Tokens on each token label. A login belongs
	// to the process (every session of it on that token shares it), so
	// one Token logging out would log out every other one on the token.
	logins map[string]int
}

// Token is an open token.
type Token struct {
	cfg  Config
	mod  *module
	ctx  cryptoki
	smu  sync.Mutex // guards slot: it changes when the token comes back in another slot
	slot uint
	// mu guards mgmt, and is held across the calls made on it: only
	// GenerateSigningKey, GenerateMACKey, Public and Close take it.
	// Sessions never do, so a management call the HSM leaves hanging
	// holds up no worker.
	mu   sync.Mutex
	mgmt p11.SessionHandle
	// mgmtStale is set when a session found the token gone and found it
	// again: mgmt's handle died with it, and a restarted HSM may have
	// given its number to another session, which must not be used or
	// closed as this one. The next management call reconnects first.
	mgmtStale atomic.Bool
}

// cryptoki is the part of miekg/pkcs11's Ctx a Token calls: the module's
// *p11.Ctx, or in tests a wrapper that makes a call hang or fail.
type cryptoki interface {
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slot uint) (p11.TokenInfo, error)
	OpenSession(slot uint, flags uint) (p11.SessionHandle, error)
	CloseSession(sh p11.SessionHandle) error
	GetSessionInfo(sh p11.SessionHandle) (p11.SessionInfo, error)
	Login(sh p11.SessionHandle, userType uint, pin string) error
	Logout(sh p11.SessionHandle) error
	GenerateKey(sh p11.SessionHandle, m []*p11.Mechanism, tmpl []*p11.Attribute) (p11.ObjectHandle, error)
	GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, pub, priv []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error)
	GetAttributeValue(sh p11.SessionHandle, o p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error)
	FindObjectsInit(sh p11.SessionHandle, tmpl []*p11.Attribute) error
	FindObjects(sh p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error)
	FindObjectsFinal(sh p11.SessionHandle) error
	SignInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error
	Sign(sh p11.SessionHandle, message []byte) ([]byte, error)
}

// sessionFlags opens every session read-write: keys are made on the
// management session.
const sessionFlags = p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION

// Open loads the module, finds the token by label and logs in.
func Open(cfg Config) (*Token, error) {
	mod, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	t := &Token{cfg: cfg, mod: mod, ctx: mod.ctx}
	if t.slot, err = findToken(mod.ctx, cfg.Token); err != nil {
		t.release()
		return nil, err
	}
	if t.mgmt, err = t.ctx.OpenSession(t.slot, sessionFlags); err != nil {
		t.release()
		return nil, wrap("open session", err)
	}
	if err := t.login(); err != nil {
		t.ctx.CloseSession(t.mgmt)
		t.release()
		return nil, err
	}
	modMu.Lock()
	mod.logins[cfg.Token]++
	modMu.Unlock()
	return t, nil
}

// login logs the process in to the token on the management session; t.mu
// is held (or t not yet shared).
func (t *Token) login() error { return t.loginOn(t.mgmt) }

// loginOn logs the process in to the token on session sh. The login is
// the process's, whichever session makes it, so a session logs in on its
// own handle and takes no lock: a C_Login that hangs holds up only its
// caller. Two at once are harmless (one is told it is logged in already).
func (t *Token) loginOn(sh p11.SessionHandle) error {
	if err := t.ctx.Login(sh, p11.CKU_USER, t.cfg.PIN); err != nil && !isErr(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		return wrap("login to "+t.cfg.Token, err)
	}
	return nil
}

// refind finds the token again by label (it may come back in another
// slot) and keeps the slot for the next sessions. No lock is held while
// the HSM is asked.
func (t *Token) refind() (uint, error) {
	slot, err := findToken(t.ctx, t.cfg.Token)
	if err != nil {
		return 0, err
	}
	t.smu.Lock()
	t.slot = slot
	t.smu.Unlock()
	t.mgmtStale.Store(true)
	return slot, nil
}

// reconnect finds the token again, opens a new management session and
// logs in again: what an HSM restart, a failover or a re-inserted token
// takes. closeOld says the old management session is still the
// module's, to be freed. t.mu is held.
func (t *Token) reconnect(closeOld bool) error {
	slot, err := t.refind()
	if err != nil {
		return err
	}
	h, err := t.ctx.OpenSession(slot, sessionFlags)
	if err != nil {
		return wrap("open session", err)
	}
	if closeOld {
		t.ctx.CloseSession(t.mgmt)
	}
	t.mgmt = h
	t.mgmtStale.Store(false)
	return t.login()
}

// withMgmt runs f on the management session, t.mu held; if the session is
// lost it reconnects and runs f once more.
func (t *Token) withMgmt(f func() error) error {
	if t.mgmtStale.Load() {
		if err := t.reconnect(false); err != nil {
			t.mgmt = 0 // CK_INVALID_HANDLE: not the old number, which may be reused
			return fmt.Errorf("pkcs11: management session: %w (reconnecting: %w)", hsm.ErrSessionLost, err)
		}
	}
	err := f()
	if !errors.Is(err, hsm.ErrSessionLost) {
		return err
	}
	if rerr := t.reconnect(!gone(err) && !t.mgmtStale.Load()); rerr != nil {
		if gone(err) {
			t.mgmt = 0
		}
		return fmt.Errorf("%w (reconnecting: %w)", err, rerr)
	}
	return f()
}

func (t *Token) currentSlot() uint {
	t.smu.Lock()
	defer t.smu.Unlock()
	return t.slot
}

func loadModule(path string) (*module, error) {
	modMu.Lock()
	defer modMu.Unlock()
	if m, ok := modules[path]; ok {
		m.refs++
		return m, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s", path)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11: initialize %s: %w", path, err)
	}
	m := &module{ctx: ctx, refs: 1, logins: map[string]int{}}
	modules[path] = m
	return m, nil
}

func (t *Token) release() {
	modMu.Lock()
	defer modMu.Unlock()
	t.mod.refs--
	if t.mod.refs == 0 {
		t.mod.ctx.Finalize()
		t.mod.ctx.Destroy()
		delete(modules, t.cfg.Module)
	}
}

func findToken(ctx cryptoki, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: slot list: %w", err)
	}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("pkcs11: no token labelled %q", label)
}

// The one key-store contract.
var (
	_ hsm.Module  = (*Token)(nil)
	_ hsm.Session = (*Session)(nil)
)

// Close releases the module, and logs out if no other Token of this
// process is open on the token: the login is the process's, not this
// Token's, and another Token's sessions would lose their keys.
func (t *Token) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	modMu.Lock()
	t.mod.logins[t.cfg.Token]--
	last := t.mod.logins[t.cfg.Token] <= 0
	if last {
		delete(t.mod.logins, t.cfg.Token)
	}
	modMu.Unlock()
	if t.mgmt != 0 && !t.mgmtStale.Load() {
		if last {
			t.ctx.Logout(t.mgmt)
		}
		t.ctx.CloseSession(t.mgmt)
	}
	t.release()
	return nil
}

// GenerateSigningKey creates a P-256 key pair in the token. The private key
// is sensitive and not extractable: no call can read it out.
func (t *Token) GenerateSigningKey(label string) (*ecdsa.PublicKey, error) {
	if !hsm.ValidLabel(label) {
		return nil, fmt.Errorf("pkcs11: generate %q: %w", label, hsm.ErrLabel)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var pk *ecdsa.PublicKey
	err := t.withMgmt(func() error {
		var err error
		pk, err = t.generateSigningKey(label)
		return err
	})
	return pk, err
}

func (t *Token) generateSigningKey(label string) (*ecdsa.PublicKey, error) {
	if err := t.refuseExisting(label); err != nil {
		return nil, err
	}
	// A signing key may sign and its public half verify; every other use
	// is set false, since tokens default some of them to true.
	pub := append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_EC_PARAMS, oidP256),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, []byte(label)),
	}, usages(publicUses, p11.CKA_VERIFY)...)
	priv := append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, []byte(label)),
	}, usages(privateUses, p11.CKA_SIGN)...)
	_, _, err := t.ctx.GenerateKeyPair(t.mgmt, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv)
	if err != nil {
		return nil, wrap("generate "+label, err)
	}
	return t.public(label)
}

// GenerateMACKey creates a 256-bit HMAC key in the token, sensitive and not
// extractable.
func (t *Token) GenerateMACKey(label string) error {
	if !hsm.ValidLabel(label) {
		return fmt.Errorf("pkcs11: generate %q: %w", label, hsm.ErrLabel)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.withMgmt(func() error { return t.generateMACKey(label) })
}

func (t *Token) generateMACKey(label string) error {
	if err := t.refuseExisting(label); err != nil {
		return err
	}
	// An HMAC key signs and verifies (makes and checks control codes),
	// and does nothing else.
	tmpl := append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, []byte(label)),
	}, usages(secretUses, p11.CKA_SIGN, p11.CKA_VERIFY)...)
	if _, err := t.ctx.GenerateKey(t.mgmt, []*p11.Mechanism{p11.NewMechanism(p11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, tmpl); err != nil {
		return wrap("generate "+label, err)
	}
	return nil
}

// The uses each class of key has, as PKCS#11 names them.
var (
	publicUses  = []uint{p11.CKA_ENCRYPT, p11.CKA_VERIFY, p11.CKA_VERIFY_RECOVER, p11.CKA_WRAP, p11.CKA_DERIVE}
	privateUses = []uint{p11.CKA_DECRYPT, p11.CKA_SIGN, p11.CKA_SIGN_RECOVER, p11.CKA_UNWRAP, p11.CKA_DERIVE}
	secretUses  = []uint{p11.CKA_ENCRYPT, p11.CKA_DECRYPT, p11.CKA_SIGN, p11.CKA_VERIFY, p11.CKA_WRAP, p11.CKA_UNWRAP, p11.CKA_DERIVE}
)

// usages sets each of a class's uses: true if allowed, else false.
func usages(class []uint, allowed ...uint) []*p11.Attribute {
	out := make([]*p11.Attribute, 0, len(class))
	for _, u := range class {
		out = append(out, p11.NewAttribute(u, slices.Contains(allowed, u)))
	}
	return out
}

func (t *Token) refuseExisting(label string) error {
	hs, err := find(t.ctx, t.mgmt, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label)})
	if err != nil {
		return err
	}
	if len(hs) > 0 {
		return fmt.Errorf("pkcs11: %s: %w", label, hsm.ErrKeyExists)
	}
	// Not logged in, the token hides private objects: none found is no
	// proof there is none.
	return loggedIn(t.ctx, t.mgmt)
}

// Public returns the public half of a signing key.
func (t *Token) Public(label string) (*ecdsa.PublicKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var pk *ecdsa.PublicKey
	err := t.withMgmt(func() error {
		var err error
		pk, err = t.public(label)
		return err
	})
	return pk, err
}

func (t *Token) public(label string) (*ecdsa.PublicKey, error) {
	return publicKey(t.ctx, t.mgmt, label)
}

// publicKey reads the public half of a signing key on session sh.
func publicKey(ctx cryptoki, sh p11.SessionHandle, label string) (*ecdsa.PublicKey, error) {
	h, err := findOne(ctx, sh, label, p11.CKO_PUBLIC_KEY, p11.CKK_EC)
	if err != nil {
		return nil, err
	}
	attrs, err := ctx.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, wrap("public "+label, err)
	}
	point := attrs[0].Value
	// CKA_EC_POINT is a DER OCTET STRING around the uncompressed point.
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: public %s: %w", label, err)
	}
	return pub, nil
}

// Session is one goroutine's session on the token.
type Session struct {
	t       *Token
	h       p11.SessionHandle
	signers map[string]*signer
	macs    map[string]p11.ObjectHandle
	// gone is set once the module says it no longer has the session.
	// Atomic: psdm closes a session from another goroutine once the hung
	// call on it has returned.
	gone atomic.Bool
}

// Session opens a session for one goroutine. After an HSM restart it finds
// the token again and logs in again first. It takes no lock of the
// Token's: a call the HSM leaves hanging holds up only this caller.
func (t *Token) Session() (*Session, error) {
	h, err := t.ctx.OpenSession(t.currentSlot(), sessionFlags)
	if err != nil && (errors.Is(wrap("", err), hsm.ErrSessionLost) || isErr(err, p11.CKR_SLOT_ID_INVALID)) {
		slot, ferr := t.refind()
		if ferr != nil {
			return nil, fmt.Errorf("%w (finding the token again: %w)", wrap("open session", err), ferr)
		}
		h, err = t.ctx.OpenSession(slot, sessionFlags)
	}
	if err != nil {
		return nil, wrap("open session", err)
	}
	// The login goes with the last session of the process: after a
	// restart a new session is not logged in, and its keys are hidden.
	if loggedIn(t.ctx, h) != nil {
		if err := t.loginOn(h); err != nil {
			if !gone(err) { // a dropped handle's number may be another's now
				t.ctx.CloseSession(h)
			}
			return nil, err
		}
	}
	return &Session{t: t, h: h, signers: map[string]*signer{}, macs: map[string]p11.ObjectHandle{}}, nil
}

// Close ends the session. A session the module dropped is not closed
// again: a restarted HSM numbers its sessions afresh, and the old handle
// may be another goroutine's new session by now.
func (s *Session) Close() error {
	if s.gone.Load() {
		return nil
	}
	if err := s.t.ctx.CloseSession(s.h); err != nil {
		return fmt.Errorf("pkcs11: close session: %w", err)
	}
	return nil
}

// note records that err says the module dropped the session, and
// returns err.
func (s *Session) note(err error) error {
	if gone(err) {
		s.gone.Store(true)
	}
	return err
}

// Signer returns a crypto.Signer for the signing key label, bound to this
// session.
func (s *Session) Signer(label string) (crypto.Signer, error) {
	if sg, ok := s.signers[label]; ok {
		return sg, nil
	}
	sg, err := s.signer(label)
	if err != nil {
		return nil, s.note(err)
	}
	s.signers[label] = sg
	return sg, nil
}

func (s *Session) signer(label string) (*signer, error) {
	h, err := s.find(label, p11.CKO_PRIVATE_KEY, p11.CKK_EC)
	if err != nil {
		return nil, err
	}
	if err := s.t.checkSecret(s.h, h, label); err != nil {
		return nil, err
	}
	// Read on this session, not the Token's management one: loading a
	// key waits on no other caller's management call.
	pub, err := publicKey(s.t.ctx, s.h, label)
	if err != nil {
		return nil, err
	}
	return &signer{s: s, key: h, pub: pub}, nil
}

// MAC returns HMAC-SHA-256 of data under the key label, computed in the token.
func (s *Session) MAC(label string, data []byte) ([]byte, error) {
	out, err := s.mac(label, data)
	return out, s.note(err)
}

func (s *Session) mac(label string, data []byte) ([]byte, error) {
	h, ok := s.macs[label]
	if !ok {
		var err error
		if h, err = s.find(label, p11.CKO_SECRET_KEY, p11.CKK_GENERIC_SECRET); err != nil {
			return nil, err
		}
		if err := s.t.checkSecret(s.h, h, label); err != nil {
			return nil, err
		}
		s.macs[label] = h
	}
	if err := s.t.ctx.SignInit(s.h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}, h); err != nil {
		return nil, wrap("mac "+label, err)
	}
	out, err := s.t.ctx.Sign(s.h, data)
	if err != nil {
		return nil, wrap("mac "+label, err)
	}
	return out, nil
}

// find finds a key on the session. A session that lost its login (an
// HSM restart, another Token's logout) sees no private key at all: the
// token logs in again and the search is made once more.
func (s *Session) find(label string, class, keyType uint) (p11.ObjectHandle, error) {
	h, err := findOne(s.t.ctx, s.h, label, class, keyType)
	if !errors.Is(err, hsm.ErrNotLoggedIn) {
		return h, err
	}
	if rerr := s.t.loginOn(s.h); rerr != nil {
		return 0, fmt.Errorf("%w (logging in again: %w)", err, rerr)
	}
	return findOne(s.t.ctx, s.h, label, class, keyType)
}

type signer struct {
	s   *Session
	key p11.ObjectHandle
	pub *ecdsa.PublicKey
}

func (sg *signer) Public() crypto.PublicKey { return sg.pub }

// Sign signs a SHA-256 digest with CKM_ECDSA (SoftHSM2 does not offer
// CKM_ECDSA_SHA256) and returns ASN.1, as crypto.Signer promises.
func (sg *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("pkcs11: sign: want a SHA-256 digest")
	}
	ctx := sg.s.t.ctx
	if err := ctx.SignInit(sg.s.h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, sg.key); err != nil {
		return nil, sg.s.note(wrap("sign", err))
	}
	rs, err := ctx.Sign(sg.s.h, digest)
	if err != nil {
		return nil, sg.s.note(wrap("sign", err))
	}
	if len(rs) != 64 {
		return nil, fmt.Errorf("pkcs11: sign: %d-byte signature, want 64", len(rs))
	}
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:])})
}

// keptSecret is what a private or secret key must say of itself before the
// hub uses it. The hub makes its keys sensitive and never extractable, but
// an object of the same label may have been imported in plain or made
// extractable by someone else; and one that ever was extractable or not
// sensitive may have been copied already, so the ALWAYS/NEVER attributes
// count as much as the current ones.
var keptSecret = []struct {
	attr uint
	name string
	want bool
}{
	{p11.CKA_SENSITIVE, "CKA_SENSITIVE", true},
	{p11.CKA_EXTRACTABLE, "CKA_EXTRACTABLE", false},
	{p11.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", true},
	{p11.CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", true},
}

// checkSecret refuses key h unless it is sensitive and never was
// extractable. Callers check once per lookup and keep the handle, so
// signing costs no more. A token that cannot report an attribute is
// refused too: an unknown is not a yes.
func (t *Token) checkSecret(sh p11.SessionHandle, h p11.ObjectHandle, label string) error {
	tmpl := make([]*p11.Attribute, len(keptSecret))
	for i, a := range keptSecret {
		tmpl[i] = p11.NewAttribute(a.attr, nil)
	}
	attrs, err := t.ctx.GetAttributeValue(sh, h, tmpl)
	if err != nil {
		return wrap("check "+label, err)
	}
	var bad []string
	for i, a := range keptSecret {
		switch v := attrs[i].Value; {
		case len(v) != 1:
			bad = append(bad, a.name+" unreadable")
		case (v[0] != 0) != a.want:
			bad = append(bad, fmt.Sprintf("%s is %v", a.name, !a.want))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("pkcs11: %s: %s: %w", label, strings.Join(bad, ", "), hsm.ErrKeyExportable)
	}
	return nil
}

func findOne(ctx cryptoki, sh p11.SessionHandle, label string, class, keyType uint) (p11.ObjectHandle, error) {
	hs, err := find(ctx, sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_KEY_TYPE, keyType),
	})
	if err != nil {
		return 0, err
	}
	if len(hs) == 0 {
		if err := loggedIn(ctx, sh); err != nil {
			return 0, fmt.Errorf("pkcs11: %s: %w", label, err)
		}
		return 0, fmt.Errorf("pkcs11: %s: %w", label, hsm.ErrNoKey)
	}
	// The hub never makes two keys of one label: another is someone
	// else's, and which one the token returns first is not defined.
	if len(hs) > 1 {
		return 0, fmt.Errorf("pkcs11: %s: %d keys of this kind share the label: %w", label, len(hs), hsm.ErrKeyExists)
	}
	return hs[0], nil
}

func find(ctx cryptoki, sh p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, wrap("find", err)
	}
	hs, _, err := ctx.FindObjects(sh, 4)
	ctx.FindObjectsFinal(sh)
	if err != nil {
		return nil, wrap("find", err)
	}
	return hs, nil
}

// loggedIn returns nil if session sh is logged in as the user, else an
// error that is ErrNotLoggedIn and ErrSessionLost (or only the latter, if
// the session itself is gone).
func loggedIn(ctx cryptoki, sh p11.SessionHandle) error {
	info, err := ctx.GetSessionInfo(sh)
	if err != nil {
		return wrap("session info", err)
	}
	if info.State != p11.CKS_RO_USER_FUNCTIONS && info.State != p11.CKS_RW_USER_FUNCTIONS {
		return fmt.Errorf("pkcs11: %w: %w", hsm.ErrNotLoggedIn, hsm.ErrSessionLost)
	}
	return nil
}

// lostCodes are the return values after which a session is of no more
// use: the HSM restarted, failed over or went, or the login went with it.
// A new session, logged in again, may work.
var lostCodes = []uint{
	p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_REMOVED,
	p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_USER_NOT_LOGGED_IN,
}

// wrap prefixes a PKCS#11 error with what was being done, and marks it
// hsm.ErrSessionLost (and hsm.ErrNotLoggedIn) when it is one of lostCodes.
func wrap(op string, err error) error {
	var e p11.Error
	if !errors.As(err, &e) || !slices.Contains(lostCodes, uint(e)) {
		return fmt.Errorf("pkcs11: %s: %w", op, err)
	}
	if uint(e) == p11.CKR_USER_NOT_LOGGED_IN {
		return fmt.Errorf("pkcs11: %s: %w: %w: %w", op, hsm.ErrNotLoggedIn, hsm.ErrSessionLost, err)
	}
	return fmt.Errorf("pkcs11: %s: %w: %w", op, hsm.ErrSessionLost, err)
}

// goneCodes are the lost codes after which the module has no session of
// that handle any more (DEVICE_ERROR and USER_NOT_LOGGED_IN leave it).
var goneCodes = []uint{p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT}

// gone says err is one of goneCodes.
func gone(err error) bool {
	var e p11.Error
	return errors.As(err, &e) && slices.Contains(goneCodes, uint(e))
}

func isErr(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}
