package sqldb_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestListService_Children: every node's children, walked page by page
// at several limits, equal the brute-force answer with the counts of each
// child's subtree (after a move of a site and of a device), through the
// database and through the state cache; a viewer of a region sees its
// children and its breadcrumb, and nothing of its ancestors.
func TestListService_Children(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ls := sqldb.NewListService(db)
		tr := f.mustListTree(t, 1)
		wantSource := "devices"
		if db.StateCache.Always {
			wantSource = "state_cache"
		}
		t.Run("OKBruteForce", func(t *testing.T) {
			for id := range tr.nodes {
				want := tr.wantChildren(id)
				for _, limit := range []int{1, 2, 1000} {
					got, sources := walkChildren(t, f.super, ls, tr, id, limit)
					if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
						t.Fatalf("children of %d (limit %d):\ngot  %+v\nwant %+v", id, limit, got, want)
					}
					var devices int64
					for _, c := range want {
						devices += c.DeviceCount
					}
					if devices > 0 && limit == 1000 && sources[0] != wantSource {
						t.Fatalf("children of %d counted from %q, want %q", id, sources[0], wantSource)
					}
				}
			}
		})
		region := tr.regions[0]
		viewer, secret := f.mustUser(t, tr.tenant.ID, "viewer")
		f.mustGrant(t, viewer.ID, region.ID, herd.RoleViewer)
		ctx := f.as(t, secret)
		t.Run("OKScopedBreadcrumb", func(t *testing.T) {
			got, _ := walkChildren(t, ctx, ls, tr, region.ID, 2)
			if want := tr.wantChildren(region.ID); !reflect.DeepEqual(got, want) {
				t.Fatalf("viewer's children of the region:\ngot  %+v\nwant %+v", got, want)
			}
			n, err := f.Nodes.FindNodeByID(ctx, region.ID)
			mustOK(t, err)
			want := []herd.NodeRef{{ID: tr.tenant.RootNodeID, Name: tr.tenant.Name}}
			if !slices.Equal(n.Ancestors, want) {
				t.Fatalf("breadcrumb %+v, want %+v", n.Ancestors, want)
			}
		})
		t.Run("ErrAncestorNotFound", func(t *testing.T) {
			// The root is the region's ancestor: its name is in the
			// breadcrumb, and nothing else of it is seen.
			wantCode(t, errOf(ls.FindChildren(ctx, tr.tenant.RootNodeID, herd.ListParams{})), herd.ENOTFOUND)
			wantCode(t, errOf(f.Nodes.FindNodeByID(ctx, tr.tenant.RootNodeID)), herd.ENOTFOUND)
			wantCode(t, errOf(ls.FindChildren(ctx, tr.regions[1].ID, herd.ListParams{})), herd.ENOTFOUND)
		})
		t.Run("ErrBadInput", func(t *testing.T) {
			for _, limit := range []int{-1, herd.MaxListLimit + 1} {
				wantCode(t, errOf(ls.FindChildren(f.super, region.ID, herd.ListParams{Limit: limit})), herd.EINVALIDLIMIT)
			}
			wantCode(t, errOf(ls.FindChildren(f.super, region.ID, herd.ListParams{Cursor: "bm90LWEtY3Vyc29y.AAAAAAAAAAAAAAAAAAAAAA"})), herd.EINVALIDCURSOR)
			// A cursor is the list's and the caller's: not another node's,
			// not another caller's.
			first, err := ls.FindChildren(f.super, tr.tenant.RootNodeID, herd.ListParams{Limit: 1})
			mustOK(t, err)
			if first.NextCursor == "" {
				t.Fatal("the root has one child only")
			}
			wantCode(t, errOf(ls.FindChildren(f.super, region.ID, herd.ListParams{Limit: 1, Cursor: first.NextCursor})), herd.EINVALIDCURSOR)
			mine, err := ls.FindChildren(ctx, region.ID, herd.ListParams{Limit: 1})
			mustOK(t, err)
			if mine.NextCursor != "" {
				wantCode(t, errOf(ls.FindChildren(f.super, region.ID, herd.ListParams{Limit: 1, Cursor: mine.NextCursor})), herd.EINVALIDCURSOR)
			}
		})
	})
}

