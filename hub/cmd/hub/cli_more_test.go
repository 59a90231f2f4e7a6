package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/postal"
)

// cli runs hub commands against the state in dir, as the README shows
// them (with --data dir).
type cli struct {
	t   *testing.T
	dir string
}

func newCLI(t *testing.T) *cli { return &cli{t: t, dir: filepath.Join(t.TempDir(), "hub")} }

// ok runs a command that must succeed and returns its standard output.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := hubCmd(c.t, c.dir, args...)
	if code != 0 {
		c.t.Fatalf("hub %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs a command that must exit with code, saying want on standard
// error.
func (c *cli) fails(code int, want string, args ...string) {
	c.t.Helper()
	got, out, errOut := hubCmd(c.t, c.dir, args...)
	if got != code || !strings.Contains(errOut, want) {
		c.t.Errorf("hub %s: exit %d, want %d naming %q\n%s%s", strings.Join(args, " "), got, code, want, out, errOut)
	}
}

// db opens the hub's database (hub.db in the data dir) to look at what a
// command did; it closes with the test.
func (c *cli) db() *store.DB {
	c.t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(c.dir, "hub.db"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { db.Close() })
	return db
}

// keyRow is a key as hub keys list prints it.
type keyRow struct {
	Serial         uint32     `json:"serial"`
	Algorithm      int        `json:"algorithm"`
	PublicKeyPEM   string     `json:"public_key_pem"`
	CertificatePEM string     `json:"certificate_pem"`
	Created        time.Time  `json:"created"`
	Retired        *time.Time `json:"retired"`
	Compromised    *time.Time `json:"compromised"`
}

func decodeKeys(t *testing.T, out string) []keyRow {
	t.Helper()
	var ks []keyRow
	if err := json.Unmarshal([]byte(out), &ks); err != nil {
		t.Fatalf("keys output is not a JSON list: %v\n%s", err, out)
	}
	return ks
}

// hub keys list prints the signing keys as JSON, oldest first ([] before
// the ceremony); hub keys compromise SERIAL --since marks the key
// compromised from that time (a date is its UTC midnight, an RFC 3339
// time is kept as given), rotates to a new key and prints the list; a
// --since it cannot read changes nothing.
func TestKeysListAndCompromise(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pa, err := postal.New("", log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(pa.Handler())
	t.Cleanup(srv.Close)
	c := newCLI(t)
	authority := []string{"--postal", srv.URL, "--licence", postal.DemoLicence}
	with := func(args ...string) []string { return append(args, authority...) }

	if out := c.ok(with("keys", "list")...); strings.TrimSpace(out) != "[]" {
		t.Fatalf("keys list before the ceremony: %q, want []", out)
	}
	c.ok(with("keys", "init")...)
	ks := decodeKeys(t, c.ok(with("keys", "list")...))
	if len(ks) != 1 || ks[0].Serial == 0 || ks[0].Algorithm != 3 || !strings.Contains(ks[0].PublicKeyPEM, "PUBLIC KEY") ||
		!strings.Contains(ks[0].CertificatePEM, "CERTIFICATE") || ks[0].Created.IsZero() || ks[0].Retired != nil || ks[0].Compromised != nil {
		t.Fatalf("keys list after init: %+v", ks)
	}
	first := strconv.FormatUint(uint64(ks[0].Serial), 10)

	// A --since it cannot read is refused before anything changes.
	for _, bad := range []string{"yesterday", "2026-12-01 10:00", "01/12/2026", "2026-12-01T10:00:00"} {
		c.fails(2, "--since: want RFC 3339 or 2006-01-02", with("keys", "compromise", first, "--since", bad)...)
	}
	c.fails(2, "usage: hub keys compromise SERIAL", with("keys", "compromise", "--since", "2026-12-01")...)
	c.fails(1, "no such key", with("keys", "compromise", "4242", "--since", "2026-12-01")...)
	if ks := decodeKeys(t, c.ok(with("keys", "list")...)); len(ks) != 1 || ks[0].Compromised != nil {
		t.Fatalf("keys after the refusals: %+v", ks)
	}

	// As the README shows it: a date.
	ks = decodeKeys(t, c.ok(with("keys", "compromise", first, "--since", "2026-12-01")...))
	if len(ks) != 2 {
		t.Fatalf("keys compromise printed %+v, want the compromised key and its successor", ks)
	}
	if k := ks[0]; k.Compromised == nil || !k.Compromised.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || k.Retired == nil {
		t.Errorf("the compromised key: %+v, want compromised since 2026-12-01T00:00:00Z and retired", k)
	}
	if k := ks[1]; k.Serial == ks[0].Serial || k.Compromised != nil || k.Retired != nil {
		t.Errorf("the new key: %+v, want a new serial, active", k)
	}
	if listed := decodeKeys(t, c.ok(with("keys", "list")...)); len(listed) != 2 || listed[0].Compromised == nil || listed[1].Serial != ks[1].Serial {
		t.Errorf("keys list after the compromise: %+v", listed)
	}

	// An RFC 3339 time with an offset is that instant.
	second := strconv.FormatUint(uint64(ks[1].Serial), 10)
	ks = decodeKeys(t, c.ok(with("keys", "compromise", second, "--since", "2026-12-02T09:30:00+02:00")...))
	if len(ks) != 3 || ks[1].Compromised == nil || !ks[1].Compromised.Equal(time.Date(2026, 12, 2, 7, 30, 0, 0, time.UTC)) {
		t.Errorf("after compromising %s since 2026-12-02T09:30:00+02:00: %+v", second, ks)
	}
	if ks[0].Compromised == nil || !ks[0].Compromised.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the first key's compromise moved: %+v", ks[0])
	}
}

// psdmRow is a PSDM server as hub psdm list prints it, one JSON object a
// line.
type psdmRow struct {
	Hub   string `json:"hub"`
	ID    int    `json:"id"`
	MPSDs int    `json:"mpsds"`
	State string `json:"state"`
}

func decodePSDM(t *testing.T, out string) []psdmRow {
	t.Helper()
	var rows []psdmRow
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var r psdmRow
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return rows
		} else if err != nil {
			t.Fatalf("psdm output: %v\n%s", err, out)
		}
		rows = append(rows, r)
	}
}

