package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/code128"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/protocol"
)

type admin struct {
	open, lost                                   bool
	why                                          string
	store, barcodes, account, amount, zip, kiosk string
	ref                                          string
	zone                                         string
	role, stores, tokenName                      string
	storesSet                                    bool
	sheets                                       int
	enrollTTL, tokenTTL                          time.Duration
	tokenWrite, tokenMetrics                     bool
}

// lifetime is an API token's --ttl: whole days (90d), which a token's life
// is counted in, or any Go duration (36h).
type lifetime time.Duration

func (l *lifetime) String() string {
	d := time.Duration(*l)
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// Set refuses a lifetime the store would: at once, with the flag's name.
func (l *lifetime) Set(s string) error {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return errors.New("want whole days (90d) or a duration (36h)")
		}
		days = min(days, 366) // past the maximum, without overflowing
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return errors.New("want whole days (90d) or a duration (36h)")
		}
	}
	if d <= 0 {
		return errors.New("a token must live more than 0; tokens that never expire are not made")
	}
	if d > operators.MaxTokenTTL {
		return fmt.Errorf("at most %dd", operators.MaxTokenTTL/(24*time.Hour))
	}
	*l = lifetime(d)
	return nil
}

// secret reads a password from the environment variable env, else from
// the first line of stdin, so it never shows in ps or shell history.
func secret(env string) string {
	if pw := os.Getenv(env); pw != "" {
		return pw
	}
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	return strings.TrimSpace(line)
}

