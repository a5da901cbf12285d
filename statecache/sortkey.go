package statecache

import (
	"cmp"

	"github.com/herd-iot/herd"
)

// sortKey orders rows by one column, NULLs first, then by id: the order of
// the store's keyset pages, ascending (descending pages reverse it whole).
type sortKey struct {
	cmp       func(a, b int32) int
	cmpCursor func(i int32, c herd.DeviceCursor) int
	value     func(i int32) (any, bool)
}

// nullFirst compares NULL-ness: NULL sorts before every value.
func nullFirst(an, bn bool) int {
	switch {
	case an == bn:
		return 0
	case an:
		return -1
	}
	return 1
}

// column is a typed view of one column: its value and NULL-ness by slot.
type column[T cmp.Ordered] struct {
	get  func(i int32) T
	null func(i int32) bool // nil: the column holds no NULLs
	// v and nulls are the column's slices when it is kept in one, for the
	// filters' inner loop.
	v     []T
	nulls []bool
}

func (col column[T]) isNull(i int32) bool { return col.null != nil && col.null(i) }

// key builds the sort key of a typed column. ok is false when the cursor
// value has another type than the column (a cursor is checked against its
// query's fingerprint, so only code could build one).
func key[T cmp.Ordered](c *Cache, col column[T]) sortKey {
	ids := c.ids
	return sortKey{
		cmp: func(a, b int32) int {
			an, bn := col.isNull(a), col.isNull(b)
			if r := nullFirst(an, bn); r != 0 {
				return r
			} else if !an {
				if r := cmp.Compare(col.get(a), col.get(b)); r != 0 {
					return r
				}
			}
			return cmp.Compare(ids[a], ids[b])
		},
		cmpCursor: func(i int32, cur herd.DeviceCursor) int {
			n := col.isNull(i)
			if r := nullFirst(n, cur.Null); r != 0 {
				return r
			} else if !n {
				if r := cmp.Compare(col.get(i), cur.Value.(T)); r != 0 {
					return r
				}
			}
			return cmp.Compare(ids[i], cur.ID)
		},
		value: func(i int32) (any, bool) {
			if col.isNull(i) {
				return nil, true
			}
			return col.get(i), false
		},
	}
}

// Column views by type. Booleans compare as 0 and 1, false first, as both
// engines order them.
func (c *Cache) intColumn(ref colRef) column[int64] {
	switch ref.kind {
	case kindID:
		return column[int64]{get: func(i int32) int64 { return c.ids[i] }, v: c.ids}
	case kindNodeID:
		return column[int64]{get: func(i int32) int64 { return c.pathNode[c.path[i]] }}
	}
	col := &c.ints[ref.idx]
	return column[int64]{get: func(i int32) int64 { return col.v[i] }, null: func(i int32) bool { return col.null[i] }, v: col.v, nulls: col.null}
}

func (c *Cache) floatColumn(ref colRef) column[float64] {
	col := &c.floats[ref.idx]
	return column[float64]{get: func(i int32) float64 { return col.v[i] }, null: func(i int32) bool { return col.null[i] }, v: col.v, nulls: col.null}
}

func (c *Cache) textColumn(ref colRef) column[string] {
	if ref.kind == kindPath {
		return column[string]{get: func(i int32) string { return c.paths[c.path[i]] }}
	}
	col := &c.str[ref.idx]
	return column[string]{get: col.get}
}

func (c *Cache) boolColumn() column[int64] {
	return column[int64]{get: func(i int32) int64 {
		if c.online[i] {
			return 1
		}
		return 0
	}}
}

// keyOf returns the sort key of a field; ok is false for a field or cursor
// the cache cannot compare.
func (c *Cache) keyOf(field string, after *herd.DeviceCursor) (sortKey, bool) {
	ref, ok := columns[field]
	if !ok {
		return sortKey{}, false
	}
	typed := func(v any) bool { return true }
	var k sortKey
	switch ref.kind {
	case kindID, kindNodeID, kindInt:
		k, typed = key(c, c.intColumn(ref)), isType[int64]
	case kindFloat:
		k, typed = key(c, c.floatColumn(ref)), isType[float64]
	case kindPath, kindStr:
		k, typed = key(c, c.textColumn(ref)), isType[string]
	case kindBool:
		b := key(c, c.boolColumn())
		// The cursor holds a bool; the column compares as 0 and 1.
		k = sortKey{
			cmp: b.cmp,
			cmpCursor: func(i int32, cur herd.DeviceCursor) int {
				if !cur.Null {
					cur.Value = boolInt(cur.Value.(bool))
				}
				return b.cmpCursor(i, cur)
			},
			value: func(i int32) (any, bool) { return c.online[i], false },
		}
		typed = isType[bool]
	}
	if after != nil && !after.Null && !typed(after.Value) {
		return sortKey{}, false
	}
	return k, true
}

func isType[T any](v any) bool {
	_, ok := v.(T)
	return ok
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
