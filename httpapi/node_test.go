package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestNodes(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		t.Run("CreateUnderRoot", func(t *testing.T) {
			r := e.do("POST", "/v1/nodes", adminSecret, map[string]any{"tenant_id": fmt.Sprint(f.tenant.ID), "kind": "region", "name": "east"})
			r.wantStatus(t, http.StatusCreated)
			var n herd.Node
			r.decode(t, &n)
			if want := fmt.Sprintf("/%d/%d/", f.tenant.RootNodeID, n.ID); n.Path != want || n.ParentID != f.tenant.RootNodeID {
				t.Fatalf("node %+v, want path %s under the root", n, want)
			}
		})
		t.Run("CreateUnderParent", func(t *testing.T) {
			n := &herd.Node{ParentID: f.n1.ID, Kind: "room", Name: "boiler room"}
			if err := httpapi.NewClient(e.srv.URL(), f.bobToken.Secret).CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if n.Path != f.n1.Path+fmt.Sprint(n.ID)+"/" || n.TenantID != f.tenant.ID {
				t.Fatalf("node %+v", n)
			}
		})
		t.Run("View", func(t *testing.T) {
			r := e.do("GET", fmt.Sprintf("/v1/nodes/%d", f.n2.ID), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var n herd.Node
			r.decode(t, &n)
			if n.ID != f.n2.ID || n.Path != f.n2.Path || n.Name != "n2" {
				t.Fatalf("node %+v, want %+v", n, f.n2)
			}
		})
		t.Run("ErrViewOutsideGrants", func(t *testing.T) {
			e.do("GET", fmt.Sprintf("/v1/nodes/%d", f.s1.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("ErrCreateWithoutAdminRole", func(t *testing.T) {
			r := e.do("POST", "/v1/nodes", f.aliceToken.Secret, map[string]any{"parent_id": fmt.Sprint(f.n1.ID), "kind": "room", "name": "x"})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrKindRequired", func(t *testing.T) {
			r := e.do("POST", "/v1/nodes", adminSecret, map[string]any{"tenant_id": fmt.Sprint(f.tenant.ID), "name": "x"})
			r.wantError(t, http.StatusBadRequest, herd.EINVALID, "kind")
		})
		t.Run("Move", func(t *testing.T) {
			ctx := context.Background()
			region := &herd.Node{TenantID: f.tenant.ID, Kind: "region", Name: "west"}
			site := &herd.Node{TenantID: f.tenant.ID, Kind: "site", Name: "w1"}
			if err := e.admin.CreateNode(ctx, region); err != nil {
				t.Fatal(err)
			} else if err := e.admin.CreateNode(ctx, site); err != nil {
				t.Fatal(err)
			}
			d := &herd.Device{NodeID: site.ID, Key: "w1-a"}
			if err := e.admin.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
			r := e.do("POST", fmt.Sprintf("/v1/nodes/%d/move", site.ID), adminSecret, map[string]any{"parent_id": fmt.Sprint(region.ID)})
			r.wantStatus(t, http.StatusOK)
			var moved herd.Node
			r.decode(t, &moved)
			wantPath := region.Path + fmt.Sprint(site.ID) + "/"
			if moved.Path != wantPath || moved.ParentID != region.ID {
				t.Fatalf("moved %+v, want path %s", moved, wantPath)
			}
			// The device's path follows its node.
			got, err := e.admin.FindDeviceByID(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			} else if got.Path != wantPath {
				t.Fatalf("device path %s, want %s", got.Path, wantPath)
			}
		})
		t.Run("ErrMoveIntoOwnSubtree", func(t *testing.T) {
			r := e.do("POST", fmt.Sprintf("/v1/nodes/%d/move", f.north.ID), adminSecret, map[string]any{"parent_id": fmt.Sprint(f.n1.ID)})
			r.wantError(t, http.StatusBadRequest, herd.EINVALID)
		})
		t.Run("ErrMoveWithoutAdminRole", func(t *testing.T) {
			r := e.do("POST", fmt.Sprintf("/v1/nodes/%d/move", f.n2.ID), f.aliceToken.Secret, map[string]any{"parent_id": fmt.Sprint(f.north.ID)})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrMoveParentRequired", func(t *testing.T) {
			e.do("POST", fmt.Sprintf("/v1/nodes/%d/move", f.n2.ID), adminSecret, `{}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "parent_id")
		})
	})
}