// adminCmd runs the provisioning commands ops use from a shell.
func adminCmd(ctx context.Context, h *hub.Hub, cmd string, pos []string, a admin) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "hub %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "kiosk add":
		if len(pos) != 1 || a.store == "" {
			return usage("hub kiosk add ID --store STORE")
		}
		pw, err := h.Fleet().Add(ctx, pos[0], a.store)
		if err != nil {
			return fail(err)
		}
		if err := setStore(ctx, h, a.store, a); err != nil {
			return fail(err)
		}
		code, err := h.Fleet().NewEnrollment(ctx, pos[0], pw, a.enrollTTL)
		if err != nil {
			return fail(err)
		}
		// Printed once: only a bcrypt hash of the password, and a hash of
		// the code with the password sealed under it, are kept.
		fmt.Printf("kiosk %s provisioned in store %s\n", pos[0], a.store)
		if pw != "" { // --kiosk-passwords
			fmt.Printf("broker user: %s\nbroker password: %s\n", pos[0], pw)
		}
		// The code carries the fingerprint the kiosk pins the hub's TLS to.
		if fp := h.TLSFingerprint(); fp != "" {
			code += "@" + fp
		}
		fmt.Printf("enrollment code: %s (once, until %s): kiosk enroll --hub https://HUB --code %s\n",
			code, time.Now().Add(a.enrollTTL).Format("2006-01-02 15:04"), code)
	case "store set":
		if len(pos) != 1 || a.zip == "" && a.zone == "" {
			return usage("hub store set STORE [--zip Z] [--time-zone TZ]")
		}
		if err := setStore(ctx, h, pos[0], a); err != nil {
			return fail(err)
		}
		fmt.Printf("store %s set\n", pos[0])
	case "kiosk retire":
		if len(pos) != 1 {
			return usage("hub kiosk retire ID [--lost] [--why TEXT]")
		}
		r, err := h.RetireKiosk(ctx, pos[0], a.why, a.lost)
		if err != nil {
			return fail(err)
		}
		fmt.Printf("kiosk %s retired: %d certificates revoked, %d label sheets voided, %d unreported stamps voided and %s refunded",
			r.Kiosk, r.Certificates, r.Sheets, r.Labels, r.Refunded)
		if r.Lost {
			fmt.Print("; declared lost in the next postal report")
		}
		fmt.Println()
	case "stock issue":
		if a.store == "" {
			return usage("hub stock issue --store STORE --sheets N [--barcodes DIR]")
		}
		if err := h.Stock().AddStore(ctx, a.store, ""); err != nil {
			return fail(err)
		}
		serials, err := h.Stock().Issue(ctx, a.store, a.sheets)
		if err != nil {
			return fail(err)
		}
		for _, s := range serials {
			fmt.Println(s)
			if a.barcodes != "" {
				if err := writeBarcode(a.barcodes, s); err != nil {
					return fail(err)
				}
			}
		}
	case "stock import":
		if a.store == "" || len(pos) == 0 {
			return usage("hub stock import --store STORE SERIAL...")
		}
		if err := h.Stock().AddStore(ctx, a.store, ""); err != nil {
			return fail(err)
		}
		var serials []protocol.SheetSerial
		for _, p := range pos {
			s, err := protocol.ParseSheetSerial(p)
			if err != nil {
				return fail(err)
			}
			serials = append(serials, s)
		}
		if err := h.Stock().Import(ctx, a.store, serials); err != nil {
			return fail(err)
		}
		fmt.Printf("%d sheets in store %s\n", len(serials), a.store)
	case "stock load":
		if a.kiosk == "" || len(pos) == 0 {
			return usage("hub stock load --kiosk KIOSK SERIAL...")
		}
		var serials []protocol.SheetSerial
		for _, p := range pos {
			s, err := protocol.ParseSheetSerial(p)
			if err != nil {
				return fail(err)
			}
			serials = append(serials, s)
		}
		if _, err := h.Stock().Load(ctx, a.kiosk, serials); err != nil {
			return fail(err)
		}
		fmt.Printf("%d sheets loaded into %s\n", len(serials), a.kiosk)
	case "alerts list":
		as, err := h.Alerts().List(ctx, a.open)
		if err != nil {
			return fail(err)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(as)
	case "stock assign":
		if a.account == "" || len(pos) == 0 {
			return usage("hub stock assign --account LOGIN SERIAL...")
		}
		acct, err := h.Accounts().ByLogin(ctx, a.account)
		if err != nil {
			return fail(err)
		}
		for _, p := range pos {
			s, err := protocol.ParseSheetSerial(p)
			if err != nil {
				return fail(err)
			}
			if err := h.Stock().AssignToAccount(ctx, s, acct.ID); err != nil {
				return fail(err)
			}
		}
		fmt.Printf("%d sheets assigned to %s\n", len(pos), a.account)
	case "operator add":
		if len(pos) != 1 {
			return usage("hub operator add LOGIN [--role ops|staff] [--stores S1,S2]  (password from FRANK_OPERATOR_PASSWORD or stdin)")
		}
		// Without --role and --stores an existing operator keeps both:
		// running this again is how a password is reset.
		var st []string
		if a.storesSet {
			st = []string{}
			if a.stores != "" {
				st = strings.Split(a.stores, ",")
			}
		}
		op, err := h.SetOperator(ctx, pos[0], secret("FRANK_OPERATOR_PASSWORD"), a.role, st)
		if err != nil {
			return fail(err)
		}
		if op.Role == operators.RoleStaff {
			fmt.Printf("operator %s (%s of %s) saved\n", op.Login, op.Role, strings.Join(op.Stores, ","))
		} else {
			fmt.Printf("operator %s (%s) saved\n", op.Login, op.Role)
		}
	case "operator token":
		if len(pos) != 1 {
			return usage("hub operator token LOGIN [--name WHAT-FOR] [--write|--metrics] [--ttl 90d]")
		}
		if a.tokenWrite && a.tokenMetrics {
			return usage("hub operator token LOGIN: --write or --metrics, not both")
		}
		scope := operators.ReadOnly
		how := "read-only (GET); hub operator token --write for one that may change things"
		switch {
		case a.tokenWrite:
			scope, how = operators.ReadWrite, "may read and change things"
		case a.tokenMetrics:
			scope, how = operators.MetricsOnly, "may read /metrics only"
		}
		tok, err := h.Operators().NewToken(ctx, pos[0], a.tokenName, scope, a.tokenTTL)
		if err != nil {
			return fail(err)
		}
		fmt.Println(tok) // shown once: only its hash is kept
		// On stderr, so that scripts capturing the token get only it.
		fmt.Fprintf(os.Stderr, "token %q of %s: %s; expires %s\n", a.tokenName, pos[0], how, time.Now().Add(a.tokenTTL).Format("2006-01-02 15:04"))
	case "operator revoke":
		if len(pos) != 1 {
			return usage("hub operator revoke LOGIN")
		}
		n, err := h.Operators().RevokeTokens(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		fmt.Printf("%d tokens of %s revoked\n", n, pos[0])
	case "account add":
		if len(pos) != 1 {
			return usage("hub account add LOGIN [--zip ZIP]  (password from FRANK_ACCOUNT_PASSWORD or stdin)")
		}
		acct, err := h.Accounts().Create(ctx, pos[0], secret("FRANK_ACCOUNT_PASSWORD"))
		if err != nil {
			return fail(err)
		}
		zip := a.zip
		if zip == "" {
			zip = "94544"
		}
		if err := h.Accounts().SetZIP(ctx, acct.ID, protocol.ZIP(zip)); err != nil {
			return fail(err)
		}
		fmt.Printf("account %s created (id %d)\n", acct.Login, acct.ID)
	case "account fund":
		if len(pos) != 1 || a.amount == "" {
			return usage("hub account fund LOGIN --amount DOLLARS")
		}
		amt, err := protocol.ParseMills(a.amount)
		if err != nil {
			return fail(err)
		}
		acct, err := h.Accounts().ByLogin(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		// A command cut short after its commit, run again with the same
		// reference, credits once.
		ref := a.ref
		if ref == "" {
			ref = rand.Text()[:16]
			fmt.Printf("crediting %s to %s with reference %s; if this stops before saying funded, run it again with --ref %s\n", amt, acct.Login, ref, ref)
		}
		switch was, done, err := h.Accounts().Credited(ctx, acct.ID, "fund", "operator-"+ref); {
		case err != nil:
			return fail(err)
		case done && was != amt:
			return fail(fmt.Errorf("reference %s credited %s already, not %s; nothing credited (a new credit takes a new reference)", ref, was, amt))
		case done:
			fmt.Printf("account %s was funded with %s under reference %s already; nothing more credited\n", acct.Login, amt, ref)
			return 0
		}
		if err := h.Accounts().Credit(ctx, acct.ID, amt, "fund", "operator-"+ref); err != nil {
			return fail(err)
		}
		fmt.Printf("account %s funded with %s (reference %s; a credit under it is made once)\n", acct.Login, amt, ref)
	}
	return 0
}

func usage(s string) int {
	fmt.Fprintln(os.Stderr, "usage:", s)
	return 2
}

// writeBarcode draws a sheet serial as the Code 128 a label printer puts on
// the sheet, for the testbench scanner.
func writeBarcode(dir string, s protocol.SheetSerial) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	code, err := code128.Encode(s.String())
	if err != nil {
		return err
	}
	img, err := barcode.Scale(code, code.Bounds().Dx()*3, 120)
	if err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, s.String()+".png"))
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

