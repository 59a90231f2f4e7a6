package console

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"slices"
	"strconv"
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

// TestOpenAPIAlertKinds keeps the Alert schema's kind enum in
// docs/openapi.yaml equal to the kinds the hub raises: package alerts'
// string constants, the list TestAlertKindsComplete holds metrics to.
func TestOpenAPIAlertKinds(t *testing.T) {
	spec, err := os.ReadFile("../../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, schema, ok := strings.Cut(string(spec), "\n    Alert:\n")
	if !ok {
		t.Fatal("docs/openapi.yaml has no Alert schema")
	}
	const prefix = "        kind: {type: string, enum: ["
	var documented []string
	for _, line := range strings.Split(schema, "\n") {
		if !strings.HasPrefix(line, "      ") { // the next schema
			break
		}
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			list, _, _ := strings.Cut(rest, "]")
			for _, k := range strings.Split(list, ",") {
				documented = append(documented, strings.TrimSpace(k))
			}
		}
	}
	if len(documented) == 0 {
		t.Fatal("the Alert schema has no kind enum on one line")
	}
	f, err := parser.ParseFile(token.NewFileSet(), "../../alerts/alerts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, s := range g.Specs {
				for _, v := range s.(*ast.ValueSpec).Values {
					if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						k, _ := strconv.Unquote(lit.Value)
						kinds = append(kinds, k)
					}
				}
			}
		}
	}
	if len(kinds) == 0 {
		t.Fatal("no string constants found in package alerts")
	}
	for _, k := range kinds {
		if !slices.Contains(documented, k) {
			t.Errorf("alert kind %q is not in the Alert schema's enum in docs/openapi.yaml", k)
		}
	}
	for _, k := range documented {
		if !slices.Contains(kinds, k) {
			t.Errorf("docs/openapi.yaml's Alert kind %q is not a kind of package alerts", k)
		}
	}
	if len(documented) != len(kinds) {
		t.Errorf("docs/openapi.yaml lists %d alert kinds, package alerts has %d", len(documented), len(kinds))
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
