package herd_test

import (
	"math/rand/v2"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

func TestParseSummaryQuery(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		v, _ := url.ParseQuery("tenant_id=3&node_id=9&filter=temperature:gt:30&filter=model:in:P1%7CP2&group_by=firmware&fields=temperature,battery")
		q, err := herd.ParseSummaryQuery(v)
		if err != nil {
			t.Fatal(err)
		}
		want := herd.SummaryQuery{
			TenantID: 3, NodeID: 9, GroupBy: "firmware", Fields: []string{"temperature", "battery"},
			Filters: []herd.DeviceFilter{{Field: "temperature", Op: "gt", Values: []any{30.0}}, {Field: "model", Op: "in", Values: []any{"P1", "P2"}}},
		}
		if !reflect.DeepEqual(q, want) {
			t.Fatalf("got %#v, want %#v", q, want)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		q, err := herd.ParseSummaryQuery(url.Values{})
		if err != nil || !reflect.DeepEqual(q, herd.SummaryQuery{}) {
			t.Fatalf("got %#v, %v", q, err)
		}
	})
	for _, tc := range []struct{ query, code, names string }{
		{"group_by=colour", herd.EINVALID, `group_by "colour"`},
		{"group_by=name", herd.EINVALID, `group_by "name"`},
		{"fields=colour", herd.EINVALID, `unknown field "colour"`},
		{"fields=name", herd.EINVALID, `"name" is not a numeric field`},
		{"fields=temperature,", herd.EINVALID, `unknown field ""`},
		{"fields=battery,battery", herd.EINVALID, `"battery" is given twice`},
		{"fields=battery&fields=rssi", herd.EINVALID, "fields is given 2 times"},
		{"group_by=model&group_by=node", herd.EINVALID, "group_by is given 2 times"},
		{"filter=colour:eq:red", herd.EINVALIDFILTER, `unknown field "colour"`},
		{"filter=temperature:gt:hot", herd.EINVALIDFILTER, `"hot" is not a number`},
		{"filter=online:lt:true", herd.EINVALIDFILTER, `operator "lt" does not apply`},
		{"node_id=abc", herd.EINVALID, `node_id "abc"`},
		{"node_id=0", herd.EINVALID, `node_id "0"`},
		{"tenant_id=-2", herd.EINVALID, `tenant_id "-2"`},
		{"limit=5", herd.EINVALID, `unknown query parameter "limit"`},
		{"sort=id", herd.EINVALID, `unknown query parameter "sort"`},
		{strings.Repeat("filter=id:gt:1&", herd.MaxFilters+1), herd.EINVALIDFILTER, "at most 20 filters"},
		{"filter=name:in:" + strings.Repeat("a%7C", 99) + "a&filter=model:in:" + strings.Repeat("a%7C", 99) + "a&filter=key:eq:x", herd.EINVALIDFILTER, "at most 200 filter values"},
	} {
		v, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = herd.ParseSummaryQuery(v)
		if code := herd.ErrorCode(err); code != tc.code {
			t.Errorf("%s: code %s (%v), want %s", tc.query, code, err, tc.code)
		} else if msg := herd.ErrorMessage(err); !strings.Contains(msg, tc.names) {
			t.Errorf("%s: message %q does not name %q", tc.query, msg, tc.names)
		}
	}
}

// randomSummaryQuery draws a query of every part the parser reads, filter
// values from each field's type.
func randomSummaryQuery(rng *rand.Rand) herd.SummaryQuery {
	var q herd.SummaryQuery
	if rng.IntN(2) == 0 {
		q.TenantID = rng.Int64N(1<<40) + 1
	}
	if rng.IntN(2) == 0 {
		q.NodeID = rng.Int64N(1<<40) + 1
	}
	if rng.IntN(3) > 0 {
		q.GroupBy = herd.SummaryGroupBys[rng.IntN(len(herd.SummaryGroupBys))]
	}
	for _, f := range rng.Perm(len(herd.NumericReadingFields))[:rng.IntN(4)] {
		q.Fields = append(q.Fields, herd.NumericReadingFields[f])
	}
	for range rng.IntN(4) {
		name := herd.DeviceFieldNames[rng.IntN(len(herd.DeviceFieldNames))]
		field := herd.DeviceFields[name]
		f := herd.DeviceFilter{Field: name, Op: herd.OpEq}
		n := 1
		switch rng.IntN(3) {
		case 0:
			f.Op, n = herd.OpIn, 1+rng.IntN(4)
		case 1:
			if field.Type == herd.FieldString {
				f.Op = herd.OpPrefix
			} else if field.Type != herd.FieldBool && field.Type != herd.FieldEnum {
				f.Op = herd.OpGe
			}
		}
		for range n {
			var v any
			switch field.Type {
			case herd.FieldString:
				v = []string{"a", "pümp", "x:y", "\U0010FFFF", "1.0"}[rng.IntN(5)]
			case herd.FieldEnum:
				v = []string{"", "ok", "warn", "alarm"}[rng.IntN(4)]
			case herd.FieldBool:
				v = rng.IntN(2) == 0
			case herd.FieldFloat:
				v = (rng.Float64() - 0.5) * 1e6
			default:
				v = rng.Int64() - 1<<62
			}
			f.Values = append(f.Values, v)
		}
		q.Filters = append(q.Filters, f)
	}
	return q
}