// commandCmd gives a kiosk ops' command and waits for its answer. The
// running hub sends it (within its resend period, as this process has no
// broker connection), and records the answer.
func commandCmd(ctx context.Context, h *hub.Hub, pos []string, message string, wait time.Duration) int {
	if len(pos) != 2 {
		return usage("hub kiosk command ID ACTION [--message TEXT] [--wait 60s]; ACTION: " + strings.Join(protocol.Actions, ", "))
	}
	by := cliUser()
	c, err := h.Commands().Issue(ctx, pos[0], pos[1], message, by)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub kiosk command:", err)
		return 1
	}
	fmt.Printf("command %s (%s) recorded for kiosk %s by %s\n", c.CommandID, c.Action, c.KioskID, by)
	if wait <= 0 {
		return 0
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(wait)
	for {
		select {
		case <-ctx.Done():
			return 1
		case <-deadline:
			fmt.Fprintf(os.Stderr, "hub kiosk command: no answer within %s; the hub keeps sending it for a day, and the console's kiosk page shows the answer\n", wait)
			return 3
		case <-tick.C:
		}
		got, err := h.Commands().Get(ctx, c.CommandID)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hub kiosk command:", err)
			return 1
		}
		if got.Status == commands.Pending {
			continue
		}
		out, _ := json.MarshalIndent(got.Result, "", "  ")
		fmt.Printf("%s: %s\n", got.Status, out)
		if got.Status != commands.Done {
			return 1
		}
		return 0
	}
}

// scopeOf names the settings scope the flags choose.
func scopeOf(storeID, kioskID string) string {
	switch {
	case kioskID != "":
		return settings.KioskScope(kioskID)
	case storeID != "":
		return settings.StoreScope(storeID)
	}
	return settings.Fleet
}

