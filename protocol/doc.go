// Package protocol is the contract between Frank kiosks, the hub and anyone
// who verifies a stamp: the 113-byte indicium v1, the MQTT topics and JSON
// messages, the patent's XML, rate tables and the error codes clients see.
// It uses only the standard library so that a kiosk vendor or a postal
// authority can lift it whole. README.md documents it for implementers.
package protocol
