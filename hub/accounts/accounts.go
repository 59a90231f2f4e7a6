// Package accounts keeps registered customers: a login with a bcrypt
// password hash, a prepaid balance in mills, and a stored card reference (a
// gateway token and, for receipts, brand and last four digits; never a card
// number). Every balance movement is an entry; a purchase first holds the
// amount, then the hold is kept (captured) or released.
package accounts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/accounts/pwcheck"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Account is a registered customer.
type Account struct {
	ID        int64          `json:"id"`
	Login     string         `json:"login"`
	Balance   protocol.Mills `json:"balance_mills"`
	CardBrand string         `json:"card_brand,omitempty"`
	CardLast4 string         `json:"card_last4,omitempty"`
	ZIP       protocol.ZIP   `json:"zip"` // mailing origin for the indicium
	cardToken string
}

// CardToken is the stored gateway token, if any.
func (a *Account) CardToken() string { return a.cardToken }

// ErrAuth is a wrong login or password; the two are not told apart.
var ErrAuth = errors.New("accounts: wrong login or password")

// Accounts is the account store.
type Accounts struct {
	// Cost is the bcrypt cost of new hashes; 0 is bcrypt.DefaultCost.
	Cost int
	db   *store.DB
	now  func() time.Time
	// verified remembers passwords that matched for VerifiedFor: the login
	// limits count only failures, so without it anyone with an account
	// could have the hub run a bcrypt for every request they send.
	verified *pwcheck.Cache
	// unknown is compared against for a login that does not exist, at Cost
	// like every stored hash, so that a missing login takes as long as a
	// wrong password. Made on first use, once Cost is set.
	unknown     []byte
	unknownOnce sync.Once
}

// VerifiedFor is how long a password that matched an account's stored
// hash is taken again without bcrypt, while that hash stands: a password
// changed or reset, on any hub, has a new hash and is checked again.
const VerifiedFor = 5 * time.Minute

// New returns the store on db.
func New(db *store.DB, now func() time.Time) *Accounts {
	if now == nil {
		now = time.Now
	}
	return &Accounts{db: db, now: now, verified: pwcheck.New(VerifiedFor, func(hash, pw []byte) error { return compareHash(hash, pw) })}
}

// compareHash checks a password against a stored hash; tests count it.
var compareHash = bcrypt.CompareHashAndPassword

// Create registers a customer.
func (a *Accounts) Create(ctx context.Context, login, password string) (*Account, error) {
	if err := checkLogin(login); err != nil {
		return nil, err
	}
	if err := checkPassword(password); err != nil {
		return nil, err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), a.Cost)
	if err != nil {
		return nil, fmt.Errorf("accounts: create: %w", err)
	}
	var id int64
	err = a.db.QueryRowContext(ctx, a.db.Rebind(`INSERT INTO accounts (login, password_hash, created_at) VALUES (?, ?, ?) RETURNING id`),
		login, string(h), a.now().UnixMicro()).Scan(&id)
	if store.IsConflict(err) {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "login %q is taken", login)
	}
	if err != nil {
		return nil, fmt.Errorf("accounts: create: %w", err)
	}
	return &Account{ID: id, Login: login}, nil
}

// checkLogin admits a login of 3-64 bytes that starts with a letter or a
// digit and holds only printable characters. Logins reach the console's
// CSV exports and pages: one that starts like a formula (=, +, -, @), or
// hides text behind control or bidi characters, is refused.
func checkLogin(login string) error {
	first, _ := utf8.DecodeRuneInString(login)
	switch {
	case len(login) < 3 || len(login) > 64:
		return protocol.Errorf(protocol.CodeInvalidRequest, "login: want 3-64 characters")
	case !utf8.ValidString(login) || !unicode.IsLetter(first) && !unicode.IsDigit(first):
		return protocol.Errorf(protocol.CodeInvalidRequest, "login: start with a letter or a digit")
	case strings.ContainsFunc(login, func(r rune) bool { return !unicode.IsGraphic(r) }):
		return protocol.Errorf(protocol.CodeInvalidRequest, "login: letters, digits, punctuation and spaces only")
	}
	return nil
}

