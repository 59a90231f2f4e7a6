package ui

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
)

// DefaultLanguage is the screen's language when ops set none.
const DefaultLanguage = "en"

// catalogs are the message catalogues in web/static/i18n, one JSON object
// of key → text per language; {name} marks an argument. The page loads the
// same files, so the screen and the printed receipt say the same thing.
var catalogs = sync.OnceValues(func() (map[string]map[string]string, error) {
	files, err := fs.Glob(webFS, "web/static/i18n/*.json")
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, f := range files {
		b, err := fs.ReadFile(webFS, f)
		if err != nil {
			return nil, err
		}
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("ui: catalogue %s: %w", f, err)
		}
		lang := strings.TrimSuffix(f[strings.LastIndex(f, "/")+1:], ".json")
		out[lang] = m
	}
	return out, nil
})

// Languages lists the languages with a catalogue, sorted.
func Languages() []string {
	c, _ := catalogs()
	var out []string
	for l := range c {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// Text is key's text in lang with its {name} arguments filled from
// args, given as name, value pairs. An unknown language takes English; a
// key missing everywhere is returned as it is, which the catalogue tests
// forbid.
func Text(lang, key string, args ...string) string {
	c, err := catalogs()
	if err != nil {
		return key
	}
	s, ok := c[lang][key]
	if !ok {
		if s, ok = c[DefaultLanguage][key]; !ok {
			return key
		}
	}
	for i := 0; i+1 < len(args); i += 2 {
		s = strings.ReplaceAll(s, "{"+args[i]+"}", args[i+1])
	}
	return s
}

// Keys returns each language's keys, for the tests that keep the
// catalogues complete.
func Keys() (map[string][]string, error) {
	c, err := catalogs()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for lang, m := range c {
		for k := range m {
			out[lang] = append(out[lang], k)
		}
		slices.Sort(out[lang])
	}
	return out, nil
}
