package statecache

import (
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/herd-iot/herd"
)

// Query is a scoped device query as the cache answers it.
type Query struct {
	// Paths are the covering paths of the scope: a device is in scope when
	// its path starts with one of them.
	Paths   []string
	Filters []herd.DeviceFilter
	Sort    herd.DeviceSort
	After   *herd.DeviceCursor
	// Limit is the number of hits wanted, in sort order after After.
	Limit int
	// Search holds the words of q: a device matches when it matches every
	// one (see SearchWord).
	Search []SearchWord
}

// Hit is one device of a result and its sort key, from which the store
// makes the cursor when the database no longer holds the row.
type Hit struct {
	ID    int64
	Null  bool
	Value any
}

// Result is the answer to a Query.
type Result struct {
	Hits []Hit
	// Count is the number of devices in scope matching the filters, before
	// and after the cursor: exact, for the store to cap.
	Count int64
}

// Query returns up to q.Limit hits in sort order after q.After, and the count
// of all matches. ok is false when the query holds a value whose type does
// not match its field (only a query built in code can), an operator the
// cache does not implement on its field, or a label key or search the cache
// cannot answer exactly (see MaxLabelColumns): the store then answers it
// from the database.
func (c *Cache) Query(q Query) (res Result, ok bool) {
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
			return Result{}, false
		}
		preds = append(preds, p)
	}
	// The words after the filters: a word tests several columns a device,
	// a filter one.
	for _, w := range q.Search {
		p, ok := c.wordPredicate(w)
		if !ok {
			return Result{}, false
		}
		preds = append(preds, p)
	}
	key, ok := c.keyOf(q.Sort.Field, q.After)
	if k, isLabel := herd.LabelKeyOf(q.Sort.Field); isLabel {
		key, ok = c.labelKey(k, q.Sort.Desc, q.After)
	}
	if !ok {
		return Result{}, false
	}
	cmpRows := func(a, b int32) int { return key.cmp(a, b) }
	if q.Sort.Desc {
		cmpRows = func(a, b int32) int { return key.cmp(b, a) }
	}
	var after func(int32) bool
	if q.After != nil {
		cur := *q.After
		after = func(i int32) bool { return key.cmpCursor(i, cur) > 0 }
		if q.Sort.Desc {
			after = func(i int32) bool { return key.cmpCursor(i, cur) < 0 }
		}
	}

	scan := func(scope []int32) (top []int32, count int64) {
		// top holds the best q.Limit rows seen, as a max-heap by sort order:
		// its root is the worst kept row, the one a better row replaces.
		top = make([]int32, 0, q.Limit)
		var bufs [2][]int32
		for _, p := range scope {
			// Each filter narrows the path's slots to those it keeps, a
			// batch at a time: tight loops over typed slices, not a call
			// per row.
			sel := c.members[p]
			for n, pred := range preds {
				bufs[n%2] = pred(sel, bufs[n%2][:0])
				sel = bufs[n%2]
			}
			count += int64(len(sel))
			for _, i := range sel {
				if after != nil && !after(i) {
					continue
				}
				if len(top) < q.Limit {
					top = append(top, i)
					siftUp(top, len(top)-1, cmpRows)
				} else if q.Limit > 0 && cmpRows(i, top[0]) < 0 {
					top[0] = i
					siftDown(top, 0, cmpRows)
				}
			}
		}
		return top, count
	}
	// A large scope is split between the processors by device count and
	// the parts' best rows merged: the latency of one large query, not the
	// throughput of many, is what the cores are spent on here.
	parts := splitScope(scope, c.members, runtime.GOMAXPROCS(0))
	tops := make([][]int32, len(parts))
	counts := make([]int64, len(parts))
	var wg sync.WaitGroup
	for n := 1; n < len(parts); n++ {
		wg.Go(func() { tops[n], counts[n] = scan(parts[n]) })
	}
	tops[0], counts[0] = scan(parts[0])
	wg.Wait()
	top := tops[0]
	count := counts[0]
	for n := 1; n < len(parts); n++ {
		top = append(top, tops[n]...)
		count += counts[n]
	}
	slices.SortFunc(top, cmpRows)
	top = top[:min(len(top), q.Limit)]
	res = Result{Count: count, Hits: make([]Hit, len(top))}
	for n, i := range top {
		v, null := key.value(i)
		res.Hits[n] = Hit{ID: c.ids[i], Null: null, Value: v}
	}
	return res, true
}

// parallelFrom is the scope size from which a query is split between
// processors: below it a goroutine costs more than it saves.
const parallelFrom = 50000

// splitScope divides the scope's paths into up to n parts of about equal
// device counts.
func splitScope(scope []int32, members [][]int32, n int) [][]int32 {
	total := 0
	for _, p := range scope {
		total += len(members[p])
	}
	if n < 2 || total < parallelFrom {
		return [][]int32{scope}
	}
	parts := make([][]int32, 0, n)
	start, acc := 0, 0
	for i, p := range scope {
		acc += len(members[p])
		if acc >= total*(len(parts)+1)/n && len(parts) < n-1 {
			parts = append(parts, scope[start:i+1])
			start = i + 1
		}
	}
	return append(parts, scope[start:])
}

func siftUp(h []int32, i int, cmp func(a, b int32) int) {
	for i > 0 {
		p := (i - 1) / 2
		if cmp(h[i], h[p]) <= 0 {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func siftDown(h []int32, i int, cmp func(a, b int32) int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && cmp(h[r], h[l]) > 0 {
			m = r
		}
		if cmp(h[m], h[i]) <= 0 {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
