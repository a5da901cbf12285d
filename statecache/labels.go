package statecache

import (
	"slices"
	"strings"

	"github.com/herd-iot/herd"
)

// Labels are kept a column per key, like the projection's text columns: a
// byte arena of values and a presence flag per slot, so that a label filter
// is the same tight loop over slices as any other and the cache stays
// pointer-free however many devices carry labels. A key costs every slot
// about nine bytes whether the device has it or not, which fits labels as
// operators use them: a few keys (ring, floor, customer) on many devices.

// MaxLabelColumns bounds the label keys a cache keeps columns for. A
// column costs every device of the tenant, so a tenant whose devices carry
// many distinct keys (a key per serial number, say) would otherwise cost
// keys × devices. Past the bound a key seen for the first time gets no
// column, and a query on a key without one is declined (Query's ok is
// false): the store answers it from the database, whose device_labels
// index costs one row per label. Columns are never dropped, so a key with
// a column has every device's value.
const MaxLabelColumns = 32

// labelCol is one label key's values by slot.
type labelCol struct {
	vals strCol
	fold foldCol // the values folded, where that differs (see search.go)
	has  []bool
}

// label returns the column of key k, or nil when no device has had it.
func (c *Cache) label(k string) *labelCol { return c.labels[k] }

// addSlotLabels extends every label column by one empty slot.
func (c *Cache) addSlotLabels() {
	for _, col := range c.labels {
		col.vals.set(int32(len(col.has)), "")
		col.fold.add()
		col.has = append(col.has, false)
	}
}

// setLabels makes slot i's labels the given ones, and reports whether a
// value the cache keeps changed (the slot's signature then has to).
func (c *Cache) setLabels(i int32, labels map[string]string) (changed bool) {
	for k, col := range c.labels {
		v, ok := labels[k]
		col.has[i] = ok
		if col.vals.get(i) != v {
			col.fold.set(i, len(col.has), v)
			changed = true
		}
		col.vals.set(i, v)
	}
	for k, v := range labels {
		if _, ok := c.labels[k]; ok {
			continue
		} else if len(c.labels) >= MaxLabelColumns {
			c.labelsOverflow = true
			continue
		}
		// A new key: a column as long as the others, empty but for i.
		col := &labelCol{has: make([]bool, len(c.ids))}
		for j := range int32(len(c.ids)) {
			col.vals.set(j, "")
		}
		col.vals.set(i, v)
		col.fold.set(i, len(col.has), v)
		col.has[i] = true
		c.labels[strings.Clone(k)] = col
		changed = true
	}
	return changed
}

// moveLabels copies slot from's labels to slot to and drops the last slot
// (delete's compaction: from is the last slot).
func (c *Cache) moveLabels(to, from int32) {
	for _, col := range c.labels {
		if to != from {
			col.has[to] = col.has[from]
			col.vals.set(to, col.vals.get(from))
		}
		col.has = col.has[:from]
		col.vals.removeLast()
		col.fold.remove(to)
	}
}

// labelBytes estimates the label columns' memory.
func (c *Cache) labelBytes() int64 {
	var n int64
	for k, col := range c.labels {
		n += int64(len(k)) + int64(len(col.has))*9 + int64(cap(col.vals.buf)) + col.fold.bytes()
	}
	return n
}

// labelPredicate compiles a filter on a label with the database's
// semantics (see herd.OpExists): eq, in and exists:true need the key, ne
// and exists:false also keep the devices without it.
func (c *Cache) labelPredicate(key string, f herd.DeviceFilter) (batchPred, bool) {
	col := c.label(key)
	if col == nil && c.labelsOverflow {
		return nil, false // the key may be on devices the cache keeps no column for
	}
	if f.Op == herd.OpContains {
		return labelContains(col, c.sig, f)
	}
	strs := make([]string, len(f.Values))
	for n, v := range f.Values {
		switch x := v.(type) {
		case string:
			strs[n] = x
		case bool:
			if f.Op != herd.OpExists {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	if f.Op == herd.OpExists {
		want, ok := f.Values[0].(bool)
		if !ok {
			return nil, false
		}
		return rowPred(func(i int32) bool { return (col != nil && col.has[i]) == want }), true
	}
	if col == nil {
		// No device has the key: only ne keeps anything (every device).
		return rowPred(func(int32) bool { return f.Op == herd.OpNe }), true
	}
	switch f.Op {
	case herd.OpEq:
		return rowPred(func(i int32) bool { return col.has[i] && col.vals.get(i) == strs[0] }), true
	case herd.OpIn:
		return rowPred(func(i int32) bool { return col.has[i] && slices.Contains(strs, col.vals.get(i)) }), true
	case herd.OpNe:
		return rowPred(func(i int32) bool { return !col.has[i] || col.vals.get(i) != strs[0] }), true
	}
	return nil, false
}

// labelKey is the sort key of a label: by value, the devices without the
// key after those with it in either direction. Query reverses the key whole
// for a descending sort, so for one the devices without the key are put
// first here, to come last once reversed. ok is false for a cursor whose
// value is not text.
func (c *Cache) labelKey(key string, desc bool, after *herd.DeviceCursor) (sortKey, bool) {
	if after != nil && !after.Null {
		if _, ok := after.Value.(string); !ok {
			return sortKey{}, false
		}
	}
	col := c.label(key)
	if col == nil && c.labelsOverflow {
		return sortKey{}, false
	}
	has := func(i int32) bool { return col != nil && col.has[i] }
	ids := c.ids
	// missing orders "has the key" against "has not": -1 puts a first.
	missing := func(ah, bh bool) int {
		switch {
		case ah == bh:
			return 0
		case ah != desc:
			return -1
		}
		return 1
	}
	return sortKey{
		cmp: func(a, b int32) int {
			ah, bh := has(a), has(b)
			if r := missing(ah, bh); r != 0 {
				return r
			} else if ah {
				if r := strings.Compare(col.vals.get(a), col.vals.get(b)); r != 0 {
					return r
				}
			}
			return cmpInt(ids[a], ids[b])
		},
		cmpCursor: func(i int32, cur herd.DeviceCursor) int {
			h := has(i)
			if r := missing(h, !cur.Null); r != 0 {
				return r
			} else if h {
				if r := strings.Compare(col.vals.get(i), cur.Value.(string)); r != 0 {
					return r
				}
			}
			return cmpInt(ids[i], cur.ID)
		},
		value: func(i int32) (any, bool) {
			if !has(i) {
				return nil, true
			}
			return strings.Clone(col.vals.get(i)), false
		},
	}, true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
