package sqldb_test

import (
	"context"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestNodeService_CreateNode(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		t.Run("OK", func(t *testing.T) {
			// Without a parent the node goes under the tenant's root.
			region := &herd.Node{TenantID: ten.ID, Kind: " region ", Name: " north "}
			mustOK(t, f.Nodes.CreateNode(f.super, region))
			if region.ParentID != ten.RootNodeID || region.Kind != "region" || region.Name != "north" || region.CreatedAt.IsZero() {
				t.Fatalf("got %+v", region)
			}
			if want := herd.ChildPath(herd.ChildPath("/", ten.RootNodeID), region.ID); region.Path != want {
				t.Fatalf("path %q, want %q", region.Path, want)
			}
			site := &herd.Node{ParentID: region.ID, Kind: "site", Name: "s1"}
			mustOK(t, f.Nodes.CreateNode(f.super, site))
			if site.TenantID != ten.ID || site.Path != herd.ChildPath(region.Path, site.ID) {
				t.Fatalf("got %+v", site)
			}
			got, err := f.Nodes.FindNodeByID(f.super, site.ID)
			mustOK(t, err)
			// The breadcrumb: the root and the region, by id and name.
			wantCrumbs := []herd.NodeRef{{ID: ten.RootNodeID, Name: ten.Name}, {ID: region.ID, Name: region.Name}}
			if !slices.Equal(got.Ancestors, wantCrumbs) {
				t.Fatalf("ancestors %+v, want %+v", got.Ancestors, wantCrumbs)
			}
			got.Ancestors = nil
			if !reflect.DeepEqual(got, site) {
				t.Fatalf("found %+v, created %+v", got, site)
			}
		})
		t.Run("OKTenantAdmin", func(t *testing.T) {
			region := f.mustNode(t, ten.RootNodeID, "east")
			u, secret := f.mustUser(t, ten.ID, "regional admin")
			f.mustGrant(t, u.ID, region.ID, herd.RoleAdmin)
			n := &herd.Node{ParentID: region.ID, Kind: "site", Name: "e1"}
			mustOK(t, f.Nodes.CreateNode(f.as(t, secret), n))
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			wantCode(t, f.Nodes.CreateNode(context.Background(), &herd.Node{TenantID: ten.ID, Kind: "k", Name: "n"}), herd.EUNAUTHORIZED)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			for _, n := range []*herd.Node{
				{TenantID: ten.ID, Kind: "site"},
				{TenantID: ten.ID, Name: "x"},
				{Kind: "site", Name: "no tenant, no parent"},
			} {
				wantCode(t, f.Nodes.CreateNode(f.super, n), herd.EINVALID)
			}
		})
		t.Run("ErrParentNotFound", func(t *testing.T) {
			wantCode(t, f.Nodes.CreateNode(f.super, &herd.Node{ParentID: 1 << 40, Kind: "site", Name: "x"}), herd.ENOTFOUND)
			wantCode(t, f.Nodes.CreateNode(f.super, &herd.Node{TenantID: 1 << 40, Kind: "site", Name: "x"}), herd.ENOTFOUND)
		})
		t.Run("ErrParentOfAnotherTenant", func(t *testing.T) {
			other := f.mustTenant(t, "other")
			wantCode(t, f.Nodes.CreateNode(f.super, &herd.Node{TenantID: ten.ID, ParentID: other.RootNodeID, Kind: "site", Name: "x"}), herd.EINVALID)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			region := f.mustNode(t, ten.RootNodeID, "west")
			u, secret := f.mustUser(t, ten.ID, "operator")
			f.mustGrant(t, u.ID, region.ID, herd.RoleOperator)
			wantCode(t, f.Nodes.CreateNode(f.as(t, secret), &herd.Node{ParentID: region.ID, Kind: "site", Name: "w1"}), herd.EFORBIDDEN)
			// Outside the grants the parent does not even exist.
			wantCode(t, f.Nodes.CreateNode(f.as(t, secret), &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "w1"}), herd.ENOTFOUND)
		})
	})
}

