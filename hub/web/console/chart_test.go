package console

import (
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/metrics"
)

// A chart's text alternative carries what its bars show, refused answers
// included, which the picture tells apart by colour only.
func TestChartTextAlternative(t *testing.T) {
	at := time.Date(2026, 3, 1, 14, 0, 0, 0, time.Local)
	pts := []metrics.Point{
		{At: at, OK: 3, Rejected: 1, P95Ms: 40},
		{At: at.Add(time.Minute), OK: 5, P95Ms: 75.4},
	}
	for _, c := range []struct{ measure, want string }{
		{"sales", `aria-label="Answers: 2 steps from 14:00 to 14:01, 9 answered, 1 of them refused, at most 5 in one step"`},
		{"p95", `aria-label="Answers: 2 steps from 14:00 to 14:01, highest 75 ms"`},
	} {
		if got := string(chart("Answers", c.measure, pts)); !strings.Contains(got, c.want) {
			t.Errorf("%s chart: %s\nwant %s", c.measure, got[:min(len(got), 200)], c.want)
		}
	}
	if got := string(chart("Answers", "sales", nil)); !strings.Contains(got, `aria-label="Answers: no data"`) {
		t.Errorf("empty chart: %s", got)
	}
}
