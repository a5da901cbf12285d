package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestTenants(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		t.Run("Create", func(t *testing.T) {
			r := e.do("POST", "/v1/tenants", adminSecret, map[string]any{"name": "globex"})
			r.wantStatus(t, http.StatusCreated)
			// ids travel as JSON strings.
			var raw map[string]any
			r.decode(t, &raw)
			for _, k := range []string{"id", "root_node_id"} {
				if s, ok := raw[k].(string); !ok || s == "" || s == "0" {
					t.Fatalf("%s is %#v, want a non-zero id string", k, raw[k])
				}
			}
			if raw["name"] != "globex" {
				t.Fatalf("name %v", raw["name"])
			}
			var tn herd.Tenant
			r.decode(t, &tn)
			got, err := e.admin.FindTenantByID(context.Background(), tn.ID)
			if err != nil {
				t.Fatal(err)
			} else if got.Name != "globex" || got.RootNodeID != tn.RootNodeID {
				t.Fatalf("got %+v, want %+v", got, tn)
			}
		})
		t.Run("View", func(t *testing.T) {
			r := e.do("GET", fmt.Sprintf("/v1/tenants/%d", f.tenant.ID), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			if !strings.Contains(string(r.Body), fmt.Sprintf(`"id":"%d"`, f.tenant.ID)) {
				t.Fatalf("body %s", r.Body)
			}
		})
		t.Run("ErrNameRequired", func(t *testing.T) {
			e.do("POST", "/v1/tenants", adminSecret, `{"name":"  "}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "name")
		})
		t.Run("ErrForbiddenForUsers", func(t *testing.T) {
			e.do("POST", "/v1/tenants", f.aliceToken.Secret, `{"name":"mine"}`).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrOtherTenantNotFound", func(t *testing.T) {
			other := &herd.Tenant{Name: "initech"}
			if err := e.admin.CreateTenant(context.Background(), other); err != nil {
				t.Fatal(err)
			}
			e.do("GET", fmt.Sprintf("/v1/tenants/%d", other.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("GET", "/v1/tenants/987654321", adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
	})
}
