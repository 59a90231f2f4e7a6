package rates_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// FuzzRateTableFile drops a fuzzed table file into a rates directory and
// loads it as the hub does at start (LoadDir) and every minute after
// (Reload). It never panics. A file refused is an error that names the
// file, and Reload leaves the book as it was; a file taken is the table
// in force from its date, read as the file says, and it prices its own
// classes: every weight up to the class's limit costs more than nothing,
// no more than the indicium's postage field holds and no less than a
// lighter piece, and a piece over the limit is refused.
// (protocol's FuzzRateTable fuzzes the table itself; this is its file.)
func FuzzRateTableFile(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("tables", "usps-2025-07-13.json"))
	if err != nil {
		f.Fatal(err)
	}
	next := prototest.Rates
	next.Version, next.Effective = "usps-2027-01-17", "2027-01-17"
	nextJSON, _ := json.Marshal(next)
	f.Add(good) // the built-in table again: a version loaded twice
	f.Add(nextJSON)
	class := func(first, more string, maxMg string) string {
		return `{"version":"v2","effective":"2027-01-17","classes":[{"class":"1100","name":"Letter","print":"FIRST-CLASS",` +
			`"first_ounce_mills":` + first + `,"additional_ounce_mills":` + more + `,"max_weight_mg":` + maxMg + `}]}`
	}
	for _, s := range []string{
		class("780", "290", "99223"), class("16777215", "0", "4535924"), class("1", "1", "4535924"),
		class("1", "4611686018427387904", "4535924"), class("9223372036854775807", "1", "4535924"),
		class("1", "9223372036854775807", "56699"), class("0", "0", "1"), class("780", "-1", "99223"),
		class("780", "290", "4535925"), class("780", "290", "0"), class("7.8e2", "290", "99223"), class(`"780"`, "290", "99223"),
		`{"version":"v2","effective":"2027-02-30","classes":[]}`, `{"version":"","effective":"2027-01-17"}`,
		`{"version":"v2","effective":"0000-01-01","classes":[{"class":"1100","name":"L","print":"P","first_ounce_mills":1,"max_weight_mg":1},` +
			`{"class":"1100","name":"L","print":"P","first_ounce_mills":1,"max_weight_mg":1}]}`,
		`{"version":"v2","version":"v3"}`, `{"Version":"v2"}`, `null`, `[]`, ``, `{`, `{} {}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	builtin, err := rates.Builtin()
	if err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(f.TempDir(), "rates")
	if err := os.Mkdir(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const name = "next.json"
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		book, err := rates.LoadDir(dir)
		// Reload into a book of the built-in tables agrees with LoadDir,
		// and a refusal leaves that book as it was.
		reloaded, _ := rates.LoadDir("")
		rerr := reloaded.Reload(dir)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("%q: LoadDir says %v, Reload %v", b, err, rerr)
		}
		if err != nil {
			if book != nil || !strings.HasPrefix(err.Error(), "rates: ") || !strings.Contains(err.Error(), name) {
				t.Fatalf("%q: %v and the error %q, which does not name the file", b, book, err)
			}
			at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			if got, _ := reloaded.Current(at); !reflect.DeepEqual(got, must(builtin.Current(at))) {
				t.Fatalf("%q refused, but Reload changed the book: %+v in force", b, got)
			}
			return
		}
		var want protocol.RateTable
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q taken, but it is not JSON: %v", b, err)
		}
		day, err := time.Parse(time.DateOnly, want.Effective)
		if err != nil {
			t.Fatalf("%q taken with the date %q: %v", b, want.Effective, err)
		}
		for _, bk := range []*rates.Book{book, reloaded} {
			if cur, err := bk.Current(day); err != nil || !reflect.DeepEqual(cur, want) {
				t.Fatalf("%q taken, but on %s the table in force is %+v, %v", b, want.Effective, cur, err)
			}
		}
		for _, c := range want.Classes {
			var last protocol.Mills
			for _, w := range classWeights(c.MaxWeightMg) {
				p, err := want.Price(c.Class, w)
				if err != nil || p <= 0 || p > protocol.MaxPostage || p < last {
					t.Fatalf("%q taken: class %s at %d mg costs %d (after %d), %v", b, c.Class, w, p, last, err)
				}
				last = p
			}
			if p, err := want.Price(c.Class, c.MaxWeightMg+1); err == nil {
				t.Fatalf("%q taken: class %s over its %d mg limit costs %d", b, c.Class, c.MaxWeightMg, p)
			}
		}
	})
}

// classWeights are the weights where a class's price may change, in
// order: each side of every whole ounce up to maxMg, and maxMg.
func classWeights(maxMg int64) []int64 {
	ws := []int64{0, 1}
	for oz := int64(1); ; oz++ {
		w := oz * protocol.OunceNg / 1_000_000
		if w >= maxMg {
			break
		}
		ws = append(ws, w, w+1)
	}
	return append(ws, maxMg)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
