package statecache

import (
	"strconv"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

// TestFoldCol_OnlyWhatDiffers: a column whose values are their own
// folding keeps no folded copy at all, one with some keeps copies of those
// only, and rewriting values leaves the arena bounded (compaction) and the
// texts right.
func TestFoldCol_OnlyWhatDiffers(t *testing.T) {
	c := New()
	const n = 1000
	for i := range n {
		c.Upsert(&herd.Device{ID: int64(i + 1), NodeID: 1, Path: "/1/", Key: "dev-" + strconv.Itoa(i), Model: "th-200",
			Name: "Boiler " + strconv.Itoa(i), Labels: map[string]string{"ring": "north", "site": "ÖL"}})
	}
	for _, k := range []int{colKey, colModel, colFirmware} {
		if c.fold[k].off != nil || len(c.fold[k].buf) != 0 {
			t.Errorf("column %d: folded copies of lowercase values (%d offsets, %d bytes)", k, len(c.fold[k].off), len(c.fold[k].buf))
		}
	}
	if c.labels["ring"].fold.off != nil {
		t.Error("label ring: folded copies of lowercase values")
	}
	if got, want := len(c.labels["site"].fold.buf), 1+n*(1+len("öl")); got != want {
		t.Errorf("label site: %d folded bytes, want %d", got, want)
	}
	before := c.fold[colName].bytes()
	// Names made lowercase need no copy: their old ones become garbage.
	for i := range n {
		c.Upsert(&herd.Device{ID: int64(i + 1), NodeID: 1, Path: "/1/", Key: "dev-" + strconv.Itoa(i), Model: "th-200",
			Name: "boiler " + strconv.Itoa(i), Labels: map[string]string{"ring": "north", "site": "ÖL"}})
	}
	if g := c.fold[colName].garbage; g != len(c.fold[colName].buf)-1 {
		t.Errorf("name: garbage %d of %d bytes, want all but the first", g, len(c.fold[colName].buf))
	}
	if c.fold[colName].bytes() != before {
		t.Errorf("name: folded copies grew from %d to %d bytes with none added", before, c.fold[colName].bytes())
	}
	// Rewriting mixed-case names many times over compacts the arena.
	long := strings.Repeat("X", 100)
	for round := range 60 {
		for i := range n {
			c.Upsert(&herd.Device{ID: int64(i + 1), NodeID: 1, Path: "/1/", Key: "dev-" + strconv.Itoa(i),
				Name: long + strconv.Itoa(round) + "-" + strconv.Itoa(i)})
		}
	}
	if l := len(c.fold[colName].buf); l > 3<<20 {
		t.Errorf("name: folded arena of %d bytes for %d live names", l, n)
	}
	c.Delete(1, 500)
	for id, i := range c.slots {
		want := strings.Repeat("x", 100) + "59-" + strconv.FormatInt(id-1, 10)
		if got := c.fold[colName].text(i, c.str[colName].get(i)); got != want {
			t.Fatalf("device %d: folded name %q, want %q", id, got, want)
		}
		if c.labels["site"].has[i] || c.labels["site"].fold.text(i, c.labels["site"].vals.get(i)) != "" {
			t.Fatalf("device %d: label site kept after an upsert without it", id)
		}
		if c.sig[i] != c.signature(i) {
			t.Fatalf("device %d: stale signature", id)
		}
	}
}
