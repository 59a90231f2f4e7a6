package console

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/frank-postage/frank/hub/metrics"
)

// chart draws a bar chart of one measure of the points as inline SVG: no
// script and no library, and it scales to a phone's width. measure is
// "sales" (ok answers per step, rejections stacked in red) or "p95" (ms).
func chart(title, measure string, pts []metrics.Point) template.HTML {
	const w, h, pad = 400.0, 130.0, 20.0 // small enough that its text reads on a phone
	val := func(p metrics.Point) float64 {
		if measure == "p95" {
			return p.P95Ms
		}
		return float64(p.OK + p.Rejected)
	}
	top := 0.0
	for _, p := range pts {
		top = max(top, val(p))
	}
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, w, h+pad, template.HTMLEscapeString(title+": "+chartSummary(measure, pts)))
	fmt.Fprintf(&b, `<text x="4" y="15" font-size="14">%s — max %.0f</text>`, template.HTMLEscapeString(title), top)
	bw := (w - 8) / float64(max(len(pts), 1))
	for i, p := range pts {
		x := 4 + float64(i)*bw
		total := val(p) / top * (h - 24)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#0b57d0"><title>%s: %.1f</title></rect>`,
			x, h-total, max(bw-1, 0.5), total, p.At.Local().Format("15:04"), val(p))
		if measure == "sales" && p.Rejected > 0 {
			rej := float64(p.Rejected) / top * (h - 24)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#b3261e"/>`, x, h-rej, max(bw-1, 0.5), rej)
		}
	}
	if len(pts) > 0 {
		fmt.Fprintf(&b, `<text x="4" y="%.0f" font-size="13">%s</text><text x="%.0f" y="%.0f" font-size="13" text-anchor="end">%s</text>`,
			h+16, pts[0].At.Local().Format("15:04"), w-4, h+16, pts[len(pts)-1].At.Local().Format("15:04"))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built only from numbers and escaped text above
}

// chartSummary is the chart's text alternative (WCAG 1.1.1): a screen
// reader gets the totals the bars show, and the refused answers, which
// the picture tells apart by colour only.
func chartSummary(measure string, pts []metrics.Point) string {
	if len(pts) == 0 {
		return "no data"
	}
	span := fmt.Sprintf("%d steps from %s to %s", len(pts), pts[0].At.Local().Format("15:04"), pts[len(pts)-1].At.Local().Format("15:04"))
	var ok, rejected, most int
	var p95 float64
	for _, p := range pts {
		ok += p.OK
		rejected += p.Rejected
		most = max(most, p.OK+p.Rejected)
		p95 = max(p95, p.P95Ms)
	}
	if measure == "p95" {
		return fmt.Sprintf("%s, highest %.0f ms", span, p95)
	}
	return fmt.Sprintf("%s, %d answered, %d of them refused, at most %d in one step", span, ok+rejected, rejected, most)
}
