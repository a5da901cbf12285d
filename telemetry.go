package herd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxReadingsPerMessage bounds the readings of one telemetry message, so that
// one PUBLISH becomes one bounded batch of history rows.
const MaxReadingsPerMessage = 1000

// DefaultTelemetryMaxBytes is the payload limit a gateway passes to
// ParseTelemetry unless configured otherwise.
const DefaultTelemetryMaxBytes = 64 << 10

// minReadingTS is 2000-01-01T00:00:00Z in unix milliseconds. A device whose
// clock never got set reports 1970 or thereabouts; refusing it tells the
// operator, where storing it would bury the reading at the far end of the
// history.
const minReadingTS = 946684800000

// maxReadingSkew is how far past the arrival time a reading may be stamped.
// A clock running ahead would otherwise put readings in the future, where they
// sort after every honest reading that follows them.
const maxReadingSkew = time.Hour

// ReadingFields is a set of Reading fields, one bit per field, that says which
// fields the device sent. A mask instead of pointers keeps Reading free of
// pointers to scan and readings free of one allocation per field.
type ReadingFields uint16

// Reading fields.
const (
	ReadingTemperature ReadingFields = 1 << iota
	ReadingHumidity
	ReadingPressure
	ReadingVoltage
	ReadingCurrent
	ReadingPower
	ReadingBattery
	ReadingRSSI
	ReadingUptimeS
	ReadingErrorCount
	ReadingStatus
	ReadingFirmware
)

// Reading is one decoded telemetry sample. It is pointer-free apart from its
// strings and Extra, and carries a presence mask instead of pointers.
type Reading struct {
	TS          int64         // unix milliseconds
	Has         ReadingFields // which of the fields below the device sent
	Temperature float64
	Humidity    float64
	Pressure    float64
	Voltage     float64
	Current     float64
	Power       float64
	Battery     float64
	RSSI        int64
	UptimeS     int64
	ErrorCount  int64
	Status      string
	Firmware    string
	Extra       []byte // JSON object of unknown fields, keys sorted; nil when none
}

// ParseTelemetry decodes the payload a device publishes on
// devices/{key}/telemetry: one JSON object or a JSON array of 1 to
// MaxReadingsPerMessage objects, each one reading. It returns all the readings
// or an error and none, so that a message is stored whole or refused whole.
//
// Each object may carry:
//
//   - ts: an RFC 3339 string or unix milliseconds as a JSON integer, from
//     2000-01-01T00:00:00Z to one hour after arrival; arrival when absent.
//     Times are kept in milliseconds, finer fractions are truncated.
//   - temperature, humidity, pressure, voltage, current, power, battery:
//     JSON numbers within float64's range.
//   - rssi, uptime_s, error_count: JSON integers within int64, written
//     without fraction or exponent. 3.0 and 3e0 are refused like 1.5: the
//     numbers come from firmware, which prints integers as integers, and a
//     fraction there is a sign of a wrong field rather than a style.
//   - status: ok, warn or alarm, the device's own health. "offline" is
//     refused: connectivity is the gateway's to say (Device.Online).
//   - firmware: text of at most 100 bytes.
//
// Any other member is kept in Extra. An empty object is a heartbeat: a
// reading with only its time, which still tells that the device was seen.
//
// Names match exactly and case-sensitively after JSON unescaping, so
// "Temperature" is an extra, not the temperature (encoding/json's struct
// decoding would fold case). A known field given as null is refused: a device
// omits a field it has no value for. A key repeated within a reading object is
// refused, as JSON leaves its meaning open. The payload must be valid UTF-8
// and exactly one JSON value. No string anywhere, extras included, may hold
// \u0000 or an unpaired UTF-16 surrogate escape: a NUL is text no store
// accepts, PostgreSQL's jsonb refuses both escapes so extras could never be
// queried as JSON there, and encoding/json would silently replace the
// surrogate.
//
// Extra holds the unknown members as one compact JSON object, sorted by key
// so that equal extras are equal bytes; their values are kept as sent apart
// from insignificant whitespace, and are not looked into further (nested
// objects keep their key order and any repeated keys).
//
// A payload longer than maxBytes is ETOOLARGE; any other refusal is
// EINVALID with a message that names the part that is wrong, such as
// "readings[3].temperature: not a number".
func ParseTelemetry(payload []byte, arrival time.Time, maxBytes int) ([]Reading, error) {
	if len(payload) > maxBytes {
		return nil, Errorf(ETOOLARGE, "telemetry payload is %d bytes, more than the limit of %d", len(payload), maxBytes)
	}
	if !utf8.Valid(payload) {
		return nil, Errorf(EINVALID, "telemetry payload is not valid UTF-8")
	}
	// Validating first lets the walk below trust the syntax and stay a
	// simple, allocation-free cursor; json.Valid allocates nothing.
	if !json.Valid(payload) {
		// Unmarshal checks the whole input before decoding anything, so
		// this only costs a second scan, and yields the position.
		var se *json.SyntaxError
		if errors.As(json.Unmarshal(payload, new(json.RawMessage)), &se) {
			return nil, Errorf(EINVALID, "telemetry payload is not valid JSON: %s (at byte %d)", se.Error(), se.Offset)
		}
		return nil, Errorf(EINVALID, "telemetry payload is not valid JSON")
	}
	p := telemetryParser{b: payload, arrival: arrival.UnixMilli()}
	p.ws()
	switch p.b[p.i] {
	case '{':
		rs := make([]Reading, 1)
		if err := p.object(&rs[0]); err != nil {
			return nil, err
		}
		return rs, nil
	case '[':
		return p.array()
	}
	return nil, Errorf(EINVALID, "telemetry payload must be a JSON object or an array of objects")
}

