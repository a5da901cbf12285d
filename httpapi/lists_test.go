package httpapi_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestLists: the list routes through the Go client and as raw JSON: the
// breadcrumb holds ids and names only, the children carry their counts,
// every list pages to the same answer at any limit, and bad input is a
// 400 that names the parameter.
func TestLists(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		alice := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
		bob := httpapi.NewClient(e.srv.URL(), f.bobToken.Secret)

		t.Run("Breadcrumb", func(t *testing.T) {
			// alice views north: n1's breadcrumb is the root (beyond her
			// grant) and north, by id and name and not one field more.
			r := e.do("GET", fmt.Sprintf("/v1/nodes/%d", f.n1.ID), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var raw struct {
				Ancestors []map[string]any `json:"ancestors"`
			}
			r.decode(t, &raw)
			want := []map[string]any{{"id": fmt.Sprint(f.tenant.RootNodeID), "name": "acme"}, {"id": fmt.Sprint(f.north.ID), "name": "north"}}
			if len(raw.Ancestors) != len(want) {
				t.Fatalf("ancestors %v, want %v", raw.Ancestors, want)
			}
			for i := range want {
				if !maps.Equal(raw.Ancestors[i], want[i]) {
					t.Fatalf("ancestor %d is %v, want %v", i, raw.Ancestors[i], want[i])
				}
			}
			// The root itself stays out of sight.
			e.do("GET", fmt.Sprintf("/v1/nodes/%d", f.tenant.RootNodeID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("GET", fmt.Sprintf("/v1/nodes/%d/children", f.tenant.RootNodeID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("Children", func(t *testing.T) {
			page, err := alice.FindChildren(ctx, f.north.ID, herd.ListParams{})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) != 2 || page.NextCursor != "" || page.Node.ID != f.north.ID || len(page.Node.Ancestors) != 1 {
				t.Fatalf("children of north: %+v", page)
			}
			for i, want := range []struct {
				id      int64
				devices int64
			}{{f.n1.ID, 3}, {f.n2.ID, 2}} {
				c := page.Items[i]
				if c.ID != want.id || c.DeviceCount != want.devices || c.OnlineCount != 0 || c.AlarmCount != 0 || c.ChildCount != 0 {
					t.Fatalf("child %d: %+v, want id %d with %d devices", i, c, want.id, want.devices)
				}
			}
			// One page at a time, the same children.
			first, err := alice.FindChildren(ctx, f.north.ID, herd.ListParams{Limit: 1})
			if err != nil || len(first.Items) != 1 || first.NextCursor == "" {
				t.Fatalf("first page %+v, %v", first, err)
			}
			second, err := alice.FindChildren(ctx, f.north.ID, herd.ListParams{Limit: 1, Cursor: first.NextCursor})
			if err != nil || len(second.Items) != 1 || second.NextCursor != "" || second.Items[0].ID != f.n2.ID {
				t.Fatalf("second page %+v, %v", second, err)
			}
		})
		t.Run("Lists", func(t *testing.T) {
			// Each list through the client, walked at limit 1, against the
			// fleet's known answer.
			walk := func(name string, page func(p herd.ListParams) ([]int64, string, error), want []int64) {
				t.Helper()
				var got []int64
				p := herd.ListParams{Limit: 1}
				for range 100 {
					ids, next, err := page(p)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					got = append(got, ids...)
					if next == "" {
						break
					}
					p.Cursor = next
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: got %v, want %v", name, got, want)
				}
			}
			walk("tenants", func(p herd.ListParams) ([]int64, string, error) {
				pg, err := e.admin.FindTenants(ctx, p)
				if err != nil {
					return nil, "", err
				}
				var ids []int64
				for _, x := range pg.Items {
					ids = append(ids, x.ID)
				}
				return ids, pg.NextCursor, nil
			}, []int64{f.tenant.ID})
			walk("users", func(p herd.ListParams) ([]int64, string, error) {
				pg, err := e.admin.FindUsers(ctx, herd.UserListQuery{TenantID: f.tenant.ID, ListParams: p})
				if err != nil {
					return nil, "", err
				}
				var ids []int64
				for _, x := range pg.Items {
					ids = append(ids, x.ID)
				}
				return ids, pg.NextCursor, nil
			}, []int64{f.alice.ID, f.bob.ID})
			// bob administers n1: he sees its grant holders, himself.
			walk("users of bob", func(p herd.ListParams) ([]int64, string, error) {
				pg, err := bob.FindUsers(ctx, herd.UserListQuery{ListParams: p})
				if err != nil {
					return nil, "", err
				}
				var ids []int64
				for _, x := range pg.Items {
					ids = append(ids, x.ID)
				}
				return ids, pg.NextCursor, nil
			}, []int64{f.bob.ID})
			walk("tokens", func(p herd.ListParams) ([]int64, string, error) {
				pg, err := alice.FindTokens(ctx, f.alice.ID, p)
				if err != nil {
					return nil, "", err
				}
				var ids []int64
				for _, x := range pg.Items {
					if x.Secret != "" {
						t.Fatalf("a listed token has its secret: %+v", x)
					}
					ids = append(ids, x.ID)
				}
				return ids, pg.NextCursor, nil
			}, []int64{f.aliceToken.ID})
			// Who may see n1: alice (north) and bob (n1).
			walk("grants", func(p herd.ListParams) ([]int64, string, error) {
				pg, err := bob.FindGrantsByNode(ctx, f.n1.ID, p)
				if err != nil {
					return nil, "", err
				}
				var ids []int64
				for _, x := range pg.Items {
					ids = append(ids, x.ID)
				}
				return ids, pg.NextCursor, nil
			}, []int64{f.aliceGrant.ID, f.bobGrant.ID})
			walk("search", func(p herd.ListParams) ([]int64, string, error) {
				pg, err := e.admin.SearchNodes(ctx, herd.NodeSearch{TenantID: f.tenant.ID, Q: "NOR", ListParams: p})
				if err != nil {
					return nil, "", err
				}
				var ids []int64
				for _, x := range pg.Items {
					ids = append(ids, x.ID)
				}
				return ids, pg.NextCursor, nil
			}, []int64{f.north.ID})
		})
		t.Run("ErrBadInput", func(t *testing.T) {
			for _, c := range []struct {
				path string
				code string
				says string
			}{
				{fmt.Sprintf("/v1/nodes/%d/children?limit=0", f.north.ID), herd.EINVALIDLIMIT, "limit"},
				{fmt.Sprintf("/v1/nodes/%d/children?limit=1001", f.north.ID), herd.EINVALIDLIMIT, "limit"},
				{fmt.Sprintf("/v1/nodes/%d/children?limit=x", f.north.ID), herd.EINVALIDLIMIT, "limit"},
				{fmt.Sprintf("/v1/nodes/%d/children?cursor=%%21%%21", f.north.ID), herd.EINVALIDCURSOR, "cursor"},
				{fmt.Sprintf("/v1/nodes/%d/children?cursor=abc.def", f.north.ID), herd.EINVALIDCURSOR, "cursor"},
				{fmt.Sprintf("/v1/nodes/%d/children?sort=name", f.north.ID), herd.EINVALID, "sort"},
				{"/v1/nodes?q=no", herd.EINVALID, "q"},
				{"/v1/nodes", herd.EINVALID, "q"},
				{"/v1/grants", herd.EINVALID, "node_id"},
				{"/v1/grants?node_id=x", herd.EINVALID, "node_id"},
				{"/v1/users?tenant_id=-1", herd.EINVALID, "tenant_id"},
				{fmt.Sprintf("/v1/users/%d/tokens?limit=-3", f.alice.ID), herd.EINVALIDLIMIT, "limit"},
			} {
				e.do("GET", c.path, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, c.code, c.says)
			}
			e.do("GET", "/v1/tenants?limit=0", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT, "limit")
			e.do("GET", "/v1/users", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
			e.do("GET", "/v1/tenants", f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
	})
}
