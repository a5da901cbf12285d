package herd_test

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

var readingsNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestParseReadingsQuery(t *testing.T) {
	t.Run("Defaults", func(t *testing.T) {
		q, err := herd.ParseReadingsQuery(url.Values{}, readingsNow)
		if err != nil {
			t.Fatal(err)
		}
		if !q.To.Equal(readingsNow) || !q.From.Equal(readingsNow.Add(-herd.DefaultHistoryRange)) {
			t.Errorf("range %s..%s", q.From, q.To)
		}
		if q.Limit != herd.DefaultReadingsLimit || q.Step != 0 || q.Agg != "" || q.Fields != nil {
			t.Errorf("got %+v", q)
		}
	})
	t.Run("Stepped", func(t *testing.T) {
		v, _ := url.ParseQuery("from=2026-12-01T00:00:00%2B05:30&to=2026-12-08T00:00:00Z&fields=temperature,extra.co2,temperature&step=1d")
		q, err := herd.ParseReadingsQuery(v, readingsNow)
		if err != nil {
			t.Fatal(err)
		}
		if q.Agg != herd.AggAvg || q.Step != 24*time.Hour || q.Limit != 0 {
			t.Errorf("got %+v", q)
		}
		if !reflect.DeepEqual(q.Fields, []string{"temperature", "extra.co2"}) {
			t.Errorf("fields %q", q.Fields)
		}
		if _, off := q.From.Zone(); off != 5*3600+1800 {
			t.Errorf("from lost its offset: %s", q.From)
		}
		if q.From.UnixMilli() != time.Date(2026, 11, 30, 18, 30, 0, 0, time.UTC).UnixMilli() {
			t.Errorf("from %s", q.From)
		}
	})
	t.Run("Millis", func(t *testing.T) {
		v := url.Values{"from": {"2026-12-01T00:00:00.0019Z"}, "to": {"2026-12-01T00:00:01.9999Z"}}
		q, err := herd.ParseReadingsQuery(v, readingsNow)
		if err != nil {
			t.Fatal(err)
		}
		if q.From.Nanosecond() != 1e6 || q.To.Nanosecond() != 999e6 {
			t.Errorf("got %s %s", q.From, q.To)
		}
		v = url.Values{"from": {"2026-12-01T00:00:00.0001Z"}, "to": {"2026-12-01T00:00:00.0009Z"}}
		if _, err := herd.ParseReadingsQuery(v, readingsNow); herd.ErrorCode(err) != herd.EINVALID {
			t.Errorf("a range within one millisecond: %v", err)
		}
	})
	for _, tc := range []struct {
		name, query, code, mention string
	}{
		{"UnknownParam", "offset=3", herd.EINVALID, `"offset"`},
		{"Repeated", "step=1h&step=1m", herd.EINVALID, `"step"`},
		{"UnknownField", "fields=temperature,colour", herd.EINVALID, `"colour"`},
		{"EmptyField", "fields=temperature,,battery", herd.EINVALID, "empty"},
		{"EmptyExtraKey", "fields=extra.", herd.EINVALID, "extra key"},
		{"QuotedExtraKey", "fields=extra.a%22b", herd.EINVALID, "extra key"},
		{"LongExtraKey", "fields=extra." + strings.Repeat("k", herd.MaxExtraKeyLen+1), herd.EINVALID, "extra key"},
		{"FromAfterTo", "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", herd.EINVALID, "from"},
		{"FromEqualsTo", "from=1000&to=1000", herd.EINVALID, "before"},
		{"BadFrom", "from=yesterday", herd.EINVALID, "from"},
		{"AggWithoutStep", "agg=max", herd.EINVALID, "agg"},
		{"BadAgg", "step=1h&agg=p95", herd.EINVALID, "agg"},
		{"BadStep", "step=1y", herd.EINVALID, "step"},
		{"StepTooSmall", "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&step=1m", herd.EINVALID, "limit of 10000"},
		{"TextStepped", "fields=status&step=1h", herd.EINVALID, "status"},
		{"LimitStepped", "step=1h&limit=10", herd.EINVALID, "limit"},
		{"CursorStepped", "step=1h&cursor=abc.def", herd.EINVALID, "cursor"},
		{"LimitZero", "limit=0", herd.EINVALIDLIMIT, "limit"},
		{"LimitTooLarge", "limit=10001", herd.EINVALIDLIMIT, "10000"},
		{"CursorAlphabet", "cursor=a%2Bb", herd.EINVALIDCURSOR, "cursor"},
		{"CursorLong", "cursor=" + strings.Repeat("a", 200), herd.EINVALIDCURSOR, "cursor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			_, err = herd.ParseReadingsQuery(v, readingsNow)
			if herd.ErrorCode(err) != tc.code || !strings.Contains(herd.ErrorMessage(err), tc.mention) {
				t.Fatalf("got %v (%s), want %s naming %s", err, herd.ErrorCode(err), tc.code, tc.mention)
			}
		})
	}
}

