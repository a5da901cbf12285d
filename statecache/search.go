package statecache

import (
	"encoding/binary"
	"strings"
	"unsafe"

	"github.com/herd-iot/herd"
)

// Search: FIELD:contains:TEXT (herd.OpContains) on name, key, model,
// firmware and label.KEY, and the words of q (Query.Search). Both match on
// the case-folded text (herd.FoldText), as the stores do.
//
// A folded copy of a value is kept only where it differs from the value:
// most keys, models, firmware versions and label values are lowercase
// ASCII already, and a column none of whose values needed folding costs
// nothing. One that did costs four bytes a slot and the folded bytes of the
// values that differ.

// Each slot also has a signature: a bit for each byte pair (bigram) of
// its folded searchable texts, hashed into 128. A text holding a term holds
// its bigrams, so a slot whose signature lacks one of the term's bits is
// decided by two ANDs, without reading its texts: most slots, for a term
// few devices hold. A device's texts (some 40 bigrams) set about a quarter
// of the bits, so even a term of three letters (two bigrams) lets through
// one device in sixteen that does not hold it; with 64 bits it was one in
// five, and a rare word over 200,000 devices several times slower
// (BenchmarkQuery_Search). Sixteen bytes a device buy a search its few
// milliseconds.

// SearchWord is one folded word of q (see herd.ParseSearch). A device
// matches it when its name, key, model, firmware or a label value holds it
// after folding, or when the node it is attached to is in Nodes.
//
// The cache never learns node names: the store computes Nodes, every node
// whose own name or an ancestor's name holds the word, and the cache tests
// only the node each device is attached to against it.
type SearchWord struct {
	Word  string
	Nodes map[int64]bool
}

// Folded text columns, by position in Cache.fold: the first text columns,
// the ones a contains applies to.
const nFold = colStatus

// foldCol holds the folded text of a text column's values where it differs
// from the value. off[i] is 0 when slot i's value is its own folding, else
// the offset in buf of the folded text, its byte length as a uvarint
// before it; buf[0] is never used, so that no text starts at 0. off is nil
// while no slot's value has needed folding.
type foldCol struct {
	buf     []byte
	off     []uint32
	garbage int
}

// text returns slot i's folded text, v being its value.
func (c *foldCol) text(i int32, v string) string {
	if c.off == nil || c.off[i] == 0 {
		return v
	}
	return foldedAt(c.buf, c.off[i])
}

func foldedAt(buf []byte, o uint32) string {
	n := uint32(buf[o])
	if n < 0x80 {
		return unsafe.String(&buf[o+1], int(n))
	}
	m, w := binary.Uvarint(buf[o:])
	return unsafe.String(&buf[o+uint32(w)], int(m))
}

// size is the bytes slot i's folded text takes in buf.
func (c *foldCol) size(i int32) int {
	if c.off == nil || c.off[i] == 0 {
		return 0
	}
	m, w := binary.Uvarint(c.buf[c.off[i]:])
	return w + int(m)
}

// add extends the column by one slot, whose value is its own folding (the
// new slot's value is empty until set).
func (c *foldCol) add() {
	if c.off != nil {
		c.off = append(c.off, 0)
	}
}

// set records the folding of slot i's new value v; n is the column's
// number of slots.
func (c *foldCol) set(i int32, n int, v string) {
	f := herd.FoldText(v)
	if f == v {
		if c.off != nil {
			c.garbage += c.size(i)
			c.off[i] = 0
		}
		return
	}
	if c.off == nil {
		c.off = make([]uint32, n)
		c.buf = append(c.buf[:0], 0)
	}
	c.garbage += c.size(i)
	c.off[i] = uint32(len(c.buf))
	c.buf = binary.AppendUvarint(c.buf, uint64(len(f)))
	c.buf = append(c.buf, f...)
	if c.garbage > 1<<20 && c.garbage > len(c.buf)/2 {
		c.compact()
	}
}

// remove drops slot i by moving the last slot into it (delete's
// compaction).
func (c *foldCol) remove(i int32) {
	if c.off == nil {
		return
	}
	last := len(c.off) - 1
	c.garbage += c.size(i)
	c.off[i] = c.off[last]
	c.off = c.off[:last]
}

// compact copies the live folded texts into a new arena. Unlike strCol's,
// nothing can still read the old one: folded texts never leave the lock.
func (c *foldCol) compact() {
	buf := make([]byte, 1, len(c.buf)-c.garbage)
	for i, o := range c.off {
		if o == 0 {
			continue
		}
		f := foldedAt(c.buf, o)
		c.off[i] = uint32(len(buf))
		buf = binary.AppendUvarint(buf, uint64(len(f)))
		buf = append(buf, f...)
	}
	c.buf, c.garbage = buf, 0
}

func (c *foldCol) bytes() int64 { return int64(cap(c.buf)) + 4*int64(cap(c.off)) }

// signature is a set of hashed bigrams.
type signature [2]uint64

// covers reports whether every bit of want is in s.
func (s signature) covers(want signature) bool {
	return s[0]&want[0] == want[0] && s[1]&want[1] == want[1]
}

// add adds the bits of t's byte pairs. Pairs are taken within one text
// only: a term never spans two (herd.FoldText).
func (s *signature) add(t string) {
	for j := 1; j < len(t); j++ {
		h := (uint32(t[j-1])<<8 | uint32(t[j])) * 0x9E3779B1 >> 25
		s[h>>6] |= 1 << (h & 63)
	}
}

