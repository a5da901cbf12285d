package herd_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/herd-iot/herd"
)

func TestRole(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			role  herd.Role
			rank  int
			valid bool
		}{
			{herd.RoleViewer, 1, true},
			{herd.RoleOperator, 2, true},
			{herd.RoleAdmin, 3, true},
			{"", 0, false},
			{"Admin", 0, false},
			{"owner", 0, false},
		} {
			if got := tt.role.Rank(); got != tt.rank {
				t.Fatalf("%q.Rank() = %d, want %d", tt.role, got, tt.rank)
			}
			if got := tt.role.Valid(); got != tt.valid {
				t.Fatalf("%q.Valid() = %v, want %v", tt.role, got, tt.valid)
			}
		}
	})
}

func TestGrant_Validate(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		g := &herd.Grant{UserID: 1, NodeID: 2, Role: herd.RoleOperator}
		if err := g.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	for _, tt := range []struct {
		name string
		g    herd.Grant
		part string
	}{
		{"ErrUserRequired", herd.Grant{NodeID: 2, Role: herd.RoleViewer}, "user_id"},
		{"ErrNodeRequired", herd.Grant{UserID: 1, Role: herd.RoleViewer}, "node_id"},
		{"ErrRole", herd.Grant{UserID: 1, NodeID: 2, Role: "owner"}, `"owner"`},
		{"ErrRoleEmpty", herd.Grant{UserID: 1, NodeID: 2}, "role"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mustFail(t, tt.g.Validate(), herd.EINVALID, tt.part)
		})
	}
}

func TestCoveringPaths(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			in, want []string
		}{
			{nil, []string{}},
			{[]string{"/1/"}, []string{"/1/"}},
			// A region and one of its sites: the region covers the site.
			{[]string{"/1/7/", "/1/7/12/"}, []string{"/1/7/"}},
			{[]string{"/1/7/12/", "/1/7/"}, []string{"/1/7/"}},
			// Duplicates collapse.
			{[]string{"/1/7/", "/1/7/"}, []string{"/1/7/"}},
			// A sibling whose id starts with the same digits is not a child.
			{[]string{"/1/7/", "/1/70/", "/1/7/0/"}, []string{"/1/7/", "/1/70/"}},
			{[]string{"/1/12/", "/1/1/", "/1/120/"}, []string{"/1/1/", "/1/12/", "/1/120/"}},
			// Deep descendants of several roots, in any order.
			{[]string{"/1/2/3/4/", "/1/9/", "/1/2/", "/1/9/8/7/", "/1/3/"}, []string{"/1/2/", "/1/3/", "/1/9/"}},
			// The tenant root covers everything.
			{[]string{"/1/2/", "/1/", "/1/3/4/"}, []string{"/1/"}},
		} {
			got := herd.CoveringPaths(tt.in)
			if len(got) == 0 && len(tt.want) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("CoveringPaths(%q) = %q, want %q", tt.in, got, tt.want)
			}
		}
	})
	t.Run("OKInputUntouched", func(t *testing.T) {
		in := []string{"/1/9/", "/1/2/3/", "/1/2/"}
		herd.CoveringPaths(in)
		if want := []string{"/1/9/", "/1/2/3/", "/1/2/"}; !reflect.DeepEqual(in, want) {
			t.Fatalf("input changed to %q", in)
		}
	})
}

func TestResolveScope(t *testing.T) {
	grant := func(path string, role herd.Role) *herd.Grant {
		return &herd.Grant{TenantID: 1, Path: path, Role: role}
	}
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			grants []*herd.Grant
			min    herd.Role
			want   []string
		}{
			{"RegionAndSite", []*herd.Grant{grant("/1/7/", herd.RoleViewer), grant("/1/7/12/", herd.RoleViewer)}, herd.RoleViewer, []string{"/1/7/"}},
			// Roles are filtered before collapsing: a viewer grant on a region
			// does not hide an operator grant on one of its sites.
			{"ViewerRegionOperatorSite", []*herd.Grant{grant("/1/7/", herd.RoleViewer), grant("/1/7/12/", herd.RoleOperator)}, herd.RoleOperator, []string{"/1/7/12/"}},
			{"ViewerRegionOperatorSiteAsViewer", []*herd.Grant{grant("/1/7/", herd.RoleViewer), grant("/1/7/12/", herd.RoleOperator)}, herd.RoleViewer, []string{"/1/7/"}},
			{"AdminCountsAsOperator", []*herd.Grant{grant("/1/7/", herd.RoleAdmin), grant("/1/8/", herd.RoleViewer)}, herd.RoleOperator, []string{"/1/7/"}},
			{"AdminOnly", []*herd.Grant{grant("/1/7/", herd.RoleOperator), grant("/1/8/", herd.RoleViewer)}, herd.RoleAdmin, nil},
			{"UnknownRoleSeesNothing", []*herd.Grant{grant("/1/7/", "owner")}, herd.RoleViewer, nil},
			{"NoGrants", nil, herd.RoleViewer, nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := herd.ResolveScope(1, tt.grants, tt.min)
				if s.TenantID != 1 {
					t.Fatalf("tenant %d", s.TenantID)
				}
				if len(tt.want) == 0 {
					if !s.Empty() {
						t.Fatalf("got %q, want empty", s.Paths)
					}
					return
				}
				if s.Empty() || !reflect.DeepEqual(s.Paths, tt.want) {
					t.Fatalf("got %q, want %q", s.Paths, tt.want)
				}
			})
		}
	})
	t.Run("OKSizeIndependentOfDevices", func(t *testing.T) {
		// Three grants over a tree of 5 regions × 40 sites: however many
		// devices sit under those sites, the scope is at most three paths,
		// because it is a function of the grants alone.
		var grants []*herd.Grant
		for r := 1; r <= 5; r++ {
			for s := 1; s <= 40; s++ {
				if (r == 2) || (r == 4 && s <= 3) {
					grants = append(grants, grant(fmt.Sprintf("/1/%d/%d/", r, r*100+s), herd.RoleViewer))
				}
			}
		}
		grants = append(grants, grant("/1/2/", herd.RoleViewer), grant("/1/4/", herd.RoleViewer), grant("/1/5/507/", herd.RoleOperator))
		s := herd.ResolveScope(1, grants, herd.RoleViewer)
		if want := []string{"/1/2/", "/1/4/", "/1/5/507/"}; !reflect.DeepEqual(s.Paths, want) {
			t.Fatalf("got %q, want %q", s.Paths, want)
		}
	})
	t.Run("OKCovers", func(t *testing.T) {
		s := herd.ResolveScope(1, []*herd.Grant{grant("/1/7/", herd.RoleViewer), grant("/1/9/3/", herd.RoleViewer)}, herd.RoleViewer)
		for path, want := range map[string]bool{
			"/1/7/": true, "/1/7/12/": true, "/1/9/3/": true, "/1/9/3/4/": true,
			"/1/": false, "/1/70/": false, "/1/9/": false, "/1/9/30/": false, "/2/7/": false,
		} {
			if got := s.Covers(path); got != want {
				t.Fatalf("Covers(%q) = %v, want %v", path, got, want)
			}
		}
	})
}
