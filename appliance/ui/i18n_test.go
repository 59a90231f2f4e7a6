package ui_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/frank-postage/frank/appliance/ui"
)

// screenKeys are the catalogue keys the page and its script use: every
// data-i18n and data-i18n-aria, every t("...") literal, and the keys the
// script builds from a stem (errors, progress steps).
func screenKeys(t *testing.T) []string {
	t.Helper()
	page, err := os.ReadFile("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile("web/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range regexp.MustCompile(`data-i18n(?:-aria)?="([^"]+)"`).FindAllStringSubmatch(string(page), -1) {
		keys = append(keys, m[1])
	}
	for _, m := range regexp.MustCompile(`\bt\("([a-z0-9_.]+)"`).FindAllStringSubmatch(string(js), -1) {
		if !strings.HasSuffix(m[1], ".") { // a stem, filled in below
			keys = append(keys, m[1])
		}
	}
	for _, m := range regexp.MustCompile(`\binfo\("([a-z]+)"`).FindAllStringSubmatch(string(js), -1) {
		keys = append(keys, "err."+m[1]+".title", "err."+m[1]+".text", "err."+m[1]+".short")
	}
	for _, m := range regexp.MustCompile(`: "(paying\.[a-z]+)"`).FindAllStringSubmatch(string(js), -1) {
		keys = append(keys, m[1], m[1]+"_hint")
	}
	for _, m := range regexp.MustCompile(`\["(shift\.[a-z]+)", `).FindAllStringSubmatch(string(js), -1) {
		keys = append(keys, m[1])
	}
	if len(keys) < 100 {
		t.Fatalf("found only %d keys in the page and script: the patterns above no longer match", len(keys))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// missing lists, per language, the keys it lacks among want, and the keys
// English has that another language lacks.
func missing(cats map[string][]string, want []string) []string {
	var out []string
	for lang, keys := range cats {
		for _, k := range want {
			if !slices.Contains(keys, k) {
				out = append(out, lang+": "+k)
			}
		}
		for _, k := range cats[ui.DefaultLanguage] {
			if !slices.Contains(keys, k) && !slices.Contains(want, k) {
				out = append(out, lang+": "+k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Every string the screen shows has a text in every language, and every
// language has every key English has.
func TestCatalogsComplete(t *testing.T) {
	cats, err := ui.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if got := ui.Languages(); !slices.Equal(got, []string{"en", "es"}) {
		t.Fatalf("languages %q, want en and es", got)
	}
	want := screenKeys(t)
	if m := missing(cats, want); len(m) > 0 {
		t.Errorf("missing from the catalogues:\n%s", strings.Join(m, "\n"))
	}
	// Arguments are the same in every language, and no text is empty.
	arg := regexp.MustCompile(`\{[a-z0-9]+\}`)
	for _, k := range cats["en"] {
		en := arg.FindAllString(ui.Text("en", k), -1)
		slices.Sort(en)
		for lang := range cats {
			txt := ui.Text(lang, k)
			if strings.TrimSpace(txt) == "" {
				t.Errorf("%s: %s is empty", lang, k)
			}
			got := arg.FindAllString(txt, -1)
			slices.Sort(got)
			if !slices.Equal(got, en) {
				t.Errorf("%s: %s has arguments %q, English %q", lang, k, got, en)
			}
		}
	}
}

// The check above fails on a catalogue that lacks a key.
func TestMissingKeyIsCaught(t *testing.T) {
	cats := map[string][]string{"en": {"a", "b"}, "es": {"a"}}
	if got := missing(cats, []string{"a", "c"}); !slices.Equal(got, []string{"en: c", "es: b", "es: c"}) {
		t.Fatalf("missing = %q", got)
	}
	if got := ui.Text("es", "receipt.printed_note"); got != "Su recibo está impreso. Recójalo, por favor." {
		t.Errorf("es text %q", got)
	}
	if got := ui.Text("fr", "done"); got != "Done" {
		t.Errorf("an unknown language takes English: got %q", got)
	}
	if got := ui.Text("en", "paying.printing", "n", "2", "of", "3"); got != "Printing stamp 2 of 3" {
		t.Errorf("arguments: got %q", got)
	}
}
