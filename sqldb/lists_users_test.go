package sqldb_test

import (
	"context"
	"slices"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// userIDs returns the ids of users.
func userIDs(us []*herd.User) []int64 {
	out := []int64{}
	for _, u := range us {
		out = append(out, u.ID)
	}
	return out
}

// TestListService_People: the tenants, users, tokens and grants lists,
// walked page by page, equal brute-force answers for each kind of caller,
// and refuse the callers the rules leave out.
func TestListService_People(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ls := sqldb.NewListService(db)
		ten := f.mustTenant(t, "people")
		other := f.mustTenant(t, "other")
		region := f.mustNode(t, ten.RootNodeID, "region")
		site := f.mustNode(t, region.ID, "site")
		room := f.mustNode(t, site.ID, "room")
		sibling := f.mustNode(t, region.ID, "sibling")
		elsewhere := f.mustNode(t, ten.RootNodeID, "elsewhere")

		// Who holds what: a grant per user, on the node named.
		type person struct {
			u      *herd.User
			secret string
			grants []*herd.Grant
		}
		people := map[string]*person{}
		mk := func(name string, grants map[*herd.Node]herd.Role) *person {
			u, secret := f.mustUser(t, ten.ID, name)
			p := &person{u: u, secret: secret}
			for n, role := range grants {
				p.grants = append(p.grants, f.mustGrant(t, u.ID, n.ID, role))
			}
			people[name] = p
			return p
		}
		rootAdmin := mk("root admin", map[*herd.Node]herd.Role{{ID: ten.RootNodeID}: herd.RoleAdmin})
		regionAdmin := mk("region admin", map[*herd.Node]herd.Role{region: herd.RoleAdmin, elsewhere: herd.RoleViewer})
		siteViewer := mk("site viewer", map[*herd.Node]herd.Role{site: herd.RoleViewer})
		roomOp := mk("room operator", map[*herd.Node]herd.Role{room: herd.RoleOperator})
		mk("sibling viewer", map[*herd.Node]herd.Role{sibling: herd.RoleViewer})
		mk("elsewhere admin", map[*herd.Node]herd.Role{elsewhere: herd.RoleAdmin})
		mk("no grants", nil)
		otherUser, _ := f.mustUser(t, other.ID, "other user")
		paths := map[int64]string{}
		for _, id := range []int64{ten.RootNodeID, region.ID, site.ID, room.ID, sibling.ID, elsewhere.ID} {
			n, err := f.Nodes.FindNodeByID(f.super, id)
			mustOK(t, err)
			paths[id] = n.Path
		}
		// holders is the brute-force answer: the users of the tenant with
		// a grant under one of paths (every user for no paths), by id.
		holders := func(under ...string) []int64 {
			var out []int64
			for _, p := range people {
				if len(under) == 0 {
					out = append(out, p.u.ID)
					continue
				}
				for _, g := range p.grants {
					if slices.ContainsFunc(under, func(s string) bool { return herd.PathUnder(paths[g.NodeID], s) }) {
						out = append(out, p.u.ID)
						break
					}
				}
			}
			slices.Sort(out)
			return out
		}
		users := func(ctx context.Context, q herd.UserListQuery, limit int) []int64 {
			return userIDs(walkList(t, limit, func(p herd.ListParams) (*herd.ListPage[*herd.User], error) {
				q.ListParams = p
				return ls.FindUsers(ctx, q)
			}))
		}
		as := func(p *person) context.Context { return f.as(t, p.secret) }

		t.Run("Users", func(t *testing.T) {
			for _, c := range []struct {
				name string
				ctx  context.Context
				q    herd.UserListQuery
				want []int64
			}{
				{"super", f.super, herd.UserListQuery{TenantID: ten.ID}, holders()},
				{"super other tenant", f.super, herd.UserListQuery{TenantID: other.ID}, []int64{otherUser.ID}},
				{"root admin", as(rootAdmin), herd.UserListQuery{}, holders()},
				{"root admin under site", as(rootAdmin), herd.UserListQuery{NodeID: site.ID}, holders(paths[site.ID])},
				// An admin of the region, and viewer elsewhere: the holders
				// of grants under the region only.
				{"region admin", as(regionAdmin), herd.UserListQuery{}, holders(paths[region.ID])},
				{"region admin under site", as(regionAdmin), herd.UserListQuery{NodeID: site.ID}, holders(paths[site.ID])},
			} {
				for _, limit := range []int{1, 2, 100} {
					if got := users(c.ctx, c.q, limit); !slices.Equal(got, c.want) {
						t.Fatalf("%s (limit %d): got %v, want %v", c.name, limit, got, c.want)
					}
				}
			}
			for _, c := range []struct {
				name string
				ctx  context.Context
				q    herd.UserListQuery
				code string
			}{
				{"viewer", as(siteViewer), herd.UserListQuery{}, herd.EFORBIDDEN},
				{"viewer of the node", as(siteViewer), herd.UserListQuery{NodeID: site.ID}, herd.EFORBIDDEN},
				{"operator", as(roomOp), herd.UserListQuery{}, herd.EFORBIDDEN},
				{"region admin, viewer elsewhere", as(regionAdmin), herd.UserListQuery{NodeID: elsewhere.ID}, herd.EFORBIDDEN},
				{"outside grants", as(siteViewer), herd.UserListQuery{NodeID: sibling.ID}, herd.ENOTFOUND},
				{"other tenant", as(rootAdmin), herd.UserListQuery{TenantID: other.ID}, herd.ENOTFOUND},
				{"super without tenant", f.super, herd.UserListQuery{}, herd.EINVALID},
				{"super node of another tenant", f.super, herd.UserListQuery{TenantID: other.ID, NodeID: site.ID}, herd.ENOTFOUND},
				{"bad limit", as(rootAdmin), herd.UserListQuery{ListParams: herd.ListParams{Limit: herd.MaxListLimit + 1}}, herd.EINVALIDLIMIT},
			} {
				err := errOf(ls.FindUsers(c.ctx, c.q))
				if herd.ErrorCode(err) != c.code {
					t.Errorf("%s: got %v, want %s", c.name, err, c.code)
				}
			}
			// A cursor is the list's: not one of another node's users,
			// nor another caller's.
			p, err := ls.FindUsers(as(rootAdmin), herd.UserListQuery{ListParams: herd.ListParams{Limit: 1}})
			mustOK(t, err)
			wantCode(t, errOf(ls.FindUsers(as(rootAdmin), herd.UserListQuery{NodeID: region.ID, ListParams: herd.ListParams{Limit: 1, Cursor: p.NextCursor}})), herd.EINVALIDCURSOR)
			wantCode(t, errOf(ls.FindUsers(as(regionAdmin), herd.UserListQuery{ListParams: herd.ListParams{Limit: 1, Cursor: p.NextCursor}})), herd.EINVALIDCURSOR)
		})

		t.Run("Tokens", func(t *testing.T) {
			want := []int64{}
			for range 2 {
				tok, err := f.Users.CreateToken(f.super, siteViewer.u.ID)
				mustOK(t, err)
				want = append(want, tok.ID)
			}
			siteActor, err := f.Users.Authenticate(t.Context(), siteViewer.secret)
			mustOK(t, err)
			want = append([]int64{siteActor.TokenID}, want...)
			for _, ctx := range []context.Context{f.super, as(rootAdmin), as(siteViewer)} {
				for _, limit := range []int{1, 2, 10} {
					toks := walkList(t, limit, func(p herd.ListParams) (*herd.ListPage[*herd.Token], error) {
						return ls.FindTokens(ctx, siteViewer.u.ID, p)
					})
					var got []int64
					for _, tok := range toks {
						if tok.Secret != "" || tok.UserID != siteViewer.u.ID || tok.TenantID != ten.ID || tok.CreatedAt.IsZero() {
							t.Fatalf("token %+v", tok)
						}
						got = append(got, tok.ID)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("tokens (limit %d): got %v, want %v", limit, got, want)
					}
				}
			}
			wantCode(t, errOf(ls.FindTokens(as(regionAdmin), siteViewer.u.ID, herd.ListParams{})), herd.EFORBIDDEN)
			wantCode(t, errOf(ls.FindTokens(as(rootAdmin), otherUser.ID, herd.ListParams{})), herd.ENOTFOUND)
		})

		t.Run("GrantsByNode", func(t *testing.T) {
			// Who may see the site: the grants on it and on its ancestors,
			// not those below it (the room) or beside it.
			var want []int64
			for _, p := range people {
				for _, g := range p.grants {
					if herd.PathUnder(paths[site.ID], paths[g.NodeID]) {
						want = append(want, g.ID)
					}
				}
			}
			slices.Sort(want)
			if len(want) != 3 {
				t.Fatalf("the fixture has %d grants over the site, want 3", len(want))
			}
			for _, ctx := range []context.Context{f.super, as(rootAdmin), as(regionAdmin)} {
				for _, limit := range []int{1, 2, 10} {
					gs := walkList(t, limit, func(p herd.ListParams) (*herd.ListPage[*herd.Grant], error) {
						return ls.FindGrantsByNode(ctx, site.ID, p)
					})
					var got []int64
					for _, g := range gs {
						if !herd.PathUnder(paths[site.ID], g.Path) {
							t.Fatalf("grant %+v is not over the site", g)
						}
						got = append(got, g.ID)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("grants (limit %d): got %v, want %v", limit, got, want)
					}
				}
			}
			wantCode(t, errOf(ls.FindGrantsByNode(as(siteViewer), site.ID, herd.ListParams{})), herd.EFORBIDDEN)
			wantCode(t, errOf(ls.FindGrantsByNode(as(roomOp), site.ID, herd.ListParams{})), herd.ENOTFOUND)
			wantCode(t, errOf(ls.FindGrantsByNode(as(regionAdmin), ten.RootNodeID, herd.ListParams{})), herd.ENOTFOUND)
		})

		t.Run("Tenants", func(t *testing.T) {
			third := f.mustTenant(t, "third")
			for _, limit := range []int{1, 2, 10} {
				ts := walkList(t, limit, func(p herd.ListParams) (*herd.ListPage[*herd.Tenant], error) { return ls.FindTenants(f.super, p) })
				var got []int64
				for _, x := range ts {
					if x.RootNodeID == 0 || x.Name == "" {
						t.Fatalf("tenant %+v", x)
					}
					got = append(got, x.ID)
				}
				if want := []int64{ten.ID, other.ID, third.ID}; !slices.Equal(got, want) {
					t.Fatalf("tenants (limit %d): got %v, want %v", limit, got, want)
				}
			}
			wantCode(t, errOf(ls.FindTenants(as(rootAdmin), herd.ListParams{})), herd.EFORBIDDEN)
			wantCode(t, errOf(ls.FindTenants(f.super, herd.ListParams{Cursor: "x.y"})), herd.EINVALIDCURSOR)
		})

		t.Run("Breadcrumb", func(t *testing.T) {
			// A viewer of the site sees its ancestors' names, nothing more.
			n, err := f.Nodes.FindNodeByID(as(siteViewer), site.ID)
			mustOK(t, err)
			want := []herd.NodeRef{{ID: ten.RootNodeID, Name: ten.Name}, {ID: region.ID, Name: region.Name}}
			if !slices.Equal(n.Ancestors, want) {
				t.Fatalf("breadcrumb %+v, want %+v", n.Ancestors, want)
			}
			for _, id := range []int64{ten.RootNodeID, region.ID} {
				wantCode(t, errOf(f.Nodes.FindNodeByID(as(siteViewer), id)), herd.ENOTFOUND)
				wantCode(t, errOf(ls.FindChildren(as(siteViewer), id, herd.ListParams{})), herd.ENOTFOUND)
				wantCode(t, errOf(ls.FindGrantsByNode(as(siteViewer), id, herd.ListParams{})), herd.ENOTFOUND)
			}
			// Nor does the search find them.
			found, err := ls.SearchNodes(as(siteViewer), herd.NodeSearch{Q: "peo"})
			mustOK(t, err)
			if len(found.Items) != 0 {
				t.Fatalf("the viewer found %+v", found.Items)
			}
		})
	})
}
