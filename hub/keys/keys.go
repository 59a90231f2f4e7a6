// Package keys runs the hub's key ceremony: it has the HSM create the
// indicium signing key, registers the public key with the postal authority
// for a certificate serial, and keeps every key that ever signed so old
// stamps still verify after a rotation.
package keys

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/store"
)

// Key is a signing key as published at /api/v1/certificates, with the
// postal authority's certificate for it.
type Key struct {
	CertSerial     uint32     `json:"serial"`
	Algorithm      int        `json:"algorithm"`
	Label          string     `json:"-"`
	PublicKeyPEM   string     `json:"public_key_pem"`
	CertificatePEM string     `json:"certificate_pem"`
	Created        time.Time  `json:"created"`
	Retired        *time.Time `json:"retired,omitempty"`
	// Compromised is when the key was compromised: stamps it signed from
	// that day on are not postage.
	Compromised *time.Time `json:"compromised,omitempty"`
}

// Public is the key's public half as the postal authority certified it:
// the PSDM workers sign only with an HSM key whose public half is this one.
// The zero Key (no key to sign with) has none, and no error.
func (k Key) Public() (*ecdsa.PublicKey, error) {
	if k == (Key{}) {
		return nil, nil
	}
	pub, err := parsePublicKey(k.PublicKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("keys: key %d: certified public key: %w", k.CertSerial, err)
	}
	return pub, nil
}

// ErrNoKey means the ceremony has not run.
var ErrNoKey = errors.New("keys: no active signing key; run hub keys init")

// registrar gets certificate serials from the postal authority.
type registrar interface {
	RegisterKey(ctx context.Context, pub *ecdsa.PublicKey) (postal.Certificate, error)
}

// Keys manages the signing keys.
type Keys struct {
	db  *store.DB
	hsm hsm.Module
	pa  registrar
	log *slog.Logger
	now func() time.Time
}

// New returns a key manager on the hub's clock now.
func New(db *store.DB, hsm hsm.Module, pa registrar, log *slog.Logger, now func() time.Time) *Keys {
	return &Keys{db: db, hsm: hsm, pa: pa, log: log, now: now}
}

// ErrCompromised means the key that signs is marked compromised and its
// rotation has not finished (the hub stopped, or the authority was out of
// reach, in between): its stamps would be void, so nothing is signed until
// FinishCompromise has made a new key.
var ErrCompromised = errors.New("keys: the active signing key is compromised and no new key is registered yet")

// Active returns the key that signs new indicia. A compromised one comes
// back with ErrCompromised.
func (k *Keys) Active(ctx context.Context) (Key, error) {
	all, err := k.All(ctx)
	if err != nil {
		return Key{}, err
	}
	return ActiveOf(all)
}

// ActiveOf is Active among all, as All lists them.
func ActiveOf(all []Key) (Key, error) {
	for i := len(all) - 1; i >= 0; i-- {
		switch {
		case all[i].Retired != nil:
		case all[i].Compromised != nil:
			return all[i], fmt.Errorf("%w (key %d)", ErrCompromised, all[i].CertSerial)
		default:
			return all[i], nil
		}
	}
	return Key{}, ErrNoKey
}

// FinishCompromise rotates away an active key marked compromised, and
// returns the key that signs. Every hub tries it at start and the leader
// every round, so a compromise cut short is finished once the authority
// answers; under the cluster lock, so that hubs starting together make one
// key.
func (k *Keys) FinishCompromise(ctx context.Context) (Key, error) {
	if key, err := k.Active(ctx); !errors.Is(err, ErrCompromised) {
		return key, err
	}
	unlock, err := k.db.Lock(ctx, lockName)
	if err != nil {
		return Key{}, fmt.Errorf("keys: finish compromise: %w", err)
	}
	defer unlock()
	key, err := k.Active(ctx)
	if !errors.Is(err, ErrCompromised) {
		return key, err
	}
	next, err := k.rotate(ctx)
	if err != nil {
		return Key{}, fmt.Errorf("keys: finish the compromise of key %d: %w", key.CertSerial, err)
	}
	return next, nil
}

