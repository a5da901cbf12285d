// Package statecache holds an in-memory, columnar copy of a tenant's device
// projection, so that a scoped query whose filters no index serves can be
// answered by scanning memory instead of fetching rows.
//
// A filter such as temperature > 30 AND battery < 20 over a 200,000-device
// scope has to test every device in the scope to count the matches, and to
// walk thousands of them to fill one page. From the database that is one row
// fetch per device tested; from typed arrays here it is a few nanoseconds.
// The cache answers with one page of device ids and the count; the store then
// reads those rows, re-applying scope and filters, so a cache that lags the
// database can drop a row from a page but never show one the caller may not
// see. (The background note's "the most selective store drives and returns
// one page of ids; a small IN is fine".)
//
// The values are pointer-free: strings live in byte arenas and rows are
// found through a map[int64]int32, so a million cached devices add nothing
// for the garbage collector to trace.
package statecache

import (
	"cmp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/herd-iot/herd"
)

// Text columns, by position in Cache.str.
const (
	colKey = iota
	colName
	colModel
	colFirmware
	colStatus
	nStr
)

// Integer columns (times as unix milliseconds), by position in Cache.ints.
const (
	colLastSeen = iota
	colRSSI
	colUptime
	colErrorCount
	colConfigVersion
	colCreatedAt
	nInt
)

// Float columns, by position in Cache.floats.
const (
	colTemperature = iota
	colHumidity
	colPressure
	colVoltage
	colCurrent
	colPower
	colBattery
	nFloat
)

type colKind int

const (
	kindID colKind = iota
	kindNodeID
	kindPath
	kindStr
	kindInt
	kindFloat
	kindBool
)

type colRef struct {
	kind colKind
	idx  int
}

// columns maps every herd.DeviceFields name to where the cache keeps it.
var columns = map[string]colRef{
	"id": {kindID, 0}, "node_id": {kindNodeID, 0}, "path": {kindPath, 0},
	"key": {kindStr, colKey}, "name": {kindStr, colName}, "model": {kindStr, colModel},
	"firmware": {kindStr, colFirmware}, "status": {kindStr, colStatus},
	"online": {kindBool, 0}, "last_seen": {kindInt, colLastSeen},
	"temperature": {kindFloat, colTemperature}, "humidity": {kindFloat, colHumidity},
	"pressure": {kindFloat, colPressure}, "voltage": {kindFloat, colVoltage},
	"current": {kindFloat, colCurrent}, "power": {kindFloat, colPower},
	"battery": {kindFloat, colBattery}, "rssi": {kindInt, colRSSI},
	"uptime_s": {kindInt, colUptime}, "error_count": {kindInt, colErrorCount},
	"config_version": {kindInt, colConfigVersion}, "created_at": {kindInt, colCreatedAt},
}

// strCol is a text column: values are slices of one byte arena. An update
// appends the new value and leaves the old bytes as garbage until the arena
// is compacted.
type strCol struct {
	buf     []byte
	off     []uint32
	n       []uint32
	garbage int
}

func (c *strCol) get(i int32) string {
	n := c.n[i]
	if n == 0 {
		return ""
	}
	return unsafe.String(&c.buf[c.off[i]], int(n))
}

func (c *strCol) set(i int32, s string) {
	if int(i) < len(c.off) {
		if c.get(i) == s {
			return
		}
		c.garbage += int(c.n[i])
		c.off[i], c.n[i] = uint32(len(c.buf)), uint32(len(s))
	} else {
		c.off = append(c.off, uint32(len(c.buf)))
		c.n = append(c.n, uint32(len(s)))
	}
	c.buf = append(c.buf, s...)
	if c.garbage > 1<<20 && c.garbage > len(c.buf)/2 {
		c.compact()
	}
}

// compact copies the live values into a new arena. Strings handed out before
// keep the old arena alive until they are dropped; it is never written again.
func (c *strCol) compact() {
	buf := make([]byte, 0, len(c.buf)-c.garbage)
	for i := range c.off {
		s := c.get(int32(i))
		c.off[i] = uint32(len(buf))
		buf = append(buf, s...)
	}
	c.buf, c.garbage = buf, 0
}

