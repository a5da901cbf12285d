package herd

import (
	"strings"
	"unicode/utf8"
)

// Text limits, in bytes, of the text fields herd stores. Every store takes
// what CheckText accepts: PostgreSQL refuses a NUL byte and invalid UTF-8 in
// text (SQLite stores both), so a value either rule lets through would be a
// 500 on one store and stored on the other.
const (
	MaxNameLen     = 200  // tenant, node, user and device names
	MaxKindLen     = 50   // node kinds
	MaxDeviceKey   = 128  // device keys: MQTT client ids and topic levels
	MaxModelLen    = 100  // device models
	MaxFirmwareLen = 100  // device firmware versions
	MaxURLLen      = 2048 // webhook URLs
	// MaxIdempotencyKeyLen bounds an Idempotency-Key, kept with the answer
	// it names and on the command it made.
	MaxIdempotencyKeyLen = 255
)

// CheckText returns EINVALID naming field unless s is text every store can
// hold: valid UTF-8, no NUL byte, at most max bytes. The message never
// quotes s, which may be anything.
func CheckText(field, s string, max int) error {
	switch {
	case !utf8.ValidString(s):
		return Errorf(EINVALID, "%s is not valid UTF-8 text", field)
	case strings.IndexByte(s, 0) >= 0:
		return Errorf(EINVALID, "%s may not contain a NUL byte", field)
	case len(s) > max:
		return Errorf(EINVALID, "%s is longer than %d bytes", field, max)
	}
	return nil
}

// checkRequiredText is CheckText for a field that may not be empty.
func checkRequiredText(field, s string, max int) error {
	if s == "" {
		return Errorf(EINVALID, "%s is required", field)
	}
	return CheckText(field, s, max)
}
