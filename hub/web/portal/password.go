package portal

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
)

// The account basics: a logged-in customer changes the password, and one
// who forgot it asks for a one-time reset link. Mail is not built, so a
// hub shows the link on the page only when told to (ShowResetLinks, the
// demo); otherwise the link is made and reaches no one yet. Every form here
// is limited like the login form, and a reset logs no one in: the new
// password goes through the login form and its limits.

// retryAfter sets Retry-After for a refusal that lasts wait.
func retryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
}

func (p *Portal) passwordForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "password.html", page{Title: "Change password"})
}

// changePassword sets a new password given the current one. A wrong
// current password counts as a failed login of the account: a stolen
// session must not become a way round the login limits.
func (p *Portal) changePassword(w http.ResponseWriter, r *http.Request) {
	acct := current(r).Subject
	refuse := func(status int, msg string) {
		p.render(w, r, status, "password.html", page{Title: "Change password", Error: msg})
	}
	if ok, wait := p.Logins.Allow(r, acct.Login); !ok {
		retryAfter(w, wait)
		refuse(http.StatusTooManyRequests, "Too many wrong passwords. Try again later.")
		return
	}
	defer p.Logins.Done(r, acct.Login)
	if p.Changes != nil {
		key := PasswordChangePrefix + strconv.FormatInt(acct.ID, 10)
		if ok, wait := p.Changes.Allow(key); !ok {
			retryAfter(w, wait)
			refuse(http.StatusTooManyRequests, "Too many password changes. Try again later.")
			return
		}
		defer p.Changes.Done(key)
		p.Changes.Fail(key) // every change counts, right or wrong
	}
	next := r.PostFormValue("new_password")
	if next != r.PostFormValue("new_password2") {
		refuse(http.StatusUnprocessableEntity, "The two new passwords differ.")
		return
	}
	err := p.Customers.ChangePassword(r.Context(), acct.ID, r.PostFormValue("current_password"), next)
	if errors.Is(err, accounts.ErrAuth) {
		p.Logins.Fail(r, acct.Login)
		refuse(http.StatusUnauthorized, "Your current password is wrong.")
		return
	}
	if err != nil {
		status, msg := problem(err)
		if status == http.StatusInternalServerError {
			p.Log.Error("change password", "account", acct.ID, "err", err)
		}
		refuse(status, msg)
		return
	}
	if err := p.Sessions.EndOthers(r, acct.ID); err != nil {
		// The password is changed; the other sessions still end when they expire.
		p.Log.Error("change password: other sessions not ended", "account", acct.ID, "err", err)
	}
	p.Log.Info("password changed", "account", acct.ID)
	p.Sessions.Flash(w, r, "Password changed. Any other session of your account is logged out.")
	http.Redirect(w, r, "/portal/password", http.StatusSeeOther)
}

// forgotData is the forgot-password page: once asked, the same text
// whether or not the login exists; Link only in the demo, and only for a
// login that exists.
type forgotData struct {
	Asked    bool
	Login    string
	ShowLink bool // the hub shows links (the demo)
	Link     string
	Expires  time.Time
	TTL      int // minutes
}

func (p *Portal) forgotForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "forgot.html", page{Title: "Forgot your password?",
		Data: forgotData{ShowLink: p.ShowResetLinks, TTL: int(accounts.ResetTTL.Minutes())}})
}

// forgot makes a reset link for a login.
func (p *Portal) forgot(w http.ResponseWriter, r *http.Request) {
	login := strings.TrimSpace(r.PostFormValue("login"))
	d := forgotData{ShowLink: p.ShowResetLinks, TTL: int(accounts.ResetTTL.Minutes()), Login: login}
	if ok, wait := p.ResetRequests.Allow(r, login); !ok {
		retryAfter(w, wait)
		p.render(w, r, http.StatusTooManyRequests, "forgot.html", page{Title: "Forgot your password?", Error: "Too many reset requests. Try again later.", Data: d})
		return
	}
	defer p.ResetRequests.Done(r, login)
	if login == "" {
		p.render(w, r, http.StatusUnprocessableEntity, "forgot.html", page{Title: "Forgot your password?", Error: "Type your login.", Data: d})
		return
	}
	// Every request counts, not only failures: each makes a link, and in
	// the demo tells whether the login exists.
	p.ResetRequests.Fail(r, login)
	token, exp, err := p.Customers.NewReset(r.Context(), login)
	switch {
	case errors.Is(err, accounts.ErrNoLogin):
		p.Log.Info("password reset asked for a login no account has", "ip", p.ResetRequests.ClientIP(r))
	case err != nil:
		p.fail(w, r, err)
		return
	default:
		// The token goes to the page (demo) or nowhere; never to the log.
		p.Log.Info("password reset link made", "login", login, "shown", p.ShowResetLinks, "expires", exp)
		if p.ShowResetLinks {
			d.Link, d.Expires = "/portal/reset?token="+url.QueryEscape(token), exp
		}
	}
	d.Asked = true
	w.Header().Set("Cache-Control", "no-store")
	p.render(w, r, http.StatusOK, "forgot.html", page{Title: "Forgot your password?", Data: d})
}

