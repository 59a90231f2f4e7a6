// Package session keeps the logins of the hub's web pages: a random
// session id in an HttpOnly, SameSite=Strict cookie (Secure, with the
// __Host- prefix, whenever the page is served over TLS or the hub is told
// it sits behind TLS), stored server-side only as a SHA-256 hash so a copy
// of the database logs no one in. Each session carries a CSRF token that
// every form post must echo. It also limits login attempts.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/store"
)

// Session is one login.
type Session struct {
	Subject int64  // account id (portal) or operator id (console)
	CSRF    string // echoed by every form as the "csrf" field
}

// Manager keeps the sessions of one realm ("portal" or "console").
type Manager struct {
	db     *store.DB
	realm  string
	ttl    time.Duration
	secure bool
	now    func() time.Time
}

// New returns the manager for realm. secure marks cookies Secure even on a
// plain-HTTP request, for a hub behind a TLS-terminating proxy.
func New(db *store.DB, realm string, ttl time.Duration, secure bool, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{db: db, realm: realm, ttl: ttl, secure: secure, now: now}
}

func (m *Manager) cookieName(secure bool) string {
	if secure {
		return "__Host-frank_" + m.realm
	}
	return "frank_" + m.realm
}

// isSecure reports whether r's cookies are Secure; a nil manager (a page
// without one) goes by the request alone.
func (m *Manager) isSecure(r *http.Request) bool { return m != nil && m.secure || r.TLS != nil }

