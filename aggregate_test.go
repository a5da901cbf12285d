package herd_test

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

var aggNow = time.Date(2026, 12, 3, 10, 30, 15, 0, time.UTC)

func TestParseAggregateQuery(t *testing.T) {
	for _, c := range []struct {
		query string
		code  string // "" when it parses
		part  string
	}{
		{"field=temperature", "", ""},
		{"field=temperature&agg=avg,p95,p99&step=15m&group_by=firmware&node_id=5&filter=model:eq:th-1", "", ""},
		{"field=rssi&from=1764547200000&to=2026-12-02T00:00:00%2B05:30", "", ""},
		{"", herd.EINVALID, "field is required"},
		{"field=status", herd.EINVALID, `"status"`},
		{"field=extra.x", herd.EINVALID, "extra.x"},
		{"field=temperature&agg=avg,avg", herd.EINVALID, "twice"},
		{"field=temperature&agg=last", herd.EINVALID, `"last"`},
		{"field=temperature&step=90s", herd.EINVALID, "whole minutes"},
		{"field=temperature&step=0m", herd.EINVALID, "step"},
		{"field=temperature&step=1m&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", herd.EINVALID, "more than the limit of 10000"},
		{"field=temperature&from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", herd.EINVALID, "before"},
		{"field=temperature&from=2026-12-02T00:00:00Z&to=2026-12-02T00:00:00Z", herd.EINVALID, "before"},
		{"field=temperature&to=soon", herd.EINVALID, "to"},
		{"field=temperature&group_by=status", herd.EINVALID, "group_by"},
		{"field=temperature&node_id=0", herd.EINVALID, "node_id"},
		{"field=temperature&tenant_id=x", herd.EINVALID, "tenant_id"},
		{"field=temperature&field=battery", herd.EINVALID, "given 2 times"},
		{"field=temperature&limit=5", herd.EINVALID, `"limit"`},
		{"field=temperature&filter=colour:eq:red", herd.EINVALIDFILTER, "colour"},
	} {
		v, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = herd.ParseAggregateQuery(v, aggNow)
		if c.code == "" {
			if err != nil {
				t.Errorf("%q: %v", c.query, err)
			}
			continue
		}
		if herd.ErrorCode(err) != c.code || !strings.Contains(herd.ErrorMessage(err), c.part) {
			t.Errorf("%q: %v; want %s naming %q", c.query, err, c.code, c.part)
		}
	}
}

// TestAggregateQuery_Normalize: the defaults are the 24 hours before now
// from a whole hour, avg, 1h; to rounds up to a whole minute.
func TestAggregateQuery_Normalize(t *testing.T) {
	q, err := herd.ParseAggregateQuery(url.Values{"field": {"battery"}}, aggNow)
	if err != nil {
		t.Fatal(err)
	}
	want := herd.AggregateQuery{Field: "battery", Aggs: []string{herd.AggAvg}, Step: time.Hour,
		From: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), To: time.Date(2026, 12, 3, 10, 31, 0, 0, time.UTC)}
	if !reflect.DeepEqual(q, want) {
		t.Fatalf("got %+v, want %+v", q, want)
	}
}

// TestAggregateQuery_RoundTrip: what Values writes, ParseAggregateQuery
// reads back as the same query.
func TestAggregateQuery_RoundTrip(t *testing.T) {
	from := time.Date(2026, 12, 1, 0, 0, 0, 0, time.FixedZone("", 5*3600+1800))
	for _, q := range []herd.AggregateQuery{
		{Field: "temperature", Aggs: []string{herd.AggAvg}, From: from, To: from.Add(24 * time.Hour), Step: 24 * time.Hour},
		{TenantID: 7, NodeID: 9, Field: "rssi", Aggs: []string{herd.AggP95, herd.AggCount}, From: from, To: from.Add(90 * time.Minute), Step: 5 * time.Minute, GroupBy: "node",
			Filters: []herd.DeviceFilter{{Field: "model", Op: herd.OpIn, Values: []any{"a", "b"}}, {Field: "battery", Op: herd.OpLt, Values: []any{20.5}}}},
	} {
		v, err := q.Values()
		if err != nil {
			t.Fatal(err)
		}
		got, err := herd.ParseAggregateQuery(v, aggNow)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		if !got.From.Equal(q.From) || !got.To.Equal(q.To) {
			t.Fatalf("range %s..%s, want %s..%s", got.From, got.To, q.From, q.To)
		}
		got.From, got.To = q.From, q.To
		if !reflect.DeepEqual(got, q) {
			t.Fatalf("got %+v\nwant %+v", got, q)
		}
	}
}

func FuzzParseAggregateQuery(f *testing.F) {
	for _, s := range []string{
		"field=temperature", "field=temperature&agg=p50,p95&step=5m&group_by=node", "field=battery&from=2026-12-01T00:00:00%2B05:30&to=2026-12-02T00:00:00Z&step=1d",
		"field=temperature&filter=model:eq:x&filter=node_id:in:1|2", "field=status", "field=temperature&step=1s", "field=temperature&from=9999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := herd.ParseAggregateQuery(v, aggNow)
		if err != nil {
			switch code := herd.ErrorCode(err); code {
			case herd.EINVALID, herd.EINVALIDFILTER:
			default:
				t.Fatalf("%q: error code %s", raw, code)
			}
			return
		}
		if !herd.IsNumericReadingField(q.Field) || len(q.Aggs) == 0 || q.Step < time.Minute || q.Step%time.Minute != 0 {
			t.Fatalf("%q: parsed %+v", raw, q)
		}
		if !q.From.Before(q.To) || q.From.UnixMilli()%60000 != 0 || q.To.UnixMilli()%60000 != 0 {
			t.Fatalf("%q: range %s..%s", raw, q.From, q.To)
		}
		if n := q.To.Sub(q.From) / q.Step; n > herd.MaxSeriesPoints {
			t.Fatalf("%q: %d steps", raw, n)
		}
		for _, a := range q.Aggs {
			if !slices.Contains(herd.AggregateFuncs, a) {
				t.Fatalf("%q: agg %q", raw, a)
			}
		}
		// What parses, encodes and parses again the same.
		v2, err := q.Values()
		if err != nil {
			t.Fatalf("%q: encode: %v", raw, err)
		}
		q2, err := herd.ParseAggregateQuery(v2, aggNow)
		if err != nil || !q2.From.Equal(q.From) || !q2.To.Equal(q.To) || q2.Field != q.Field || !slices.Equal(q2.Aggs, q.Aggs) || q2.Step != q.Step {
			t.Fatalf("%q: round trip %v → %+v, %v", raw, v2, q2, err)
		}
	})
}