// settingsCmd shows or changes the central settings of the fleet, a store
// (--store) or a kiosk (--kiosk). The running hubs push the kiosks' new
// configs within seconds.
func settingsCmd(ctx context.Context, h *hub.Hub, cmd string, pos []string, storeID, kioskID, by string) int {
	scope := scopeOf(storeID, kioskID)
	v, err := h.Settings().Get(ctx, scope)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub", cmd+":", err)
		return 1
	}
	if cmd == "settings set" {
		if len(pos) == 0 {
			return usage("hub settings set [--store S | --kiosk K] key=value ... (remedy_window_s, idle_timeout_s, language, labels_low, paper_alert, heartbeat_s; an empty value inherits)")
		}
		// Through JSON, so the keys are the protocol's field names.
		m := map[string]any{}
		b, _ := json.Marshal(v)
		json.Unmarshal(b, &m)
		for _, kv := range pos {
			key, val, ok := strings.Cut(kv, "=")
			if !ok {
				return usage("hub settings set: want key=value, got " + kv)
			}
			switch {
			case val == "":
				delete(m, key)
			case key == "language" || key == "paper_alert":
				m[key] = val
			default:
				n, err := strconv.Atoi(val)
				if err != nil {
					fmt.Fprintf(os.Stderr, "hub settings set: %s: want a whole number\n", key)
					return 2
				}
				m[key] = n
			}
		}
		b, _ = json.Marshal(m)
		v = protocol.KioskSettings{}
		if err := protocol.DecodeJSON(b, &v); err != nil {
			fmt.Fprintln(os.Stderr, "hub settings set:", err)
			return 2
		}
		if err := h.Settings().Set(ctx, scope, v, by); err != nil {
			fmt.Fprintln(os.Stderr, "hub settings set:", err)
			return 1
		}
	}
	out, _ := json.Marshal(v)
	fmt.Printf("%s: %s\n", scope, out)
	return 0
}

// staffCmd manages a store's staff: add (a PIN from FRANK_STAFF_PIN or
// stdin, and or a --badge), revoke, list.
func staffCmd(ctx context.Context, h *hub.Hub, cmd string, pos []string, badge, by string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "hub %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "staff add":
		if len(pos) != 2 {
			return usage("hub staff add STORE NAME [--badge STAFF-...] (the PIN from FRANK_STAFF_PIN or stdin; empty for a badge only)")
		}
		if err := h.Settings().AddStaff(ctx, pos[0], pos[1], secret("FRANK_STAFF_PIN"), badge, by); err != nil {
			return fail(err)
		}
		fmt.Printf("%s may open staff mode at every kiosk of store %s once their configs arrive (seconds, on a running hub)\n", pos[1], pos[0])
	case "staff revoke":
		if len(pos) != 2 {
			return usage("hub staff revoke STORE NAME")
		}
		if err := h.Settings().RevokeStaff(ctx, pos[0], pos[1], by); err != nil {
			return fail(err)
		}
		fmt.Printf("%s revoked at every kiosk of store %s\n", pos[1], pos[0])
	case "staff list":
		if len(pos) != 1 {
			return usage("hub staff list STORE")
		}
		list, err := h.Settings().Staff(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		for _, m := range list {
			state := "active"
			if m.Revoked != nil {
				state = "revoked " + m.Revoked.Format(time.DateTime) + " by " + m.RevokedBy
			}
			fmt.Printf("%s\tpin=%t badge=%t\tadded %s by %s\t%s\n", m.Name, m.HasPIN, m.HasBadge, m.Added.Format(time.DateTime), m.AddedBy, state)
		}
	}
	return 0
}

// cliUser names who runs a command-line change, for the record.
func cliUser() string {
	return "cli:" + cmp.Or(os.Getenv("SUDO_USER"), os.Getenv("USER"), "root")
}

// setStore records the store's ZIP and time zone, those given.
func setStore(ctx context.Context, h *hub.Hub, store string, a admin) error {
	if a.zip != "" {
		if err := h.Fleet().SetStoreZIP(ctx, store, protocol.ZIP(a.zip)); err != nil {
			return err
		}
	}
	if a.zone != "" {
		return h.Fleet().SetStoreZone(ctx, store, a.zone)
	}
	return nil
}