// Start logs subject in: it stores a new session and sets its cookie.
// Any session the browser had in this realm is ended first, so a session
// id planted before login is never promoted.
func (m *Manager) Start(w http.ResponseWriter, r *http.Request, subject int64) (*Session, error) {
	m.End(w, r)
	id, csrf := rand.Text(), rand.Text()
	h := sha256.Sum256([]byte(id))
	now := m.now()
	ctx := r.Context()
	if _, err := m.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < `+fmt.Sprint(now.UnixMicro())); err != nil {
		return nil, fmt.Errorf("session: start: %w", err)
	}
	if _, err := m.db.ExecContext(ctx, m.db.Rebind(`INSERT INTO sessions (hash, realm, subject, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`),
		h[:], m.realm, subject, csrf, now.UnixMicro(), now.Add(m.ttl).UnixMicro()); err != nil {
		return nil, fmt.Errorf("session: start: %w", err)
	}
	secure := m.isSecure(r)
	http.SetCookie(w, &http.Cookie{Name: m.cookieName(secure), Value: id, Path: "/", MaxAge: int(m.ttl.Seconds()),
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
	return &Session{Subject: subject, CSRF: csrf}, nil
}

// Get returns the request's live session, or nil.
func (m *Manager) Get(r *http.Request) (*Session, error) {
	c, err := r.Cookie(m.cookieName(m.isSecure(r)))
	if err != nil {
		return nil, nil
	}
	h := sha256.Sum256([]byte(c.Value))
	s := &Session{}
	err = m.db.QueryRowContext(r.Context(), m.db.Rebind(`SELECT subject, csrf FROM sessions WHERE hash = ? AND realm = ? AND expires_at > ?`),
		h[:], m.realm, m.now().UnixMicro()).Scan(&s.Subject, &s.CSRF)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("session: get: %w", err)
	}
	return s, nil
}

// End logs the request's session out and clears its cookie.
func (m *Manager) End(w http.ResponseWriter, r *http.Request) {
	secure := m.isSecure(r)
	c, err := r.Cookie(m.cookieName(secure))
	if err != nil {
		return
	}
	h := sha256.Sum256([]byte(c.Value))
	m.db.ExecContext(context.WithoutCancel(r.Context()), m.db.Rebind(`DELETE FROM sessions WHERE hash = ?`), h[:])
	http.SetCookie(w, &http.Cookie{Name: m.cookieName(secure), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
}

// EndOthers logs subject out everywhere but in the request's own session:
// after a password change, whoever knew the old one is out.
func (m *Manager) EndOthers(r *http.Request, subject int64) error {
	keep := []byte{}
	if c, err := r.Cookie(m.cookieName(m.isSecure(r))); err == nil {
		h := sha256.Sum256([]byte(c.Value))
		keep = h[:]
	}
	if _, err := m.db.ExecContext(r.Context(), m.db.Rebind(`DELETE FROM sessions WHERE realm = ? AND subject = ? AND hash <> ?`),
		m.realm, subject, keep); err != nil {
		return fmt.Errorf("session: end others: %w", err)
	}
	return nil
}

// EndAll logs subject out of every session, as after a password reset.
func (m *Manager) EndAll(ctx context.Context, subject int64) error {
	if _, err := m.db.ExecContext(ctx, m.db.Rebind(`DELETE FROM sessions WHERE realm = ? AND subject = ?`), m.realm, subject); err != nil {
		return fmt.Errorf("session: end all: %w", err)
	}
	return nil
}

// ValidCSRF reports whether a form post carries s's CSRF token, in the
// "csrf" field or the X-CSRF-Token header. It reads an urlencoded form
// only (ParseForm, within the body's limit), never a multipart one.
func ValidCSRF(r *http.Request, s *Session) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" && r.ParseForm() == nil {
		got = r.PostForm.Get("csrf")
	}
	return s != nil && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) == 1
}

// Login is a logged-in request's subject and session.
type Login[T any] struct {
	Subject T
	Session *Session
}

type loginKey[T any] struct{}

// Require lets through requests with a live session whose subject load
// finds, and a post only with the session's CSRF token. Others are sent to
// loginPath (a page) or refused (a post).
func Require[T any](m *Manager, loginPath string, load func(ctx context.Context, subject int64) (T, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := m.Get(r)
			if err != nil {
				http.Error(w, "internal error; see the hub log", http.StatusInternalServerError)
				return
			}
			var subject T
			if s != nil {
				if subject, err = load(r.Context(), s.Subject); err != nil {
					s = nil // the account or operator is gone
				}
			}
			if s == nil {
				if r.Method == http.MethodGet {
					http.Redirect(w, r, loginPath+"?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
					return
				}
				http.Error(w, "log in first", http.StatusUnauthorized)
				return
			}
			if r.Method == http.MethodPost && !ValidCSRF(r, s) {
				http.Error(w, "this form is stale or was not sent from our pages (CSRF token missing or wrong); reload the page", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithLogin(r.Context(), Login[T]{subject, s})))
		})
	}
}

// WithLogin puts a login in ctx, for Current.
func WithLogin[T any](ctx context.Context, l Login[T]) context.Context {
	return context.WithValue(ctx, loginKey[T]{}, l)
}

// Current is the request's login, or the zero Login outside Require.
func Current[T any](r *http.Request) Login[T] {
	l, _ := r.Context().Value(loginKey[T]{}).(Login[T])
	return l
}

// Next is where to go after logging in: the form's "next" if it is a page
// under prefix on this site, else prefix itself. Never an open redirect.
func Next(r *http.Request, prefix string) string {
	next := r.PostFormValue("next")
	if !strings.HasPrefix(next, prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return prefix
	}
	return next
}

// flashCookie carries a message from a form's redirect to the page it
// lands on; flashCookieSecure is its name when the cookies are Secure,
// with the __Host- prefix like the session's, so that no other host or
// plain-HTTP page can plant a message the site shows as its own.
const (
	flashCookie       = "flash"
	flashCookieSecure = "__Host-flash"
)

// Flash sets msg to show on the next page this browser loads. It goes in
// a cookie, not the URL: a message in a link could be anyone's, and pages
// show it as the site's own. The cookie is Secure as m's session cookies
// are: on TLS, and behind a TLS proxy when the manager is told so.
func (m *Manager) Flash(w http.ResponseWriter, r *http.Request, msg string) {
	secure := m.isSecure(r)
	http.SetCookie(w, &http.Cookie{Name: flashName(secure), Value: base64.RawURLEncoding.EncodeToString([]byte(msg)), Path: "/",
		MaxAge: 60, HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
}

func flashName(secure bool) string {
	if secure {
		return flashCookieSecure
	}
	return flashCookie
}

// TakeFlash returns the message Flash set, once: it clears the cookie.
// Only the cookie of the name m sets is read: a secure page does not show
// a message set over plain HTTP.
func (m *Manager) TakeFlash(w http.ResponseWriter, r *http.Request) string {
	secure := m.isSecure(r)
	c, err := r.Cookie(flashName(secure))
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashName(secure), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
	msg, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil || len(msg) > 500 {
		return ""
	}
	return string(msg)
}
