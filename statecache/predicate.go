package statecache

import (
	"cmp"
	"slices"
	"sync"

	"github.com/herd-iot/herd"
)

// predicate compiles one filter with the engines' semantics: a comparison
// with NULL is never true, text compares bytewise, and a prefix is the same
// half-open range the SQL uses. ok is false when a value does not have the
// column's type.
func (c *Cache) predicate(f herd.DeviceFilter) (batchPred, bool) {
	if k, ok := herd.LabelKeyOf(f.Field); ok {
		return c.labelPredicate(k, f)
	}
	ref, ok := columns[f.Field]
	if !ok {
		return nil, false
	}
	switch ref.kind {
	case kindID, kindNodeID, kindInt:
		return compile(c.intColumn(ref), f, asType[int64])
	case kindFloat:
		return compile(c.floatColumn(ref), f, asType[float64])
	case kindPath, kindStr:
		if f.Op == herd.OpContains {
			return c.containsPredicate(ref, f)
		}
		col := c.textColumn(ref)
		if f.Op == herd.OpPrefix {
			lo, ok := f.Values[0].(string)
			if !ok {
				return nil, false
			}
			if hi, bounded := herd.PrefixUpperBound(lo); bounded {
				return rowPred(func(i int32) bool { v := col.get(i); return v >= lo && v < hi }), true
			}
			return rowPred(func(i int32) bool { return col.get(i) >= lo }), true
		}
		if ref.kind == kindStr && f.Op == herd.OpEq {
			if v, ok := f.Values[0].(string); ok {
				return c.str[ref.idx].eq(v), true
			}
		}
		return compile(col, f, asType[string])
	case kindBool:
		return compile(c.boolColumn(), f, func(v any) (int64, bool) {
			b, ok := v.(bool)
			return boolInt(b), ok
		})
	}
	return nil, false
}

func asType[T any](v any) (T, bool) {
	x, ok := v.(T)
	return x, ok
}

// batchPred appends to out the slots of in that a filter keeps.
type batchPred func(in, out []int32) []int32

// rowPred makes a batch predicate of a row predicate, for the columns that
// are not kept in a plain slice.
func rowPred(keep func(int32) bool) batchPred {
	return func(in, out []int32) []int32 {
		for _, i := range in {
			if keep(i) {
				out = append(out, i)
			}
		}
		return out
	}
}

func compile[T cmp.Ordered](col column[T], f herd.DeviceFilter, conv func(any) (T, bool)) (batchPred, bool) {
	vals := make([]T, len(f.Values))
	for n, v := range f.Values {
		x, ok := conv(v)
		if !ok {
			return nil, false
		}
		vals[n] = x
	}
	if len(vals) == 0 {
		return nil, false
	}
	if col.v != nil {
		nulls := col.nulls
		if nulls == nil {
			nulls = noNulls(len(col.v))
		}
		return compileSlice(col.v, nulls, f.Op, vals)
	}
	get, v := col.get, vals[0]
	var p func(int32) bool
	switch f.Op {
	case herd.OpEq:
		p = func(i int32) bool { return get(i) == v }
	case herd.OpNe:
		p = func(i int32) bool { return get(i) != v }
	case herd.OpLt:
		p = func(i int32) bool { return get(i) < v }
	case herd.OpLe:
		p = func(i int32) bool { return get(i) <= v }
	case herd.OpGt:
		p = func(i int32) bool { return get(i) > v }
	case herd.OpGe:
		p = func(i int32) bool { return get(i) >= v }
	case herd.OpIn:
		p = func(i int32) bool { return slices.Contains(vals, get(i)) }
	default:
		return nil, false
	}
	return rowPred(p), true
}

// noNulls returns n false values, shared: the NULL flags of a column that
// has none, so that every slice-kept column runs the same loops.
func noNulls(n int) []bool {
	noNullsMu.Lock()
	defer noNullsMu.Unlock()
	if len(noNullsBuf) < n {
		noNullsBuf = make([]bool, max(n, 2*len(noNullsBuf)))
	}
	return noNullsBuf[:n]
}

var (
	noNullsMu  sync.Mutex
	noNullsBuf []bool
)

// compileSlice is compile for a column kept in a slice: the scan's inner
// loops, one per operator, with nothing but the comparison inside.
func compileSlice[T cmp.Ordered](vs []T, nulls []bool, op string, vals []T) (batchPred, bool) {
	v := vals[0]
	nulls = nulls[:len(vs)]
	switch op {
	case herd.OpEq:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && vs[i] == v {
					out = append(out, i)
				}
			}
			return out
		}, true
	case herd.OpNe:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && vs[i] != v {
					out = append(out, i)
				}
			}
			return out
		}, true
	case herd.OpLt:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && vs[i] < v {
					out = append(out, i)
				}
			}
			return out
		}, true
	case herd.OpLe:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && vs[i] <= v {
					out = append(out, i)
				}
			}
			return out
		}, true
	case herd.OpGt:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && vs[i] > v {
					out = append(out, i)
				}
			}
			return out
		}, true
	case herd.OpGe:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && vs[i] >= v {
					out = append(out, i)
				}
			}
			return out
		}, true
	case herd.OpIn:
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !nulls[i] && slices.Contains(vals, vs[i]) {
					out = append(out, i)
				}
			}
			return out
		}, true
	}
	return nil, false
}