// eq is the batch predicate of equality with v. Lengths differ for most
// rows of a low-cardinality column (status: ok, warn, alarm or empty), so
// most rows are decided without reading their bytes.
func (c *strCol) eq(v string) batchPred {
	nv := uint32(len(v))
	return func(in, out []int32) []int32 {
		for _, i := range in {
			if c.n[i] == nv && (nv == 0 || string(c.buf[c.off[i]:c.off[i]+nv]) == v) {
				out = append(out, i)
			}
		}
		return out
	}
}

// removeLast drops the last slot; the caller has moved it elsewhere.
func (c *strCol) removeLast() {
	last := len(c.off) - 1
	c.garbage += int(c.n[last])
	c.off, c.n = c.off[:last], c.n[:last]
}

type intCol struct {
	v    []int64
	null []bool
}

type floatCol struct {
	v    []float64
	null []bool
}

// Cache is one tenant's devices. It is safe for concurrent use: queries
// share a read lock, changes take the write lock.
type Cache struct {
	mu    sync.RWMutex
	slots map[int64]int32
	ids   []int64
	path  []int32 // index into paths
	// Node paths are interned: a tenant has thousands of nodes and up to
	// millions of devices.
	paths    []string
	pathNode []int64
	pathIdx  map[string]int32
	// members lists the slots of each path, and pos each slot's place in
	// its list, so that a query visits only the slots of its scope.
	members [][]int32
	pos     []int32
	str     [nStr]strCol
	fold    [nFold]foldCol // folded name, key, model, firmware (see search.go)
	sig     []signature    // the bigrams of each slot's searchable text (see search.go)
	ints    [nInt]intCol
	floats  [nFloat]floatCol
	online  []bool
	// labels holds a column per label key (see labels.go), up to
	// MaxLabelColumns of them; labelsOverflow says a key was left without.
	labels         map[string]*labelCol
	labelsOverflow bool
}

// New returns an empty cache.
func New() *Cache {
	return &Cache{slots: map[int64]int32{}, pathIdx: map[string]int32{}, labels: map[string]*labelCol{}}
}

// Len returns the number of devices held.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.ids)
}

// Bytes estimates the memory the cache holds, for the metrics.
func (c *Cache) Bytes() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := int64(len(c.ids)) * (8 + 4 + 1 + nStr*8 + nInt*9 + nFloat*9 + 16 + 24) // columns, signature, the id map
	for i := range c.str {
		n += int64(cap(c.str[i].buf))
	}
	for i := range c.fold {
		n += c.fold[i].bytes()
	}
	for _, p := range c.paths {
		n += int64(len(p)) + 40
	}
	return n + c.labelBytes()
}

// Upsert stores the devices' current values, replacing what the cache held.
func (c *Cache) Upsert(ds ...*herd.Device) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		c.upsert(d)
	}
}

