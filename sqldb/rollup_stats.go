package sqldb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// The stats of a rollup row: for each numeric field its readings carried,
// their count, sum, min and max and a DDSketch of their values, in one
// value, so that a batch writes one row per node and bucket whatever the
// fields. The encoding:
//
//	version byte (1)
//	per field, in herd.NumericReadingFields order:
//	  field index byte, n uvarint, sum, min, max (float64 bits, little
//	  endian), sketch length uvarint, sketch (DDSketch encoding, the
//	  index mapping left out: it is sketchMapping)
//
// Two encodings merge into one by decoding both; a reader of one field
// skips the others by their lengths.

// SketchRelativeAccuracy is the DDSketch's guarantee: a quantile it returns
// is within this fraction of a value between the readings around its rank.
const SketchRelativeAccuracy = 0.01

// sketchMaxBins bounds a sketch's bins per sign. At 1% accuracy 2,048 bins
// span values over a ratio of about 10^17, so no reading collapses in
// practice; the bound keeps a pathological field from growing rows.
const sketchMaxBins = 2048

const statsVersion = 1

// sketchMapping is the index mapping of every stored sketch. It is left out
// of the encoding, so changing it means re-encoding every rollup.
var sketchMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(SketchRelativeAccuracy)
	if err != nil {
		panic(err)
	}
	return m
}()

func newSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(sketchMapping,
		store.NewCollapsingLowestDenseStore(sketchMaxBins), store.NewCollapsingLowestDenseStore(sketchMaxBins))
}

// fieldStats is one field's figures in a rollup.
type fieldStats struct {
	n             int64
	sum, min, max float64
	sketch        *ddsketch.DDSketch // nil when not wanted (a reader of n, sum, min, max)
}

func (f *fieldStats) add(v float64) {
	if f.n == 0 || v < f.min {
		f.min = v
	}
	if f.n == 0 || v > f.max {
		f.max = v
	}
	f.n++
	f.sum += v
	if f.sketch != nil {
		// Readings are finite (ParseTelemetry refuses anything else); the
		// mapping refuses only magnitudes within 2% of float64's largest
		// (about 1.76e308), which then count in n, sum, min and max but
		// not in the quantiles.
		_ = f.sketch.Add(v)
	}
}

// merge adds another's figures; its sketch, encoded, when sk is not nil.
func (f *fieldStats) merge(n int64, sum, lo, hi float64, sk []byte) error {
	if n == 0 {
		return nil
	}
	if f.n == 0 || lo < f.min {
		f.min = lo
	}
	if f.n == 0 || hi > f.max {
		f.max = hi
	}
	f.n += n
	f.sum += sum
	if f.sketch != nil && len(sk) > 0 {
		return decodeSketch(f.sketch, sk)
	}
	return nil
}

// decodeSketch merges an encoded sketch into s. sketches-go can panic on
// bytes it did not write (an index far outside its store's range, found by
// FuzzRollupStats); stats come from herd alone, so only a damaged row
// could hold such bytes, and it must fail the read, not the process (the
// SQLite merge runs inside the ingest's statement).
func decodeSketch(s *ddsketch.DDSketch, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decode rollup sketch: %w: %v", errBadStats, r)
		}
	}()
	if err := s.DecodeAndMergeWith(b); err != nil {
		return fmt.Errorf("decode rollup sketch: %w", err)
	}
	return nil
}

// rollupStats is a rollup row's stats, by index in herd.NumericReadingFields.
type rollupStats [numericFields]*fieldStats

// numericFields is len(herd.NumericReadingFields), checked at init.
const numericFields = 10

// field returns the stats of field i, made when absent.
func (s *rollupStats) field(i int) *fieldStats {
	if s[i] == nil {
		s[i] = &fieldStats{sketch: newSketch()}
	}
	return s[i]
}

var errBadStats = errors.New("rollup stats: bad encoding")

// eachField calls fn for every field of an encoding, with its sketch still
// encoded (a slice of b).
func eachField(b []byte, fn func(i int, n int64, sum, lo, hi float64, sk []byte) error) error {
	if len(b) == 0 {
		return nil
	}
	if b[0] != statsVersion {
		return fmt.Errorf("rollup stats: version %d unknown", b[0])
	}
	b = b[1:]
	for len(b) > 0 {
		i := int(b[0])
		n, k := binary.Uvarint(b[1:])
		if i >= numericFields || k <= 0 || len(b) < 1+k+24 {
			return errBadStats
		}
		b = b[1+k:]
		sum := math.Float64frombits(binary.LittleEndian.Uint64(b))
		lo := math.Float64frombits(binary.LittleEndian.Uint64(b[8:]))
		hi := math.Float64frombits(binary.LittleEndian.Uint64(b[16:]))
		b = b[24:]
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return errBadStats
		}
		sk := b[k : k+int(l)]
		b = b[k+int(l):]
		if err := fn(i, int64(n), sum, lo, hi, sk); err != nil {
			return err
		}
	}
	return nil
}

// maxFieldSections returns the most sections an encoding holds of one
// field (several on PostgreSQL, where batches append theirs), reading
// only their headers.
func maxFieldSections(b []byte) (int, error) {
	var n [numericFields]int
	most := 0
	err := eachField(b, func(i int, _ int64, _, _, _ float64, _ []byte) error {
		n[i]++
		most = max(most, n[i])
		return nil
	})
	return most, err
}

// mergeEncoded merges an encoding into s.
func (s *rollupStats) mergeEncoded(b []byte) error {
	return eachField(b, func(i int, n int64, sum, lo, hi float64, sk []byte) error {
		return s.field(i).merge(n, sum, lo, hi, sk)
	})
}

// encode appends s's encoding to b.
func (s *rollupStats) encode(b []byte) []byte {
	b = append(b, statsVersion)
	var sk []byte
	for i, f := range s {
		if f == nil || f.n == 0 {
			continue
		}
		b = append(b, byte(i))
		b = binary.AppendUvarint(b, uint64(f.n))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.sum))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.min))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.max))
		sk = sk[:0]
		f.sketch.Encode(&sk, true)
		b = binary.AppendUvarint(b, uint64(len(sk)))
		b = append(b, sk...)
	}
	return b
}

// mergeStats merges encodings into one: herd_rollup_merge's body.
func mergeStats(encs ...[]byte) ([]byte, error) {
	var s rollupStats
	for _, b := range encs {
		if err := s.mergeEncoded(b); err != nil {
			return nil, err
		}
	}
	return s.encode(nil), nil
}
