package herd_test

import (
	"math"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

var validOps = map[string]bool{"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true, "in": true, "prefix": true}

// checkFilter fails unless f stays within the allow-lists: a known field, a
// known operator that applies to it, and values of the field's type.
func checkFilter(tb testing.TB, f herd.DeviceFilter) {
	tb.Helper()
	field, ok := herd.DeviceFields[f.Field]
	if !ok {
		tb.Fatalf("accepted unknown field %q", f.Field)
	}
	if !validOps[f.Op] {
		tb.Fatalf("accepted unknown operator %q", f.Op)
	}
	if len(f.Values) == 0 || (f.Op != herd.OpIn && len(f.Values) != 1) || len(f.Values) > herd.MaxInValues {
		tb.Fatalf("op %s with %d values", f.Op, len(f.Values))
	}
	switch f.Op {
	case herd.OpLt, herd.OpLe, herd.OpGt, herd.OpGe:
		if field.Type == herd.FieldBool || field.Type == herd.FieldEnum {
			tb.Fatalf("order operator %s on %s", f.Op, f.Field)
		}
	case herd.OpPrefix:
		if field.Type != herd.FieldString || f.Values[0] == "" {
			tb.Fatalf("prefix %q on %s", f.Values[0], f.Field)
		}
	}
	for _, v := range f.Values {
		switch field.Type {
		case herd.FieldString:
			s, ok := v.(string)
			if !ok || !utf8.ValidString(s) || strings.ContainsRune(s, 0) || len(s) > 1024 {
				tb.Fatalf("%s: bad text value %#v", f.Field, v)
			}
		case herd.FieldEnum:
			// Empty is the status of a device that has reported none.
			if s, ok := v.(string); !ok || (s != "" && !herd.ValidStatus(s)) {
				tb.Fatalf("%s: bad status %#v", f.Field, v)
			}
		case herd.FieldBool:
			if _, ok := v.(bool); !ok {
				tb.Fatalf("%s: bad bool %#v", f.Field, v)
			}
		case herd.FieldFloat:
			x, ok := v.(float64)
			if !ok || x != x || x > 1e300 || x < -1e300 {
				tb.Fatalf("%s: bad float %#v", f.Field, v)
			}
		case herd.FieldInt, herd.FieldTime:
			if _, ok := v.(int64); !ok {
				tb.Fatalf("%s: bad int %#v", f.Field, v)
			}
		}
	}
}

// formatFilter writes a parsed filter back as FIELD:OP:VALUE, in canonical
// form (times as unix ms, floats as shortest decimal).
func formatFilter(f herd.DeviceFilter) string {
	vals := make([]string, len(f.Values))
	for i, v := range f.Values {
		switch x := v.(type) {
		case string:
			vals[i] = x
		case int64:
			vals[i] = strconv.FormatInt(x, 10)
		case float64:
			vals[i] = strconv.FormatFloat(x, 'g', -1, 64)
		case bool:
			vals[i] = strconv.FormatBool(x)
		}
	}
	return f.Field + ":" + f.Op + ":" + strings.Join(vals, "|")
}

func FuzzParseDeviceFilter(f *testing.F) {
	for _, s := range []string{
		"name:eq:pump", "name:in:a|b|c", "name:prefix:pü", "key:prefix:\U0010FFFF",
		"temperature:gt:-2.5", "temperature:le:1e300", "battery:in:1|2|0x1p-2", "rssi:lt:-70",
		"online:eq:true", "online:in:t|F", "status:in:ok|alarm", "last_seen:ge:2024-03-01T12:30:45.123+02:00",
		"created_at:lt:1709296245123", "firmware:eq:v1:2:3", "path:prefix:/1/2/",
		"name:like:x", "colour:eq:red", "online:lt:true", "error_count:prefix:1", "a:b", "::", "name:in:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := herd.ParseDeviceFilter(s)
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALIDFILTER {
				t.Fatalf("%q: error code %s", s, code)
			}
			return
		}
		checkFilter(t, got)
		// What was accepted reads back the same from its canonical form.
		again, err := herd.ParseDeviceFilter(formatFilter(got))
		if err != nil {
			t.Fatalf("%q accepted, canonical %q refused: %v", s, formatFilter(got), err)
		}
		if !reflect.DeepEqual(again, got) {
			t.Fatalf("%q: got %#v, canonical form %q reads %#v", s, got, formatFilter(got), again)
		}
	})
}