func TestNodeService_FindNodeByID(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		north := f.mustNode(t, ten.RootNodeID, "north")
		site := f.mustNode(t, north.ID, "n1")
		south := f.mustNode(t, ten.RootNodeID, "south")
		u, secret := f.mustUser(t, ten.ID, "viewer")
		f.mustGrant(t, u.ID, north.ID, herd.RoleViewer)
		ctx := f.as(t, secret)
		t.Run("OK", func(t *testing.T) {
			for _, id := range []int64{north.ID, site.ID} {
				if _, err := f.Nodes.FindNodeByID(ctx, id); err != nil {
					t.Fatalf("node %d: %v", id, err)
				}
			}
		})
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			for _, id := range []int64{south.ID, ten.RootNodeID, 1 << 40} {
				_, err := f.Nodes.FindNodeByID(ctx, id)
				wantCode(t, err, herd.ENOTFOUND)
			}
		})
	})
}

func TestNodeService_MoveNode(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		t.Run("OK", func(t *testing.T) {
			north := f.mustNode(t, ten.RootNodeID, "north")
			south := f.mustNode(t, ten.RootNodeID, "south")
			site := f.mustNode(t, north.ID, "site")
			hall := f.mustNode(t, site.ID, "hall")
			siteDevs := f.mustDevices(t, site.ID, 3)
			hallDevs := f.mustDevices(t, hall.ID, 2)
			northDevs := f.mustDevices(t, north.ID, 2)

			moved, err := f.Nodes.MoveNode(f.super, site.ID, south.ID)
			mustOK(t, err)
			if moved.ParentID != south.ID || moved.Path != herd.ChildPath(south.Path, site.ID) {
				t.Fatalf("moved %+v", moved)
			}
			// Every node and device under the moved node follows; nothing
			// else moves.
			wantPaths := map[int64]string{site.ID: moved.Path, hall.ID: herd.ChildPath(moved.Path, hall.ID), north.ID: north.Path, south.ID: south.Path}
			for id, want := range wantPaths {
				n, err := f.Nodes.FindNodeByID(f.super, id)
				mustOK(t, err)
				if n.Path != want {
					t.Fatalf("node %d path %q, want %q", id, n.Path, want)
				}
			}
			for _, tt := range []struct {
				ds   []*herd.Device
				path string
			}{{siteDevs, moved.Path}, {hallDevs, wantPaths[hall.ID]}, {northDevs, north.Path}} {
				for _, d := range tt.ds {
					got, err := f.Devices.FindDeviceByID(f.super, d.ID)
					mustOK(t, err)
					if got.Path != tt.path {
						t.Fatalf("device %d path %q, want %q", d.ID, got.Path, tt.path)
					}
				}
			}
			// A grant follows its node.
			u, secret := f.mustUser(t, ten.ID, "hall viewer")
			f.mustGrant(t, u.ID, hall.ID, herd.RoleViewer)
			gs, err := f.Grants.FindGrantsByUser(f.super, u.ID)
			mustOK(t, err)
			if len(gs) != 1 || gs[0].Path != wantPaths[hall.ID] {
				t.Fatalf("grants %+v", gs)
			}
			items, _ := f.walk(t, f.as(t, secret), herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}, Limit: 10})
			if got := ids(items); len(got) != 2 || got[0] != hallDevs[0].ID || got[1] != hallDevs[1].ID {
				t.Fatalf("hall viewer sees %v", got)
			}
		})
		t.Run("OKSameParent", func(t *testing.T) {
			n := f.mustNode(t, ten.RootNodeID, "stay")
			got, err := f.Nodes.MoveNode(f.super, n.ID, ten.RootNodeID)
			mustOK(t, err)
			if got.Path != n.Path {
				t.Fatalf("path %q, want %q", got.Path, n.Path)
			}
		})
		t.Run("ErrUnderItself", func(t *testing.T) {
			a := f.mustNode(t, ten.RootNodeID, "a")
			b := f.mustNode(t, a.ID, "b")
			c := f.mustNode(t, b.ID, "c")
			for _, parent := range []int64{a.ID, b.ID, c.ID} {
				_, err := f.Nodes.MoveNode(f.super, a.ID, parent)
				wantCode(t, err, herd.EINVALID)
			}
			n, err := f.Nodes.FindNodeByID(f.super, a.ID)
			mustOK(t, err)
			if n.Path != a.Path {
				t.Fatalf("path changed to %q", n.Path)
			}
		})
		t.Run("ErrRoot", func(t *testing.T) {
			n := f.mustNode(t, ten.RootNodeID, "r")
			_, err := f.Nodes.MoveNode(f.super, ten.RootNodeID, n.ID)
			wantCode(t, err, herd.EINVALID)
			other := f.mustTenant(t, "other")
			_, err = f.Nodes.MoveNode(f.super, ten.RootNodeID, other.RootNodeID)
			wantCode(t, err, herd.EINVALID)
		})
		t.Run("ErrOtherTenant", func(t *testing.T) {
			n := f.mustNode(t, ten.RootNodeID, "n")
			other := f.mustTenant(t, "other2")
			_, err := f.Nodes.MoveNode(f.super, n.ID, other.RootNodeID)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			from := f.mustNode(t, ten.RootNodeID, "from")
			to := f.mustNode(t, ten.RootNodeID, "to")
			n := f.mustNode(t, from.ID, "n")
			u, secret := f.mustUser(t, ten.ID, "half admin")
			f.mustGrant(t, u.ID, from.ID, herd.RoleAdmin)
			f.mustGrant(t, u.ID, to.ID, herd.RoleOperator)
			_, err := f.Nodes.MoveNode(f.as(t, secret), n.ID, to.ID)
			wantCode(t, err, herd.EFORBIDDEN)
			u2, secret2 := f.mustUser(t, ten.ID, "other half")
			f.mustGrant(t, u2.ID, from.ID, herd.RoleOperator)
			f.mustGrant(t, u2.ID, to.ID, herd.RoleAdmin)
			_, err = f.Nodes.MoveNode(f.as(t, secret2), n.ID, to.ID)
			wantCode(t, err, herd.EFORBIDDEN)
			f.mustGrant(t, u2.ID, n.ID, herd.RoleAdmin)
			_, err = f.Nodes.MoveNode(f.as(t, f.freshToken(t, u2.ID)), n.ID, to.ID)
			mustOK(t, err)
		})
	})
}

