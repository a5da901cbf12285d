package sqldb

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// Per-device rollups (migration 0019): for each device and quarter hour,
// per numeric field, the count, sum, min, max and newest value of its
// readings, so that one device's stepped read over 30 days is 2,880 rows
// and not 259,200 readings. Ingest does not write them: it would be a row
// per device per batch, as many rows again as readings when each device
// has one reading in a commit. A background refresh (device_rollup_refresh.go)
// computes each bucket from the readings once it is GraceDeviceRollups
// old, and ingest records the buckets a late reading changes
// (device_rollup_stale), which reads take from the readings until the
// refresh computes them again. The argument that no committed reading is
// missed is at staleAfter.

// DeviceRollupBucket is the width of a per-device rollup, in milliseconds:
// a quarter hour, so that a step from a local midnight of any time zone in
// use (+05:30, +05:45) is made of whole buckets.
const DeviceRollupBucket = int64(15 * time.Minute / time.Millisecond)

// Timing of the refresh and of ingest, which together make sure a bucket's
// rollup never misses a committed reading:
//
//   - the refresh computes a bucket once its end is GraceDeviceRollups
//     behind the clock, reading what is committed then (time M);
//   - ingest refuses to commit a batch whose transaction began (time N)
//     more than MaxIngestDuration ago;
//   - ingest records as stale the bucket of every reading it inserts whose
//     bucket ended more than staleAfter before N.
//
// A reading the refresh did not see committed after M, so N > M -
// MaxIngestDuration - S, where S is how long the commit itself took after
// the check; its bucket ended at most at M - GraceDeviceRollups, so more
// than GraceDeviceRollups - MaxIngestDuration - S before N; with S under
// staleSlack that is more than staleAfter, and ingest marked it. When
// several processes ingest and refresh, the skew of their clocks adds to
// S: the commit's time and the skew together must stay under staleSlack.
// The duration check reads the monotonic clock as well as the wall clock,
// so a step of the wall clock does not hide a long transaction.
const (
	GraceDeviceRollups = 10 * time.Minute
	MaxIngestDuration  = time.Minute
	staleSlack         = 4 * time.Minute
	staleAfter         = GraceDeviceRollups - MaxIngestDuration - staleSlack
)

// deviceField is one field's figures in a per-device rollup.
type deviceField struct {
	n             int64
	sum, min, max float64
	lastTS        int64
	last          float64
}

func (f *deviceField) add(ts int64, v float64) {
	f.merge(deviceField{n: 1, sum: v, min: v, max: v, lastTS: ts, last: v})
}

func (f *deviceField) merge(o deviceField) {
	if o.n == 0 {
		return
	}
	if f.n == 0 {
		*f = o
		return
	}
	f.n += o.n
	f.sum += o.sum
	f.min, f.max = min(f.min, o.min), max(f.max, o.max)
	if o.lastTS > f.lastTS {
		f.lastTS, f.last = o.lastTS, o.last
	}
}

// value is the field's figure for a device aggregate (herd.ValidDeviceAgg).
func (f *deviceField) value(agg string) float64 {
	switch agg {
	case herd.AggAvg:
		return f.sum / float64(f.n)
	case herd.AggMin:
		return f.min
	case herd.AggMax:
		return f.max
	case herd.AggSum:
		return f.sum
	case herd.AggCount:
		return float64(f.n)
	default: // herd.AggLast
		return f.last
	}
}

// deviceStats is a per-device rollup's stats, by index in
// herd.NumericReadingFields.
type deviceStats [numericFields]deviceField

// The encoding of deviceStats:
//
//	version byte (1)
//	per field with readings, in index order: field index byte, n uvarint,
//	  sum, min, max (float64 bits, little endian), last ts varint, last
//	  (float64 bits)
const deviceStatsVersion = 1

func (s *deviceStats) encode(b []byte) []byte {
	b = append(b, deviceStatsVersion)
	for i := range s {
		f := &s[i]
		if f.n == 0 {
			continue
		}
		b = append(b, byte(i))
		b = binary.AppendUvarint(b, uint64(f.n))
		for _, v := range [...]float64{f.sum, f.min, f.max} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		b = binary.AppendVarint(b, f.lastTS)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.last))
	}
	return b
}