// All returns every key that ever signed, oldest first.
func (k *Keys) All(ctx context.Context) ([]Key, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT cert_serial, key_label, public_key_pem, certificate_pem, created_at, retired_at, compromised_at FROM signing_keys ORDER BY created_at, cert_serial`)
	if err != nil {
		return nil, fmt.Errorf("keys: list: %w", err)
	}
	defer rows.Close()
	out := []Key{}
	for rows.Next() {
		var key Key
		var created int64
		var retired, compromised sql.NullInt64
		if err := rows.Scan(&key.CertSerial, &key.Label, &key.PublicKeyPEM, &key.CertificatePEM, &created, &retired, &compromised); err != nil {
			return nil, fmt.Errorf("keys: list: %w", err)
		}
		key.Algorithm = 3
		key.Created = time.UnixMicro(created).UTC()
		if retired.Valid {
			t := time.UnixMicro(retired.Int64).UTC()
			key.Retired = &t
		}
		if compromised.Valid {
			t := time.UnixMicro(compromised.Int64).UTC()
			key.Compromised = &t
		}
		out = append(out, key)
	}
	return out, rows.Err()
}

// lockName is the cluster lock under which a hub makes a signing key.
const lockName = "signing-key"

// Init creates the first signing key if there is none, and returns the
// active key either way. Hubs sharing a database may start together: the
// check and the creation happen under the cluster lock, so one makes the
// key and the others find it.
func (k *Keys) Init(ctx context.Context) (Key, error) {
	if key, err := k.Active(ctx); !errors.Is(err, ErrNoKey) {
		return key, err
	}
	unlock, err := k.db.Lock(ctx, lockName)
	if err != nil {
		return Key{}, fmt.Errorf("keys: init: %w", err)
	}
	defer unlock()
	// Another hub may have made it while this one waited.
	if key, err := k.Active(ctx); !errors.Is(err, ErrNoKey) {
		return key, err
	}
	return k.rotate(ctx)
}

// Rotate creates a new signing key, registers it, and retires the old one.
// Retired keys stay published. It holds the cluster lock: two rotations
// at once could each retire the old key and both leave theirs active.
func (k *Keys) Rotate(ctx context.Context) (Key, error) {
	unlock, err := k.db.Lock(ctx, lockName)
	if err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	defer unlock()
	return k.rotate(ctx)
}

// rotate is Rotate under the lock. Each key gets a fresh label, so a key
// the HSM made for a hub that died before recording it is never asked for
// again: the next attempt is not stuck on its label (GenerateSigningKey
// refuses labels in use), and the orphan, recorded nowhere, never signs.
// An operator may delete it from the token.
func (k *Keys) rotate(ctx context.Context) (Key, error) {
	now := k.now().UTC()
	label, pub, err := k.pending(ctx)
	if err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	if pub == nil {
		// The HSM's label is unique by the real time, which a test's clock is not.
		label = "indicium-" + time.Now().UTC().Format("20060102T150405.000000")
		if pub, err = k.hsm.GenerateSigningKey(label); err != nil {
			return Key{}, fmt.Errorf("keys: rotate: %w", err)
		}
		// Recorded before the authority certifies it: a key certified but
		// never recorded (this hub killed in between, or the answer lost)
		// is found and published compromised (settleRegistrations), never
		// left unknown.
		pem, err := postal.PublicKeyPEM(pub)
		if err != nil {
			return Key{}, fmt.Errorf("keys: rotate: %w", err)
		}
		if _, err := k.db.ExecContext(ctx, k.db.Rebind(`INSERT INTO key_registrations (key_label, public_key_pem, started_at) VALUES (?, ?, ?)`),
			label, pem, now.UnixMicro()); err != nil {
			return Key{}, fmt.Errorf("keys: rotate: %w", err)
		}
	}
	cert, err := k.pa.RegisterKey(ctx, pub)
	if err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, k.db.Rebind(`UPDATE signing_keys SET retired_at = `+store.FlooredTime+` WHERE retired_at IS NULL`), now.UnixMicro()); err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	if _, err := tx.ExecContext(ctx, k.db.Rebind(`INSERT INTO signing_keys (cert_serial, key_label, public_key_pem, certificate_pem, created_at) VALUES (?, ?, ?, ?, `+store.FlooredTime+`)`),
		cert.Serial, label, cert.PublicKeyPEM, cert.CertificatePEM, now.UnixMicro()); err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	if _, err := tx.ExecContext(ctx, k.db.Rebind(`DELETE FROM key_registrations WHERE key_label = ?`), label); err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Key{}, fmt.Errorf("keys: rotate: %w", err)
	}
	k.log.Info("signing key created and registered", "label", label, "cert_serial", cert.Serial)
	if cert.CertificatePEM == "" {
		k.log.Warn("the postal authority gave no certificate for the key; verifiers must trust the hub for it", "cert_serial", cert.Serial)
	}
	return Key{CertSerial: cert.Serial, Algorithm: 3, Label: label, PublicKeyPEM: cert.PublicKeyPEM, CertificatePEM: cert.CertificatePEM, Created: now}, nil
}

// Compromise marks the key serial compromised since the given time, and
// notes when that was declared: the postal report of that period tells the
// authority, even when since falls in a period already reported. A key
// declared again with an earlier time is noted again, for the report, and
// its stamps are swept again (ledger.VoidCompromised); a later time changes
// nothing: a compromise is never narrowed, since verifiers already refuse
// what it covered. It is
// recorded before the active key is rotated away, so an authority out of
// reach for the rotation loses nothing: the hubs stop signing with it
// within KeyCheckEvery, and the leader finishes the rotation once the
// authority answers. Running hubs follow the rotation within KeyCheckEvery.
func (k *Keys) Compromise(ctx context.Context, serial uint32, since time.Time) error {
	// Each SET reads the row as it was.
	earlier := `(compromised_at IS NULL OR ? < compromised_at)`
	s, now := since.UnixMicro(), k.now().UnixMicro()
	res, err := k.db.ExecContext(ctx, k.db.Rebind(`UPDATE signing_keys SET
		compromise_noted_at = CASE WHEN `+earlier+` THEN `+store.FlooredTime+` ELSE compromise_noted_at END,
		compromise_swept_at = CASE WHEN `+earlier+` THEN NULL ELSE compromise_swept_at END,
		compromised_at = CASE WHEN `+earlier+` THEN ? ELSE compromised_at END
		WHERE cert_serial = ?`), s, now, s, s, s, serial)
	if err != nil {
		return fmt.Errorf("keys: compromise %d: %w", serial, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("keys: compromise %d: no such key", serial)
	}
	k.log.Warn("signing key marked compromised", "cert_serial", serial, "since", since)
	if _, err := k.FinishCompromise(ctx); err != nil && !errors.Is(err, ErrNoKey) {
		return fmt.Errorf("keys: compromise %d: recorded; the hubs sign nothing until a new key is registered, which the leader retries every round: %w", serial, err)
	}
	return nil
}

// Certify asks the authority again for the certificate of each key that has
// none (registered before the authority signed them): a registration is
// idempotent, and answers the same serial with its certificate. It settles
// registrations a rotation left unfinished first.
func (k *Keys) Certify(ctx context.Context) error {
	if err := k.settleRegistrations(ctx); err != nil {
		return err
	}
	all, err := k.All(ctx)
	if err != nil {
		return err
	}
	for _, key := range all {
		if key.CertificatePEM != "" {
			continue
		}
		pub, err := parsePublicKey(key.PublicKeyPEM)
		if err != nil {
			return fmt.Errorf("keys: certify %d: %w", key.CertSerial, err)
		}
		cert, err := k.pa.RegisterKey(ctx, pub)
		if err != nil {
			return fmt.Errorf("keys: certify %d: %w", key.CertSerial, err)
		}
		if cert.Serial != key.CertSerial || cert.CertificatePEM == "" {
			return fmt.Errorf("keys: certify %d: the authority answered serial %d, certificate %t", key.CertSerial, cert.Serial, cert.CertificatePEM != "")
		}
		if _, err := k.db.ExecContext(ctx, k.db.Rebind(`UPDATE signing_keys SET certificate_pem = ? WHERE cert_serial = ?`), cert.CertificatePEM, key.CertSerial); err != nil {
			return fmt.Errorf("keys: certify %d: %w", key.CertSerial, err)
		}
		k.log.Info("the postal authority certified a key", "cert_serial", key.CertSerial)
	}
	return nil
}

// pending returns the newest key a rotation made in this hub's HSM but did
// not record, to register again (registration is idempotent by key): a
// rotation retried while the authority is out of reach, every round after
// a compromise, makes one key, not one a try. It returns a nil key when
// there is none.
func (k *Keys) pending(ctx context.Context) (string, *ecdsa.PublicKey, error) {
	var label, pemText string
	err := k.db.QueryRowContext(ctx, `SELECT key_label, public_key_pem FROM key_registrations ORDER BY started_at DESC LIMIT 1`).Scan(&label, &pemText)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	recorded, err := parsePublicKey(pemText)
	if err != nil {
		return "", nil, fmt.Errorf("pending key %s: %w", label, err)
	}
	// Made in this hub's HSM? A cluster's hubs may each have their own.
	pub, err := k.hsm.Public(label)
	if err != nil || !pub.Equal(recorded) {
		return "", nil, nil
	}
	return label, pub, nil
}

// settleRegistrations finishes each registration a rotation left behind:
// the HSM made the key and the authority may have certified it, but the
// hub never recorded it. Registering it again (idempotent) gives its
// serial; it is recorded retired and compromised from its making, so the
// next report tells the authority and verifiers refuse any stamp it signs.
// Its "in service" time, like every time a report takes a row by, is no
// earlier than the last period built: it goes in the next report.
// Under the cluster lock, which a rotation in progress holds.
func (k *Keys) settleRegistrations(ctx context.Context) error {
	unlock, err := k.db.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("keys: settle registrations: %w", err)
	}
	defer unlock()
	rows, err := k.db.QueryContext(ctx, `SELECT key_label, public_key_pem, started_at FROM key_registrations ORDER BY started_at`)
	if err != nil {
		return fmt.Errorf("keys: settle registrations: %w", err)
	}
	type reg struct {
		label, pem string
		at         int64
	}
	var regs []reg
	for rows.Next() {
		var r reg
		if err := rows.Scan(&r.label, &r.pem, &r.at); err != nil {
			rows.Close()
			return fmt.Errorf("keys: settle registrations: %w", err)
		}
		regs = append(regs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("keys: settle registrations: %w", err)
	}
	for _, r := range regs {
		pub, err := parsePublicKey(r.pem)
		if err != nil {
			return fmt.Errorf("keys: settle registration %s: %w", r.label, err)
		}
		cert, err := k.pa.RegisterKey(ctx, pub)
		if err != nil {
			return fmt.Errorf("keys: settle registration %s: %w", r.label, err)
		}
		now := k.now().UnixMicro()
		tx, err := k.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("keys: settle registration %s: %w", r.label, err)
		}
		_, err = tx.ExecContext(ctx, k.db.Rebind(`INSERT INTO signing_keys (cert_serial, key_label, public_key_pem, certificate_pem, created_at, retired_at, compromised_at, compromise_noted_at)
			VALUES (?, ?, ?, ?, `+store.FlooredTime+`, `+store.FlooredTime+`, ?, `+store.FlooredTime+`)`), cert.Serial, r.label, cert.PublicKeyPEM, cert.CertificatePEM, r.at, now, r.at, now)
		if err == nil {
			_, err = tx.ExecContext(ctx, k.db.Rebind(`DELETE FROM key_registrations WHERE key_label = ?`), r.label)
		}
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			tx.Rollback()
			return fmt.Errorf("keys: settle registration %s: %w", r.label, err)
		}
		k.log.Warn("a signing key certified but never recorded (its rotation was cut short) is published compromised and never signs",
			"label", r.label, "cert_serial", cert.Serial)
	}
	return nil
}

func parsePublicKey(p string) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return ec, nil
}
