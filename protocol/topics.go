package protocol

import (
	"fmt"
	"strings"
)

// TopicRoot is the prefix of every kiosk topic; the version is part of it so
// that a v2 can run beside v1 during a fleet upgrade.
const TopicRoot = "frank/v1/kiosks/"

// Topic suffixes under TopicRoot + kiosk id + "/".
const (
	TopicPurchase       = "purchase"        // kiosk→hub, QoS 1, PurchaseRequest
	TopicPurchaseResult = "purchase/result" // hub→kiosk, QoS 1, PurchaseResult
	TopicPrint          = "print"           // kiosk→hub, QoS 1, PrintReport; resent until confirmed
	TopicPrintResult    = "print/result"    // hub→kiosk, QoS 1, PrintResult
	TopicTelemetry      = "telemetry"       // kiosk→hub, QoS 0, Telemetry
	TopicStatus         = "status"          // kiosk→hub, retained, "online"/"offline" (last will)
	TopicConfig         = "config"          // hub→kiosk, retained, KioskConfig
	TopicStock          = "stock"           // kiosk→hub, QoS 1, StockLoad
	TopicStockResult    = "stock/result"    // hub→kiosk, QoS 1, StockResult
	TopicRefund         = "refund"          // kiosk→hub, QoS 1, RefundRequest
	TopicRefundResult   = "refund/result"   // hub→kiosk, QoS 1, RefundResult
	TopicCommand        = "command"         // hub→kiosk, QoS 1, Command; sent again until answered
	TopicCommandResult  = "command/result"  // kiosk→hub, QoS 1, CommandResult
	TopicStaff          = "staff"           // kiosk→hub, QoS 1, StaffLogin
	TopicStaffResult    = "staff/result"    // hub→kiosk, QoS 1, StaffLoginResult
)

// KioskPublishes and KioskSubscribes are the only topics a kiosk may use,
// under its own TopicRoot + id + "/". The broker enforces them.
var (
	KioskPublishes  = []string{TopicPurchase, TopicPrint, TopicTelemetry, TopicStatus, TopicStock, TopicRefund, TopicCommandResult, TopicStaff}
	KioskSubscribes = []string{TopicPurchaseResult, TopicConfig, TopicStockResult, TopicRefundResult, TopicPrintResult, TopicCommand, TopicStaffResult}
)

// Status payloads on TopicStatus.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// KioskTopic returns the full topic for a kiosk and suffix.
func KioskTopic(kioskID, suffix string) string {
	return TopicRoot + kioskID + "/" + suffix
}

// HubSubscription is the filter a hub subscribes with to receive suffix from
// every kiosk. Several hubs share the load through a shared subscription.
func HubSubscription(suffix string) string {
	return "$share/frank-hub/" + TopicRoot + "+/" + suffix
}

// ParseKioskTopic splits a kiosk topic into the kiosk id and suffix.
func ParseKioskTopic(topic string) (kioskID, suffix string, err error) {
	rest, ok := strings.CutPrefix(topic, TopicRoot)
	if !ok {
		return "", "", fmt.Errorf("protocol: topic %q is not under %s", topic, TopicRoot)
	}
	kioskID, suffix, ok = strings.Cut(rest, "/")
	if !ok || !ValidKioskID(kioskID) || suffix == "" {
		return "", "", fmt.Errorf("protocol: topic %q: want %s{kiosk_id}/{suffix}", topic, TopicRoot)
	}
	return kioskID, suffix, nil
}

// ValidKioskID: 1 to 32 of [A-Za-z0-9_-], starting with a letter or digit,
// and not starting with HubPrefix. This keeps ids safe inside topics, file
// names and URLs, and apart from the hubs' broker users and client ids.
func ValidKioskID(id string) bool { return validToken(id, 32) && !strings.HasPrefix(id, HubPrefix) }

// HubPrefix begins every hub's broker user and client id, and no kiosk id:
// a broker that makes a kiosk's client id its user name (mosquitto's
// use_username_as_clientid) then cannot let a kiosk take a hub's session.
const HubPrefix = "frank-hub"

// ValidRequestID: 1 to 64 of [A-Za-z0-9_-], starting with a letter or digit.
func ValidRequestID(id string) bool { return validToken(id, 64) }

func validToken(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '-' && c != '_') {
			return false
		}
	}
	return true
}
