package statecache

import (
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/herd-iot/herd"
)

// SummaryQuery is the latest-state summary of a scope as the cache answers
// it: per group, the count of the matching devices and, per field, how many
// hold a value and their sum, min and max.
type SummaryQuery struct {
	// Paths are the covering paths of the scope, as in Query.
	Paths   []string
	Filters []herd.DeviceFilter
	// GroupBy is "" (one group), "status", "model", "firmware", "online"
	// (keys "true" and "false") or "path": each device's node path, which
	// the store folds into the groups of group_by=node as it folds the
	// database's per-path rows.
	GroupBy string
	// Fields are numeric projection fields (herd.NumericReadingFields).
	Fields []string
}

// FieldAcc is one field over one group: Count values, their Sum, Min and
// Max (zero while Count is).
type FieldAcc struct {
	Count         int64
	Sum, Min, Max float64
}

// Add folds a value in.
func (a *FieldAcc) Add(v float64) {
	if a.Count == 0 || v < a.Min {
		a.Min = v
	}
	if a.Count == 0 || v > a.Max {
		a.Max = v
	}
	a.Count++
	a.Sum += v
}

// Merge folds another accumulation of the same field in.
func (a *FieldAcc) Merge(b FieldAcc) {
	if b.Count == 0 {
		return
	}
	if a.Count == 0 {
		*a = b
		return
	}
	a.Count += b.Count
	a.Sum += b.Sum
	a.Min, a.Max = math.Min(a.Min, b.Min), math.Max(a.Max, b.Max)
}

// SummaryPart is one group of a summary: its key, its device count and
// one FieldAcc per field of the query, in its order.
type SummaryPart struct {
	Key    string
	Count  int64
	Fields []FieldAcc
}

// summaryField reads one numeric field of a slot as a float64: the float
// columns directly, the integer ones converted (as the database's
// CAST(... AS DOUBLE PRECISION) does).
type summaryField struct {
	f    []float64
	i    []int64
	null []bool
}

// Summarize answers the summary: the groups with at least one matching
// device, in no particular order. ok is false when a filter holds a value
// whose type does not match its field, or a name is not one it knows (only
// a query built in code can): the store then answers from the database.
func (c *Cache) Summarize(q SummaryQuery) (parts []SummaryPart, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()

	var scope []int32
	for i, p := range c.paths {
		for _, s := range q.Paths {
			if strings.HasPrefix(p, s) {
				scope = append(scope, int32(i))
				break
			}
		}
	}
	preds := make([]batchPred, 0, len(q.Filters))
	for _, f := range q.Filters {
		p, ok := c.predicate(f)
		if !ok {
			return nil, false
		}
		preds = append(preds, p)
	}
	fields := make([]summaryField, len(q.Fields))
	for n, name := range q.Fields {
		ref, ok := columns[name]
		switch {
		case !ok || !herd.IsNumericReadingField(name):
			return nil, false
		case ref.kind == kindFloat:
			fields[n] = summaryField{f: c.floats[ref.idx].v, null: c.floats[ref.idx].null}
		case ref.kind == kindInt:
			fields[n] = summaryField{i: c.ints[ref.idx].v, null: c.ints[ref.idx].null}
		default:
			return nil, false
		}
	}
	// keyOf gives a slot's group key; a nil keyOf means the key is the
	// path's (or the one group's), the same for all of a path's slots.
	var keyOf func(i int32) string
	switch q.GroupBy {
	case "", "path":
	case "status", "model", "firmware":
		col := &c.str[columns[q.GroupBy].idx]
		keyOf = col.get
	case "online":
		keyOf = func(i int32) string {
			if c.online[i] {
				return "true"
			}
			return "false"
		}
	default:
		return nil, false
	}

	scan := func(scope []int32) map[string]*SummaryPart {
		groups := map[string]*SummaryPart{}
		group := func(key string) *SummaryPart {
			g := groups[key]
			if g == nil {
				// Keys read from the arenas are cloned: the answer outlives
				// the read lock.
				key = strings.Clone(key)
				g = &SummaryPart{Key: key, Fields: make([]FieldAcc, len(fields))}
				groups[key] = g
			}
			return g
		}
		var bufs [2][]int32
		for _, p := range scope {
			sel := c.members[p]
			for n, pred := range preds {
				bufs[n%2] = pred(sel, bufs[n%2][:0])
				sel = bufs[n%2]
			}
			if len(sel) == 0 {
				continue
			}
			if keyOf == nil {
				key := ""
				if q.GroupBy == "path" {
					key = c.paths[p]
				}
				g := group(key)
				g.Count += int64(len(sel))
				for n, f := range fields {
					acc := &g.Fields[n]
					for _, i := range sel {
						if !f.null[i] {
							if f.f != nil {
								acc.Add(f.f[i])
							} else {
								acc.Add(float64(f.i[i]))
							}
						}
					}
				}
				continue
			}
			// Runs of one key are common (a site's devices share a model
			// and firmware): the last group found is tried first.
			var last *SummaryPart
			for _, i := range sel {
				key := keyOf(i)
				if last == nil || last.Key != key {
					last = group(key)
				}
				last.Count++
				for n, f := range fields {
					if !f.null[i] {
						if f.f != nil {
							last.Fields[n].Add(f.f[i])
						} else {
							last.Fields[n].Add(float64(f.i[i]))
						}
					}
				}
			}
		}
		return groups
	}
	// A large scope is split between the processors as Query splits it.
	split := splitScope(scope, c.members, runtime.GOMAXPROCS(0))
	results := make([]map[string]*SummaryPart, len(split))
	var wg sync.WaitGroup
	for n := 1; n < len(split); n++ {
		wg.Go(func() { results[n] = scan(split[n]) })
	}
	results[0] = scan(split[0])
	wg.Wait()
	merged := results[0]
	for _, r := range results[1:] {
		for key, g := range r {
			m := merged[key]
			if m == nil {
				merged[key] = g
				continue
			}
			m.Count += g.Count
			for n := range m.Fields {
				m.Fields[n].Merge(g.Fields[n])
			}
		}
	}
	parts = make([]SummaryPart, 0, len(merged))
	for _, g := range merged {
		parts = append(parts, *g)
	}
	return parts, true
}
