package postal

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hubpostal "github.com/frank-postage/frank/hub/postal"
)

// The authority holds each audit chain to the heads earlier reports gave:
// an entry keeps its hash, a chain never ends earlier in a later period,
// and a chain once anchored is never missing.
func TestAuditHeadsPerChain(t *testing.T) {
	a, err := New(filepath.Join(t.TempDir(), "pa.json"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	head := func(chain uint32, seq int64, hash string) hubpostal.AuditHead {
		return hubpostal.AuditHead{Chain: chain, Seq: seq, Hash: hash}
	}
	a.st.Reports = []Filed{{Ref: "RPT-1", Vendor: "FR", To: day, AuditHeads: []hubpostal.AuditHead{head(1, 3, "aa"), head(50_000_001, 5, "bb")}}}
	report := func(to time.Time, heads ...hubpostal.AuditHead) *hubpostal.Report {
		return &hubpostal.Report{Vendor: "FR", From: to.Add(-24 * time.Hour), To: to,
			Registers: []hubpostal.Reading{{Kind: "gpsd"}}, AuditHeads: heads}
	}
	next := day.Add(24 * time.Hour)
	for _, c := range []struct {
		name string
		r    *hubpostal.Report
		want string // "" when accepted
	}{
		{"both chains grow", report(next, head(1, 4, "cc"), head(50_000_001, 9, "dd")), ""},
		{"one chain still", report(next, head(1, 3, "aa"), head(50_000_001, 9, "dd")), ""},
		{"rewritten", report(next, head(1, 3, "ff"), head(50_000_001, 9, "dd")), "entry 3 of chain 1 differs from the one report RPT-1 gave: the chain was rewritten"},
		{"reset", report(next, head(1, 4, "cc"), head(50_000_001, 2, "dd")), "entry 2 of chain 50000001 ends a period after report RPT-1, which ended at entry 5: the chain was reset"},
		{"cut", report(next, head(1, 4, "cc")), "chain 50000001, which report RPT-1 anchored at entry 5, is missing: the chain was cut"},
		{"twice", report(next, head(1, 4, "cc"), head(1, 4, "cc"), head(50_000_001, 9, "dd")), "chain 1 given twice"},
		{"an earlier period", report(day.Add(-24*time.Hour), head(1, 1, "ee")), ""},
	} {
		var heads []string // the other checks are tested on their own
		for _, p := range a.audit(c.r) {
			if strings.HasPrefix(p, "audit head:") {
				heads = append(heads, p)
			}
		}
		problems := strings.Join(heads, "\n")
		if c.want == "" && problems != "" || !strings.Contains(problems, c.want) {
			t.Errorf("%s: problems %q, want %q", c.name, problems, c.want)
		}
	}
}
