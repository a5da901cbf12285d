package herd

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// One device's history: the query string of GET /v1/devices/{id}/readings,
// read by ParseReadingsQuery and written by ReadingsQuery.Values (which the
// Go client uses, so that the two round-trip), and the cursor of its raw
// pages. See docs/history.md, "One device's readings".

// TextReadingFields are the typed text fields of a reading: returned with
// raw readings, never aggregated.
var TextReadingFields = []string{"status", "firmware"}

// MaxReadingsFields bounds fields= of one request: the twelve typed fields
// and a few extras. Each field is a column or a JSON lookup per row.
const MaxReadingsFields = 24

// MaxExtraKeyLen bounds the KEY of fields=extra.KEY.
const MaxExtraKeyLen = 64

// DefaultReadingsAgg is the agg of a stepped request that names none.
const DefaultReadingsAgg = AggAvg

// ValidDeviceAgg reports whether agg is one a device's steps take.
func ValidDeviceAgg(agg string) bool {
	switch agg {
	case AggAvg, AggMin, AggMax, AggLast, AggCount, AggSum:
		return true
	}
	return false
}

// ExtraKey returns KEY of a field named extra.KEY, and false for a typed
// field.
func ExtraKey(field string) (string, bool) {
	if !strings.HasPrefix(field, ExtraFieldPrefix) {
		return "", false
	}
	return field[len(ExtraFieldPrefix):], true
}