// hub psdm list prints this hub's stored PSDM servers; psdm add --mpsds N
// adds one and prints its id; psdm drain ID drains one, but never the last
// active one nor one not active.
func TestPSDMCommands(t *testing.T) {
	c := newCLI(t)
	hubA := []string{"--hub-name", "hub-a"}
	psdm := func(args ...string) string { return c.ok(append(append([]string{"psdm"}, args...), hubA...)...) }

	if out := psdm("list"); out != "" {
		t.Fatalf("psdm list before any: %q", out)
	}
	out := psdm("add", "--mpsds", "2")
	if !strings.HasPrefix(out, "PSDM server 1 added with 2 MPSDs") {
		t.Errorf("psdm add: %q", out)
	}
	if rows := decodePSDM(t, out[strings.Index(out, "\n")+1:]); len(rows) != 1 || rows[0] != (psdmRow{"hub-a", 1, 2, "active"}) {
		t.Errorf("the list psdm add printed: %+v", rows)
	}
	c.fails(1, "it is the last active one", "psdm", "drain", "1", "--hub-name", "hub-a")

	if out := psdm("add"); !strings.HasPrefix(out, "PSDM server 2 added with 1 MPSDs") {
		t.Errorf("psdm add with the default --mpsds: %q", out)
	}
	out = psdm("drain", "1")
	if !strings.HasPrefix(out, "PSDM server 1 drained") {
		t.Errorf("psdm drain 1: %q", out)
	}
	want := []psdmRow{{"hub-a", 1, 2, "drained"}, {"hub-a", 2, 1, "active"}}
	if rows := decodePSDM(t, psdm("list")); len(rows) != 2 || rows[0] != want[0] || rows[1] != want[1] {
		t.Errorf("psdm list after the drain: %+v, want %+v", rows, want)
	}
	c.fails(1, "no such active server", "psdm", "drain", "1", "--hub-name", "hub-a")
	c.fails(1, "no such active server", "psdm", "drain", "7", "--hub-name", "hub-a")
	c.fails(2, "usage: hub psdm drain ID", "psdm", "drain", "one", "--hub-name", "hub-a")
	c.fails(2, "mpsds: want 1-8", "psdm", "add", "--mpsds", "9", "--hub-name", "hub-a")
	// Each hub has its own list.
	if out := c.ok("psdm", "list", "--hub-name", "hub-b"); out != "" {
		t.Errorf("hub-b's list: %q", out)
	}
	if rows := decodePSDM(t, psdm("list")); len(rows) != 2 {
		t.Errorf("hub-a's list after the refusals: %+v", rows)
	}
}

