package herd_test

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

// mustFail asserts that err is an application error with the given code and
// that its message mentions every one of the given parts.
func mustFail(tb testing.TB, err error, code string, parts ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %s", code)
	}
	if got := herd.ErrorCode(err); got != code {
		tb.Fatalf("got code %s (%v), want %s", got, err, code)
	}
	msg := herd.ErrorMessage(err)
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			tb.Fatalf("message %q does not name %q", msg, p)
		}
	}
}

func TestDeviceFields(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		if len(herd.DeviceFields) != len(herd.DeviceFieldNames) {
			t.Fatalf("DeviceFields has %d entries, DeviceFieldNames %d", len(herd.DeviceFields), len(herd.DeviceFieldNames))
		}
		d := &herd.Device{}
		for _, name := range herd.DeviceFieldNames {
			f, ok := herd.DeviceFields[name]
			if !ok || f.Name != name {
				t.Fatalf("field %q: got %+v, %v", name, f, ok)
			}
			// Every allow-listed field has a value on a device; FieldValue
			// panics on anything else.
			_, null := d.FieldValue(name)
			if null && !f.Nullable {
				t.Fatalf("field %q is NULL on a zero device but not nullable", name)
			}
		}
	})
}

func TestParseDeviceFilter(t *testing.T) {
	rfc := "2024-03-01T12:30:45.123Z"
	rfcMS := time.Date(2024, 3, 1, 12, 30, 45, 123e6, time.UTC).UnixMilli()
	offMS := time.Date(2024, 3, 1, 10, 30, 45, 0, time.UTC).UnixMilli()
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want herd.DeviceFilter
		}{
			// Every operator on a text field.
			{"name:eq:pump", herd.DeviceFilter{Field: "name", Op: "eq", Values: []any{"pump"}}},
			{"name:ne:pump", herd.DeviceFilter{Field: "name", Op: "ne", Values: []any{"pump"}}},
			{"name:lt:m", herd.DeviceFilter{Field: "name", Op: "lt", Values: []any{"m"}}},
			{"name:le:m", herd.DeviceFilter{Field: "name", Op: "le", Values: []any{"m"}}},
			{"name:gt:m", herd.DeviceFilter{Field: "name", Op: "gt", Values: []any{"m"}}},
			{"name:ge:m", herd.DeviceFilter{Field: "name", Op: "ge", Values: []any{"m"}}},
			{"name:in:a|b|c", herd.DeviceFilter{Field: "name", Op: "in", Values: []any{"a", "b", "c"}}},
			{"name:prefix:pu", herd.DeviceFilter{Field: "name", Op: "prefix", Values: []any{"pu"}}},
			{"key:prefix:ä", herd.DeviceFilter{Field: "key", Op: "prefix", Values: []any{"ä"}}},
			{"path:prefix:/1/2/", herd.DeviceFilter{Field: "path", Op: "prefix", Values: []any{"/1/2/"}}},
			{"model:eq:", herd.DeviceFilter{Field: "model", Op: "eq", Values: []any{""}}},
			// The value is everything after the second colon.
			{"firmware:eq:v1:2:3", herd.DeviceFilter{Field: "firmware", Op: "eq", Values: []any{"v1:2:3"}}},
			{"name:eq:a|b", herd.DeviceFilter{Field: "name", Op: "eq", Values: []any{"a|b"}}},
			// contains keeps its text folded, wildcards and colons as they are.
			{"name:contains:Boiler", herd.DeviceFilter{Field: "name", Op: "contains", Values: []any{"boiler"}}},
			{"key:contains:A:b", herd.DeviceFilter{Field: "key", Op: "contains", Values: []any{"a:b"}}},
			{"model:contains:%_x", herd.DeviceFilter{Field: "model", Op: "contains", Values: []any{"%_x"}}},
			{"firmware:contains:STRAßE", herd.DeviceFilter{Field: "firmware", Op: "contains", Values: []any{"strasse"}}},
			{"label.ring:contains:Can ary", herd.DeviceFilter{Field: "label.ring", Op: "contains", Values: []any{"can ary"}}},
			{"name:contains:ß1", herd.DeviceFilter{Field: "name", Op: "contains", Values: []any{"ss1"}}},
			// Integers.
			{"id:eq:42", herd.DeviceFilter{Field: "id", Op: "eq", Values: []any{int64(42)}}},
			{"node_id:in:1|2", herd.DeviceFilter{Field: "node_id", Op: "in", Values: []any{int64(1), int64(2)}}},
			{"rssi:lt:-70", herd.DeviceFilter{Field: "rssi", Op: "lt", Values: []any{int64(-70)}}},
			{"uptime_s:ge:3600", herd.DeviceFilter{Field: "uptime_s", Op: "ge", Values: []any{int64(3600)}}},
			{"error_count:ne:0", herd.DeviceFilter{Field: "error_count", Op: "ne", Values: []any{int64(0)}}},
			{"config_version:le:9223372036854775807", herd.DeviceFilter{Field: "config_version", Op: "le", Values: []any{int64(9223372036854775807)}}},
			// Floats, integers accepted as floats.
			{"temperature:gt:30", herd.DeviceFilter{Field: "temperature", Op: "gt", Values: []any{30.0}}},
			{"temperature:gt:-2.5", herd.DeviceFilter{Field: "temperature", Op: "gt", Values: []any{-2.5}}},
			{"battery:lt:1e2", herd.DeviceFilter{Field: "battery", Op: "lt", Values: []any{100.0}}},
			{"humidity:in:1|2.5", herd.DeviceFilter{Field: "humidity", Op: "in", Values: []any{1.0, 2.5}}},
			{"pressure:eq:1013.25", herd.DeviceFilter{Field: "pressure", Op: "eq", Values: []any{1013.25}}},
			{"voltage:le:230", herd.DeviceFilter{Field: "voltage", Op: "le", Values: []any{230.0}}},
			{"current:ge:0", herd.DeviceFilter{Field: "current", Op: "ge", Values: []any{0.0}}},
			{"power:ne:0", herd.DeviceFilter{Field: "power", Op: "ne", Values: []any{0.0}}},
			// Booleans.
			{"online:eq:true", herd.DeviceFilter{Field: "online", Op: "eq", Values: []any{true}}},
			{"online:ne:false", herd.DeviceFilter{Field: "online", Op: "ne", Values: []any{false}}},
			{"online:in:true|false", herd.DeviceFilter{Field: "online", Op: "in", Values: []any{true, false}}},
			// The status enum.
			{"status:eq:alarm", herd.DeviceFilter{Field: "status", Op: "eq", Values: []any{"alarm"}}},
			{"status:in:ok|warn", herd.DeviceFilter{Field: "status", Op: "in", Values: []any{"ok", "warn"}}},
			{"status:ne:warn", herd.DeviceFilter{Field: "status", Op: "ne", Values: []any{"warn"}}},
			{"status:eq:", herd.DeviceFilter{Field: "status", Op: "eq", Values: []any{""}}},
			// Timestamps: RFC 3339 (with any offset) or unix milliseconds.
			{"last_seen:gt:" + rfc, herd.DeviceFilter{Field: "last_seen", Op: "gt", Values: []any{rfcMS}}},
			{"last_seen:lt:2024-03-01T12:30:45+02:00", herd.DeviceFilter{Field: "last_seen", Op: "lt", Values: []any{offMS}}},
			{"last_seen:ge:1709296245123", herd.DeviceFilter{Field: "last_seen", Op: "ge", Values: []any{rfcMS}}},
			{"created_at:in:" + rfc + "|0", herd.DeviceFilter{Field: "created_at", Op: "in", Values: []any{rfcMS, int64(0)}}},
			{"created_at:le:-1", herd.DeviceFilter{Field: "created_at", Op: "le", Values: []any{int64(-1)}}},
		} {
			got, err := herd.ParseDeviceFilter(tt.in)
			if err != nil {
				t.Fatalf("%q: %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%q: got %#v, want %#v", tt.in, got, tt.want)
			}
		}
	})
	t.Run("OKInListAtLimit", func(t *testing.T) {
		vals := make([]string, herd.MaxInValues)
		for i := range vals {
			vals[i] = strconv.Itoa(i)
		}
		f, err := herd.ParseDeviceFilter("error_count:in:" + strings.Join(vals, "|"))
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Values) != herd.MaxInValues {
			t.Fatalf("got %d values, want %d", len(f.Values), herd.MaxInValues)
		}
	})

	errCases := []struct {
		name  string
		in    string
		parts []string // the message must name these
	}{
		{"ErrShape", "name:eq", []string{`"name:eq"`, "FIELD:OP:VALUE"}},
		{"ErrEmpty", "", []string{"FIELD:OP:VALUE"}},
		{"ErrUnknownField", "colour:eq:red", []string{`"colour"`}},
		{"ErrFieldCase", "Name:eq:x", []string{`"Name"`}},
		{"ErrTenantField", "tenant_id:eq:1", []string{`"tenant_id"`}},
		{"ErrInjectionField", "name;drop table devices:eq:1", []string{"unknown field"}},
		{"ErrUnknownOp", "name:like:x", []string{`"like"`}},
		{"ErrOpCase", "name:EQ:x", []string{`"EQ"`}},
		{"ErrOpSQL", "name:=:x", []string{`"="`}},
		{"ErrOrderOnBool", "online:lt:true", []string{`"lt"`, "online"}},
		{"ErrOrderOnEnum", "status:gt:ok", []string{`"gt"`, "status"}},
		{"ErrPrefixOnInt", "error_count:prefix:1", []string{"prefix"}},
		{"ErrPrefixOnFloat", "temperature:prefix:1", []string{"prefix"}},
		{"ErrPrefixOnTime", "last_seen:prefix:2024", []string{"prefix"}},
		{"ErrPrefixOnBool", "online:prefix:t", []string{"prefix"}},
		{"ErrPrefixOnEnum", "status:prefix:o", []string{"prefix"}},
		{"ErrPrefixEmpty", "name:prefix:", []string{"empty prefix"}},
		{"ErrIntNotInt", "error_count:eq:1.5", []string{`"1.5"`, "integer"}},
		{"ErrIntText", "id:eq:abc", []string{`"abc"`}},
		{"ErrIntOverflow", "id:eq:9223372036854775808", []string{"9223372036854775808"}},
		{"ErrIntEmpty", "rssi:eq:", []string{"integer"}},
		{"ErrFloatText", "temperature:gt:hot", []string{`"hot"`, "number"}},
		{"ErrFloatNaN", "temperature:gt:NaN", []string{"NaN"}},
		{"ErrFloatInf", "temperature:lt:Inf", []string{"Inf"}},
		{"ErrFloatHuge", "temperature:lt:1e301", []string{"1e301"}},
		{"ErrBool", "online:eq:yes", []string{`"yes"`}},
		{"ErrEnum", "status:eq:broken", []string{`"broken"`}},
		{"ErrEnumInList", "status:in:ok|broken", []string{`"broken"`}},
		{"ErrEnumOffline", "status:eq:offline", []string{`"offline"`, "online"}},
		{"ErrTime", "last_seen:gt:yesterday", []string{`"yesterday"`, "RFC 3339"}},
		{"ErrTimeNoZone", "last_seen:gt:2024-03-01T12:30:45", []string{"2024-03-01T12:30:45"}},
		{"ErrTimeSubMillisecond", "last_seen:ge:2024-03-01T12:30:45.0005Z", []string{"2024-03-01T12:30:45.0005Z"}},
		{"ErrTextInvalidUTF8", "name:eq:\xff", []string{"UTF-8"}},
		{"ErrTextNUL", "name:eq:a\x00b", []string{"UTF-8"}},
		{"ErrTextTooLong", "name:eq:" + strings.Repeat("x", 1025), []string{"1024"}},
		{"ErrInListTooLong", "error_count:in:" + strings.Repeat("1|", herd.MaxInValues) + "1", []string{"at most 100"}},
		{"ErrInListBadValue", "rssi:in:1|x|3", []string{`"x"`}},
		{"ErrContainsShort", "name:contains:ab", []string{`"ab"`, "3 characters"}},
		{"ErrContainsShortLabel", "label.ring:contains:ca", []string{`"ca"`, "3 characters"}},
		{"ErrContainsEmpty", "name:contains:", []string{"3 characters"}},
		{"ErrContainsControl", "name:contains:ab\ncd", []string{"control character"}},
		{"ErrContainsLong", "name:contains:" + strings.Repeat("x", herd.MaxSearchBytes+1), []string{"200 bytes"}},
		{"ErrContainsNotText", "temperature:contains:200", []string{"contains", "name, key, model, firmware"}},
		{"ErrContainsPath", "path:contains:/1/", []string{"contains"}},
		{"ErrUnknownOperator", "name:like:pump", []string{`"like"`, "contains"}},
		{"ErrUnknownLabelOperator", "label.ring:like:x", []string{`"like"`, "contains"}},
	}
	for _, tt := range errCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := herd.ParseDeviceFilter(tt.in)
			mustFail(t, err, herd.EINVALIDFILTER, tt.parts...)
		})
	}
}