// Authenticate checks a login and password. The stored hash is read every
// time; a password that matched that same hash within VerifiedFor costs no
// bcrypt.
func (a *Accounts) Authenticate(ctx context.Context, login, password string) (*Account, error) {
	acc, hash, err := a.byLogin(ctx, login)
	if err != nil {
		// Spend the time a real check takes, at the cost real hashes have,
		// so a missing login is neither faster nor slower.
		a.unknownOnce.Do(func() { a.unknown, _ = bcrypt.GenerateFromPassword([]byte("not a password anyone has"), a.Cost) })
		compareHash(a.unknown, []byte(password))
		return nil, ErrAuth
	}
	if !a.verified.Check(strconv.FormatInt(acc.ID, 10), hash, password) {
		return nil, ErrAuth
	}
	return acc, nil
}

// ByLogin finds an account.
func (a *Accounts) ByLogin(ctx context.Context, login string) (*Account, error) {
	acc, _, err := a.byLogin(ctx, login)
	return acc, err
}

func (a *Accounts) byLogin(ctx context.Context, login string) (*Account, string, error) {
	return a.scan(a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT id, login, balance, COALESCE(card_token, ''), COALESCE(card_brand, ''),
		COALESCE(card_last4, ''), zip, password_hash FROM accounts WHERE login = ?`), login))
}

// AccountID returns the id of the account with login.
func (a *Accounts) AccountID(ctx context.Context, login string) (int64, error) {
	acc, err := a.ByLogin(ctx, login)
	if err != nil {
		return 0, err
	}
	return acc.ID, nil
}

// ByID finds an account.
func (a *Accounts) ByID(ctx context.Context, id int64) (*Account, error) {
	acc, _, err := a.scan(a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT id, login, balance, COALESCE(card_token, ''), COALESCE(card_brand, ''),
		COALESCE(card_last4, ''), zip, password_hash FROM accounts WHERE id = ?`), id))
	return acc, err
}

func (a *Accounts) scan(row *sql.Row) (*Account, string, error) {
	var acc Account
	var hash string
	err := row.Scan(&acc.ID, &acc.Login, &acc.Balance, &acc.cardToken, &acc.CardBrand, &acc.CardLast4, &acc.ZIP, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", protocol.Errorf(protocol.CodePaymentInvalid, "no such account")
	}
	if err != nil {
		return nil, "", fmt.Errorf("accounts: read: %w", err)
	}
	return &acc, hash, nil
}

// SetZIP sets the ZIP code mail is sent from.
func (a *Accounts) SetZIP(ctx context.Context, id int64, zip protocol.ZIP) error {
	if _, err := zip.Number(); err != nil {
		return protocol.Errorf(protocol.CodeInvalidRequest, "zip: want five digits")
	}
	_, err := a.db.ExecContext(ctx, a.db.Rebind(`UPDATE accounts SET zip = ? WHERE id = ?`), string(zip), id)
	if err != nil {
		return fmt.Errorf("accounts: set zip: %w", err)
	}
	return nil
}

// SetCard stores a gateway token for the account's card.
func (a *Accounts) SetCard(ctx context.Context, id int64, token, brand, last4 string) error {
	_, err := a.db.ExecContext(ctx, a.db.Rebind(`UPDATE accounts SET card_token = ?, card_brand = ?, card_last4 = ? WHERE id = ?`), token, brand, last4, id)
	if err != nil {
		return fmt.Errorf("accounts: set card: %w", err)
	}
	return nil
}

