package console

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestOpenAPICoversEveryRoute keeps docs/openapi.yaml in step with the
// operator API: every route is documented under its method, and every
// documented path is served.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	spec, err := os.ReadFile("../../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{} // path -> the block that documents it
	var cur string
	for _, line := range strings.Split(string(spec), "\n") {
		if strings.HasPrefix(line, "  /") {
			cur = strings.TrimSuffix(strings.TrimSpace(line), ":")
			paths[cur] = ""
			continue
		}
		if !strings.HasPrefix(line, "  ") {
			cur = ""
		}
		if cur != "" {
			paths[cur] += line + "\n"
		}
	}
	served := map[string]bool{}
	c := &Console{}
	err = chi.Walk(c.APIRoutes().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.TrimSuffix(route, "/")
		served[route] = true
		block, ok := paths[route]
		if !ok {
			t.Errorf("%s %s is not in docs/openapi.yaml", method, route)
		} else if !strings.Contains(block, "    "+strings.ToLower(method)+":") {
			t.Errorf("%s %s: the method is not documented", method, route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range paths {
		if !served[p] {
			t.Errorf("docs/openapi.yaml documents %s, which is not served", p)
		}
	}
}

func FuzzDecodeIssue(f *testing.F) {
	f.Add(`{"store":"web","sheets":3}`)
	f.Add(`{"store":"web","sheets":3}{}`)
	f.Add(`{"store":"","sheets":0,"x":1}`)
	f.Fuzz(func(t *testing.T, body string) {
		req, err := decodeIssue(strings.NewReader(body))
		if err == nil && (req.Store == "" || req.Sheets < 1 || req.Sheets > 1000) {
			t.Fatalf("accepted %q as %+v", body, req)
		}
	})
}
