package scanner_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/scanner"
)

// Each label is read fresh: a read is used once, and no read in time is
// ErrNoLabelRead.
func TestHeadReadsEachLabelOnce(t *testing.T) {
	h := scanner.NewHead()
	h.Wait = 50 * time.Millisecond
	scans := make(chan scanner.Scan)
	go h.Run(scans)
	defer close(scans)
	scans <- scanner.Scan{Code: "1966-f8cf-01"}
	if got, err := h.UnderHead(context.Background()); err != nil || got != "1966-F8CF-01" {
		t.Fatalf("first: %q %v", got, err)
	}
	if _, err := h.UnderHead(context.Background()); !errors.Is(err, scanner.ErrNoLabelRead) {
		t.Fatalf("no new label: %v", err)
	}
	go func() { scans <- scanner.Scan{Code: "1966-F8CF-02"} }()
	h.Wait = 5 * time.Second
	if got, err := h.UnderHead(context.Background()); err != nil || got != "1966-F8CF-02" {
		t.Fatalf("waited for: %q %v", got, err)
	}
}

// A head scanner whose port failed (its scans ended) says so at once,
// through Done and from UnderHead, instead of each stamp waiting out Wait
// to fail label_unread.
func TestHeadGoneWhenScansEnd(t *testing.T) {
	h := scanner.NewHead()
	h.Wait = time.Hour // a wait the test would never see end
	scans := make(chan scanner.Scan)
	go h.Run(scans)
	close(scans)
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the scans ended")
	}
	if _, err := h.UnderHead(context.Background()); !errors.Is(err, scanner.ErrHeadGone) {
		t.Fatalf("UnderHead = %v; want ErrHeadGone", err)
	}
}
