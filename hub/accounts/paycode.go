package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// PayCodeTTL is how long a pay code is good for once made.
const PayCodeTTL = 15 * time.Minute

// ErrPayCode is a pay code that is wrong, used by another purchase, or
// expired; the three are not told apart.
var ErrPayCode = errors.New("accounts: the pay code is wrong, used or expired")

// MaxOpenPayCodes is how many pay codes an account may hold unused and
// unexpired at once: a customer needs one or two, and each is a row.
const MaxOpenPayCodes = 5

// PayCodeRetention is how long a pay code's row is kept past its expiry,
// used or not; NewPayCode deletes older ones.
const PayCodeRetention = 24 * time.Hour

// ErrTooManyPayCodes refuses a pay code to an account that holds
// MaxOpenPayCodes unused and unexpired.
var ErrTooManyPayCodes = fmt.Errorf("accounts: %d pay codes are open; use one, or wait until one expires", MaxOpenPayCodes)

// ErrPayCodeLimit is a pay code good for less than the purchase.
type ErrPayCodeLimit struct{ Max protocol.Mills }

func (e *ErrPayCodeLimit) Error() string {
	return fmt.Sprintf("accounts: the pay code pays at most %s", e.Max)
}

// NewPayCode makes a one-time code with which the customer pays one kiosk
// purchase of at most max from the balance, before expiry. Only its hash
// is stored. An account holds at most MaxOpenPayCodes unused and unexpired
// (ErrTooManyPayCodes), and codes expired more than PayCodeRetention ago,
// used or not, are deleted.
func (a *Accounts) NewPayCode(ctx context.Context, accountID int64, max protocol.Mills) (code string, expires time.Time, err error) {
	if max <= 0 {
		return "", time.Time{}, protocol.Errorf(protocol.CodeInvalidRequest, "a pay code needs the most it may pay, above $0")
	}
	code = protocol.FormatPayCode(rand.Text()[:protocol.PayCodeLen])
	now := a.now()
	expires = now.Add(PayCodeTTL)
	h := payCodeHash(code)
	err = a.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, a.db.Rebind(`DELETE FROM pay_codes WHERE expires_at < ?`), now.Add(-PayCodeRetention).UnixMicro()); err != nil {
			return err
		}
		// The account's row is locked while its codes are counted, so two
		// requests at once, on any hub, cannot both find room.
		var id int64
		if err := tx.QueryRowContext(ctx, a.db.Rebind(`SELECT id FROM accounts WHERE id = ?`+a.db.ForUpdate()), accountID).Scan(&id); err != nil {
			return err
		}
		var open int
		if err := tx.QueryRowContext(ctx, a.db.Rebind(`SELECT COUNT(*) FROM pay_codes WHERE account_id = ? AND used_by IS NULL AND expires_at > ?`),
			accountID, now.UnixMicro()).Scan(&open); err != nil {
			return err
		}
		if open >= MaxOpenPayCodes {
			return ErrTooManyPayCodes
		}
		_, err := tx.ExecContext(ctx, a.db.Rebind(`INSERT INTO pay_codes (hash, account_id, created_at, expires_at, max_mills) VALUES (?, ?, ?, ?, ?)`),
			h[:], accountID, now.UnixMicro(), expires.UnixMicro(), max)
		return err
	})
	if errors.Is(err, ErrTooManyPayCodes) {
		return "", time.Time{}, err
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("accounts: new pay code: %w", err)
	}
	return code, expires, nil
}

// RedeemPayCode returns the account code pays from, for purchase (a kiosk
// and request id) of amount: it marks the code used by that purchase,
// which may ask again and gets the same account. A purchase over the
// code's most is *ErrPayCodeLimit, and the code stays unused; anything
// else is ErrPayCode.
func (a *Accounts) RedeemPayCode(ctx context.Context, code, purchase string, amount protocol.Mills) (int64, error) {
	norm := protocol.NormalizePayCode(code)
	if norm == "" {
		return 0, ErrPayCode
	}
	h := payCodeHash(norm)
	now := a.now().UnixMicro()
	var id int64
	err := a.db.QueryRowContext(ctx, a.db.Rebind(`UPDATE pay_codes SET used_at = ?, used_by = ?
		WHERE hash = ? AND expires_at > ? AND (used_by IS NULL OR used_by = ?) AND (max_mills IS NULL OR max_mills >= ?) RETURNING account_id`),
		now, purchase, h[:], now, purchase, amount).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		var max protocol.Mills
		if a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT max_mills FROM pay_codes
			WHERE hash = ? AND expires_at > ? AND (used_by IS NULL OR used_by = ?) AND max_mills < ?`), h[:], now, purchase, amount).Scan(&max) == nil {
			return 0, &ErrPayCodeLimit{Max: max}
		}
		return 0, ErrPayCode
	}
	if err != nil {
		return 0, fmt.Errorf("accounts: redeem pay code: %w", err)
	}
	return id, nil
}

// ReleasePayCode gives the code back after purchase was refused without
// taking the money, so the customer can use it again while it lasts.
func (a *Accounts) ReleasePayCode(ctx context.Context, code, purchase string) error {
	h := payCodeHash(protocol.NormalizePayCode(code))
	if _, err := a.db.ExecContext(ctx, a.db.Rebind(`UPDATE pay_codes SET used_at = NULL, used_by = NULL WHERE hash = ? AND used_by = ?`),
		h[:], purchase); err != nil {
		return fmt.Errorf("accounts: release pay code: %w", err)
	}
	return nil
}

// payCodeHash hashes a code in its normal form.
func payCodeHash(code string) [32]byte {
	return sha256.Sum256([]byte(protocol.NormalizePayCode(code)))
}
