package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestGrants(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		t.Run("Create", func(t *testing.T) {
			r := e.do("POST", "/v1/grants", f.bobToken.Secret, map[string]any{"user_id": fmt.Sprint(f.alice.ID), "node_id": fmt.Sprint(f.n1.ID), "role": "operator"})
			r.wantStatus(t, http.StatusCreated)
			var raw map[string]any
			r.decode(t, &raw)
			if raw["user_id"] != fmt.Sprint(f.alice.ID) || raw["node_id"] != fmt.Sprint(f.n1.ID) || raw["role"] != "operator" || raw["path"] != f.n1.Path {
				t.Fatalf("grant %s", r.Body)
			}
		})
		t.Run("List", func(t *testing.T) {
			r := e.do("GET", fmt.Sprintf("/v1/users/%d/grants", f.bob.ID), f.bobToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var resp struct {
				Items []herd.Grant `json:"items"`
			}
			r.decode(t, &resp)
			if len(resp.Items) != 1 || resp.Items[0].ID != f.bobGrant.ID || resp.Items[0].Role != herd.RoleAdmin {
				t.Fatalf("grants %+v", resp.Items)
			}
			got, err := e.admin.FindGrantsByUser(ctx, f.bob.ID)
			if err != nil || len(got) != 1 {
				t.Fatalf("client: %v %v", got, err)
			}
		})
		t.Run("ListEmpty", func(t *testing.T) {
			u := &herd.User{TenantID: f.tenant.ID, Name: "dave"}
			if err := e.admin.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			r := e.do("GET", fmt.Sprintf("/v1/users/%d/grants", u.ID), adminSecret, nil)
			r.wantStatus(t, http.StatusOK)
			if string(r.Body) != "{\"items\":[]}\n" {
				t.Fatalf("body %q", r.Body)
			}
		})
		t.Run("ErrListSomeoneElses", func(t *testing.T) {
			e.do("GET", fmt.Sprintf("/v1/users/%d/grants", f.bob.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrDuplicate", func(t *testing.T) {
			r := e.do("POST", "/v1/grants", adminSecret, map[string]any{"user_id": fmt.Sprint(f.bob.ID), "node_id": fmt.Sprint(f.n1.ID), "role": "viewer"})
			r.wantError(t, http.StatusConflict, herd.ECONFLICT)
		})
		t.Run("ErrBadRole", func(t *testing.T) {
			r := e.do("POST", "/v1/grants", adminSecret, map[string]any{"user_id": fmt.Sprint(f.bob.ID), "node_id": fmt.Sprint(f.n2.ID), "role": "owner"})
			r.wantError(t, http.StatusBadRequest, herd.EINVALID, `"owner"`)
		})
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			// bob administers n1 only; granting on its parent region is a
			// change outside his grants.
			r := e.do("POST", "/v1/grants", f.bobToken.Secret, map[string]any{"user_id": fmt.Sprint(f.bob.ID), "node_id": fmt.Sprint(f.north.ID), "role": "admin"})
			if r.Status != http.StatusForbidden && r.Status != http.StatusNotFound {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			r = e.do("POST", "/v1/grants", f.aliceToken.Secret, map[string]any{"user_id": fmt.Sprint(f.alice.ID), "node_id": fmt.Sprint(f.n2.ID), "role": "admin"})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("RevokeAppliesToNextRequest", func(t *testing.T) {
			u := &herd.User{TenantID: f.tenant.ID, Name: "erin"}
			if err := e.admin.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			g := &herd.Grant{UserID: u.ID, NodeID: f.south.ID, Role: herd.RoleViewer}
			if err := e.admin.CreateGrant(ctx, g); err != nil {
				t.Fatal(err)
			}
			tok, err := e.admin.CreateToken(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			path := fmt.Sprintf("/v1/devices/%d", f.devices["s1-a"].ID)
			e.do("GET", path, tok.Secret, nil).wantStatus(t, http.StatusOK)
			e.do("DELETE", fmt.Sprintf("/v1/grants/%d", g.ID), adminSecret, nil).wantStatus(t, http.StatusNoContent)
			e.do("GET", path, tok.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			r := e.do("GET", "/v1/devices", tok.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var p herd.DevicePage
			r.decode(t, &p)
			if p.Count != 0 || len(p.Items) != 0 {
				t.Fatalf("after revoke: count %d items %d", p.Count, len(p.Items))
			}
			e.do("DELETE", fmt.Sprintf("/v1/grants/%d", g.ID), adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("ErrDeleteWithoutAdminRole", func(t *testing.T) {
			e.do("DELETE", fmt.Sprintf("/v1/grants/%d", f.bobGrant.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
	})
}
