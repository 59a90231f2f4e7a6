package portal

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// funds is a funder that answers err and counts its calls.
type funds struct {
	err   error
	calls []string // the request ids Fund was given
}

func (f *funds) Fund(_ context.Context, _ int64, _ *payments.Card, _ protocol.Mills, requestID string) error {
	f.calls = append(f.calls, requestID)
	return f.err
}
func (f *funds) SaveCard(context.Context, int64, *payments.Card) error { return nil }

// postFund sends the top-up form as a logged-in customer.
func postFund(p *Portal, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/portal/fund", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = r.WithContext(session.WithLogin(r.Context(), session.Login[*accounts.Account]{Subject: &accounts.Account{ID: 7}}))
	w := httptest.NewRecorder()
	p.fund(w, r)
	return w
}

func fundForm(requestID string) url.Values {
	return url.Values{"request_id": {requestID}, "amount": {"25.00"}, "card": {"4242 4242 4242 4242"}, "exp": {"12/30"}, "name": {"A"}}
}

// A top-up's request_id names its payment and its card hold's key: one
// with a slash made the leader's sweep misread the hold and void it. The
// portal refuses it before any card is asked.
func TestFundRefusesBadRequestID(t *testing.T) {
	f := &funds{}
	p := &Portal{Funds: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	for _, id := range []string{"x/y", "", "-x", strings.Repeat("a", 65), "a b"} {
		w := postFund(p, fundForm(id))
		if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), "request_id") {
			t.Errorf("request_id %q: %d, want 422 naming request_id", id, w.Code)
		}
	}
	if len(f.calls) != 0 {
		t.Errorf("Fund called with %q", f.calls)
	}
}

// A top-up whose charge is not confirmed is pending, not "nothing was
// charged": the page says so, and keeps the form's request id, so that
// sending it again finishes this top-up instead of charging another.
func TestFundPendingKeepsRequestID(t *testing.T) {
	f := &funds{err: protocol.Errorf(protocol.CodeOutcomeUnknown, "your top-up is not confirmed yet")}
	p := &Portal{Funds: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	w := postFund(p, fundForm("req-pending-1"))
	body := w.Body.String()
	if w.Code != http.StatusAccepted {
		t.Errorf("pending top-up: %d, want 202", w.Code)
	}
	if !strings.Contains(body, "pending") || strings.Contains(body, "nothing was charged") {
		t.Errorf("pending top-up page does not say it is pending:\n%s", body)
	}
	if !strings.Contains(body, `name="request_id" value="req-pending-1"`) {
		t.Errorf("pending top-up page does not keep the request id:\n%s", body)
	}
	// A refusal is final: a new form, with a new request id.
	f.err = protocol.Errorf(protocol.CodePaymentDeclined, "the card processor refused the payment; nothing was charged")
	w = postFund(p, fundForm("req-declined-1"))
	if w.Code != http.StatusUnprocessableEntity || strings.Contains(w.Body.String(), `value="req-declined-1"`) {
		t.Errorf("declined top-up: %d, or the old request id kept", w.Code)
	}
}