func (c *Cache) upsert(d *herd.Device) {
	i, ok := c.slots[d.ID]
	if !ok {
		i = int32(len(c.ids))
		c.slots[d.ID] = i
		c.ids = append(c.ids, d.ID)
		c.path = append(c.path, 0)
		c.online = append(c.online, false)
		c.sig = append(c.sig, signature{})
		for k := range c.ints {
			c.ints[k].v = append(c.ints[k].v, 0)
			c.ints[k].null = append(c.ints[k].null, false)
		}
		for k := range c.floats {
			c.floats[k].v = append(c.floats[k].v, 0)
			c.floats[k].null = append(c.floats[k].null, false)
		}
		for k := range c.fold {
			c.fold[k].add()
		}
		c.addSlotLabels()
	}
	p := c.internPath(d.Path, d.NodeID)
	if !ok {
		c.pos = append(c.pos, 0)
		c.join(i, p)
	} else if c.path[i] != p {
		c.leave(i)
		c.join(i, p)
	}
	c.online[i] = d.Online
	textChanged := c.setLabels(i, d.Labels)
	for k, s := range [nStr]string{d.Key, d.Name, d.Model, d.Firmware, d.Status} {
		// Folding costs more than a comparison: only a changed value is
		// folded again (a new slot's folding is the empty value's).
		if k < nFold && (!ok || c.str[k].get(i) != s) {
			c.fold[k].set(i, len(c.ids), s)
			textChanged = true
		}
		c.str[k].set(i, s)
	}
	if textChanged {
		c.sig[i] = c.signature(i)
	}
	setInt := func(k int, p *int64) {
		if p == nil {
			c.ints[k].v[i], c.ints[k].null[i] = 0, true
		} else {
			c.ints[k].v[i], c.ints[k].null[i] = *p, false
		}
	}
	var lastSeen *int64
	if d.LastSeen != nil {
		ms := d.LastSeen.UnixMilli()
		lastSeen = &ms
	}
	created := d.CreatedAt.UnixMilli()
	setInt(colLastSeen, lastSeen)
	setInt(colRSSI, d.RSSI)
	setInt(colUptime, d.UptimeS)
	setInt(colErrorCount, &d.ErrorCount)
	setInt(colConfigVersion, &d.ConfigVersion)
	setInt(colCreatedAt, &created)
	for k, p := range [nFloat]*float64{d.Temperature, d.Humidity, d.Pressure, d.Voltage, d.Current, d.Power, d.Battery} {
		if p == nil {
			c.floats[k].v[i], c.floats[k].null[i] = 0, true
		} else {
			c.floats[k].v[i], c.floats[k].null[i] = *p, false
		}
	}
}

// join adds slot i to the members of path p.
func (c *Cache) join(i, p int32) {
	c.path[i] = p
	c.pos[i] = int32(len(c.members[p]))
	c.members[p] = append(c.members[p], i)
}

// leave removes slot i from the members of its path.
func (c *Cache) leave(i int32) {
	m := c.members[c.path[i]]
	last := m[len(m)-1]
	m[c.pos[i]] = last
	c.pos[last] = c.pos[i]
	c.members[c.path[i]] = m[:len(m)-1]
}

func (c *Cache) internPath(p string, nodeID int64) int32 {
	if i, ok := c.pathIdx[p]; ok {
		return i
	}
	i := int32(len(c.paths))
	p = strings.Clone(p)
	c.paths = append(c.paths, p)
	c.pathNode = append(c.pathNode, nodeID)
	c.members = append(c.members, nil)
	c.pathIdx[p] = i
	return i
}

// Delete forgets the devices; unknown ids are ignored.
func (c *Cache) Delete(ids ...int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		c.delete(id)
	}
}

// delete moves the last slot into the freed one, keeping the columns dense.
func (c *Cache) delete(id int64) {
	i, ok := c.slots[id]
	if !ok {
		return
	}
	delete(c.slots, id)
	c.leave(i)
	last := int32(len(c.ids) - 1)
	if i != last {
		moved := c.ids[last]
		c.slots[moved] = i
		c.ids[i] = moved
		c.path[i], c.pos[i] = c.path[last], c.pos[last]
		c.members[c.path[i]][c.pos[i]] = i
		c.online[i] = c.online[last]
		c.sig[i] = c.sig[last]
		for k := range c.str {
			c.str[k].set(i, c.str[k].get(last))
		}
		for k := range c.ints {
			c.ints[k].v[i], c.ints[k].null[i] = c.ints[k].v[last], c.ints[k].null[last]
		}
		for k := range c.floats {
			c.floats[k].v[i], c.floats[k].null[i] = c.floats[k].v[last], c.floats[k].null[last]
		}
	}
	for k := range c.fold {
		c.fold[k].remove(i)
	}
	c.moveLabels(i, last)
	c.ids = c.ids[:last]
	c.path, c.pos = c.path[:last], c.pos[:last]
	c.online = c.online[:last]
	c.sig = c.sig[:last]
	for k := range c.str {
		c.str[k].removeLast()
	}
	for k := range c.ints {
		c.ints[k].v, c.ints[k].null = c.ints[k].v[:last], c.ints[k].null[:last]
	}
	for k := range c.floats {
		c.floats[k].v, c.floats[k].null = c.floats[k].v[:last], c.floats[k].null[:last]
	}
}

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
