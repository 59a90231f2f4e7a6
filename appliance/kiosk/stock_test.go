package kiosk

import (
	"errors"
	"slices"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// Labels go out in the order their sheets were loaded, a sheet loaded
// again keeps its place, held labels are passed over, and a used label
// leaves the stock.
func TestLabelStock(t *testing.T) {
	var st labelStock
	st.load([]protocol.SheetState{{Sheet: "0000-0002", Free: []int{9, 10}}, {Sheet: "0000-0001", Free: []int{1, 2, 3}}})
	st.load([]protocol.SheetState{{Sheet: "0000-0002", Free: []int{10}}}) // reloaded after a restart
	if n := st.left(); n != 4 {
		t.Fatalf("%d labels left, want 4", n)
	}
	got, err := st.next(3, map[string]bool{"0000-0001-01": true})
	if err != nil || !slices.Equal(got, []string{"0000-0002-10", "0000-0001-02", "0000-0001-03"}) {
		t.Fatalf("next: %v %v", got, err)
	}
	st.consume("0000-0002-10")
	st.consume("not a label")
	if n := st.left(); n != 3 || len(st.sheets) != 1 {
		t.Fatalf("after a use: %d left on %d sheets", n, len(st.sheets))
	}
	if _, err := st.next(4, nil); !errors.Is(err, &protocol.Error{Code: protocol.CodeServiceUnavailable}) {
		t.Fatalf("more labels than loaded: %v", err)
	}
}