// freshToken issues another token for a user.
func (f *fixture) freshToken(tb testing.TB, userID int64) string {
	tb.Helper()
	tok, err := f.Users.CreateToken(f.super, userID)
	if err != nil {
		tb.Fatal(err)
	}
	return tok.Secret
}

// TestNodeService_RandomTrees builds random trees, moves random subtrees
// (and tries moves that must fail), and checks after every step that each
// node's path is the walk from the node to the root and each device's path
// is its node's.
func TestNodeService_RandomTrees(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		seed := rand.Uint64()
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewPCG(seed, seed))
		for round := range 3 {
			ten := f.mustTenant(t, "tree")
			parent := map[int64]int64{ten.RootNodeID: 0}
			nodes := []int64{ten.RootNodeID}
			deviceNode := map[int64]int64{}
			for range 12 + rng.IntN(20) {
				p := nodes[rng.IntN(len(nodes))]
				n := f.mustNode(t, p, "n")
				parent[n.ID] = p
				nodes = append(nodes, n.ID)
			}
			for _, nid := range nodes {
				if rng.IntN(2) == 0 {
					for _, d := range f.mustDevices(t, nid, 1+rng.IntN(3)) {
						deviceNode[d.ID] = nid
					}
				}
			}
			under := func(n, anc int64) bool {
				for ; n != 0; n = parent[n] {
					if n == anc {
						return true
					}
				}
				return false
			}
			check := func() {
				t.Helper()
				for _, id := range nodes {
					n, err := f.Nodes.FindNodeByID(f.super, id)
					mustOK(t, err)
					want := "/"
					var chain []int64
					for c := id; c != 0; c = parent[c] {
						chain = append([]int64{c}, chain...)
					}
					for _, c := range chain {
						want = herd.ChildPath(want, c)
					}
					if n.Path != want || n.ParentID != parent[id] {
						t.Fatalf("seed %d round %d: node %d path %q parent %d, want %q parent %d", seed, round, id, n.Path, n.ParentID, want, parent[id])
					}
				}
				for did, nid := range deviceNode {
					d, err := f.Devices.FindDeviceByID(f.super, did)
					mustOK(t, err)
					n, err := f.Nodes.FindNodeByID(f.super, nid)
					mustOK(t, err)
					if d.NodeID != nid || d.Path != n.Path {
						t.Fatalf("seed %d: device %d on %d path %q, want node %d path %q", seed, did, d.NodeID, d.Path, nid, n.Path)
					}
				}
				// The subtree counts the query planner reads follow every
				// create, move and delete.
				for _, id := range nodes {
					var got, want int64
					if err := db.SQL().QueryRow(db.Rebind(`SELECT device_count FROM nodes WHERE id = ?`), id).Scan(&got); err != nil {
						t.Fatal(err)
					}
					for _, nid := range deviceNode {
						if under(nid, id) {
							want++
						}
					}
					if got != want {
						t.Fatalf("seed %d round %d: node %d counts %d devices, holds %d", seed, round, id, got, want)
					}
				}
			}
			check()
			for range 15 {
				id := nodes[1+rng.IntN(len(nodes)-1)]
				to := nodes[rng.IntN(len(nodes))]
				_, err := f.Nodes.MoveNode(f.super, id, to)
				if under(to, id) {
					wantCode(t, err, herd.EINVALID)
					continue
				}
				mustOK(t, err)
				parent[id] = to
				if rng.IntN(3) == 0 && len(deviceNode) > 0 {
					for did := range deviceNode {
						to := nodes[rng.IntN(len(nodes))]
						_, err := f.Devices.MoveDevice(f.super, did, to)
						mustOK(t, err)
						deviceNode[did] = to
						break
					}
				}
				if rng.IntN(4) == 0 && len(deviceNode) > 0 {
					for did := range deviceNode {
						mustOK(t, f.Devices.DeleteDevice(f.super, did))
						delete(deviceNode, did)
						break
					}
				}
				check()
			}
		}
	})
}