// TestListService_SearchNodes: the search, walked at several limits and
// through many small batches, equals the brute-force answer (a substring
// of the name, case folded as Unicode folds it, in path order) for a
// super-admin and for a viewer of one region, who finds nothing outside it.
func TestListService_SearchNodes(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ls := sqldb.NewListService(db)
		tr := f.mustListTree(t, 2)
		region := tr.regions[1]
		viewer, secret := f.mustUser(t, tr.tenant.ID, "viewer")
		f.mustGrant(t, viewer.ID, region.ID, herd.RoleViewer)
		ctx := f.as(t, secret)
		root := herd.ChildPath("/", tr.tenant.RootNodeID)
		for _, batch := range []int{0, 3} {
			ls.SetSearchBatch(batch)
			for _, q := range []string{"osl", "OSLO", "østf", "ØSTFOLD N", "nor", "site", "ÅLE", "zzz"} {
				for _, limit := range []int{1, 2, 100} {
					ids := func(ns []*herd.Node) []int64 {
						out := []int64{}
						for _, n := range ns {
							out = append(out, n.ID)
						}
						return out
					}
					got := ids(walkList(t, limit, func(p herd.ListParams) (*herd.ListPage[*herd.Node], error) {
						return ls.SearchNodes(f.super, herd.NodeSearch{TenantID: tr.tenant.ID, Q: q, ListParams: p})
					}))
					if want := tr.wantSearch([]string{root}, q); !slices.Equal(got, want) {
						t.Fatalf("super q=%q limit %d batch %d: got %v, want %v", q, limit, batch, got, want)
					}
					got = ids(walkList(t, limit, func(p herd.ListParams) (*herd.ListPage[*herd.Node], error) {
						return ls.SearchNodes(ctx, herd.NodeSearch{Q: q, ListParams: p})
					}))
					if want := tr.wantSearch([]string{region.Path}, q); !slices.Equal(got, want) {
						t.Fatalf("viewer q=%q limit %d batch %d: got %v, want %v", q, limit, batch, got, want)
					}
				}
			}
		}
		if len(tr.wantSearch([]string{root}, "osl")) == 0 {
			t.Fatal("the tree has no node to find")
		}
		t.Run("ErrShortQ", func(t *testing.T) {
			for _, q := range []string{"", "os", "  ø "} {
				err := errOf(ls.SearchNodes(ctx, herd.NodeSearch{Q: q}))
				wantCode(t, err, herd.EINVALID)
				if msg := herd.ErrorMessage(err); !containsAll(msg, "q", fmt.Sprint(herd.MinNodeSearchLen)) {
					t.Fatalf("q=%q: message %q names neither q nor the minimum", q, msg)
				}
			}
		})
		t.Run("ErrOtherTenant", func(t *testing.T) {
			other := f.mustTenant(t, "other")
			wantCode(t, errOf(ls.SearchNodes(ctx, herd.NodeSearch{TenantID: other.ID, Q: "other"})), herd.ENOTFOUND)
			wantCode(t, errOf(ls.SearchNodes(f.super, herd.NodeSearch{Q: "other"})), herd.EINVALID)
		})
		t.Run("ErrCursorOfAnotherQ", func(t *testing.T) {
			p, err := ls.SearchNodes(f.super, herd.NodeSearch{TenantID: tr.tenant.ID, Q: "osl", ListParams: herd.ListParams{Limit: 1}})
			mustOK(t, err)
			if p.NextCursor == "" {
				t.Skip("one match only")
			}
			wantCode(t, errOf(ls.SearchNodes(f.super, herd.NodeSearch{TenantID: tr.tenant.ID, Q: "nor", ListParams: herd.ListParams{Limit: 1, Cursor: p.NextCursor}})), herd.EINVALIDCURSOR)
		})
	})
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