func FuzzParseDeviceQuery(f *testing.F) {
	cursorQuery := herd.DeviceQuery{
		Filters: []herd.DeviceFilter{{Field: "status", Op: "eq", Values: []any{"alarm"}}},
		Sort:    herd.DeviceSort{Field: "temperature", Desc: true},
	}
	cursor := cursorQuery.EncodeCursor(testKey, &herd.Device{ID: 12, Temperature: new(31.5)}, 40, false)
	for _, s := range []string{
		"", "limit=50", "sort=-last_seen&limit=500", "filter=status:eq:alarm&sort=-temperature",
		"filter=temperature:gt:30&filter=battery:lt:20&sort=name",
		"filter=status:eq:alarm&sort=-temperature&cursor=" + cursor,
		"tenant_id=3&filter=name:in:a%7Cb", "limit=0", "limit=501", "offset=5", "sort=colour",
		"cursor=abc", "filter=online:lt:true", "tenant_id=-1", "filter=name:eq:%00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := herd.ParseDeviceQuery(v)
		if err != nil {
			switch code := herd.ErrorCode(err); code {
			case herd.EINVALID, herd.EINVALIDFILTER, herd.EINVALIDSORT, herd.EINVALIDLIMIT, herd.EINVALIDCURSOR:
			default:
				t.Fatalf("%q: error code %s", raw, code)
			}
			return
		}
		for key := range v {
			switch key {
			case "filter", "sort", "limit", "cursor", "tenant_id":
			default:
				t.Fatalf("%q: accepted parameter %q", raw, key)
			}
		}
		if q.Limit < 1 || q.Limit > herd.MaxLimit {
			t.Fatalf("%q: limit %d", raw, q.Limit)
		}
		if q.TenantID < 0 {
			t.Fatalf("%q: tenant %d", raw, q.TenantID)
		}
		if _, ok := herd.DeviceFields[q.Sort.Field]; !ok {
			t.Fatalf("%q: sort field %q", raw, q.Sort.Field)
		}
		if len(q.Filters) > herd.MaxFilters {
			t.Fatalf("%q: %d filters", raw, len(q.Filters))
		}
		nvalues := 0
		for _, f := range q.Filters {
			checkFilter(t, f)
			nvalues += len(f.Values)
		}
		// Whatever the parser accepts fits the store's parameter guard with
		// room for a scope of many paths.
		if nvalues > herd.MaxFilterValues || 2*nvalues+8 > herd.MaxQueryParams {
			t.Fatalf("%q: %d filter values", raw, nvalues)
		}
		// The canonical form of the query reads back the same, cursor
		// included: a cursor accepted once is accepted again.
		canon := url.Values{}
		for _, f := range q.Filters {
			canon.Add("filter", formatFilter(f))
		}
		canon.Set("sort", q.Sort.String())
		canon.Set("limit", strconv.Itoa(q.Limit))
		if q.TenantID != 0 {
			canon.Set("tenant_id", strconv.FormatInt(q.TenantID, 10))
		}
		if c := v.Get("cursor"); c != "" {
			canon.Set("cursor", c)
		}
		again, err := herd.ParseDeviceQuery(canon)
		if err != nil {
			t.Fatalf("%q accepted, canonical %q refused: %v", raw, canon.Encode(), err)
		}
		if !reflect.DeepEqual(again, q) {
			t.Fatalf("%q: got %#v, canonical form reads %#v", raw, q, again)
		}
	})
}