// telemetryParser walks a payload that json.Valid accepted: it never meets a
// syntax error, so it checks only meaning.
type telemetryParser struct {
	b       []byte
	i       int
	arrival int64 // unix ms

	inArray bool // the payload is an array: messages name readings[n]
	n       int  // index of the reading being parsed

	extras []extraMember // scratch, reused across the readings
}

type extraMember struct {
	key   []byte // unescaped
	value []byte // as sent
}

func (p *telemetryParser) array() ([]Reading, error) {
	p.inArray = true
	p.i++ // [
	p.ws()
	if p.b[p.i] == ']' {
		return nil, Errorf(EINVALID, "telemetry payload is an empty array")
	}
	var rs []Reading
	for {
		p.ws()
		if p.n == MaxReadingsPerMessage {
			return nil, Errorf(EINVALID, "telemetry payload has more than %d readings", MaxReadingsPerMessage)
		}
		if p.b[p.i] != '{' {
			return nil, p.errorf("", "not a JSON object")
		}
		rs = append(rs, Reading{})
		if err := p.object(&rs[p.n]); err != nil {
			return nil, err
		}
		p.n++
		p.ws()
		if p.b[p.i] == ']' {
			return rs, nil
		}
		p.i++ // ,
	}
}

// readingTS marks ts among the fields seen in an object; it never reaches
// Reading.Has, where the time is always present.
const readingTS ReadingFields = 1 << 15

// readingField returns the bit of a known key, 0 for an unknown one.
func readingField(key []byte) ReadingFields {
	switch string(key) {
	case "ts":
		return readingTS
	case "temperature":
		return ReadingTemperature
	case "humidity":
		return ReadingHumidity
	case "pressure":
		return ReadingPressure
	case "voltage":
		return ReadingVoltage
	case "current":
		return ReadingCurrent
	case "power":
		return ReadingPower
	case "battery":
		return ReadingBattery
	case "rssi":
		return ReadingRSSI
	case "uptime_s":
		return ReadingUptimeS
	case "error_count":
		return ReadingErrorCount
	case "status":
		return ReadingStatus
	case "firmware":
		return ReadingFirmware
	}
	return 0
}

