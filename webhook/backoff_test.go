package webhook

import (
	"testing"
	"time"
)

// TestBackoff: every wait lies between zero and its ceiling, the ceiling
// doubles from RetryBase up to RetryCap, and no number of failures, however
// large, overflows (a shift past 62 bits would panic in the draw).
func TestBackoff(t *testing.T) {
	d := NewDispatcher(nil)
	for failed := 1; failed <= 200; failed++ {
		ceiling := d.RetryCap
		if failed <= 10 {
			ceiling = min(d.RetryBase<<(failed-1), d.RetryCap)
		}
		for range 50 {
			if w := d.backoff(failed); w < 0 || w > ceiling {
				t.Fatalf("after %d failures waited %s, want 0 to %s", failed, w, ceiling)
			}
		}
	}
	if got := d.RetryBase << 9; got < d.RetryCap {
		t.Fatalf("ceiling after 10 failures %s, below the cap %s: the table in docs/delivery.md is off", got, time.Hour)
	}
}