// hub operator revoke LOGIN revokes every token of that operator, and
// says how many: they stop working at once; another operator's do not.
func TestOperatorRevokeCommand(t *testing.T) {
	c := newCLI(t)
	t.Setenv("FRANK_OPERATOR_PASSWORD", "operator password 1")
	c.ok("kiosk", "add", "K1", "--store", "S1")
	c.ok("operator", "add", "ana", "--role", "ops")
	c.ok("operator", "add", "bob", "--role", "staff", "--stores", "S1")
	token := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(c.ok(append([]string{"operator", "token"}, args...)...))
	}
	anaRead, anaWrite, bobs := token("ana"), token("ana", "--write", "--name", "deploy"), token("bob")

	if out := c.ok("operator", "revoke", "ana"); out != "2 tokens of ana revoked\n" {
		t.Errorf("operator revoke ana: %q", out)
	}
	ops := operators.New(c.db(), nil)
	ctx := context.Background()
	for _, tok := range []string{anaRead, anaWrite} {
		if op, err := ops.ByToken(ctx, tok); !errors.Is(err, operators.ErrAuth) {
			t.Errorf("ana's revoked token still works: %+v %v", op, err)
		}
	}
	if op, err := ops.ByToken(ctx, bobs); err != nil || op.Login != "bob" {
		t.Errorf("bob's token after ana's revoke: %+v %v", op, err)
	}
	if out := c.ok("operator", "revoke", "ana"); out != "0 tokens of ana revoked\n" {
		t.Errorf("operator revoke ana again: %q", out)
	}
	// A token made after the revoke works.
	if op, err := ops.ByToken(ctx, token("ana")); err != nil || op.Login != "ana" {
		t.Errorf("ana's new token: %+v %v", op, err)
	}
	c.fails(2, "usage: hub operator revoke LOGIN", "operator", "revoke")
	// A mistyped login, or a store that does not exist, is said so.
	c.fails(1, "no operator anna", "operator", "revoke", "anna")
	c.fails(1, "no store S9", "operator", "add", "cyd", "--role", "staff", "--stores", "S9")
}