// validExtraKey allows a key the stores can look up safely as a bound JSON
// path: SQLite's path quotes the key ($."KEY") and has no escapes inside
// the quotes, so '"' and '\' are refused, as are control characters.
func validExtraKey(k string) bool {
	if k == "" || len(k) > MaxExtraKeyLen || !utf8.ValidString(k) {
		return false
	}
	for _, r := range k {
		if r == '"' || r == '\\' || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ParseReadingField checks one name of fields=: a typed reading field or
// extra.KEY.
func ParseReadingField(name string) error {
	if IsNumericReadingField(name) || name == "status" || name == "firmware" {
		return nil
	}
	if k, ok := ExtraKey(name); ok {
		if !validExtraKey(k) {
			return Errorf(EINVALID, "fields: extra key %q must be 1 to %d characters without quotes, backslashes or control characters", k, MaxExtraKeyLen)
		}
		return nil
	}
	return Errorf(EINVALID, "fields: unknown field %q (fields are %s, %s, or extra.KEY for a number among the extras)",
		name, strings.Join(NumericReadingFields, ", "), strings.Join(TextReadingFields, ", "))
}

// ParseReadingsQuery reads the query string of GET /v1/devices/{id}/readings
// (the device id comes from the path): from and to (see ParseHistoryRange;
// both are cut to whole milliseconds, the resolution readings are kept at),
// fields (a comma list, see ParseReadingField; duplicates are dropped),
// and either limit and cursor (raw readings) or step and agg (one point per
// step; agg defaults to DefaultReadingsAgg). Unknown parameters, and
// parameters of the other kind of request, are refused.
func ParseReadingsQuery(v url.Values, now time.Time) (ReadingsQuery, error) {
	var q ReadingsQuery
	if err := checkHistoryParams(v, "from", "to", "fields", "limit", "cursor", "step", "agg"); err != nil {
		return q, err
	}
	from, to, err := ParseHistoryRange(v.Get("from"), v.Get("to"), now)
	if err != nil {
		return q, err
	}
	q.From, q.To = truncMilli(from), truncMilli(to)
	if !q.From.Before(q.To) {
		return q, Errorf(EINVALID, "from (%s) must come before to (%s) by at least a millisecond", q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
	}
	if s := v.Get("fields"); s != "" {
		seen := map[string]bool{}
		for name := range strings.SplitSeq(s, ",") {
			if name == "" {
				return q, Errorf(EINVALID, "fields %q has an empty name", s)
			}
			if err := ParseReadingField(name); err != nil {
				return q, err
			}
			if !seen[name] {
				seen[name] = true
				q.Fields = append(q.Fields, name)
			}
		}
		if len(q.Fields) > MaxReadingsFields {
			return q, Errorf(EINVALID, "fields: at most %d fields in one request", MaxReadingsFields)
		}
	}
	step, agg := v.Get("step"), v.Get("agg")
	if step == "" {
		if agg != "" {
			return q, Errorf(EINVALID, "agg %q needs a step (such as step=1h)", agg)
		}
		q.Limit = DefaultReadingsLimit
		if s := v.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > MaxReadingsLimit {
				return q, Errorf(EINVALIDLIMIT, "limit %q must be an integer from 1 to %d", s, MaxReadingsLimit)
			}
			q.Limit = n
		}
		if s := v.Get("cursor"); s != "" {
			// Only the store holds the key that checks a cursor; refusing
			// what cannot be one here keeps it from travelling further.
			if len(s) > maxReadingsCursorLen || strings.Trim(s, cursorAlphabet) != "" {
				return q, Errorf(EINVALIDCURSOR, "cursor is malformed")
			}
			q.Cursor = s
		}
		return q, nil
	}
	if v.Has("limit") || v.Has("cursor") {
		return q, Errorf(EINVALID, "limit and cursor page raw readings; a request with step answers every step at once")
	}
	if q.Step, err = ParseStep(step); err != nil {
		return q, err
	}
	q.Agg = DefaultReadingsAgg
	if agg != "" {
		if !ValidDeviceAgg(agg) {
			return q, Errorf(EINVALID, "agg %q is not one of avg, min, max, last, count, sum", agg)
		}
		q.Agg = agg
	}
	for _, f := range q.Fields {
		if f == "status" || f == "firmware" {
			return q, Errorf(EINVALID, "fields: %s is text and cannot be aggregated over steps; ask for it without step", f)
		}
	}
	if err := CheckSteps(q.From, q.To, q.Step); err != nil {
		return q, err
	}
	return q, nil
}

// truncMilli cuts t to a whole millisecond, towards the past.
func truncMilli(t time.Time) time.Time {
	return time.UnixMilli(t.UnixMilli()).In(t.Location())
}

// Values writes q as the query string ParseReadingsQuery reads back to q
// (times as RFC 3339 with their offsets; the device id goes in the path).
// A zero From or To is left out, as is a zero Limit.
func (q ReadingsQuery) Values() url.Values {
	v := url.Values{}
	if !q.From.IsZero() {
		v.Set("from", q.From.Format(time.RFC3339Nano))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.Format(time.RFC3339Nano))
	}
	if len(q.Fields) > 0 {
		v.Set("fields", strings.Join(q.Fields, ","))
	}
	if q.Step != 0 {
		v.Set("step", FormatStep(q.Step))
		if q.Agg != "" {
			v.Set("agg", q.Agg)
		}
		return v
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	return v
}

// The cursor of a page of raw readings: the device and the ts of the
// page's last reading (the next page starts after it; (device_id, ts) is
// unique), signed with the store's key so that a client can hold it but
// never make or edit one.
const (
	readingsCursorKind   = "readings"
	maxReadingsCursorLen = 128
)

// EncodeReadingsCursor returns the cursor of the page that follows the
// reading of deviceID at ts.
func EncodeReadingsCursor(k CursorKey, deviceID, ts int64) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(deviceID, 10) + ":" + strconv.FormatInt(ts, 10)))
	return k.sign(readingsCursorKind, payload)
}

// DecodeReadingsCursor returns the ts a cursor of deviceID's readings
// carries: EINVALIDCURSOR for anything this store did not issue for that
// device.
func DecodeReadingsCursor(k CursorKey, deviceID int64, s string) (int64, error) {
	bad := Errorf(EINVALIDCURSOR, "cursor is malformed")
	if len(s) > maxReadingsCursorLen {
		return 0, bad
	}
	payload, ok := k.verify(readingsCursorKind, s)
	if !ok {
		return 0, Errorf(EINVALIDCURSOR, "cursor was not issued by this store, or was changed: page again from the first page")
	}
	buf, err := base64.RawURLEncoding.Strict().DecodeString(payload)
	if err != nil {
		return 0, bad
	}
	dev, ts, ok := strings.Cut(string(buf), ":")
	if !ok {
		return 0, bad
	}
	id, err1 := strconv.ParseInt(dev, 10, 64)
	t, err2 := strconv.ParseInt(ts, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, bad
	}
	if id != deviceID {
		return 0, Errorf(EINVALIDCURSOR, "cursor belongs to another device's readings")
	}
	return t, nil
}