// resetData is the set-a-new-password page; no Token, no form.
type resetData struct {
	Token string
}

// linkAllowed refuses an address that has tried too many wrong links.
func (p *Portal) linkAllowed(w http.ResponseWriter, r *http.Request) bool {
	if ok, wait := p.ResetLinks.Allow(r, ""); !ok {
		retryAfter(w, wait)
		p.render(w, r, http.StatusTooManyRequests, "reset.html", page{Title: "Set a new password", Error: "Too many wrong reset links from your address. Try again later."})
		return false
	}
	return true
}

// badLink answers a link that cannot set a password, saying why; a link
// that was never made counts against the address, as a guess.
func (p *Portal) badLink(w http.ResponseWriter, r *http.Request, err error) {
	var status int
	var msg string
	switch {
	case errors.Is(err, accounts.ErrResetUsed):
		status, msg = http.StatusGone, "This reset link was already used: a link sets a password once. Ask for a new one if you need it."
	case errors.Is(err, accounts.ErrResetExpired):
		status, msg = http.StatusGone, "This reset link has expired: a link lasts "+strconv.Itoa(int(accounts.ResetTTL.Minutes()))+" minutes. Ask for a new one."
	case errors.Is(err, accounts.ErrResetUnknown):
		p.ResetLinks.Fail(r, "")
		p.Log.Warn("unknown password reset link", "ip", p.ResetLinks.ClientIP(r))
		status, msg = http.StatusNotFound, "This reset link is not valid. Check that you copied all of it, or ask for a new one."
	default:
		p.fail(w, r, err)
		return
	}
	p.render(w, r, status, "reset.html", page{Title: "Set a new password", Error: msg})
}

func (p *Portal) resetForm(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !p.linkAllowed(w, r) {
		return
	}
	defer p.ResetLinks.Done(r, "")
	token := strings.TrimSpace(r.URL.Query().Get("token"))
	if err := p.Customers.CheckReset(r.Context(), token); err != nil {
		p.badLink(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "reset.html", page{Title: "Set a new password", Data: resetData{Token: token}})
}

// reset sets the new password with a link, once, and ends every session
// of the account. It does not log in.
func (p *Portal) reset(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !p.linkAllowed(w, r) {
		return
	}
	defer p.ResetLinks.Done(r, "")
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := r.PostFormValue("new_password")
	if next != r.PostFormValue("new_password2") {
		p.render(w, r, http.StatusUnprocessableEntity, "reset.html", page{Title: "Set a new password", Error: "The two passwords differ.", Data: resetData{Token: token}})
		return
	}
	id, err := p.Customers.Reset(r.Context(), token, next)
	if errors.Is(err, accounts.ErrResetUsed) || errors.Is(err, accounts.ErrResetExpired) || errors.Is(err, accounts.ErrResetUnknown) {
		p.badLink(w, r, err)
		return
	}
	if err != nil {
		status, msg := problem(err)
		if status == http.StatusInternalServerError {
			p.Log.Error("password reset", "err", err)
		}
		p.render(w, r, status, "reset.html", page{Title: "Set a new password", Error: msg, Data: resetData{Token: token}})
		return
	}
	if err := p.Sessions.EndAll(r.Context(), id); err != nil {
		p.Log.Error("password reset: sessions not ended", "account", id, "err", err)
	}
	p.Log.Info("password reset", "account", id)
	p.Sessions.Flash(w, r, "Your new password is set. Log in with it.")
	http.Redirect(w, r, "/portal/login", http.StatusSeeOther)
}
