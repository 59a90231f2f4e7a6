package fleet

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// EnrollTTL is how long an enrollment code is good for by default.
const EnrollTTL = 7 * 24 * time.Hour

// Domain-separated hashes of a code: one finds its row, the other keys
// the sealed password, so the stored hash cannot open the seal.
func codeID(code string) []byte {
	h := sha256.Sum256([]byte("frank-enroll-id-v1\x00" + code))
	return h[:]
}

func codeAEAD(code string) (cipher.AEAD, error) {
	k := sha256.Sum256([]byte("frank-enroll-key-v1\x00" + code))
	b, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// FormatEnrollCode groups a code in fives for people to type.
func FormatEnrollCode(code string) string {
	var parts []string
	for i := 0; i < len(code); i += 5 {
		parts = append(parts, code[i:min(i+5, len(code))])
	}
	return strings.Join(parts, "-")
}

// NewEnrollment makes a one-time code that trades for kioskID's broker
// password, valid for ttl. Codes made for the kiosk before are dropped.
func (r *Registry) NewEnrollment(ctx context.Context, kioskID, password string, ttl time.Duration) (string, error) {
	code := rand.Text()[:protocol.EnrollCodeLen]
	aead, err := codeAEAD(code)
	if err != nil {
		return "", fmt.Errorf("fleet: enrollment for %s: %w", kioskID, err)
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	sealed := aead.Seal(nonce, nonce, []byte(password), []byte(kioskID))
	now := time.Now()
	err = r.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, r.db.Rebind(`DELETE FROM enrollments WHERE kiosk_id = ?`), kioskID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, r.db.Rebind(`INSERT INTO enrollments (code_hash, kiosk_id, sealed, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`),
			codeID(code), kioskID, sealed, now.UnixMicro(), now.Add(ttl).UnixMicro())
		return err
	})
	if err != nil {
		return "", fmt.Errorf("fleet: enrollment for %s: %w", kioskID, err)
	}
	return FormatEnrollCode(code), nil
}

// SetStoreZIP records the ZIP code a store mails from.
func (r *Registry) SetStoreZIP(ctx context.Context, storeID string, zip protocol.ZIP) error {
	if n, err := zip.Number(); err != nil || n == 0 {
		return fmt.Errorf("fleet: store %s: zip %q: want five digits", storeID, zip)
	}
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, r.db.Rebind(`UPDATE stores SET zip = ? WHERE id = ?`), string(zip), storeID); err != nil {
			return err
		}
		// Every hub keeps the kiosks it read, with their stores' ZIPs, until
		// this version moves: a sale is then signed with the new ZIP.
		_, err := tx.ExecContext(ctx, `UPDATE kiosks_version SET v = v + 1 WHERE id = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: store %s: %w", storeID, err)
	}
	r.forgetAll()
	return nil
}

// ErrEnrollCode is a code that is wrong, used or expired; they are not
// told apart.
var ErrEnrollCode = errors.New("fleet: enrollment code wrong, used or expired")

// Enroll trades a code for its kiosk's credentials, once. issue, if set,
// runs before the code is spent (the kiosk's certificate signed and
// recorded): if it fails, or the hub stops, the code is not spent and the
// kiosk tries again with it. If issue ran and another use of the code won
// meanwhile, Enroll returns ErrEnrollCode and the caller undoes what issue
// did.
func (r *Registry) Enroll(ctx context.Context, code string, issue func(*protocol.EnrollResult) error) (*protocol.EnrollResult, error) {
	code = protocol.NormalizeEnrollCode(code)
	if code == "" {
		return nil, ErrEnrollCode
	}
	id := codeID(code)
	var kioskID string
	var sealed []byte
	now := time.Now().UnixMicro()
	err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT kiosk_id, sealed FROM enrollments WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?`),
		id, now).Scan(&kioskID, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrEnrollCode
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	aead, err := codeAEAD(code)
	if err != nil || len(sealed) < aead.NonceSize() {
		return nil, fmt.Errorf("fleet: enroll %s: bad seal", kioskID)
	}
	password, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(kioskID))
	if err != nil {
		return nil, fmt.Errorf("fleet: enroll %s: seal does not open: %w", kioskID, err)
	}
	k, err := r.Get(ctx, kioskID)
	if err != nil {
		return nil, err
	}
	var zip sql.NullString
	if err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT zip FROM stores WHERE id = ?`), k.Store).Scan(&zip); err != nil {
		return nil, fmt.Errorf("fleet: enroll %s: %w", kioskID, err)
	}
	out := &protocol.EnrollResult{KioskID: kioskID, Store: k.Store, Username: kioskID, Password: string(password),
		OriginZIP: protocol.ZIP(zip.String)}
	if issue != nil {
		if err := issue(out); err != nil {
			return nil, err
		}
	}
	// Spend the code; of two racing uses, one wins.
	res, err := r.db.ExecContext(ctx, r.db.Rebind(`UPDATE enrollments SET used_at = ? WHERE code_hash = ? AND used_at IS NULL`), time.Now().UnixMicro(), id)
	if err != nil {
		return nil, fmt.Errorf("fleet: enroll %s: %w", kioskID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, ErrEnrollCode
	}
	return out, nil
}