func bigrams(t string) signature {
	var s signature
	s.add(t)
	return s
}

// signature computes slot i's signature from the folded texts the cache
// keeps: every text a contains or a word of q reads.
func (c *Cache) signature(i int32) signature {
	var sig signature
	for k := range c.fold {
		sig.add(c.fold[k].text(i, c.str[k].get(i)))
	}
	for _, col := range c.labels {
		if col.has[i] {
			sig.add(col.fold.text(i, col.vals.get(i)))
		}
	}
	return sig
}

// textSource is one searchable text column as the predicates read it: the
// values' arena and the folded copies', and which slots hold a value (has
// nil: all of them).
type textSource struct {
	buf      []byte
	off, n   []uint32
	has      []bool
	fbuf     []byte
	foff     []uint32
	anyFolds bool
}

func newTextSource(vals *strCol, fold *foldCol, has []bool) textSource {
	return textSource{buf: vals.buf, off: vals.off, n: vals.n, has: has, fbuf: fold.buf, foff: fold.off, anyFolds: fold.off != nil}
}

// folded returns slot i's folded text; the caller has checked has.
func (s *textSource) folded(i int32) string {
	if s.anyFolds {
		if o := s.foff[i]; o != 0 {
			return foldedAt(s.fbuf, o)
		}
	}
	n := s.n[i]
	if n == 0 {
		return ""
	}
	return unsafe.String(&s.buf[s.off[i]], int(n))
}

// holds reports whether slot i has a value whose folding holds term.
func (s *textSource) holds(i int32, term string) bool {
	if s.has != nil && !s.has[i] {
		return false
	}
	return strings.Contains(s.folded(i), term)
}

// containsPred is the batch predicate of FIELD:contains:term on one
// source, sig being the slots' signatures.
func (s textSource) containsPred(sig []signature, term string) batchPred {
	want := bigrams(term)
	if s.has == nil && !s.anyFolds {
		// The common column: no value needed folding, every slot has one.
		return func(in, out []int32) []int32 {
			for _, i := range in {
				if !sig[i].covers(want) {
					continue
				}
				if n := s.n[i]; int(n) >= len(term) && strings.Contains(unsafe.String(unsafe.SliceData(s.buf[s.off[i]:]), int(n)), term) {
					out = append(out, i)
				}
			}
			return out
		}
	}
	return func(in, out []int32) []int32 {
		for _, i := range in {
			if sig[i].covers(want) && s.holds(i, term) {
				out = append(out, i)
			}
		}
		return out
	}
}

// containsPredicate compiles FIELD:contains:TEXT on name, key, model or
// firmware; ok is false for another field or a value that is not text.
func (c *Cache) containsPredicate(ref colRef, f herd.DeviceFilter) (batchPred, bool) {
	term, ok := containsTerm(f)
	if !ok || ref.kind != kindStr || ref.idx >= nFold {
		return nil, false
	}
	return newTextSource(&c.str[ref.idx], &c.fold[ref.idx], nil).containsPred(c.sig, term), true
}

// labelContains compiles label.KEY:contains:TEXT: a device without the key
// does not hold the text. col is nil when no device has the key (and the
// cache knows it: the caller has checked labelsOverflow).
func labelContains(col *labelCol, sig []signature, f herd.DeviceFilter) (batchPred, bool) {
	term, ok := containsTerm(f)
	if !ok {
		return nil, false
	} else if col == nil {
		return func(_, out []int32) []int32 { return out }, true
	}
	return newTextSource(&col.vals, &col.fold, col.has).containsPred(sig, term), true
}

// containsTerm is a contains filter's text, already folded by the caller
// (herd.DeviceQuery.Normalize, herd.ParseDeviceFilter).
func containsTerm(f herd.DeviceFilter) (string, bool) {
	if len(f.Values) != 1 {
		return "", false
	}
	term, ok := f.Values[0].(string)
	return term, ok
}

// wordPredicate compiles one word of q. ok is false when the cache cannot
// know every label value a device has (a key without a column, see
// MaxLabelColumns).
func (c *Cache) wordPredicate(w SearchWord) (batchPred, bool) {
	if c.labelsOverflow {
		return nil, false
	}
	// The node set is tested once per path, not once per device.
	var viaNode []bool
	if len(w.Nodes) > 0 {
		viaNode = make([]bool, len(c.paths))
		hit := false
		for p, node := range c.pathNode {
			viaNode[p] = w.Nodes[node]
			hit = hit || viaNode[p]
		}
		if !hit {
			viaNode = nil
		}
	}
	srcs := make([]textSource, 0, nFold+len(c.labels))
	// Name first: it is the field a word most often finds.
	for _, k := range []int{colName, colKey, colModel, colFirmware} {
		srcs = append(srcs, newTextSource(&c.str[k], &c.fold[k], nil))
	}
	for _, col := range c.labels {
		srcs = append(srcs, newTextSource(&col.vals, &col.fold, col.has))
	}
	word, want, path, sig := w.Word, bigrams(w.Word), c.path, c.sig
	return func(in, out []int32) []int32 {
	slots:
		for _, i := range in {
			if viaNode != nil && viaNode[path[i]] {
				out = append(out, i)
				continue
			} else if !sig[i].covers(want) {
				continue
			}
			for s := range srcs {
				if srcs[s].holds(i, word) {
					out = append(out, i)
					continue slots
				}
			}
		}
		return out
	}, true
}
