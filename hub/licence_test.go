package hub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/postal"
)

// The vendor's one postal licence is the hub's configuration: stored with
// the GPSD, sent in every call to the authority (which refuses another),
// shown in the console and returned in the XML <Indicium>; a hub told
// another licence, or none, does not serve.
func TestLicence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("lic-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	if got := e.pa.Licence("FR"); got != postal.DemoLicence {
		t.Fatalf("the authority holds licence %q for FR, want %q", got, postal.DemoLicence)
	}
	e.clock.Set(e.clock.Now().Add(time.Second)) // the period has ended
	rep, err := e.h.Ledger().BuildReport(ctx, e.clock.Now().Add(-time.Hour), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal())
	if err != nil {
		t.Fatal(err)
	}
	if f := e.pa.Reports(); len(f) == 0 || f[len(f)-1].Licence != postal.DemoLicence {
		t.Fatalf("report %s filed as %+v", ref, f)
	}

	// Another licence for the same vendor: refused in every kind of call.
	paURL := e.cfg.PostalURL
	other := hubpostal.New(paURL, "FR", "PVS-00000-9999")
	if _, err := other.BuyFunds(ctx, "lic-buy", 1000); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("funds under another licence: %v", err)
	}
	if _, err := other.Anchors(ctx); err == nil {
		t.Fatal("anchor under another licence answered")
	}
	if _, err := other.SubmitReport(ctx, &hubpostal.Report{ReportID: "lic-r", Vendor: "FR"}); err == nil {
		t.Fatal("report under another licence accepted")
	}
	if _, err := hubpostal.New(paURL, "FR", "").BuyFunds(ctx, "lic-none", 1000); err == nil {
		t.Fatal("funds with no licence sold")
	}

	// The console and the operator API show it; the XML answer carries it.
	b := e.operator("lara", "ops")
	if st, _, page := b.do("GET", "/console/funds", nil); st != http.StatusOK || !strings.Contains(page, postal.DemoLicence) {
		t.Fatalf("funds page: %d, licence not shown", st)
	}
	e.customer("lena", "10.00")
	sheet := e.webSheet()
	acct, _ := e.h.Accounts().ByLogin(ctx, "lena")
	sh, _ := protocol.ParseSheetSerial(sheet)
	if err := e.h.Stock().AssignToAccount(ctx, sh, acct.ID); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`<server.bp_RequestWebStampParams><LoginID>lena</LoginID><Amount>780</Amount><RateClass>1100</RateClass>`+
		`<FIM>0</FIM><SerialNumber>%s</SerialNumber></server.bp_RequestWebStampParams>`, sheet)
	st, xml := postWebStamp(t, e, "lena", "lic-web-1", body)
	if st != http.StatusOK || !strings.Contains(xml, "<LPO>"+postal.DemoLicence+"</LPO>") {
		t.Fatalf("web stamp: %d %s", st, xml)
	}
	e.check()

	// Restarted with another licence, or none: no serving.
	e.h.Close()
	cfg := e.cfg
	cfg.Ledger.Licence = "PVS-00000-9999"
	if h, err := hub.Open(ctx, cfg, quietLog()); !errors.Is(err, ledger.ErrLicence) {
		if h != nil {
			h.Close()
		}
		t.Fatalf("opened under another licence: %v", err)
	}
	cfg.Ledger.Licence = ""
	h, err := hub.Open(ctx, cfg, quietLog()) // an admin command: the stored licence
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Ledger().Licence() != postal.DemoLicence {
		t.Fatalf("admin open: licence %q", h.Ledger().Licence())
	}
}

// A fresh database with no licence configured opens for admin commands but
// does not serve.
func TestNoLicenceNoServing(t *testing.T) {
	t.Parallel()
	cfg := hub.Config{DataDir: t.TempDir(), TLS: "off", HTTPListen: "127.0.0.1:0", BrokerListen: "127.0.0.1:0", BrokerTLSListen: "off",
		KioskPasswords: true, PostalURL: "http://127.0.0.1:1", PaymentsURL: "http://127.0.0.1:1"}
	ctx := context.Background()
	h, err := hub.Open(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start(ctx); !errors.Is(err, ledger.ErrLicence) {
		t.Fatalf("started with no licence: %v", err)
	}
}