func FuzzDecodeCursor(f *testing.F) {
	q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "temperature"}}
	f.Add("temperature", "", strings.Split(q.EncodeCursor(testKey, &herd.Device{ID: 3, Temperature: new(-4.25)}, 10, false), ".")[0])
	f.Add("-temperature", "online:eq:true", "")
	f.Add("-last_seen", "status:in:ok|warn", "eyJ2IjoxLCJoIjoiMCIsIm4iOnRydWUsImkiOiI1In0")
	f.Add("name", "name:prefix:p", "eyJ2IjoxfQ")
	f.Add("status", "", "!!")
	f.Fuzz(func(t *testing.T, sort, filter, cursor string) {
		s, err := herd.ParseDeviceSort(sort)
		if err != nil {
			return
		}
		q := herd.DeviceQuery{Sort: s, Limit: 10}
		if filter != "" {
			flt, err := herd.ParseDeviceFilter(filter)
			if err != nil {
				return
			}
			q.Filters = []herd.DeviceFilter{flt}
		}
		// Whatever a client makes up is refused: it cannot sign it.
		if _, err := q.DecodeCursor(testKey, cursor); herd.ErrorCode(err) != herd.EINVALIDCURSOR {
			t.Fatalf("%q: an unsigned cursor gave %v", cursor, err)
		}
		// Signed, the fuzzed text reaches the checks that follow the
		// signature's, which must hold for the store's own cursors too.
		c, err := q.DecodeCursor(testKey, herd.SignDeviceCursor(testKey, cursor))
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALIDCURSOR {
				t.Fatalf("%q: error code %s", cursor, code)
			}
			return
		}
		field := herd.DeviceFields[s.Field]
		if c.Null {
			if !field.Nullable || c.Value != nil {
				t.Fatalf("%q: NULL position %#v on %s", cursor, c, s.Field)
			}
		} else {
			ok := false
			switch field.Type {
			case herd.FieldString:
				x, isStr := c.Value.(string)
				ok = isStr && utf8.ValidString(x) && !strings.ContainsRune(x, 0)
			case herd.FieldEnum:
				x, isStr := c.Value.(string)
				ok = isStr && herd.ValidStatus(x)
			case herd.FieldBool:
				_, ok = c.Value.(bool)
			case herd.FieldFloat:
				x, isFloat := c.Value.(float64)
				ok = isFloat && x == x
			case herd.FieldInt, herd.FieldTime:
				_, ok = c.Value.(int64)
			}
			if !ok {
				t.Fatalf("%q: value %#v for %s", cursor, c.Value, s.Field)
			}
		}
		if c.Count < 0 || c.Count > herd.CountCap {
			t.Fatalf("%q: count %d", cursor, c.Count)
		}
		// A device at the decoded position encodes a cursor that decodes to
		// the same position.
		d := &herd.Device{ID: c.ID}
		if s.Field != "id" {
			setField(d, s.Field, c.Value)
		}
		again, err := q.DecodeCursor(testKey, q.EncodeCursor(testKey, d, c.Count, c.CountCapped))
		if err != nil {
			t.Fatalf("%q: re-encoded position refused: %v", cursor, err)
		}
		if !reflect.DeepEqual(again, c) && !(s.Field == "id" && again.ID == c.ID) {
			t.Fatalf("%q: got %#v, re-encoded reads %#v", cursor, c, again)
		}
	})
}

func FuzzCursorRoundTrip(f *testing.F) {
	f.Add("temperature", false, int64(7), "pump", 21.5, int64(-70), true)
	f.Add("-name", true, int64(1), "\U0010FFFF<&>", math.Copysign(0, -1), int64(0), false)
	f.Add("last_seen", false, int64(9), "", 1e308, int64(-62135596800000), true)
	f.Fuzz(func(t *testing.T, sort string, null bool, id int64, text string, x float64, n int64, b bool) {
		s, err := herd.ParseDeviceSort(sort)
		if err != nil || x != x || !utf8.ValidString(text) || strings.ContainsRune(text, 0) {
			return
		}
		field := herd.DeviceFields[s.Field]
		var v any
		switch field.Type {
		case herd.FieldString:
			v = text
		case herd.FieldEnum:
			v = []string{"ok", "warn", "alarm", ""}[uint64(n)%4]
		case herd.FieldBool:
			v = b
		case herd.FieldFloat:
			v = x
		default:
			v = n
		}
		if null && field.Nullable {
			v = nil
		}
		d := &herd.Device{ID: id}
		if s.Field != "id" {
			setField(d, s.Field, v)
		}
		// Every value a device can hold gives a cursor that decodes to its
		// position.
		q := herd.DeviceQuery{Sort: s}
		c, err := q.DecodeCursor(testKey, q.EncodeCursor(testKey, d, 5, false))
		if err != nil {
			t.Fatalf("sort %s value %#v: %v", s, v, err)
		}
		want := &herd.DeviceCursor{Null: v == nil, Value: v, ID: id, Count: 5}
		if s.Field == "id" {
			want.Value = id
		}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("got %#v, want %#v", c, want)
		}
	})
}