// sameReadingsQuery compares two queries, times by instant and offset.
func sameReadingsQuery(a, b herd.ReadingsQuery) bool {
	_, ao := a.From.Zone()
	_, bo := b.From.Zone()
	_, at := a.To.Zone()
	_, bt := b.To.Zone()
	if !a.From.Equal(b.From) || !a.To.Equal(b.To) || ao != bo || at != bt {
		return false
	}
	a.From, a.To, b.From, b.To = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func TestReadingsQuery_ValuesRoundTrip(t *testing.T) {
	ist := time.FixedZone("", 5*3600+1800)
	for _, q := range []herd.ReadingsQuery{
		{From: time.Date(2026, 11, 1, 0, 0, 0, 0, ist), To: time.Date(2026, 12, 1, 0, 0, 0, 0, ist), Step: 24 * time.Hour, Agg: herd.AggMax, Fields: []string{"battery", "extra.co2"}},
		{From: time.UnixMilli(1764547200123).UTC(), To: time.UnixMilli(1764633600000).UTC(), Limit: 10000, Cursor: herd.EncodeReadingsCursor(testKey, 7, 1764547200999)},
		{From: time.UnixMilli(0).UTC(), To: time.UnixMilli(1).UTC(), Limit: 1, Fields: []string{"status", "firmware", "rssi"}},
		{From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 1, 0, 0, 1, 0, time.UTC), Step: time.Second, Agg: herd.AggLast},
	} {
		got, err := herd.ParseReadingsQuery(q.Values(), readingsNow)
		if err != nil {
			t.Fatalf("%s: %v", q.Values().Encode(), err)
		}
		if !sameReadingsQuery(got, q) {
			t.Errorf("%s: read back %+v, want %+v", q.Values().Encode(), got, q)
		}
	}
}

func TestReadingsCursor(t *testing.T) {
	c := herd.EncodeReadingsCursor(testKey, 42, 1764547200123)
	ts, err := herd.DecodeReadingsCursor(testKey, 42, c)
	if err != nil || ts != 1764547200123 {
		t.Fatalf("got %d, %v", ts, err)
	}
	for name, s := range map[string]string{
		"OtherDevice": c,
		"OtherKey":    herd.EncodeReadingsCursor(herd.CursorKey("another key of 32 bytes.........."), 43, 1),
		"Edited":      strings.Replace(c, c[:2], "QQ", 1),
		"NoMAC":       strings.Split(c, ".")[0],
		"Empty":       "",
		"Garbage":     "abc.def",
	} {
		if _, err := herd.DecodeReadingsCursor(testKey, 43, s); herd.ErrorCode(err) != herd.EINVALIDCURSOR {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := herd.DecodeReadingsCursor(testKey, 42, "x"+c); herd.ErrorCode(err) != herd.EINVALIDCURSOR {
		t.Errorf("prefixed: got %v", err)
	}
}

func FuzzParseReadingsQuery(f *testing.F) {
	for _, s := range []string{
		"", "limit=50", "from=2026-12-01T00:00:00%2B05:30&step=1d&agg=sum",
		"fields=temperature,battery,extra.co2&limit=10000", "step=1m&agg=last&fields=rssi",
		"fields=status&step=1h", "agg=avg", "from=5&to=4", "step=0s", "limit=10001",
		"cursor=" + herd.EncodeReadingsCursor(testKey, 1, 2), "fields=extra.%00", "fields=,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := herd.ParseReadingsQuery(v, readingsNow)
		if err != nil {
			switch code := herd.ErrorCode(err); code {
			case herd.EINVALID, herd.EINVALIDLIMIT, herd.EINVALIDCURSOR:
			default:
				t.Fatalf("%q: error code %s", raw, code)
			}
			return
		}
		if !q.From.Before(q.To) || q.From.Nanosecond()%1e6 != 0 || q.To.Nanosecond()%1e6 != 0 {
			t.Fatalf("%q: range %s..%s", raw, q.From, q.To)
		}
		if len(q.Fields) > herd.MaxReadingsFields {
			t.Fatalf("%q: %d fields", raw, len(q.Fields))
		}
		seen := map[string]bool{}
		for _, name := range q.Fields {
			if seen[name] || herd.ParseReadingField(name) != nil {
				t.Fatalf("%q: field %q", raw, name)
			}
			seen[name] = true
			if q.Step != 0 && !herd.IsNumericReadingField(name) && !strings.HasPrefix(name, herd.ExtraFieldPrefix) {
				t.Fatalf("%q: stepped text field %q", raw, name)
			}
		}
		if q.Step == 0 {
			if q.Limit < 1 || q.Limit > herd.MaxReadingsLimit || q.Agg != "" {
				t.Fatalf("%q: raw query %+v", raw, q)
			}
		} else {
			if q.Limit != 0 || q.Cursor != "" || !herd.ValidDeviceAgg(q.Agg) {
				t.Fatalf("%q: stepped query %+v", raw, q)
			}
			if n := (q.To.Sub(q.From) + q.Step - 1) / q.Step; n > herd.MaxSeriesPoints {
				t.Fatalf("%q: %d steps", raw, n)
			}
		}
		again, err := herd.ParseReadingsQuery(q.Values(), readingsNow)
		if err != nil {
			t.Fatalf("%q accepted, its encoding %q refused: %v", raw, q.Values().Encode(), err)
		}
		if !sameReadingsQuery(again, q) {
			t.Fatalf("%q: got %+v, its encoding reads %+v", raw, q, again)
		}
	})
}