// TestNodeService_ConcurrentMove checks that a subtree move and a write
// that reads a path inside that subtree cannot interleave so that the write
// stores a path the move has already rewritten: the write starts, reads its
// node, and just before it writes, a move of the region above commits (or
// waits, if the store serialises them). Afterwards every node's path is the
// walk to its root and every device's path is its node's.
func TestNodeService_ConcurrentMove(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect() == sqldb.SQLite {
			// Writes run one at a time on a single connection: the move
			// cannot even begin while the write is open.
			t.Skip("SQLite has one writer; writes cannot interleave")
		}
		for _, tt := range []struct {
			name    string
			trigger string // the statement of the write before which the move runs
			// write runs the write and returns the id of a node it made.
			write func(f *fixture, site, other *herd.Node) (int64, error)
		}{
			{"CreateDevices", "INSERT INTO devices", func(f *fixture, site, _ *herd.Node) (int64, error) {
				return 0, f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: site.ID, Key: nextKey("c")}})
			}},
			{"CreateNode", "INSERT INTO nodes", func(f *fixture, site, _ *herd.Node) (int64, error) {
				n := &herd.Node{ParentID: site.ID, Kind: "hall", Name: "h"}
				err := f.Nodes.CreateNode(f.super, n)
				return n.ID, err
			}},
			{"MoveDevice", "UPDATE devices SET node_id", func(f *fixture, site, other *herd.Node) (int64, error) {
				ds := []*herd.Device{{NodeID: other.ID, Key: nextKey("m")}}
				if err := f.Devices.CreateDevices(f.super, ds); err != nil {
					return 0, err
				}
				return 0, errOf(f.Devices.MoveDevice(f.super, ds[0].ID, site.ID))
			}},
			{"MoveNode", "UPDATE nodes SET path", func(f *fixture, site, other *herd.Node) (int64, error) {
				return 0, errOf(f.Nodes.MoveNode(f.super, other.ID, site.ID))
			}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				f := newFixture(db)
				ten := f.mustTenant(t, "acme")
				region := f.mustNode(t, ten.RootNodeID, "region")
				site := f.mustNode(t, region.ID, "site")
				other := f.mustNode(t, ten.RootNodeID, "other")
				away := f.mustNode(t, ten.RootNodeID, "away")
				f.mustDevices(t, site.ID, 2)

				var mu sync.Mutex
				var fired, moving bool
				blocked := make(chan struct{}, 1)
				moveDone := make(chan error, 1)
				db.QueryHook = func(query string, _ []any) {
					mu.Lock()
					if moving {
						// The move's own statements: a lock it will wait on
						// means the store serialises it behind the write.
						if strings.Contains(query, "FOR UPDATE") || strings.Contains(query, "FOR SHARE") {
							select {
							case blocked <- struct{}{}:
							default:
							}
						}
						mu.Unlock()
						return
					}
					if fired || !strings.HasPrefix(strings.TrimSpace(query), tt.trigger) {
						mu.Unlock()
						return
					}
					fired, moving = true, true
					mu.Unlock()
					go func() { moveDone <- errOf(f.Nodes.MoveNode(f.super, region.ID, away.ID)) }()
					select {
					case err := <-moveDone:
						moveDone <- err // the move committed first
					case <-blocked: // the move waits for the write
					}
				}
				made, err := tt.write(f, site, other)
				mustOK(t, err)
				if !fired {
					t.Fatalf("the write ran no %q", tt.trigger)
				}
				mustOK(t, <-moveDone)
				db.QueryHook = nil // both are done with it
				checkTree(t, f, ten, ten.RootNodeID, region.ID, site.ID, other.ID, away.ID, made)
			})
		}
	})
}

