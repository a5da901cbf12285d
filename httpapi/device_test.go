package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestDevices(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		t.Run("Create", func(t *testing.T) {
			r := e.do("POST", "/v1/devices", f.bobToken.Secret, map[string]any{
				"node_id": fmt.Sprint(f.n1.ID), "key": "n1-new", "name": "Boiler", "model": "th-200", "firmware": "2.1.0",
			})
			r.wantStatus(t, http.StatusCreated)
			var raw map[string]any
			r.decode(t, &raw)
			if id, ok := raw["id"].(string); !ok || id == "" || id == "0" {
				t.Fatalf("id is %#v, want an id string", raw["id"])
			}
			if raw["node_id"] != fmt.Sprint(f.n1.ID) || raw["tenant_id"] != fmt.Sprint(f.tenant.ID) {
				t.Fatalf("node_id %#v tenant_id %#v", raw["node_id"], raw["tenant_id"])
			}
			if raw["path"] != f.n1.Path || raw["status"] != "" || raw["online"] != false || raw["name"] != "Boiler" || raw["temperature"] != nil {
				t.Fatalf("device %s", r.Body)
			}
		})
		t.Run("ErrDuplicateKey", func(t *testing.T) {
			r := e.do("POST", "/v1/devices", adminSecret, map[string]any{"node_id": fmt.Sprint(f.n2.ID), "key": "n1-a"})
			r.wantError(t, http.StatusConflict, herd.ECONFLICT, "key")
		})
		t.Run("ErrBadKey", func(t *testing.T) {
			r := e.do("POST", "/v1/devices", adminSecret, map[string]any{"node_id": fmt.Sprint(f.n2.ID), "key": "a/b"})
			r.wantError(t, http.StatusBadRequest, herd.EINVALID, "key")
		})
		t.Run("ErrCreateWithoutAdminRole", func(t *testing.T) {
			// alice sees n1 but is only a viewer there.
			r := e.do("POST", "/v1/devices", f.aliceToken.Secret, map[string]any{"node_id": fmt.Sprint(f.n1.ID), "key": "alice-1"})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrCreateOutsideGrants", func(t *testing.T) {
			// bob's grants do not reach n2: the node does not exist for him.
			r := e.do("POST", "/v1/devices", f.bobToken.Secret, map[string]any{"node_id": fmt.Sprint(f.n2.ID), "key": "bob-1"})
			r.wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("View", func(t *testing.T) {
			d := f.devices["n2-a"]
			r := e.do("GET", fmt.Sprintf("/v1/devices/%d", d.ID), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var got herd.Device
			r.decode(t, &got)
			if got.ID != d.ID || got.Key != "n2-a" || got.Path != f.n2.Path {
				t.Fatalf("got %+v", got)
			}
		})
		t.Run("ErrViewOutsideGrants", func(t *testing.T) {
			d := f.devices["s1-a"]
			r := e.do("GET", fmt.Sprintf("/v1/devices/%d", d.ID), f.aliceToken.Secret, nil)
			r.wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			// Exactly as a device that does not exist.
			r2 := e.do("GET", "/v1/devices/987654321", f.aliceToken.Secret, nil)
			r2.wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("Move", func(t *testing.T) {
			d := &herd.Device{NodeID: f.n1.ID, Key: "mover"}
			if err := e.admin.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
			r := e.do("POST", fmt.Sprintf("/v1/devices/%d/move", d.ID), adminSecret, map[string]any{"node_id": fmt.Sprint(f.s1.ID)})
			r.wantStatus(t, http.StatusOK)
			var got herd.Device
			r.decode(t, &got)
			if got.NodeID != f.s1.ID || got.Path != f.s1.Path {
				t.Fatalf("moved %+v", got)
			}
			// Out of alice's grants now.
			e.do("GET", fmt.Sprintf("/v1/devices/%d", d.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("ErrMoveOutsideGrants", func(t *testing.T) {
			d := f.devices["n1-b"]
			r := e.do("POST", fmt.Sprintf("/v1/devices/%d/move", d.ID), f.bobToken.Secret, map[string]any{"node_id": fmt.Sprint(f.n2.ID)})
			r.wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			r = e.do("POST", fmt.Sprintf("/v1/devices/%d/move", d.ID), f.aliceToken.Secret, map[string]any{"node_id": fmt.Sprint(f.n2.ID)})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrMoveNodeRequired", func(t *testing.T) {
			e.do("POST", fmt.Sprintf("/v1/devices/%d/move", f.devices["n1-b"].ID), adminSecret, `{"node_id":""}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "node_id")
		})
		t.Run("Delete", func(t *testing.T) {
			d := &herd.Device{NodeID: f.n1.ID, Key: "doomed"}
			if err := e.admin.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
			path := fmt.Sprintf("/v1/devices/%d", d.ID)
			r := e.do("DELETE", path, f.bobToken.Secret, nil)
			r.wantStatus(t, http.StatusNoContent)
			if len(r.Body) != 0 {
				t.Fatalf("204 with body %q", r.Body)
			}
			e.do("GET", path, adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("DELETE", path, adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("ErrDeleteWithoutAdminRole", func(t *testing.T) {
			d := f.devices["n1-c"]
			e.do("DELETE", fmt.Sprintf("/v1/devices/%d", d.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			if _, err := e.admin.FindDeviceByID(ctx, d.ID); err != nil {
				t.Fatalf("device gone after a refused delete: %v", err)
			}
		})
	})
}

func TestDevices_Batch(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		count := func(t *testing.T) int64 {
			t.Helper()
			p, err := e.admin.QueryDevices(ctx, httpapi.DeviceQueryParams{TenantID: f.tenant.ID, Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			return p.Count
		}
		batch := func(devs ...map[string]any) map[string]any { return map[string]any{"devices": devs} }
		dev := func(node *herd.Node, key string) map[string]any {
			return map[string]any{"node_id": fmt.Sprint(node.ID), "key": key, "model": "th-200"}
		}
		t.Run("OK", func(t *testing.T) {
			before := count(t)
			r := e.do("POST", "/v1/devices/batch", adminSecret, batch(dev(f.n1, "b-1"), dev(f.n2, "b-2"), dev(f.s1, "b-3")))
			r.wantStatus(t, http.StatusCreated)
			var resp struct {
				Items []map[string]any `json:"items"`
			}
			r.decode(t, &resp)
			if len(resp.Items) != 3 {
				t.Fatalf("%d items", len(resp.Items))
			}
			for i, it := range resp.Items {
				if id, ok := it["id"].(string); !ok || id == "" || id == "0" || it["key"] != fmt.Sprintf("b-%d", i+1) {
					t.Fatalf("item %d: %v", i, it)
				}
			}
			if got := count(t); got != before+3 {
				t.Fatalf("count %d, want %d", got, before+3)
			}
		})
		t.Run("ErrConflictCreatesNothing", func(t *testing.T) {
			before := count(t)
			r := e.do("POST", "/v1/devices/batch", adminSecret, batch(dev(f.n1, "c-1"), dev(f.n1, "n1-a"), dev(f.n1, "c-3")))
			r.wantError(t, http.StatusConflict, herd.ECONFLICT)
			if got := count(t); got != before {
				t.Fatalf("count %d after a failed batch, want %d", got, before)
			}
			// The keys that did not clash are still free.
			e.do("POST", "/v1/devices/batch", adminSecret, batch(dev(f.n1, "c-1"), dev(f.n1, "c-3"))).wantStatus(t, http.StatusCreated)
		})
		t.Run("ErrInvalidNamesIndex", func(t *testing.T) {
			before := count(t)
			r := e.do("POST", "/v1/devices/batch", adminSecret, batch(dev(f.n1, "i-1"), dev(f.n1, "bad key")))
			r.wantError(t, http.StatusBadRequest, herd.EINVALID, "devices[1]")
			if got := count(t); got != before {
				t.Fatalf("count %d, want %d", got, before)
			}
		})
		t.Run("ErrForbiddenCreatesNothing", func(t *testing.T) {
			// bob is an admin of n1 and nothing else: one device outside
			// refuses the whole batch.
			before := count(t)
			r := e.do("POST", "/v1/devices/batch", f.bobToken.Secret, batch(dev(f.n1, "f-1"), dev(f.n2, "f-2")))
			if r.Status != http.StatusForbidden && r.Status != http.StatusNotFound {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			if got := count(t); got != before {
				t.Fatalf("count %d, want %d", got, before)
			}
		})
		t.Run("ErrEmpty", func(t *testing.T) {
			e.do("POST", "/v1/devices/batch", adminSecret, `{"devices":[]}`).wantError(t, http.StatusBadRequest, herd.EINVALID)
			e.do("POST", "/v1/devices/batch", adminSecret, `{}`).wantError(t, http.StatusBadRequest, herd.EINVALID)
		})
		t.Run("Client", func(t *testing.T) {
			ds := []*herd.Device{{NodeID: f.n2.ID, Key: "cl-1"}, {NodeID: f.n2.ID, Key: "cl-2"}}
			if err := e.admin.CreateDevices(ctx, ds); err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				if d.ID == 0 || d.Path != f.n2.Path {
					t.Fatalf("device not filled in: %+v", d)
				}
			}
			err := e.admin.CreateDevices(ctx, []*herd.Device{{NodeID: f.n2.ID, Key: "cl-1"}})
			if herd.ErrorCode(err) != herd.ECONFLICT {
				t.Fatalf("err %v, want conflict", err)
			}
		})
	})
}

func TestDevices_Query(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		alice := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
		keys := func(p *herd.DevicePage) []string {
			var ks []string
			for _, d := range p.Items {
				ks = append(ks, d.Key)
			}
			return ks
		}
		t.Run("Scoped", func(t *testing.T) {
			r := e.do("GET", "/v1/devices?sort=key", f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var p herd.DevicePage
			r.decode(t, &p)
			if got, want := keys(&p), []string{"n1-a", "n1-b", "n1-c", "n2-a", "n2-b"}; !slices.Equal(got, want) {
				t.Fatalf("alice sees %v, want %v", got, want)
			}
			if p.Count != 5 || p.CountCapped || p.NextCursor != "" {
				t.Fatalf("count %d capped %v next %q", p.Count, p.CountCapped, p.NextCursor)
			}
			if !strings.Contains(string(r.Body), `"items":[{"id":"`) {
				t.Fatalf("ids are not strings: %.200s", r.Body)
			}
		})
		t.Run("FilterSortPages", func(t *testing.T) {
			params := httpapi.DeviceQueryParams{Filters: []string{"model:eq:th-200"}, Sort: "-key", Limit: 2}
			var got []string
			for range 10 {
				p, err := alice.QueryDevices(ctx, params)
				if err != nil {
					t.Fatal(err)
				}
				if p.Count != 3 {
					t.Fatalf("count %d, want 3", p.Count)
				}
				got = append(got, keys(p)...)
				if p.NextCursor == "" {
					break
				}
				params.Cursor = p.NextCursor
			}
			if want := []string{"n2-a", "n1-b", "n1-a"}; !slices.Equal(got, want) {
				t.Fatalf("pages %v, want %v", got, want)
			}
		})
		t.Run("FilterIn", func(t *testing.T) {
			p, err := alice.QueryDevices(ctx, httpapi.DeviceQueryParams{Filters: []string{"key:in:n1-a|n2-b|s1-a"}, Sort: "key"})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := keys(p), []string{"n1-a", "n2-b"}; !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v (s1-a is outside the grants)", got, want)
			}
		})
		t.Run("SuperAdminPicksTenant", func(t *testing.T) {
			p, err := e.admin.QueryDevices(ctx, httpapi.DeviceQueryParams{TenantID: f.tenant.ID})
			if err != nil {
				t.Fatal(err)
			} else if p.Count != 7 {
				t.Fatalf("count %d, want 7", p.Count)
			}
			e.do("GET", "/v1/devices", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
		})
		t.Run("NoGrantsNoDevices", func(t *testing.T) {
			u := &herd.User{TenantID: f.tenant.ID, Name: "nobody"}
			if err := e.admin.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			tok, err := e.admin.CreateToken(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			r := e.do("GET", "/v1/devices", tok.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			if !strings.Contains(string(r.Body), `"items":[]`) || !strings.Contains(string(r.Body), `"count":0`) {
				t.Fatalf("body %s", r.Body)
			}
		})
		first, err := alice.QueryDevices(ctx, httpapi.DeviceQueryParams{Sort: "name", Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name, query, code string
			parts             []string
		}{
			{"ErrUnknownField", "filter=colour:eq:red", herd.EINVALIDFILTER, []string{`"colour"`}},
			{"ErrUnknownOperator", "filter=name:like:x", herd.EINVALIDFILTER, []string{`"like"`}},
			{"ErrWrongValueType", "filter=temperature:gt:hot", herd.EINVALIDFILTER, []string{`"hot"`}},
			{"ErrNotFieldOpValue", "filter=temperature", herd.EINVALIDFILTER, []string{"FIELD:OP:VALUE"}},
			{"ErrBadStatus", "filter=status:eq:broken", herd.EINVALIDFILTER, []string{`"broken"`}},
			{"ErrUnknownSort", "sort=-colour", herd.EINVALIDSORT, []string{`"colour"`}},
			{"ErrLimitZero", "limit=0", herd.EINVALIDLIMIT, []string{`"0"`}},
			{"ErrLimitTooLarge", "limit=501", herd.EINVALIDLIMIT, []string{`"501"`, "500"}},
			{"ErrLimitNotNumber", "limit=ten", herd.EINVALIDLIMIT, []string{`"ten"`}},
			{"ErrMalformedCursor", "cursor=not-a-cursor", herd.EINVALIDCURSOR, []string{"cursor"}},
			{"ErrForeignCursor", "sort=-name&limit=1&cursor=" + url.QueryEscape(first.NextCursor), herd.EINVALIDCURSOR, []string{"another query"}},
			{"ErrUnknownParam", "order=name", herd.EINVALID, []string{`"order"`}},
			{"ErrMalformedQueryString", "filter=%zz", herd.EINVALID, []string{"query string"}},
			{"ErrOtherTenant", "tenant_id=987654321", herd.ENOTFOUND, nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				status := http.StatusBadRequest
				if tt.code == herd.ENOTFOUND {
					status = http.StatusNotFound
				}
				e.do("GET", "/v1/devices?"+tt.query, f.aliceToken.Secret, nil).wantError(t, status, tt.code, tt.parts...)
			})
		}
		t.Run("CursorOfSameQueryWorks", func(t *testing.T) {
			r := e.do("GET", "/v1/devices?sort=name&limit=1&cursor="+url.QueryEscape(first.NextCursor), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var p herd.DevicePage
			r.decode(t, &p)
			if len(p.Items) != 1 || p.Items[0].ID == first.Items[0].ID {
				t.Fatalf("second page %v repeats or misses", keys(&p))
			}
		})
	})
}