// decodeDeviceStats reads an encoding into s (which it clears first).
func decodeDeviceStats(s *deviceStats, b []byte) error {
	*s = deviceStats{}
	if len(b) == 0 || b[0] != deviceStatsVersion {
		return errBadDeviceStats
	}
	b = b[1:]
	for len(b) > 0 {
		i := int(b[0])
		n, k := binary.Uvarint(b[1:])
		if i >= numericFields || k <= 0 || n == 0 || len(b) < 1+k+24 {
			return errBadDeviceStats
		}
		b = b[1+k:]
		f := deviceField{n: int64(n)}
		f.sum = math.Float64frombits(binary.LittleEndian.Uint64(b))
		f.min = math.Float64frombits(binary.LittleEndian.Uint64(b[8:]))
		f.max = math.Float64frombits(binary.LittleEndian.Uint64(b[16:]))
		b = b[24:]
		ts, k := binary.Varint(b)
		if k <= 0 || len(b) < k+8 {
			return errBadDeviceStats
		}
		f.lastTS = ts
		f.last = math.Float64frombits(binary.LittleEndian.Uint64(b[k:]))
		b = b[k+8:]
		s[i].merge(f)
	}
	return nil
}

var errBadDeviceStats = errors.New("device rollup stats: bad encoding")

// staleBucket is a per-device rollup a late reading changed.
type staleBucket struct{ deviceID, bucket, tenantID, seq int64 }

// markStaleDeviceRollups records the buckets of the inserted readings that
// the refresh may already have computed (see staleAfter), in the batch's
// transaction: a reading is stored and its bucket marked, or neither.
//
// It marks with --rollups off too: the rollups the refresh computed before
// would otherwise miss the late readings of that time for good.
func (tx *Tx) markStaleDeviceRollups(ctx context.Context, items []herd.IngestItem, inserted []int) error {
	cut := tx.now.Add(-staleAfter).UnixMilli()
	var stale []staleBucket
	for _, i := range inserted {
		it := &items[i]
		b := floorDiv(it.Reading.TS, DeviceRollupBucket) * DeviceRollupBucket
		if b+DeviceRollupBucket <= cut {
			stale = append(stale, staleBucket{deviceID: it.DeviceID, bucket: b, tenantID: it.TenantID})
		}
	}
	if len(stale) == 0 {
		return nil
	}
	// In key order, once each: two PostgreSQL transactions marking the
	// same buckets lock them in the same order.
	slices.SortFunc(stale, func(a, b staleBucket) int {
		return cmp.Or(cmp.Compare(a.deviceID, b.deviceID), cmp.Compare(a.bucket, b.bucket))
	})
	stale = slices.CompactFunc(stale, func(a, b staleBucket) bool { return a.deviceID == b.deviceID && a.bucket == b.bucket })
	per := herd.MaxQueryParams / 3
	for len(stale) > 0 {
		chunk := stale[:min(per, len(stale))]
		stale = stale[len(chunk):]
		// A mark already there counts one more (seq): the refresh, which
		// may be computing the bucket from readings read before this
		// one, then leaves it (refreshStale).
		q := tx.memoText("stale/"+strconv.Itoa(len(chunk)), func() string {
			return `INSERT INTO device_rollup_stale (device_id, bucket, tenant_id) VALUES ` +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?),", len(chunk)), ",") +
				` ON CONFLICT (device_id, bucket) DO UPDATE SET seq = device_rollup_stale.seq + 1`
		})
		args := make([]any, 0, 3*len(chunk))
		for _, s := range chunk {
			args = append(args, s.deviceID, s.bucket, s.tenantID)
		}
		if _, err := tx.execCached(ctx, q, args...); err != nil {
			return fmt.Errorf("mark device rollups stale: %w", err)
		}
	}
	return nil
}

// checkIngestDuration refuses to commit a batch whose transaction began
// more than MaxIngestDuration ago (staleAfter's argument needs it); the
// gateway sends the batch again, and its readings are stored once.
func (tx *Tx) checkIngestDuration() error {
	took := tx.db.Now().Sub(tx.now)
	if !tx.began.IsZero() {
		took = max(took, time.Since(tx.began))
	}
	if took > MaxIngestDuration {
		return fmt.Errorf("ingest transaction took %s, more than %s: not committed, to be sent again", took.Round(time.Millisecond), MaxIngestDuration)
	}
	return nil
}