// Credit adds to the balance: money paid in ("fund"), or given back
// ("refund"). ref must be unique per account and kind.
func (a *Accounts) Credit(ctx context.Context, id int64, amount protocol.Mills, kind, ref string) error {
	if amount <= 0 || kind != "fund" && kind != "refund" {
		return fmt.Errorf("accounts: credit %d %s: bad amount or kind", amount, kind)
	}
	return a.move(ctx, id, amount, kind, ref)
}

// Credited returns what a credit of kind under ref put into the account,
// and whether there is one.
func (a *Accounts) Credited(ctx context.Context, id int64, kind, ref string) (protocol.Mills, bool, error) {
	var n int64
	var sum protocol.Mills
	if err := a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM account_entries WHERE account_id = ? AND kind = ? AND ref = ?`),
		id, kind, ref).Scan(&n, &sum); err != nil {
		return 0, false, fmt.Errorf("accounts: credited %s: %w", ref, err)
	}
	return sum, n > 0, nil
}

// Release gives back a hold made with ref, once; without such a hold it does
// nothing, so a purchase that crashed before holding is released safely.
func (a *Accounts) Release(ctx context.Context, id int64, ref string) error {
	var held protocol.Mills
	err := a.db.QueryRowContext(ctx, a.db.Rebind(`SELECT COALESCE(SUM(amount), 0) FROM account_entries WHERE account_id = ? AND kind = 'hold' AND ref = ?`),
		id, ref).Scan(&held)
	if err != nil {
		return fmt.Errorf("accounts: release: %w", err)
	}
	if held == 0 {
		return nil
	}
	return a.move(ctx, id, -held, "release", ref)
}

// Hold takes amount from the balance for a purchase in progress. A short
// balance is insufficient_funds with the amount missing.
func (a *Accounts) Hold(ctx context.Context, id int64, amount protocol.Mills, ref string) error {
	return a.move(ctx, id, -amount, "hold", ref)
}

func (a *Accounts) move(ctx context.Context, id int64, delta protocol.Mills, kind, ref string) error {
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("accounts: %s: %w", kind, err)
	}
	defer tx.Rollback()
	// Lock the account before looking for a duplicate, so two retries of
	// one ref cannot both find none (PostgreSQL reads committed rows).
	var bal protocol.Mills
	switch err := tx.QueryRowContext(ctx, a.db.Rebind(`SELECT balance FROM accounts WHERE id = ?`+a.db.ForUpdate()), id).Scan(&bal); {
	case errors.Is(err, sql.ErrNoRows):
		return protocol.Errorf(protocol.CodePaymentInvalid, "no such account")
	case err != nil:
		return fmt.Errorf("accounts: %s: %w", kind, err)
	}
	var dup int
	if err := tx.QueryRowContext(ctx, a.db.Rebind(`SELECT COUNT(*) FROM account_entries WHERE account_id = ? AND kind = ? AND ref = ?`), id, kind, ref).Scan(&dup); err != nil {
		return fmt.Errorf("accounts: %s: %w", kind, err)
	}
	if dup > 0 {
		return nil // done before: a retry
	}
	if bal+delta < 0 {
		return &protocol.Error{Code: protocol.CodeInsufficientFunds, MissingMills: -(bal + delta),
			Message: fmt.Sprintf("the account holds %s; %s more is needed", bal, -(bal + delta))}
	}
	if _, err := tx.ExecContext(ctx, a.db.Rebind(`UPDATE accounts SET balance = ? WHERE id = ?`), bal+delta, id); err != nil {
		return fmt.Errorf("accounts: %s: %w", kind, err)
	}
	if _, err := tx.ExecContext(ctx, a.db.Rebind(`INSERT INTO account_entries (account_id, amount, kind, ref, at) VALUES (?, ?, ?, ?, ?)`),
		id, delta, kind, ref, a.now().UnixMicro()); err != nil {
		return fmt.Errorf("accounts: %s: %w", kind, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("accounts: %s: %w", kind, err)
	}
	return nil
}
