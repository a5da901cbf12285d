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
