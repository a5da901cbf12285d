package testutil

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/herd-iot/herd"
)

// The brute-force oracle of the scoped device query, which the store's and
// the state cache's tests check their answers against.

// CompareValues orders two non-NULL values of one field as SQL does with
// byte-ordered text: strings by bytes, false before true.
func CompareValues(a, b any) int {
	switch x := a.(type) {
	case string:
		return strings.Compare(x, b.(string))
	case int64:
		return cmp.Compare(x, b.(int64))
	case float64:
		return cmp.Compare(x, b.(float64))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	}
	panic(fmt.Sprintf("compareValues %T", a))
}

// Matches is the oracle of one filter: SQL semantics, so any comparison
// with NULL is false, ne included.
func Matches(d *herd.Device, f herd.DeviceFilter) bool {
	if f.Op == herd.OpContains {
		return d.MatchesContains(f.Field, f.Values[0].(string))
	}
	if k, ok := herd.LabelKeyOf(f.Field); ok {
		return matchesLabel(d, k, f)
	}
	v, null := d.FieldValue(f.Field)
	if null {
		return false
	}
	c := func() int { return CompareValues(v, f.Values[0]) }
	switch f.Op {
	case herd.OpEq:
		return c() == 0
	case herd.OpNe:
		return c() != 0
	case herd.OpLt:
		return c() < 0
	case herd.OpLe:
		return c() <= 0
	case herd.OpGt:
		return c() > 0
	case herd.OpGe:
		return c() >= 0
	case herd.OpIn:
		for _, x := range f.Values {
			if CompareValues(v, x) == 0 {
				return true
			}
		}
		return false
	case herd.OpPrefix:
		return strings.HasPrefix(v.(string), f.Values[0].(string))
	}
	panic("op " + f.Op)
}

// CompareDevices is the oracle's order: NULLs first ascending and last
// descending, ties by id in the same direction; on a label, the devices
// without it last in either direction.
func CompareDevices(a, b *herd.Device, s herd.DeviceSort) int {
	va, na := a.FieldValue(s.Field)
	vb, nb := b.FieldValue(s.Field)
	if _, ok := herd.LabelKeyOf(s.Field); ok && na != nb {
		// Devices without the label come last, whatever the direction.
		if na {
			return 1
		}
		return -1
	}
	c := 0
	switch {
	case na && nb:
	case na:
		c = -1
	case nb:
		c = 1
	default:
		c = CompareValues(va, vb)
	}
	if c == 0 {
		c = cmp.Compare(a.ID, b.ID)
	}
	if s.Desc {
		c = -c
	}
	return c
}

// matchesLabel is Matches for a label filter: eq and in need the key with
// that value, ne keeps a device without the key, exists says whether it
// has the key.
func matchesLabel(d *herd.Device, key string, f herd.DeviceFilter) bool {
	v, has := d.Labels[key]
	switch f.Op {
	case herd.OpEq:
		return has && v == f.Values[0]
	case herd.OpNe:
		return !has || v != f.Values[0]
	case herd.OpIn:
		return has && slices.Contains(f.Values, any(v))
	case herd.OpExists:
		return has == f.Values[0]
	}
	panic("label op " + f.Op)
}