// object parses one reading object starting at its '{'.
func (p *telemetryParser) object(r *Reading) error {
	p.i++ // {
	p.extras = p.extras[:0]
	var seen ReadingFields
	p.ws()
	for p.b[p.i] != '}' {
		key, err := p.str()
		if err != nil {
			return p.errorf("", "key: %s", err)
		}
		p.ws()
		p.i++ // :
		p.ws()
		f := readingField(key)
		switch {
		case f == 0:
			start := p.i
			if err := p.skip(); err != nil {
				return p.errorf(fieldName(key), "%s", err)
			}
			p.extras = append(p.extras, extraMember{key: key, value: p.b[start:p.i]})
		case seen&f != 0:
			return p.errorf("", "duplicate key %q", key)
		case p.b[p.i] == 'n':
			return p.errorf(string(key), "null is not a value; omit the field instead")
		default:
			seen |= f
			switch f {
			case readingTS:
				r.TS, err = p.ts()
			case ReadingTemperature:
				r.Temperature, err = p.float()
			case ReadingHumidity:
				r.Humidity, err = p.float()
			case ReadingPressure:
				r.Pressure, err = p.float()
			case ReadingVoltage:
				r.Voltage, err = p.float()
			case ReadingCurrent:
				r.Current, err = p.float()
			case ReadingPower:
				r.Power, err = p.float()
			case ReadingBattery:
				r.Battery, err = p.float()
			case ReadingRSSI:
				r.RSSI, err = p.int()
			case ReadingUptimeS:
				r.UptimeS, err = p.int()
			case ReadingErrorCount:
				r.ErrorCount, err = p.int()
			case ReadingStatus:
				r.Status, err = p.status()
			case ReadingFirmware:
				r.Firmware, err = p.firmware()
			}
			if err != nil {
				return p.errorf(string(key), "%s", err)
			}
		}
		p.ws()
		if p.b[p.i] == ',' {
			p.i++
			p.ws()
		}
	}
	p.i++ // }
	if seen&readingTS == 0 {
		r.TS = p.arrival
	}
	r.Has = seen &^ readingTS
	return p.extra(r)
}

// extra sorts the reading's unknown members into r.Extra, refusing a repeated
// key, which sorting brings next to its twin.
func (p *telemetryParser) extra(r *Reading) error {
	if len(p.extras) == 0 {
		return nil
	}
	slices.SortFunc(p.extras, func(a, b extraMember) int { return bytes.Compare(a.key, b.key) })
	size := 1
	for i, m := range p.extras {
		if i > 0 && bytes.Equal(m.key, p.extras[i-1].key) {
			return p.errorf("", "duplicate key %q", shorten(m.key))
		}
		size += len(m.key) + len(m.value) + 4
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	for i, m := range p.extras {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, m.key)
		buf = append(buf, ':')
		buf = appendCompact(buf, m.value)
	}
	r.Extra = append(buf, '}')
	return nil
}

// ParseDeviceEvent checks what a device publishes on its events topic: one
// JSON object of at most maxBytes, under the text rules of telemetry (valid
// UTF-8; no \u0000 or unpaired surrogate escape in any string, keys
// included). It returns the object without insignificant whitespace. A
// payload longer than maxBytes is ETOOLARGE, anything else refused EINVALID.
func ParseDeviceEvent(payload []byte, maxBytes int) ([]byte, error) {
	if len(payload) > maxBytes {
		return nil, Errorf(ETOOLARGE, "event payload is %d bytes, more than the limit of %d", len(payload), maxBytes)
	}
	if !utf8.Valid(payload) {
		return nil, Errorf(EINVALID, "event payload is not valid UTF-8")
	}
	if !json.Valid(payload) {
		return nil, Errorf(EINVALID, "event payload is not valid JSON")
	}
	p := telemetryParser{b: payload}
	p.ws()
	if p.b[p.i] != '{' {
		return nil, Errorf(EINVALID, "event payload must be a JSON object")
	}
	start := p.i
	if err := p.skip(); err != nil {
		return nil, Errorf(EINVALID, "event payload: %v", err)
	}
	return appendCompact(make([]byte, 0, p.i-start), p.b[start:p.i]), nil
}

