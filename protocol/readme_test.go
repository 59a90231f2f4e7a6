package protocol_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// README.md documents every code with its retry flag, HTTP status and
// meaning as the Codes table gives them, so the two cannot drift.
func TestREADMEListsEveryCode(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	// The README sets names in code type; the meanings are the same text.
	plain := strings.ReplaceAll(doc, "`", "")
	for _, c := range protocol.Codes {
		retry := "no"
		if c.Retry {
			retry = "yes"
		}
		row := fmt.Sprintf("| %s | %s | %d | %s |", c.Code, retry, c.Code.HTTPStatus(), c.Meaning)
		if !strings.Contains(plain, row) {
			t.Errorf("README.md has no row %q", row)
		}
	}
	_, section, ok := strings.Cut(doc, "## Error codes")
	if !ok {
		t.Fatal("README.md has no Error codes section")
	}
	n := 0
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `") {
			n++
		}
	}
	if n != len(protocol.Codes) {
		t.Errorf("README.md lists %d codes, protocol.Codes has %d", n, len(protocol.Codes))
	}
}