// FRANK_STAFF_PIN=1357 hub staff add S1 alice gives alice that PIN at
// every kiosk of S1: it checks against the store, staff list shows it
// (never the PIN), and a PIN that is not 4 to 8 digits or a store that
// does not exist is refused.
func TestStaffAddPINFromEnvironment(t *testing.T) {
	c := newCLI(t)
	t.Setenv("SUDO_USER", "")
	t.Setenv("USER", "opsuser")
	c.ok("kiosk", "add", "K1", "--store", "S1")
	t.Setenv("FRANK_STAFF_PIN", "1357")
	_, out, errOut := hubCmd(t, c.dir, "staff", "add", "S1", "alice")
	if !strings.Contains(out, "alice may open staff mode at every kiosk of store S1") {
		t.Fatalf("staff add: %q %s", out, errOut)
	}
	if strings.Contains(out+errOut, "1357") {
		t.Errorf("staff add printed the PIN: %s%s", out, errOut)
	}
	t.Setenv("FRANK_STAFF_PIN", "24680")
	c.ok("staff", "add", "S1", "bob", "--badge", "STAFF-0042")

	cfg := settings.New(c.db(), nil)
	ctx := context.Background()
	for pin, want := range map[string]string{"1357": "alice", "24680": "bob", "9999": ""} {
		if name, err := cfg.CheckStaff(ctx, "S1", pin, ""); err != nil || name != want {
			t.Errorf("PIN %s checks as %q (%v), want %q", pin, name, err, want)
		}
	}
	if name, err := cfg.CheckStaff(ctx, "S1", "", "STAFF-0042"); err != nil || name != "bob" {
		t.Errorf("bob's badge checks as %q (%v)", name, err)
	}
	list := c.ok("staff", "list", "S1")
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "alice\tpin=true badge=false\tadded ") || !strings.HasSuffix(lines[0], " by cli:opsuser\tactive") ||
		!strings.HasPrefix(lines[1], "bob\tpin=true badge=true\t") {
		t.Errorf("staff list S1:\n%s", list)
	}
	if strings.Contains(list, "1357") || strings.Contains(list, "$2a$") {
		t.Errorf("staff list shows a PIN or its hash:\n%s", list)
	}

	for pin, want := range map[string]string{"12": "pin: want 4 to 8 digits", "12ab": "pin: want 4 to 8 digits", "123456789": "pin: want 4 to 8 digits"} {
		t.Setenv("FRANK_STAFF_PIN", pin)
		c.fails(1, want, "staff", "add", "S1", "carol")
	}
	t.Setenv("FRANK_STAFF_PIN", "1357")
	c.fails(1, "no store S9", "staff", "add", "S9", "carol")
	c.fails(2, "usage: hub staff add STORE NAME", "staff", "add", "S1")
	if all, err := cfg.Staff(ctx, "S1"); err != nil || len(all) != 2 {
		t.Errorf("S1's staff after the refusals: %+v %v", all, err)
	}
}

// A store's time zone is set when its kiosk is provisioned, or later with
// hub store set, beside its ZIP; a name that is no zone, or a store that is
// none, is refused and changes nothing.
func TestStoreZone(t *testing.T) {
	c := newCLI(t)
	c.ok("kiosk", "add", "K1", "--store", "S1", "--zip", "94544", "--time-zone", "America/Los_Angeles")
	c.ok("kiosk", "add", "K2", "--store", "S2")
	zoneOf := func(store string) (zip, zone string) {
		t.Helper()
		var z, tz *string
		if err := c.db().QueryRow(`SELECT zip, time_zone FROM stores WHERE id = ?`, store).Scan(&z, &tz); err != nil {
			t.Fatal(err)
		}
		if z != nil {
			zip = *z
		}
		if tz != nil {
			zone = *tz
		}
		return zip, zone
	}
	if zip, zone := zoneOf("S1"); zip != "94544" || zone != "America/Los_Angeles" {
		t.Errorf("kiosk add: S1 has ZIP %q and zone %q", zip, zone)
	}
	if _, zone := zoneOf("S2"); zone != "" {
		t.Errorf("a store given no zone has %q; want the hub's", zone)
	}
	if out := c.ok("store", "set", "S2", "--time-zone", "America/New_York", "--zip", "10001"); !strings.Contains(out, "store S2 set") {
		t.Errorf("store set said %q", out)
	}
	if zip, zone := zoneOf("S2"); zip != "10001" || zone != "America/New_York" {
		t.Errorf("store set: S2 has ZIP %q and zone %q", zip, zone)
	}
	c.fails(1, `time zone "Mars/Olympus_Mons"`, "store", "set", "S2", "--time-zone", "Mars/Olympus_Mons")
	c.fails(1, `time zone "Local"`, "store", "set", "S2", "--time-zone", "Local")
	c.fails(1, "no store S9", "store", "set", "S9", "--time-zone", "UTC")
	c.fails(2, "usage: hub store set", "store", "set", "S2")
	if _, zone := zoneOf("S2"); zone != "America/New_York" {
		t.Errorf("a refused zone changed S2's to %q", zone)
	}
}

