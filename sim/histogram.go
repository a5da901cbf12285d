package sim

import (
	"math"
	"sync/atomic"
	"time"
)

// histogram records latencies in buckets 5% apart from 10 µs to about a
// minute: fixed memory however long the run, and quantiles within 5%.
type histogram struct {
	counts [bucketCount]atomic.Int64
	max    atomic.Int64
}

const (
	bucketBase  = 10 * time.Microsecond
	bucketGrow  = 1.05
	bucketCount = 330 // 10 µs × 1.05^330 ≈ 100 s
)

func (h *histogram) add(d time.Duration) {
	i := 0
	if d > bucketBase {
		i = int(math.Log(float64(d)/float64(bucketBase))/math.Log(bucketGrow)) + 1
	}
	h.counts[min(i, bucketCount-1)].Add(1)
	for {
		old := h.max.Load()
		if int64(d) <= old || h.max.CompareAndSwap(old, int64(d)) {
			break
		}
	}
}

// upper returns the upper bound of bucket i.
func upper(i int) time.Duration {
	return time.Duration(float64(bucketBase) * math.Pow(bucketGrow, float64(i)))
}

func (h *histogram) quantiles() (p50, p99, pmax time.Duration) {
	var counts [bucketCount]int64
	var total int64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0, 0, 0
	}
	q := func(p float64) time.Duration {
		rank := int64(math.Ceil(p * float64(total)))
		var seen int64
		for i, c := range counts {
			if seen += c; seen >= rank {
				return upper(i)
			}
		}
		return upper(bucketCount - 1)
	}
	return q(0.50), q(0.99), time.Duration(h.max.Load())
}
