package herd_test

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

var exportNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestParseExportQuery(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		v, _ := url.ParseQuery("tenant_id=3&node_id=9&filter=status:eq:alarm&filter=model:in:a|b&from=2026-12-01T00:00:00%2B05:30&to=1796169600000&format=ndjson")
		q, format, err := herd.ParseExportQuery(v, exportNow)
		if err != nil {
			t.Fatal(err)
		}
		want := herd.ExportQuery{TenantID: 3, NodeID: 9, Filters: []herd.DeviceFilter{
			{Field: "status", Op: "eq", Values: []any{"alarm"}},
			{Field: "model", Op: "in", Values: []any{"a", "b"}},
		}}
		if format != "ndjson" || q.TenantID != want.TenantID || q.NodeID != want.NodeID || !reflect.DeepEqual(q.Filters, want.Filters) {
			t.Fatalf("got %#v %q, want %#v", q, format, want)
		}
		if from := time.Date(2026, 11, 30, 18, 30, 0, 0, time.UTC); !q.From.Equal(from) {
			t.Fatalf("from %s, want %s", q.From, from)
		}
		if to := time.UnixMilli(1796169600000); !q.To.Equal(to) {
			t.Fatalf("to %s, want %s", q.To, to)
		}
	})
	t.Run("Defaults", func(t *testing.T) {
		q, format, err := herd.ParseExportQuery(url.Values{}, exportNow)
		if err != nil {
			t.Fatal(err)
		}
		if format != herd.ExportNDJSON || !q.To.Equal(exportNow) || !q.From.Equal(exportNow.Add(-herd.DefaultHistoryRange)) || q.Filters != nil || q.NodeID != 0 {
			t.Fatalf("got %#v %q", q, format)
		}
	})
	for name, tc := range map[string]struct{ query, code, msg string }{
		"Unknown":       {"limit=5", herd.EINVALID, `unknown query parameter "limit"`},
		"Twice":         {"from=1&from=2", herd.EINVALID, "from is given 2 times"},
		"FromAfterTo":   {"from=2000&to=1000", herd.EINVALID, "must come before to"},
		"FromEqualsTo":  {"from=1000&to=1000", herd.EINVALID, "must come before to"},
		"BadTime":       {"from=yesterday", herd.EINVALID, `from "yesterday"`},
		"Parquet":       {"format=parquet", herd.EINVALID, "the API streams ndjson only"},
		"BadFormat":     {"format=xml", herd.EINVALID, `format "xml" is not an export format`},
		"BadNode":       {"node_id=-4", herd.EINVALID, `node_id "-4" is not an id`},
		"BadTenant":     {"tenant_id=x", herd.EINVALID, `tenant_id "x" is not an id`},
		"BadFilter":     {"filter=colour:eq:red", herd.EINVALIDFILTER, `unknown field "colour"`},
		"TooManyFilter": {strings.Repeat("filter=online:eq:true&", herd.MaxFilters+1), herd.EINVALIDFILTER, "at most 20 filters"},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = herd.ParseExportQuery(v, exportNow)
			if herd.ErrorCode(err) != tc.code || !strings.Contains(herd.ErrorMessage(err), tc.msg) {
				t.Fatalf("got %v (%s), want %s containing %q", err, herd.ErrorCode(err), tc.code, tc.msg)
			}
		})
	}
}

// TestExportQueryValues: what the client encodes, the server parses back
// the same.
func TestExportQueryValues(t *testing.T) {
	for _, q := range []herd.ExportQuery{
		{From: time.UnixMilli(1000), To: time.UnixMilli(2000)},
		{TenantID: 4, NodeID: 77, From: time.Date(2026, 1, 1, 0, 0, 0, 500, time.FixedZone("x", 3600)), To: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC),
			Filters: []herd.DeviceFilter{
				{Field: "firmware", Op: "eq", Values: []any{"v1:2|3"}},
				{Field: "temperature", Op: "ge", Values: []any{-2.5e-7}},
				{Field: "last_seen", Op: "lt", Values: []any{int64(1764979200123)}},
				{Field: "online", Op: "in", Values: []any{true, false}},
				{Field: "path", Op: "prefix", Values: []any{"/1/2/"}},
			}},
		// The bounds of what ParseHistoryTime takes.
		{From: time.UnixMilli(0), To: time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)},
	} {
		got, format, err := herd.ParseExportQuery(q.Values("ndjson"), exportNow)
		if err != nil {
			t.Fatalf("%#v: %v (query %s)", q, err, q.Values("ndjson").Encode())
		}
		if format != "ndjson" {
			t.Fatalf("format %q", format)
		}
		assertExportEqual(t, got, q)
	}
}

func assertExportEqual(tb testing.TB, got, want herd.ExportQuery) {
	tb.Helper()
	if !got.From.Equal(want.From) || !got.To.Equal(want.To) {
		tb.Fatalf("range [%s, %s), want [%s, %s)", got.From, got.To, want.From, want.To)
	}
	got.From, got.To, want.From, want.To = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("got %#v, want %#v", got, want)
	}
}

func FuzzParseExportQuery(f *testing.F) {
	for _, s := range []string{
		"", "format=ndjson", "from=1000&to=2000", "tenant_id=3&node_id=5&filter=status:eq:alarm",
		"filter=temperature:gt:30&filter=model:in:a%7Cb&from=2026-12-01T00:00:00%2B05:30",
		"from=2026-12-01T00:00:00.0000001Z&to=2026-12-02T00:00:00Z", "to=-5", "from=9223372036854775807",
		"format=csv", "limit=3", "node_id=0", "from=1&from=2", "filter=name:eq:%00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, format, err := herd.ParseExportQuery(v, exportNow)
		if err != nil {
			switch code := herd.ErrorCode(err); code {
			case herd.EINVALID, herd.EINVALIDFILTER:
			default:
				t.Fatalf("%q: error code %s", raw, code)
			}
			return
		}
		if format != herd.ExportNDJSON {
			t.Fatalf("%q: format %q", raw, format)
		}
		if !q.From.Before(q.To) {
			t.Fatalf("%q: from %s not before to %s", raw, q.From, q.To)
		}
		if q.TenantID < 0 || q.NodeID < 0 {
			t.Fatalf("%q: ids %d %d", raw, q.TenantID, q.NodeID)
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
		// The client's encoding of what was accepted reads back the same.
		again, _, err := herd.ParseExportQuery(q.Values(format), exportNow)
		if err != nil {
			t.Fatalf("%q accepted, its encoding %q refused: %v", raw, q.Values(format).Encode(), err)
		}
		assertExportEqual(t, again, q)
	})
}