// checkTree fails unless every node of the tenant has the path of its walk
// to the root and every device the path of its node.
func checkTree(t *testing.T, f *fixture, ten *herd.Tenant, nodes ...int64) {
	t.Helper()
	devices, _ := f.walk(t, f.super, herd.DeviceQuery{TenantID: ten.ID, Sort: herd.DeviceSort{Field: "id"}, Limit: herd.MaxLimit})
	nodePath := map[int64]string{}
	var walkUp func(id int64) string
	walkUp = func(id int64) string {
		if p, ok := nodePath[id]; ok {
			return p
		}
		n, err := f.Nodes.FindNodeByID(f.super, id)
		mustOK(t, err)
		want := herd.ChildPath("/", n.ID)
		if n.ParentID != 0 {
			want = herd.ChildPath(walkUp(n.ParentID), n.ID)
		}
		if n.Path != want {
			t.Fatalf("node %d has path %q, its walk to the root is %q", n.ID, n.Path, want)
		}
		nodePath[id] = n.Path
		return n.Path
	}
	for _, d := range devices {
		if p := walkUp(d.NodeID); d.Path != p {
			t.Fatalf("device %d has path %q, its node %d has %q", d.ID, d.Path, d.NodeID, p)
		}
	}
	for _, id := range nodes {
		if id != 0 {
			walkUp(id)
		}
	}
}
