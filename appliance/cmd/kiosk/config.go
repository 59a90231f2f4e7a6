package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/frank-postage/frank/appliance/serialport"
)

// fileConfig is the kiosk's config file, JSON, normally
// /etc/frank/kiosk.json. Flags given on the command line win over it.
// Every field has a default; id, broker, password and origin_zip come from
// the enrollment file when neither the flags nor this file give them:
//
//	{
//	  "id": "store12-k1",                 // kiosk id, also its broker user name
//	  "origin_zip": "94544",              // the store's ZIP, signed into every stamp
//	                                      //   (default: the one enrollment brought)
//	  "broker": "tcp://127.0.0.1:1883",   // the hub's MQTT broker
//	  "username": "",                     // default: the id
//	  "password_file": "",                // file holding the broker password
//	                                      //   (else $FRANK_KIOSK_PASSWORD)
//	  "enrollment": "/var/lib/frank/kiosk/enrollment.json",  // what `kiosk enroll`
//	                                      //   wrote: id, broker and password for
//	                                      //   whatever this file and the flags leave out
//	  "listen": "127.0.0.1:8081",         // touchscreen and local API
//	  "printer": {"path": "/dev/frank-printer", "baud": 115200,
//	              "data_bits": 8, "parity": "none", "stop_bits": "1"},
//	  "journal": "/var/lib/frank/kiosk-journal.db",  // durable sale steps
//	  "devices": {                        // each optional; udev-style stable names
//	    "scale": {"path": "/dev/frank-scale", "baud": 9600}, "scale_protocol": "nci",  // or "sics";
//	    // or "scale_protocol": "hx711" for a load cell on GPIO, with
//	    // "hx711": {"clock": "GPIO5", "data": "GPIO6", "capacity_g": 20000,
//	    //           "calibration": "/var/lib/frank/scale-calibration.json"},
//	    "scanner": {"path": "/dev/frank-scanner", "baud": 9600},
//	    "head_scanner": {"path": "/dev/frank-head-scanner", "baud": 9600},  // reads the label under the print head
//	    "terminal": {"path": "/dev/frank-terminal", "baud": 115200},
//	    "gpio": "host"                    // or "sim:/run/frank/gpio.sock"
//	  },
//	  "staff_pin_bcrypt": "$2y$10$...",    // bcrypt hash of the staff PIN
//	  "staff_badges": ["STAFF-0001"],
//	  "remedy_window_s": 300,             // then an unclaimed failed label is refunded
//	  "log": "json"                       // or "text"
//	}
type fileConfig struct {
	ID           string            `json:"id"`
	OriginZIP    string            `json:"origin_zip"`
	Broker       string            `json:"broker"`
	Username     string            `json:"username"`
	PasswordFile string            `json:"password_file"`
	Enrollment   string            `json:"enrollment"`
	Listen       string            `json:"listen"`
	Printer      serialport.Config `json:"printer"`
	Log          string            `json:"log"`
	Journal      string            `json:"journal"`
	Devices      devicesConfig     `json:"devices"`
	// StaffPINBcrypt is the staff PIN's bcrypt hash (htpasswd -bnBC 10 "" PIN);
	// StaffBadges are the staff badge codes.
	StaffPINBcrypt string   `json:"staff_pin_bcrypt"`
	StaffBadges    []string `json:"staff_badges"`
	// RemedyWindowS is --remedy-window in seconds.
	RemedyWindowS int `json:"remedy_window_s"`
}

// readConfig reads a config file strictly: an unknown field is a typo
// that would otherwise silently take a default.
func readConfig(path string) (*fileConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] != '{' {
		return nil, fmt.Errorf("config %s: want a JSON object", path) // null would read as no settings
	}
	var c fileConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	// A second object or stray text after the first is a mistake in the
	// file, as an unknown field is, not settings to ignore.
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("config %s: trailing data after the object", path)
	}
	// Badge codes are plain text, and a PIN's bcrypt hash falls to a
	// search of the 10^4 or so PINs: any local user could log in as staff.
	if (len(c.StaffBadges) > 0 || c.StaffPINBcrypt != "") && fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("config %s: mode %v lets every user read staff_badges and staff_pin_bcrypt; chmod 640 it (chgrp frank-kiosk)", path, fi.Mode().Perm())
	}
	return &c, nil
}