// ts parses a reading's time and checks it against the window.
func (p *telemetryParser) ts() (int64, error) {
	var ms int64
	var tok []byte
	switch c := p.b[p.i]; {
	case c == '"':
		s, err := p.str()
		if err != nil {
			return 0, err
		}
		t, err := time.Parse(time.RFC3339, string(s))
		if err != nil {
			return 0, fmt.Errorf("%q is not an RFC 3339 time", shorten(s))
		}
		ms, tok = t.UnixMilli(), s
	case c == '-' || c >= '0' && c <= '9':
		tok = p.number()
		n, err := parseJSONInt(tok)
		if err != nil {
			return 0, fmt.Errorf("%s is not unix milliseconds: %w", shorten(tok), err)
		}
		ms = n
	default:
		p.skipMismatch()
		return 0, errors.New("not an RFC 3339 time string or unix milliseconds")
	}
	if ms < minReadingTS {
		return 0, fmt.Errorf("%s is before 2000-01-01T00:00:00Z; is the device's clock set?", shorten(tok))
	} else if ms > p.arrival+maxReadingSkew.Milliseconds() {
		return 0, fmt.Errorf("%s is more than %s after the message arrived at %s; is the device's clock ahead?",
			shorten(tok), maxReadingSkew, time.UnixMilli(p.arrival).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	return ms, nil
}

func (p *telemetryParser) float() (float64, error) {
	if c := p.b[p.i]; c != '-' && (c < '0' || c > '9') {
		p.skipMismatch()
		return 0, errNotNumber
	}
	tok := p.number()
	x, err := strconv.ParseFloat(string(tok), 64)
	if err != nil {
		// Valid JSON numbers fail only by overflowing; underflow rounds
		// to zero without an error.
		return 0, fmt.Errorf("%s is out of range", shorten(tok))
	}
	return x, nil
}

func (p *telemetryParser) int() (int64, error) {
	if c := p.b[p.i]; c != '-' && (c < '0' || c > '9') {
		p.skipMismatch()
		return 0, errNotInteger
	}
	return parseJSONInt(p.number())
}

// parseJSONInt parses a JSON number that must be written as an integer.
func parseJSONInt(tok []byte) (int64, error) {
	if bytes.ContainsAny(tok, ".eE") {
		return 0, errNotInteger
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is out of range", shorten(tok))
	}
	return n, nil
}

func (p *telemetryParser) status() (string, error) {
	if p.b[p.i] != '"' {
		p.skipMismatch()
		return "", errNotStatus
	}
	s, err := p.str()
	if err != nil {
		return "", err
	}
	// Returning the constants keeps the common reading free of a string
	// allocation.
	switch string(s) {
	case StatusOK:
		return StatusOK, nil
	case StatusWarn:
		return StatusWarn, nil
	case StatusAlarm:
		return StatusAlarm, nil
	}
	return "", fmt.Errorf("%q is %w", shorten(s), errNotStatus)
}

func (p *telemetryParser) firmware() (string, error) {
	if p.b[p.i] != '"' {
		p.skipMismatch()
		return "", errors.New("not a string")
	}
	s, err := p.str()
	if err != nil {
		return "", err
	}
	if len(s) > MaxFirmwareLen {
		return "", fmt.Errorf("longer than %d bytes", MaxFirmwareLen)
	}
	// str has refused \u0000 and the payload is valid UTF-8, so the
	// text is valid; checking again keeps the rule in one visible place.
	fw := string(s)
	if !ValidText(fw) {
		return "", errors.New("not valid UTF-8 text")
	}
	return fw, nil
}

var (
	errNotNumber  = errors.New("not a number")
	errNotInteger = errors.New("not an integer (write it without fraction or exponent)")
	errNotStatus  = errors.New("not one of ok, warn, alarm")
)

// errorf returns an EINVALID error located at the current reading, and at
// its field when field is not empty.
func (p *telemetryParser) errorf(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case p.inArray && field != "":
		return Errorf(EINVALID, "readings[%d].%s: %s", p.n, field, msg)
	case p.inArray:
		return Errorf(EINVALID, "readings[%d]: %s", p.n, msg)
	case field != "":
		return Errorf(EINVALID, "%s: %s", field, msg)
	}
	return Errorf(EINVALID, "%s", msg)
}

// fieldName returns an unknown key as it should appear in a message: as is
// when it looks like a name, quoted and shortened otherwise.
func fieldName(key []byte) string {
	if len(key) > 0 && len(key) <= 64 {
		plain := true
		for _, c := range key {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				plain = false
				break
			}
		}
		if plain {
			return string(key)
		}
	}
	return strconv.Quote(string(shorten(key)))
}

