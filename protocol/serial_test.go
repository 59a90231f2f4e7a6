package protocol_test

import (
	"testing"

	"github.com/frank-postage/frank/protocol"
)

func TestSerials(t *testing.T) {
	s, err := protocol.ParseSheetSerial("1966-f8cf")
	if err != nil || s != 0x1966F8CF || s.String() != "1966-F8CF" {
		t.Fatalf("sheet = %v, %v", s, err)
	}
	l, err := protocol.ParseLabelSerial("1966-F8CF-03")
	if err != nil || l.Sheet != s || l.Position != 3 || l.String() != "1966-F8CF-03" {
		t.Fatalf("label = %v, %v", l, err)
	}
	for _, bad := range []string{"", "1966-F8C", "1966-F8CF-0", "1966-F8CF-11", "1966-F8CG-01", "1966-F8CF--1", "1966-F8CF-256", "xyz"} {
		if _, err := protocol.ParseLabelSerial(bad); err == nil {
			t.Errorf("ParseLabelSerial(%q) accepted", bad)
		}
	}
}

func TestMillsString(t *testing.T) {
	for m, want := range map[protocol.Mills]string{0: "$0.00", 780: "$0.78", 1005: "$1.01", 1004: "$1.00", 100_000_000: "$100000.00", -330: "-$0.33"} {
		if got := m.String(); got != want {
			t.Errorf("%d: %q, want %q", m, got, want)
		}
	}
	if got := protocol.Mills(780).Exact(); got != "$0.780" {
		t.Errorf("exact = %q", got)
	}
}

func TestDateAndZIP(t *testing.T) {
	if !protocol.Date(20240229).Valid() || protocol.Date(20250229).Valid() || protocol.Date(19991231).Valid() {
		t.Error("leap-year or range rule wrong")
	}
	if n, err := protocol.ZIP("02134").Number(); err != nil || n != 2134 || protocol.ZIPFromNumber(n) != "02134" {
		t.Errorf("zip = %d, %v", n, err)
	}
	for _, bad := range []protocol.ZIP{"", "2134", "021345", "0213a", "00000"} {
		if _, err := bad.Number(); err == nil {
			t.Errorf("zip %q accepted", bad)
		}
	}
}

func TestTopics(t *testing.T) {
	topic := protocol.KioskTopic("kiosk-1", protocol.TopicPurchaseResult)
	if topic != "frank/v1/kiosks/kiosk-1/purchase/result" {
		t.Fatalf("topic = %q", topic)
	}
	id, suffix, err := protocol.ParseKioskTopic(topic)
	if err != nil || id != "kiosk-1" || suffix != "purchase/result" {
		t.Fatalf("parse = %q %q %v", id, suffix, err)
	}
	for _, bad := range []string{"frank/v1/kiosks/", "frank/v1/kiosks/+/purchase", "frank/v2/kiosks/a/purchase", "frank/v1/kiosks/a"} {
		if _, _, err := protocol.ParseKioskTopic(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseMills(t *testing.T) {
	for in, want := range map[string]protocol.Mills{"1000": 1_000_000, "0.78": 780, "$1,000.00": 1_000_000, "100000.00": 100_000_000, "0.001": 1, "2.5": 2500} {
		if got, err := protocol.ParseMills(in); err != nil || got != want {
			t.Errorf("ParseMills(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.0001", "abc", "1.2.3", ".5", "1e3"} {
		if _, err := protocol.ParseMills(bad); err == nil {
			t.Errorf("ParseMills(%q) accepted", bad)
		}
	}
}
