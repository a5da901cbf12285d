package sqldb_test

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
)

// listTree is a random tenant tree with devices in known states, and the
// brute-force answers of the lists over it.
type listTree struct {
	tenant  *herd.Tenant
	nodes   map[int64]*herd.Node // by id, paths as they are after the moves
	regions []*herd.Node
	devices map[int64]*treeDevice
}

type treeDevice struct {
	nodeID int64
	online bool
	status string
}

// treeNames mixes case, repeats names (so the children's order leans on
// the id) and holds letters whose case only Unicode folds.
var treeNames = []string{"Oslo", "oslo", "OSLO-2", "Bergen", "ØSTFOLD", "østfold nord", "Trondheim", "north", "North", "Nordby", "Ålesund", "site"}

// mustListTree builds a tree under a new tenant: regions, sites under
// them, rooms under some sites, devices on every level, some online and
// some in alarm; then moves a site and a device, so that the counts follow
// paths that changed.
func (f *fixture) mustListTree(t *testing.T, seed uint64) *listTree {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	tr := &listTree{tenant: f.mustTenant(t, "tree"), nodes: map[int64]*herd.Node{}, devices: map[int64]*treeDevice{}}
	root, err := f.Nodes.FindNodeByID(f.super, tr.tenant.RootNodeID)
	mustOK(t, err)
	tr.nodes[root.ID] = root
	add := func(parent *herd.Node, kind string) *herd.Node {
		n := &herd.Node{ParentID: parent.ID, Kind: kind, Name: treeNames[rng.IntN(len(treeNames))]}
		mustOK(t, f.Nodes.CreateNode(f.super, n))
		tr.nodes[n.ID] = n
		return n
	}
	var all []*herd.Node
	for range 3 {
		r := add(root, "region")
		tr.regions = append(tr.regions, r)
		all = append(all, r)
		for range 2 + rng.IntN(5) {
			s := add(r, "site")
			all = append(all, s)
			for range rng.IntN(3) {
				all = append(all, add(s, "room"))
			}
		}
	}
	var items []herd.IngestItem
	for _, n := range append(all, root) {
		k := rng.IntN(5)
		if k == 0 {
			continue
		}
		for _, d := range f.mustDevices(t, n.ID, k) {
			td := &treeDevice{nodeID: n.ID}
			if rng.IntN(2) == 0 {
				td.online = true
				items = append(items, connectItem(d, at0))
			}
			if rng.IntN(3) > 0 {
				td.status = []string{herd.StatusOK, herd.StatusWarn, herd.StatusAlarm}[rng.IntN(3)]
				items = append(items, readingItem(d, at0+1, herd.Reading{TS: at0 + 1, Has: herd.ReadingStatus, Status: td.status}))
			}
			tr.devices[d.ID] = td
		}
	}
	mustIngest(t, f.db, items...)
	// A site moves to another region, a device to another site.
	var site *herd.Node
	for _, n := range all {
		if n.Kind == "site" && n.ParentID != tr.regions[2].ID {
			site = n
			break
		}
	}
	_, err = f.Nodes.MoveNode(f.super, site.ID, tr.regions[2].ID)
	mustOK(t, err)
	for id, d := range tr.devices {
		if d.nodeID == site.ID {
			continue
		}
		_, err := f.Devices.MoveDevice(f.super, id, site.ID)
		mustOK(t, err)
		d.nodeID = site.ID
		break
	}
	for id := range tr.nodes {
		n, err := f.Nodes.FindNodeByID(f.super, id)
		mustOK(t, err)
		n.Ancestors = nil
		tr.nodes[id] = n
	}
	return tr
}

// wantChildren is the brute-force children list of a node: by name and
// id, each with the counts of its subtree.
func (tr *listTree) wantChildren(parentID int64) []herd.NodeChild {
	var out []herd.NodeChild
	for _, n := range tr.nodes {
		if n.ParentID != parentID {
			continue
		}
		c := herd.NodeChild{Node: *n}
		for _, m := range tr.nodes {
			if m.ParentID == n.ID {
				c.ChildCount++
			}
		}
		for _, d := range tr.devices {
			if herd.PathUnder(tr.nodes[d.nodeID].Path, n.Path) {
				c.DeviceCount++
				if d.online {
					c.OnlineCount++
				}
				if d.status == herd.StatusAlarm {
					c.AlarmCount++
				}
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b herd.NodeChild) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// wantAncestors is the breadcrumb of a node.
func (tr *listTree) wantAncestors(id int64) []herd.NodeRef {
	ids, _ := herd.PathIDs(tr.nodes[id].Path)
	out := []herd.NodeRef{}
	for _, a := range ids[:len(ids)-1] {
		out = append(out, herd.NodeRef{ID: a, Name: tr.nodes[a].Name})
	}
	return out
}

// wantSearch is the brute-force node search within paths, in path order.
func (tr *listTree) wantSearch(paths []string, q string) []int64 {
	var ns []*herd.Node
	for _, n := range tr.nodes {
		in := false
		for _, p := range paths {
			in = in || herd.PathUnder(n.Path, p)
		}
		if in && strings.Contains(strings.ToLower(n.Name), strings.ToLower(q)) {
			ns = append(ns, n)
		}
	}
	slices.SortFunc(ns, func(a, b *herd.Node) int { return strings.Compare(a.Path, b.Path) })
	out := []int64{}
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

// walkChildren pages through a node's children to the end, checking that
// every page carries the node and its breadcrumb.
func walkChildren(t *testing.T, ctx context.Context, ls *sqldb.ListService, tr *listTree, nodeID int64, limit int) ([]herd.NodeChild, []string) {
	t.Helper()
	var got []herd.NodeChild
	var sources []string
	p := herd.ListParams{Limit: limit}
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("walk does not end")
		}
		page, err := ls.FindChildren(ctx, nodeID, p)
		if err != nil {
			t.Fatalf("children of %d, page %d: %v", nodeID, pages, err)
		}
		if page.Node.ID != nodeID || !slices.Equal(page.Node.Ancestors, tr.wantAncestors(nodeID)) {
			t.Fatalf("children of %d: node %+v, want ancestors %+v", nodeID, page.Node, tr.wantAncestors(nodeID))
		}
		if len(page.Items) > limit {
			t.Fatalf("page of %d for limit %d", len(page.Items), limit)
		}
		for _, c := range page.Items {
			got = append(got, *c)
		}
		sources = append(sources, page.Source)
		if page.NextCursor == "" {
			return got, sources
		}
		p.Cursor = page.NextCursor
	}
}

// walkList pages through any list to its end.
func walkList[T any](t *testing.T, limit int, page func(herd.ListParams) (*herd.ListPage[T], error)) []T {
	t.Helper()
	var got []T
	p := herd.ListParams{Limit: limit}
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("walk does not end")
		}
		pg, err := page(p)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if len(pg.Items) > limit || (pg.NextCursor != "" && len(pg.Items) != limit) {
			t.Fatalf("page %d has %d items for limit %d, next %q", pages, len(pg.Items), limit, pg.NextCursor)
		}
		got = append(got, pg.Items...)
		if pg.NextCursor == "" {
			return got
		}
		p.Cursor = pg.NextCursor
	}
}
