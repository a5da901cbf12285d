package statecache_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/statecache"
)

// TestCache_LabelColumnsBounded: past MaxLabelColumns distinct keys the
// cache keeps no column for a new key and declines the queries on it (the
// database answers them), while the keys it has columns for still answer,
// deletes and all.
func TestCache_LabelColumnsBounded(t *testing.T) {
	c := statecache.New()
	var ds []*herd.Device
	for i := range statecache.MaxLabelColumns + 5 {
		ds = append(ds, &herd.Device{ID: int64(i + 1), NodeID: 1, Path: "/1/", Key: fmt.Sprint("k", i),
			Labels: map[string]string{"ring": fmt.Sprint(i % 2), fmt.Sprint("serial/", i): "x"}})
	}
	c.Upsert(ds...)
	c.Delete(1, 4)
	query := func(filter string) ([]int64, bool) {
		t.Helper()
		f, err := herd.ParseDeviceFilter(filter)
		if err != nil {
			t.Fatal(err)
		}
		res, ok := c.Query(statecache.Query{Paths: []string{"/"}, Filters: []herd.DeviceFilter{f}, Sort: herd.DeviceSort{Field: "id"}, Limit: 1000})
		var ids []int64
		for _, h := range res.Hits {
			ids = append(ids, h.ID)
		}
		return ids, ok
	}
	var odd []int64
	for i := range statecache.MaxLabelColumns + 5 {
		if id := int64(i + 1); i%2 == 1 && id != 4 {
			odd = append(odd, id)
		}
	}
	if got, ok := query("label.ring:eq:1"); !ok || !slices.Equal(got, odd) {
		t.Fatalf("label.ring:eq:1: %v (ok %v), want %v", got, ok, odd)
	}
	if got, ok := query("label.serial/2:exists:true"); !ok || !slices.Equal(got, []int64{3}) {
		t.Fatalf("a key with a column: %v (ok %v)", got, ok)
	}
	last := fmt.Sprint("label.serial/", statecache.MaxLabelColumns+4, ":exists:true")
	if got, ok := query(last); ok {
		t.Fatalf("a key past the bound answered %v; want it declined", got)
	}
	if got, ok := query("label.none:ne:x"); ok {
		t.Fatalf("a key no device has, past the bound, answered %v; want it declined", got)
	}
}