func TestParseDeviceSort(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, name := range herd.DeviceFieldNames {
			got, err := herd.ParseDeviceSort(name)
			if err != nil || got != (herd.DeviceSort{Field: name}) {
				t.Fatalf("%q: got %+v, %v", name, got, err)
			}
			if got.String() != name {
				t.Fatalf("%q: String() = %q", name, got.String())
			}
			got, err = herd.ParseDeviceSort("-" + name)
			if err != nil || got != (herd.DeviceSort{Field: name, Desc: true}) {
				t.Fatalf("-%q: got %+v, %v", name, got, err)
			}
			if got.String() != "-"+name {
				t.Fatalf("-%q: String() = %q", name, got.String())
			}
		}
	})
	for _, tt := range []struct{ name, in, part string }{
		{"ErrUnknownField", "colour", `"colour"`},
		{"ErrEmpty", "", `""`},
		{"ErrDashOnly", "-", `""`},
		{"ErrDoubleDash", "--name", `"-name"`},
		{"ErrPlus", "+name", `"+name"`},
		{"ErrSQL", "name; DROP TABLE devices", "DROP TABLE"},
		{"ErrTenant", "tenant_id", `"tenant_id"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := herd.ParseDeviceSort(tt.in)
			mustFail(t, err, herd.EINVALIDSORT, tt.part)
		})
	}
}

func TestParseDeviceQuery(t *testing.T) {
	t.Run("OKSearch", func(t *testing.T) {
		// Words at any white space, folded, a repeat counted once; a q of
		// white space only is no search.
		for in, want := range map[string][]string{
			"Oslo boiler":          {"oslo", "boiler"},
			"  OSLO\tStraße oslo ": {"oslo", "strasse"},
			"100%_":                {"100%_"},
			"   ":                  nil,
			"":                     nil,
		} {
			q, err := herd.ParseDeviceQuery(url.Values{"q": {in}})
			if err != nil {
				t.Fatalf("%q: %v", in, err)
			} else if !reflect.DeepEqual(q.Search, want) {
				t.Fatalf("%q: words %q, want %q", in, q.Search, want)
			}
		}
	})
	t.Run("OKDefaults", func(t *testing.T) {
		q, err := herd.ParseDeviceQuery(url.Values{})
		if err != nil {
			t.Fatal(err)
		}
		want := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}, Limit: herd.DefaultLimit}
		if !reflect.DeepEqual(q, want) {
			t.Fatalf("got %+v, want %+v", q, want)
		}
	})
	t.Run("OK", func(t *testing.T) {
		v := url.Values{
			"filter":    {"status:eq:alarm", "temperature:gt:30"},
			"sort":      {"-temperature"},
			"limit":     {"500"},
			"tenant_id": {"7"},
		}
		q, err := herd.ParseDeviceQuery(v)
		if err != nil {
			t.Fatal(err)
		}
		want := herd.DeviceQuery{
			TenantID: 7,
			Filters: []herd.DeviceFilter{
				{Field: "status", Op: "eq", Values: []any{"alarm"}},
				{Field: "temperature", Op: "gt", Values: []any{30.0}},
			},
			Sort:  herd.DeviceSort{Field: "temperature", Desc: true},
			Limit: 500,
		}
		if !reflect.DeepEqual(q, want) {
			t.Fatalf("got %+v, want %+v", q, want)
		}
	})
	t.Run("OKLimitBounds", func(t *testing.T) {
		for _, s := range []string{"1", strconv.Itoa(herd.MaxLimit)} {
			q, err := herd.ParseDeviceQuery(url.Values{"limit": {s}})
			if err != nil || strconv.Itoa(q.Limit) != s {
				t.Fatalf("limit %s: got %d, %v", s, q.Limit, err)
			}
		}
	})
	t.Run("OKMaxFilters", func(t *testing.T) {
		v := url.Values{}
		for range herd.MaxFilters {
			v.Add("filter", "error_count:ge:0")
		}
		q, err := herd.ParseDeviceQuery(v)
		if err != nil || len(q.Filters) != herd.MaxFilters {
			t.Fatalf("got %d filters, %v", len(q.Filters), err)
		}
	})
	t.Run("OKCursor", func(t *testing.T) {
		v := url.Values{"filter": {"online:eq:true"}, "sort": {"name"}}
		q, err := herd.ParseDeviceQuery(v)
		if err != nil {
			t.Fatal(err)
		}
		v.Set("cursor", q.EncodeCursor(testKey, &herd.Device{ID: 9, Name: "pump 7"}, 120, false))
		q, err = herd.ParseDeviceQuery(v)
		if err != nil {
			t.Fatal(err)
		}
		// The parser carries the cursor; only the store, which holds the
		// key, decodes it.
		if q.Cursor != v.Get("cursor") || q.After != nil {
			t.Fatalf("got cursor %q, after %+v", q.Cursor, q.After)
		}
		c, err := q.DecodeCursor(testKey, q.Cursor)
		if err != nil {
			t.Fatal(err)
		}
		if want := (&herd.DeviceCursor{Value: "pump 7", ID: 9, Count: 120}); !reflect.DeepEqual(c, want) {
			t.Fatalf("got cursor %+v, want %+v", c, want)
		}
	})

	// One in-list of 100 values per filter and 20 filters would ask for
	// 2,000 bind parameters; a parsed query must stay far below the store's
	// parameter guard, so the parser refuses it.
	manyValues := url.Values{}
	for range 6 {
		manyValues.Add("filter", "error_count:in:"+strings.TrimSuffix(strings.Repeat("1|", herd.MaxInValues), "|"))
	}
	tooManyFilters := url.Values{}
	for range herd.MaxFilters + 1 {
		tooManyFilters.Add("filter", "error_count:ge:0")
	}
	for _, tt := range []struct {
		name  string
		v     url.Values
		code  string
		parts []string
	}{
		{"ErrUnknownParam", url.Values{"offset": {"10"}}, herd.EINVALID, []string{`"offset"`}},
		{"ErrTenantID", url.Values{"tenant_id": {"x"}}, herd.EINVALID, []string{"tenant_id", `"x"`}},
		{"ErrTenantIDZero", url.Values{"tenant_id": {"0"}}, herd.EINVALID, []string{"tenant_id"}},
		{"ErrTenantIDNegative", url.Values{"tenant_id": {"-3"}}, herd.EINVALID, []string{"tenant_id"}},
		{"ErrFilter", url.Values{"filter": {"ok:eq:1"}}, herd.EINVALIDFILTER, []string{`"ok"`}},
		{"ErrSecondFilter", url.Values{"filter": {"online:eq:true", "online:eq:maybe"}}, herd.EINVALIDFILTER, []string{`"maybe"`}},
		{"ErrTooManyFilters", tooManyFilters, herd.EINVALIDFILTER, []string{"20"}},
		{"ErrTooManyFilterValues", manyValues, herd.EINVALIDFILTER, []string{"values"}},
		{"ErrSearchShortWord", url.Values{"q": {"oslo ab"}}, herd.EINVALIDFILTER, []string{`"ab"`, "3 characters"}},
		{"ErrSearchTooManyWords", url.Values{"q": {"aaa bbb ccc ddd eee fff ggg hhh iii"}}, herd.EINVALIDFILTER, []string{"9 words", "at most 8"}},
		{"ErrSearchTwice", url.Values{"q": {"oslo", "bergen"}}, herd.EINVALIDFILTER, []string{"2 times"}},
		{"ErrSearchControl", url.Values{"q": {"os\x01lo"}}, herd.EINVALIDFILTER, []string{"control character"}},
		{"ErrSearchUTF8", url.Values{"q": {"os\xfflo"}}, herd.EINVALIDFILTER, []string{"UTF-8"}},
		{"ErrSort", url.Values{"sort": {"colour"}}, herd.EINVALIDSORT, []string{`"colour"`}},
		{"ErrLimitZero", url.Values{"limit": {"0"}}, herd.EINVALIDLIMIT, []string{`"0"`}},
		{"ErrLimitTooBig", url.Values{"limit": {"501"}}, herd.EINVALIDLIMIT, []string{`"501"`, "500"}},
		{"ErrLimitNegative", url.Values{"limit": {"-1"}}, herd.EINVALIDLIMIT, []string{`"-1"`}},
		{"ErrLimitText", url.Values{"limit": {"ten"}}, herd.EINVALIDLIMIT, []string{`"ten"`}},
		{"ErrLimitFloat", url.Values{"limit": {"1.5"}}, herd.EINVALIDLIMIT, []string{`"1.5"`}},
		{"ErrCursor", url.Values{"cursor": {"not a cursor"}}, herd.EINVALIDCURSOR, []string{"cursor"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := herd.ParseDeviceQuery(tt.v)
			mustFail(t, err, tt.code, tt.parts...)
		})
	}
}

// setField sets a device's projection field to a value typed as
// DeviceFilter values are (nil means NULL), the inverse of FieldValue.
func setField(d *herd.Device, name string, v any) {
	f64 := func() *float64 {
		if v == nil {
			return nil
		}
		x := v.(float64)
		return &x
	}
	i64 := func() *int64 {
		if v == nil {
			return nil
		}
		x := v.(int64)
		return &x
	}
	switch name {
	case "id":
		d.ID = v.(int64)
	case "node_id":
		d.NodeID = v.(int64)
	case "path":
		d.Path = v.(string)
	case "key":
		d.Key = v.(string)
	case "name":
		d.Name = v.(string)
	case "model":
		d.Model = v.(string)
	case "firmware":
		d.Firmware = v.(string)
	case "status":
		d.Status = v.(string)
	case "online":
		d.Online = v.(bool)
	case "last_seen":
		if v == nil {
			d.LastSeen = nil
		} else {
			t := time.UnixMilli(v.(int64)).UTC()
			d.LastSeen = &t
		}
	case "temperature":
		d.Temperature = f64()
	case "humidity":
		d.Humidity = f64()
	case "pressure":
		d.Pressure = f64()
	case "voltage":
		d.Voltage = f64()
	case "current":
		d.Current = f64()
	case "power":
		d.Power = f64()
	case "battery":
		d.Battery = f64()
	case "rssi":
		d.RSSI = i64()
	case "uptime_s":
		d.UptimeS = i64()
	case "error_count":
		d.ErrorCount = v.(int64)
	case "config_version":
		d.ConfigVersion = v.(int64)
	case "created_at":
		d.CreatedAt = time.UnixMilli(v.(int64)).UTC()
	default:
		panic("unknown field " + name)
	}
}

// sampleValue returns a non-NULL value of the field's type.
func sampleValue(f herd.Field) any {
	switch f.Type {
	case herd.FieldString:
		return "pümp:7|<x>"
	case herd.FieldEnum:
		return herd.StatusAlarm
	case herd.FieldBool:
		return true
	case herd.FieldFloat:
		return -21.125
	default:
		return int64(1709296245123)
	}
}

func TestDeviceQuery_Cursor(t *testing.T) {
	t.Run("OKRoundTripEveryField", func(t *testing.T) {
		for _, name := range herd.DeviceFieldNames {
			field := herd.DeviceFields[name]
			values := []any{sampleValue(field)}
			if field.Nullable {
				values = append(values, nil)
			}
			for _, desc := range []bool{false, true} {
				for _, v := range values {
					q := herd.DeviceQuery{
						Filters: []herd.DeviceFilter{{Field: "online", Op: "eq", Values: []any{true}}},
						Sort:    herd.DeviceSort{Field: name, Desc: desc},
						Limit:   10,
					}
					d := &herd.Device{ID: 77}
					if name != "id" {
						setField(d, name, v)
					}
					c, err := q.DecodeCursor(testKey, q.EncodeCursor(testKey, d, herd.CountCap, desc))
					if err != nil {
						t.Fatalf("sort %s value %v: %v", q.Sort, v, err)
					}
					want := &herd.DeviceCursor{Null: v == nil, Value: v, ID: d.ID, Count: herd.CountCap, CountCapped: desc}
					if name == "id" {
						want.Value = d.ID
					}
					if !reflect.DeepEqual(c, want) {
						t.Fatalf("sort %s: got %#v, want %#v", q.Sort, c, want)
					}
				}
			}
		}
	})
	t.Run("OKExtremeValues", func(t *testing.T) {
		// Any value a device can hold must give a cursor that decodes: the
		// bounds the parser puts on filter input do not apply to positions.
		for _, tt := range []struct {
			field string
			v     any
		}{
			{"temperature", 1e308},
			{"temperature", -1e308},
			{"temperature", 5e-324},
			{"temperature", 0.1 + 0.2},
			{"rssi", int64(-9223372036854775808)},
			{"name", strings.Repeat("\U0010FFFF", 50)},
			{"name", strings.Repeat("<&>\x01", 50)},
			{"path", "/" + strings.Repeat("1234567/", 150)},
			{"last_seen", int64(-62135596800000)},
		} {
			q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: tt.field}}
			d := &herd.Device{ID: 1}
			setField(d, tt.field, tt.v)
			c, err := q.DecodeCursor(testKey, q.EncodeCursor(testKey, d, 1, false))
			if err != nil {
				t.Fatalf("%s=%v: %v", tt.field, tt.v, err)
			}
			if c.Value != tt.v || c.Null || c.ID != 1 {
				t.Fatalf("%s=%v: got %#v", tt.field, tt.v, c)
			}
		}
	})

	base := herd.DeviceQuery{
		TenantID: 3,
		Filters:  []herd.DeviceFilter{{Field: "name", Op: "in", Values: []any{"a", "b"}}},
		Sort:     herd.DeviceSort{Field: "temperature", Desc: true},
	}
	cursor := base.EncodeCursor(testKey, &herd.Device{ID: 5, Temperature: new(21.5)}, 42, false)
	// Another query: each differs from base in one part that shapes the
	// walk, so base's cursor means nothing there.
	others := map[string]herd.DeviceQuery{
		"ErrOtherTenant":      {TenantID: 4, Filters: base.Filters, Sort: base.Sort},
		"ErrNoTenant":         {Filters: base.Filters, Sort: base.Sort},
		"ErrOtherDirection":   {TenantID: 3, Filters: base.Filters, Sort: herd.DeviceSort{Field: "temperature"}},
		"ErrOtherSortField":   {TenantID: 3, Filters: base.Filters, Sort: herd.DeviceSort{Field: "humidity", Desc: true}},
		"ErrNoFilter":         {TenantID: 3, Sort: base.Sort},
		"ErrOtherFilterValue": {TenantID: 3, Filters: []herd.DeviceFilter{{Field: "name", Op: "in", Values: []any{"a", "c"}}}, Sort: base.Sort},
		"ErrOtherFilterOp":    {TenantID: 3, Filters: []herd.DeviceFilter{{Field: "name", Op: "ne", Values: []any{"a", "b"}}}, Sort: base.Sort},
		"ErrOtherFilterField": {TenantID: 3, Filters: []herd.DeviceFilter{{Field: "key", Op: "in", Values: []any{"a", "b"}}}, Sort: base.Sort},
		"ErrExtraFilter": {TenantID: 3, Filters: append(append([]herd.DeviceFilter(nil), base.Filters...),
			herd.DeviceFilter{Field: "online", Op: "eq", Values: []any{true}}), Sort: base.Sort},
		// Values that concatenate to the same text must still differ.
		"ErrValuesJoined":    {TenantID: 3, Filters: []herd.DeviceFilter{{Field: "name", Op: "in", Values: []any{"a\x01b"}}}, Sort: base.Sort},
		"ErrValuesSplitDiff": {TenantID: 3, Filters: []herd.DeviceFilter{{Field: "name", Op: "in", Values: []any{"a", "", "b"}}}, Sort: base.Sort},
	}
	t.Run("OKSameQuery", func(t *testing.T) {
		c, err := base.DecodeCursor(testKey, cursor)
		if err != nil {
			t.Fatal(err)
		}
		if want := (&herd.DeviceCursor{Value: 21.5, ID: 5, Count: 42}); !reflect.DeepEqual(c, want) {
			t.Fatalf("got %#v, want %#v", c, want)
		}
		// The page size is no part of the walk's identity.
		other := base
		other.Limit = 7
		if _, err := other.DecodeCursor(testKey, cursor); err != nil {
			t.Fatal(err)
		}
	})
	for name, q := range others {
		t.Run(name, func(t *testing.T) {
			_, err := q.DecodeCursor(testKey, cursor)
			mustFail(t, err, herd.EINVALIDCURSOR, "another query")
		})
	}
	t.Run("ErrJoinedValuesCollide", func(t *testing.T) {
		// The reverse direction of ErrValuesJoined, from a real parse.
		a, err := herd.ParseDeviceFilter("name:in:a\x01b")
		if err != nil {
			t.Fatal(err)
		}
		b, err := herd.ParseDeviceFilter("name:in:a|b")
		if err != nil {
			t.Fatal(err)
		}
		qa := herd.DeviceQuery{Filters: []herd.DeviceFilter{a}, Sort: herd.DeviceSort{Field: "id"}}
		qb := herd.DeviceQuery{Filters: []herd.DeviceFilter{b}, Sort: herd.DeviceSort{Field: "id"}}
		_, err = qb.DecodeCursor(testKey, qa.EncodeCursor(testKey, &herd.Device{ID: 1}, 1, false))
		mustFail(t, err, herd.EINVALIDCURSOR)
	})

	valid := func(c map[string]any) string {
		return encodeRawCursor(t, c)
	}
	malformed := map[string]string{
		"ErrEmptyJSON":     valid(map[string]any{}),
		"ErrNotBase64":     "%%%",
		"ErrStdBase64":     "eyJ2IjoxfQ==",
		"ErrNotJSON":       "bm90IGpzb24",
		"ErrTooLong":       strings.Repeat("A", 2049),
		"ErrOldVersion":    valid(map[string]any{"v": 1, "h": fingerprintOf(t, base), "k": "21.5", "i": "5"}),
		"ErrFutureVersion": valid(map[string]any{"v": 3, "h": fingerprintOf(t, base), "k": "21.5", "i": "5"}),
		"ErrValueType":     valid(map[string]any{"v": 2, "h": fingerprintOf(t, base), "k": "warm", "i": "5"}),
		"ErrIDType":        valid(map[string]any{"v": 2, "h": fingerprintOf(t, base), "k": "21.5", "i": "five"}),
		"ErrIDNumber":      valid(map[string]any{"v": 2, "h": fingerprintOf(t, base), "k": "21.5", "i": 5}),
		"ErrTrailingData":  valid(map[string]any{"v": 2, "h": fingerprintOf(t, base), "k": "21.5", "i": "5"}) + "AAAA",
	}
	for name, s := range malformed {
		t.Run(name, func(t *testing.T) {
			_, err := base.DecodeCursor(testKey, s)
			mustFail(t, err, herd.EINVALIDCURSOR)
		})
	}
	t.Run("ErrNullOnNotNullField", func(t *testing.T) {
		q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "name"}}
		s := encodeRawCursor(t, map[string]any{"v": 2, "h": fingerprintOf(t, q), "n": true, "i": "5"})
		_, err := q.DecodeCursor(testKey, s)
		mustFail(t, err, herd.EINVALIDCURSOR, "malformed")
	})
	t.Run("ErrStatusValue", func(t *testing.T) {
		q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "status"}}
		s := encodeRawCursor(t, map[string]any{"v": 2, "h": fingerprintOf(t, q), "k": "broken", "i": "5"})
		_, err := q.DecodeCursor(testKey, s)
		mustFail(t, err, herd.EINVALIDCURSOR, "malformed")
	})
}

// testKey signs the cursors of the domain's tests.
var testKey = herd.CursorKey("herd test cursor key, 32 bytes..")

// encodeRawCursor encodes a hand-made cursor body as cursors travel,
// signed, so that the checks after the signature's see it.
func encodeRawCursor(tb testing.TB, body map[string]any) string {
	tb.Helper()
	buf, err := json.Marshal(body)
	if err != nil {
		tb.Fatal(err)
	}
	return herd.SignDeviceCursor(testKey, base64.RawURLEncoding.EncodeToString(buf))
}

// cursorPayload returns the body of a cursor, without its signature.
func cursorPayload(tb testing.TB, cursor string) []byte {
	tb.Helper()
	i := strings.LastIndexByte(cursor, '.')
	if i < 0 {
		tb.Fatalf("cursor %q has no signature", cursor)
	}
	buf, err := base64.RawURLEncoding.DecodeString(cursor[:i])
	if err != nil {
		tb.Fatal(err)
	}
	return buf
}

// fingerprintOf returns the query fingerprint a cursor of q carries, read
// back from a real cursor so the test does not restate the hash.
func fingerprintOf(tb testing.TB, q herd.DeviceQuery) string {
	tb.Helper()
	buf := cursorPayload(tb, q.EncodeCursor(testKey, &herd.Device{ID: 1}, 0, false))
	var body struct {
		H string `json:"h"`
	}
	if err := json.Unmarshal(buf, &body); err != nil || body.H == "" {
		tb.Fatalf("cursor body %s: %v", buf, err)
	}
	return body.H
}

func TestDeviceQuery_Normalize(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		var q herd.DeviceQuery
		if err := q.Normalize(); err != nil {
			t.Fatal(err)
		}
		if q.Sort.Field != "id" || q.Limit != herd.DefaultLimit {
			t.Fatalf("got %+v", q)
		}
		// A search built in code is folded, as a parsed one is.
		q = herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "label.ring", Op: herd.OpContains, Values: []any{"CANary"}}}, Search: []string{"OSLO"}}
		if err := q.Normalize(); err != nil {
			t.Fatal(err)
		} else if q.Filters[0].Values[0] != "canary" || q.Search[0] != "oslo" {
			t.Fatalf("not folded: %+v", q)
		}
	})
	values := func(n int) []any {
		vs := make([]any, n)
		for i := range vs {
			vs[i] = int64(i)
		}
		return vs
	}
	var tooMany []herd.DeviceFilter
	for range herd.MaxFilterValues/herd.MaxInValues + 1 {
		tooMany = append(tooMany, herd.DeviceFilter{Field: "id", Op: herd.OpIn, Values: values(herd.MaxInValues)})
	}
	for _, tt := range []struct {
		name string
		q    herd.DeviceQuery
		code string
	}{
		{"ErrSortField", herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id; DROP TABLE devices"}}, herd.EINVALIDSORT},
		{"ErrLimit", herd.DeviceQuery{Limit: herd.MaxLimit + 1}, herd.EINVALIDLIMIT},
		{"ErrFilterField", herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "1=1 OR id", Op: herd.OpEq, Values: values(1)}}}, herd.EINVALIDFILTER},
		{"ErrFilterOp", herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "id", Op: "like", Values: values(1)}}}, herd.EINVALIDFILTER},
		{"ErrInListTooLong", herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "id", Op: herd.OpIn, Values: values(herd.MaxInValues + 1)}}}, herd.EINVALIDFILTER},
		{"ErrTooManyValues", herd.DeviceQuery{Filters: tooMany}, herd.EINVALIDFILTER},
		{"ErrContainsShort", herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains, Values: []any{"ab"}}}}, herd.EINVALIDFILTER},
		{"ErrContainsField", herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "status", Op: herd.OpContains, Values: []any{"alarm"}}}}, herd.EINVALIDFILTER},
		{"ErrContainsNotText", herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains, Values: []any{int64(123)}}}}, herd.EINVALIDFILTER},
		{"ErrSearchShort", herd.DeviceQuery{Search: []string{"oslo", "ab"}}, herd.EINVALIDFILTER},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mustFail(t, tt.q.Normalize(), tt.code)
		})
	}
}
