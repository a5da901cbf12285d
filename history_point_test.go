package herd_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/herd-iot/herd"
)

// TestPoint_JSON: a point is [unix_ms, value]; a value past float64's range
// is null, read back as NaN, so an overflowing sum still makes an answer.
func TestPoint_JSON(t *testing.T) {
	b, err := json.Marshal([]herd.Point{{TS: 1764547200000, Value: 21.5}, {TS: 1, Value: math.Inf(1)}})
	if err != nil || string(b) != `[[1764547200000,21.5],[1,null]]` {
		t.Fatalf("%s, %v", b, err)
	}
	var ps []herd.Point
	if err := json.Unmarshal(b, &ps); err != nil {
		t.Fatal(err)
	}
	if ps[0] != (herd.Point{TS: 1764547200000, Value: 21.5}) || ps[1].TS != 1 || !math.IsNaN(ps[1].Value) {
		t.Fatalf("%+v", ps)
	}
	for _, bad := range []string{`[null,1]`, `["x",1]`, `[1,"y"]`, `{}`} {
		var p herd.Point
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("%s: read as %+v", bad, p)
		}
	}
}

// TestParseHistoryTime_Bounds: times from 1970 to the end of 9999 only.
func TestParseHistoryTime_Bounds(t *testing.T) {
	for _, s := range []string{"-1", "-9223372036854775808", "9223372036854775807", "253402300800000", "1969-12-31T23:59:59Z", "0000-01-01T00:00:00Z"} {
		if _, err := herd.ParseHistoryTime("from", s); herd.ErrorCode(err) != herd.EINVALID {
			t.Errorf("%s: %v, want invalid_request", s, err)
		}
	}
	for _, s := range []string{"0", "253402300799999", "2026-12-01T00:00:00+05:30"} {
		if _, err := herd.ParseHistoryTime("from", s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}