// shorten cuts device-sent text that goes into a message to 64 bytes,
// at a rune boundary.
func shorten(s []byte) []byte {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return append(s[:n:n], "…"...)
}

// ws skips insignificant whitespace.
func (p *telemetryParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// number returns the number token at p.i and moves past it.
func (p *telemetryParser) number() []byte {
	start := p.i
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return p.b[start:p.i]
		}
		p.i++
	}
	return p.b[start:p.i]
}

// skipMismatch moves past a value of the wrong type. The error is decided
// already; moving keeps the cursor on the value's end all the same, so that
// no path leaves it inside a value.
func (p *telemetryParser) skipMismatch() { _ = p.skip() }

// skip moves past the value at p.i, checking the escapes of its strings.
func (p *telemetryParser) skip() error {
	switch p.b[p.i] {
	case '"':
		_, err := p.scanString()
		return err
	case '{', '[':
	default:
		p.number() // numbers and literals end at the same delimiters
		return nil
	}
	depth := 0
	for {
		switch p.b[p.i] {
		case '"':
			if _, err := p.scanString(); err != nil {
				return err
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
		p.i++
		if depth == 0 {
			return nil
		}
	}
}

// str returns the contents of the string at p.i, unescaped, and moves past
// it. Strings without escapes, the common case, are returned in place.
func (p *telemetryParser) str() ([]byte, error) {
	start := p.i
	escaped, err := p.scanString()
	if err != nil {
		return nil, err
	}
	if !escaped {
		return p.b[start+1 : p.i-1], nil
	}
	var s string
	if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
		return nil, fmt.Errorf("bad string: %w", err) // unreachable: json.Valid passed
	}
	return []byte(s), nil
}

// scanString moves past the string at p.i, reporting whether it holds
// escapes, and refuses \u0000 and unpaired surrogates.
func (p *telemetryParser) scanString() (escaped bool, err error) {
	p.i++ // "
	for {
		switch p.b[p.i] {
		case '"':
			p.i++
			return escaped, nil
		case '\\':
			escaped = true
			if p.b[p.i+1] != 'u' {
				p.i += 2
				continue
			}
			r := hex4(p.b[p.i+2 : p.i+6])
			switch {
			case r == 0:
				return escaped, fmt.Errorf("text may not contain \\u0000")
			case r >= 0xD800 && r < 0xDC00:
				rest := p.b[p.i+6:]
				if len(rest) < 6 || rest[0] != '\\' || rest[1] != 'u' {
					return escaped, fmt.Errorf("unpaired UTF-16 surrogate \\u%04x", r)
				}
				if lo := hex4(rest[2:6]); lo < 0xDC00 || lo > 0xDFFF {
					return escaped, fmt.Errorf("unpaired UTF-16 surrogate \\u%04x", r)
				}
				p.i += 12
			case r >= 0xDC00 && r <= 0xDFFF:
				return escaped, fmt.Errorf("unpaired UTF-16 surrogate \\u%04x", r)
			default:
				p.i += 6
			}
		default:
			p.i++
		}
	}
}

// hex4 decodes four hex digits that json.Valid has already checked.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendJSONString appends s, which is valid UTF-8 without NUL, as a JSON
// string with only the escapes JSON requires, so that the same key always
// encodes to the same bytes.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// appendCompact appends the valid JSON value v without the whitespace
// between its tokens.
func appendCompact(dst, v []byte) []byte {
	inString := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inString {
			dst = append(dst, c)
			if c == '\\' {
				i++
				dst = append(dst, v[i])
			} else if c == '"' {
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inString = true
		}
		dst = append(dst, c)
	}
	return dst
}