// TestSummaryQuery_RoundTrip checks that the client's encoding of a query
// reads back as the same query.
func TestSummaryQuery_RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 3))
	for range 2000 {
		q := randomSummaryQuery(rng)
		v, err := q.Values()
		if err != nil {
			t.Fatalf("%#v: %v", q, err)
		}
		got, err := herd.ParseSummaryQuery(v)
		if err != nil {
			t.Fatalf("%#v encodes as %q, refused: %v", q, v.Encode(), err)
		}
		if !reflect.DeepEqual(got, q) {
			t.Fatalf("%q:\ngot  %#v\nwant %#v", v.Encode(), got, q)
		}
	}
	// What no parse gives is refused, not sent altered.
	for _, f := range []herd.DeviceFilter{
		{Field: "name", Op: herd.OpIn, Values: []any{"a|b"}},
		{Field: "temperature", Op: herd.OpEq, Values: []any{"hot"}},
		{Field: "colour", Op: herd.OpEq, Values: []any{"red"}},
	} {
		if _, err := (herd.SummaryQuery{Filters: []herd.DeviceFilter{f}}).Values(); herd.ErrorCode(err) != herd.EINVALIDFILTER {
			t.Errorf("%+v: got %v, want EINVALIDFILTER", f, err)
		}
	}
}

func TestSummaryQuery_Normalize(t *testing.T) {
	for _, q := range []herd.SummaryQuery{
		{GroupBy: "colour"},
		{Fields: []string{"name"}},
		{Fields: []string{"rssi", "rssi"}},
		{Filters: []herd.DeviceFilter{{Field: "name; DROP TABLE devices", Op: "eq", Values: []any{"x"}}}},
		{Filters: []herd.DeviceFilter{{Field: "name", Op: "like", Values: []any{"x"}}}},
		{NodeID: -1},
	} {
		if err := q.Normalize(); err == nil {
			t.Errorf("%+v: accepted", q)
		}
	}
	q := herd.SummaryQuery{GroupBy: "node", Fields: []string{"uptime_s"}, Filters: []herd.DeviceFilter{{Field: "online", Op: "eq", Values: []any{true}}}}
	if err := q.Normalize(); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseSummaryQuery(f *testing.F) {
	for _, s := range []string{
		"", "group_by=status", "group_by=node&fields=temperature,battery", "fields=rssi,uptime_s,error_count",
		"tenant_id=3&node_id=9&filter=status:eq:alarm&group_by=online", "filter=name:in:a%7Cb&group_by=model",
		"filter=last_seen:ge:2026-12-01T00:00:00Z", "group_by=colour", "fields=name", "fields=,", "node_id=-1",
		"fields=battery,battery", "limit=5", "filter=firmware:prefix:1.", "group_by=status&group_by=node",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := herd.ParseSummaryQuery(v)
		if err != nil {
			switch code := herd.ErrorCode(err); code {
			case herd.EINVALID, herd.EINVALIDFILTER:
			default:
				t.Fatalf("%q: error code %s", raw, code)
			}
			return
		}
		for key := range v {
			switch key {
			case "filter", "tenant_id", "node_id", "group_by", "fields":
			default:
				t.Fatalf("%q: accepted parameter %q", raw, key)
			}
		}
		if q.TenantID < 0 || q.NodeID < 0 {
			t.Fatalf("%q: ids %d %d", raw, q.TenantID, q.NodeID)
		}
		if q.GroupBy != "" && !slices.Contains(herd.SummaryGroupBys, q.GroupBy) {
			t.Fatalf("%q: group_by %q", raw, q.GroupBy)
		}
		for i, name := range q.Fields {
			if !herd.IsNumericReadingField(name) || slices.Contains(q.Fields[:i], name) {
				t.Fatalf("%q: fields %q", raw, q.Fields)
			}
		}
		if len(q.Filters) > herd.MaxFilters {
			t.Fatalf("%q: %d filters", raw, len(q.Filters))
		}
		nvalues := 0
		for _, f := range q.Filters {
			checkFilter(t, f)
			nvalues += len(f.Values)
		}
		if nvalues > herd.MaxFilterValues {
			t.Fatalf("%q: %d filter values", raw, nvalues)
		}
		if err := q.Normalize(); err != nil {
			t.Fatalf("%q: parsed, but Normalize refuses it: %v", raw, err)
		}
		// The client's encoding reads back the same query.
		enc, err := q.Values()
		if err != nil {
			t.Fatalf("%q: parsed, but does not encode: %v", raw, err)
		}
		again, err := herd.ParseSummaryQuery(enc)
		if err != nil {
			t.Fatalf("%q accepted, encoded %q refused: %v", raw, enc.Encode(), err)
		}
		if !reflect.DeepEqual(again, q) {
			t.Fatalf("%q: got %#v, encoded form reads %#v", raw, q, again)
		}
	})
}
