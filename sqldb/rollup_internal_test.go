package sqldb

import (
	"testing"

	"github.com/herd-iot/herd"
)

// TestNumericValue: numericValue reads, for every numeric field, the value
// projectionFields gives for it.
func TestNumericValue(t *testing.T) {
	r := &herd.Reading{Has: ^herd.ReadingFields(0), Temperature: 1, Humidity: 2, Pressure: 3, Voltage: 4, Current: 5, Power: 6, Battery: 7, RSSI: 8, UptimeS: 9, ErrorCount: 10}
	for i, name := range herd.NumericReadingFields {
		got, ok := numericValue(r, i)
		var want float64
		switch v := projectionFields[i].value(r).(type) {
		case float64:
			want = v
		case int64:
			want = float64(v)
		}
		if !ok || got != want {
			t.Errorf("%s: %v %v, want %v", name, got, ok, want)
		}
		if _, ok := numericValue(&herd.Reading{}, i); ok {
			t.Errorf("%s: a value from a reading without it", name)
		}
	}
}

// TestRollupStats_RoundTrip: stats encode, decode and merge: two halves
// merged equal the whole, and a truncated encoding is refused.
func TestRollupStats_RoundTrip(t *testing.T) {
	var whole, a, b rollupStats
	for i := range 100 {
		v := float64(i) - 30.5
		whole.field(0).add(v)
		whole.field(9).add(float64(i))
		half := &a
		if i%2 == 1 {
			half = &b
		}
		half.field(0).add(v)
		half.field(9).add(float64(i))
	}
	merged, err := mergeStats(a.encode(nil), b.encode(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got rollupStats
	if err := got.mergeEncoded(merged); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 9} {
		g, w := got[i], whole[i]
		if g.n != w.n || g.sum != w.sum || g.min != w.min || g.max != w.max {
			t.Fatalf("field %d: %+v, want %+v", i, g, w)
		}
		gq, _ := g.sketch.GetValueAtQuantile(0.95)
		wq, _ := w.sketch.GetValueAtQuantile(0.95)
		if gq != wq {
			t.Fatalf("field %d p95 %v, want %v", i, gq, wq)
		}
	}
	if got[1] != nil {
		t.Fatal("a field no reading carried")
	}
	enc := whole.encode(nil)
	for _, n := range []int{2, 10, len(enc) - 1} {
		if err := got.mergeEncoded(enc[:n]); err == nil {
			t.Errorf("a truncated encoding (%d of %d bytes) merged", n, len(enc))
		}
	}
}

// FuzzRollupStats: no bytes make the stats decoder panic (a damaged row
// fails its read; the unit test above holds the round trip of what herd
// writes).
func FuzzRollupStats(f *testing.F) {
	var s rollupStats
	s.field(0).add(21.5)
	s.field(7).add(-60)
	f.Add(s.encode(nil))
	f.Add([]byte{1})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s rollupStats
		if err := s.mergeEncoded(b); err != nil {
			return
		}
		// Re-encoding what decoded must not panic either; sketches-go
		// accepts some garbage whose re-encoding it then refuses.
		var again rollupStats
		_ = again.mergeEncoded(s.encode(nil))
	})
}