// hub operator add for an existing login, as the README resets a password,
// keeps a staff member's role and stores unless --role or --stores are
// given, and says what it kept; a new login without --role is ops.
func TestOperatorAddResetKeepsRole(t *testing.T) {
	c := newCLI(t)
	t.Setenv("FRANK_OPERATOR_PASSWORD", "operator password 1")
	c.ok("kiosk", "add", "K1", "--store", "S1")
	c.ok("kiosk", "add", "K2", "--store", "S2")
	c.ok("operator", "add", "bob", "--role", "staff", "--stores", "S1")
	t.Setenv("FRANK_OPERATOR_PASSWORD", "a new password 2")
	if out := c.ok("operator", "add", "bob"); !strings.Contains(out, "bob (staff of S1) saved") {
		t.Errorf("reset says %q, want the role and stores it kept", out)
	}
	ops := operators.New(c.db(), nil)
	op, err := ops.Authenticate(context.Background(), "bob", "a new password 2")
	if err != nil {
		t.Fatal(err)
	}
	if op.Ops() || strings.Join(op.Stores, ",") != "S1" {
		t.Errorf("after a password reset bob is %s of %v, want staff of S1", op.Role, op.Stores)
	}
	if out := c.ok("operator", "add", "bob", "--stores", "S2"); !strings.Contains(out, "bob (staff of S2) saved") {
		t.Errorf("--stores alone: %q, want staff of S2", out)
	}
	c.fails(1, "at least one store", "operator", "add", "bob", "--stores", "")
	if out := c.ok("operator", "add", "bob", "--role", "ops"); !strings.Contains(out, "bob (ops) saved") {
		t.Errorf("--role ops: %q", out)
	}
	if out := c.ok("operator", "add", "ana"); !strings.Contains(out, "ana (ops) saved") {
		t.Errorf("a new login: %q, want ops", out)
	}
}

// hub ledger restored locks every MPSD the restored database holds and
// says where new ones are numbered from; ledger check then shows them
// locked, and still adds up.
func TestLedgerRestoredCommand(t *testing.T) {
	c := newCLI(t)
	c.ok("ledger", "check") // a fresh ledger, no MPSD yet
	out := c.ok("ledger", "restored")
	if !strings.Contains(out, "new MPSDs are numbered from 50001001") {
		t.Fatalf("hub ledger restored: %q", out)
	}
	if out := c.ok("ledger", "check"); !strings.Contains(out, "MPSD 50001000") || !strings.Contains(out, "LOCKED: the serial floor after a restore") {
		t.Fatalf("hub ledger check after the restore: %q", out)
	}
}

// hub account fund run again with the reference it printed, after it was
// cut short past its commit, credits nothing more; each run without one
// credits anew (a fresh reference, printed before the credit).
func TestAccountFundOnceByRef(t *testing.T) {
	c := newCLI(t)
	t.Setenv("FRANK_ACCOUNT_PASSWORD", "a long enough password")
	c.ok("account", "add", "carol")
	balance := func() int64 {
		var b int64
		if err := c.db().QueryRowContext(context.Background(), `SELECT balance FROM accounts WHERE login = 'carol'`).Scan(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	out := c.ok("account", "fund", "carol", "--amount", "10.00")
	_, after, ok := strings.Cut(out, "run it again with --ref ")
	ref, _, _ := strings.Cut(after, "\n")
	if !ok || ref == "" || !strings.Contains(out, "funded") {
		t.Fatalf("no reference printed before the credit:\n%s", out)
	}
	if out := c.ok("account", "fund", "carol", "--amount", "10.00", "--ref", ref); !strings.Contains(out, "already") {
		t.Fatalf("a repeat under the same reference does not say it credited nothing more:\n%s", out)
	}
	c.fails(1, "credited $10.00 already", "account", "fund", "carol", "--amount", "12.00", "--ref", ref)
	if b := balance(); b != 10000 {
		t.Fatalf("balance %d mills after repeats under the same reference, want 10000", b)
	}
	c.ok("account", "fund", "carol", "--amount", "5.00")
	if b := balance(); b != 15000 {
		t.Fatalf("balance %d mills after a second credit, want 15000", b)
	}
}
