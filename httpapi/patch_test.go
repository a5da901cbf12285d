package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// patchReq is one PATCH: its If-Match, Idempotency-Key and Content-Type
// (merge patch unless set) when not empty.
type patchReq struct {
	ifMatch, key, contentType string
}

func (e *env) patch(path, token string, body string, opt patchReq) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPatch, e.srv.URL()+path, bytes.NewReader([]byte(body)))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	ct := opt.contentType
	if ct == "" {
		ct = httpapi.MergePatchContentType
	}
	req.Header.Set("Content-Type", ct)
	if opt.ifMatch != "" {
		req.Header.Set("If-Match", opt.ifMatch)
	}
	if opt.key != "" {
		req.Header.Set(httpapi.HeaderIdempotencyKey, opt.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}
}

// wantVersion checks an answer's ETag and the version in its body.
func (r response) wantVersion(t *testing.T, version int64) {
	t.Helper()
	var body struct {
		Version any `json:"version"`
	}
	r.decode(t, &body)
	if got := r.Header.Get("ETag"); got != httpapi.ETag(version) || body.Version != float64(version) {
		t.Fatalf("ETag %s and version %#v, want %s and the number %d; body %s", got, body.Version, httpapi.ETag(version), version, r.Body)
	}
}

// TestPatch_Devices: PATCH /v1/devices/{id} end to end, on both stores.
func TestPatch_Devices(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		d := f.devices["n1-a"]
		path := fmt.Sprintf("/v1/devices/%d", d.ID)
		bob := f.bobToken.Secret // admin of n1
		unchanged := func(t *testing.T, events int, version int64) {
			t.Helper()
			if n := countEvents(t, db, herd.EventDeviceUpdated); n != events {
				t.Fatalf("%d device.updated events, want %d", n, events)
			}
			e.do("GET", path, adminSecret, nil).wantVersion(t, version)
		}
		t.Run("OK", func(t *testing.T) {
			e.do("GET", path, f.aliceToken.Secret, nil).wantVersion(t, 1)
			r := e.patch(path, bob, `{"name":"Boiler 1","model":"th-300"}`, patchReq{ifMatch: `"1"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 2)
			var got herd.Device
			r.decode(t, &got)
			if got.Name != "Boiler 1" || got.Model != "th-300" || got.Key != "n1-a" || got.Firmware != "1.0.0" {
				t.Fatalf("patched %s", r.Body)
			}
			if n := countEvents(t, db, herd.EventDeviceUpdated); n != 1 {
				t.Fatalf("%d device.updated events, want 1", n)
			}
			// application/json is taken as well, and If-Match is optional.
			r = e.patch(path, bob, `{"model":"th-301"}`, patchReq{contentType: "application/json; charset=utf-8"})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 3)
		})
		t.Run("OKNull", func(t *testing.T) {
			// null takes what create gives without the field: the key as
			// the name, no model.
			r := e.patch(path, bob, `{"name":null,"model":null}`, patchReq{})
			r.wantStatus(t, http.StatusOK)
			var got herd.Device
			r.decode(t, &got)
			if got.Name != "n1-a" || got.Model != "" || got.Version != 4 {
				t.Fatalf("patched %s", r.Body)
			}
		})
		t.Run("OKEmptyPatchChangesNothing", func(t *testing.T) {
			before := countEvents(t, db, herd.EventDeviceUpdated)
			r := e.patch(path, bob, `{}`, patchReq{ifMatch: `"4"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 4)
			unchanged(t, before, 4)
		})
		bad := []struct {
			name, body string
			opt        patchReq
			status     int
			code       string
			parts      []string
		}{
			{"ErrKey", `{"name":"x","key":"n1-z"}`, patchReq{}, 400, herd.EINVALID, []string{`"key"`, "cannot be patched"}},
			{"ErrUnknownField", `{"colour":"red"}`, patchReq{}, 400, herd.EINVALID, []string{`unknown field "colour"`}},
			{"ErrReadOnlyField", `{"status":"ok"}`, patchReq{}, 400, herd.EINVALID, []string{`"status"`, "cannot be patched"}},
			{"ErrNodeID", `{"node_id":"1"}`, patchReq{}, 400, herd.EINVALID, []string{`"node_id"`, "/move"}},
			{"ErrLabelsNotObject", `{"labels":["ring"]}`, patchReq{}, 400, herd.EINVALID, []string{`"labels"`, "must be an object"}},
			{"ErrLabelValue", `{"labels":{"ring":3}}`, patchReq{}, 400, herd.EINVALID, []string{"labels.ring must be a string"}},
			{"ErrLabelKey", `{"labels":{"Ring":"x"}}`, patchReq{}, 400, herd.EINVALID, []string{`label key "Ring"`}},
			{"ErrLabelTooLong", fmt.Sprintf(`{"labels":{"ring":"%0256d"}}`, 0), patchReq{}, 400, herd.EINVALID, []string{"labels.ring", "longer than 255"}},
			{"ErrWrongType", `{"name":42}`, patchReq{}, 400, herd.EINVALID, []string{`"name"`, "must be a string, not a number"}},
			{"ErrTooLong", fmt.Sprintf(`{"model":"%0101d"}`, 0), patchReq{}, 400, herd.EINVALID, []string{"model", "longer than 100"}},
			{"ErrNotObject", `["name"]`, patchReq{}, 400, herd.EINVALID, []string{"an object"}},
			{"ErrNullBody", `null`, patchReq{}, 400, herd.EINVALID, []string{"not null"}},
			{"ErrMalformed", `{"name":`, patchReq{}, 400, herd.EINVALID, nil},
			{"ErrJSONPatch", `[{"op":"replace","path":"/name","value":"x"}]`, patchReq{contentType: "application/json-patch+json"}, 415, httpapi.EMEDIATYPE, []string{"merge patch"}},
			{"ErrStale", `{"name":"late"}`, patchReq{ifMatch: `"3"`}, 412, herd.EPRECONDITION, []string{"version 4, not 3"}},
			{"ErrIfMatchWeak", `{"name":"late"}`, patchReq{ifMatch: `W/"4"`}, 400, herd.EINVALID, []string{"If-Match"}},
			{"ErrIfMatchBare", `{"name":"late"}`, patchReq{ifMatch: `4`}, 400, herd.EINVALID, []string{"If-Match"}},
		}
		for _, tt := range bad {
			t.Run(tt.name, func(t *testing.T) {
				before := countEvents(t, db, herd.EventDeviceUpdated)
				e.patch(path, bob, tt.body, tt.opt).wantError(t, tt.status, tt.code, tt.parts...)
				unchanged(t, before, 4)
			})
		}
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			before := countEvents(t, db, herd.EventDeviceUpdated)
			// bob's grants do not reach s1: its devices do not exist for him.
			e.patch(fmt.Sprintf("/v1/devices/%d", f.devices["s1-a"].ID), bob, `{"name":"x"}`, patchReq{}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.patch("/v1/devices/987654321", bob, `{"name":"x"}`, patchReq{}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			// alice sees n1-a but is only a viewer.
			e.patch(path, f.aliceToken.Secret, `{"name":"x"}`, patchReq{}).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			unchanged(t, before, 4)
		})
		t.Run("IdempotentReplay", func(t *testing.T) {
			before := countEvents(t, db, herd.EventDeviceUpdated)
			first := e.patch(path, bob, `{"name":"Boiler A"}`, patchReq{key: "rename-1", ifMatch: `"4"`})
			first.wantStatus(t, http.StatusOK)
			again := e.patch(path, bob, `{"name":"Boiler A"}`, patchReq{key: "rename-1", ifMatch: `"4"`})
			if again.Status != http.StatusOK || !bytes.Equal(again.Body, first.Body) || again.Header.Get(httpapi.HeaderReplayed) != "true" {
				t.Fatalf("replay %d %s (replayed %q), first %s", again.Status, again.Body, again.Header.Get(httpapi.HeaderReplayed), first.Body)
			}
			e.patch(path, bob, `{"name":"Boiler B"}`, patchReq{key: "rename-1"}).wantError(t, http.StatusUnprocessableEntity, herd.EKEYREUSED)
			unchanged(t, before+1, 5)
		})
		t.Run("Client", func(t *testing.T) {
			got, err := e.admin.UpdateDevice(context.Background(), d.ID, herd.DeviceUpdate{Model: new("th-400"), IfVersion: 5})
			if err != nil || got.Model != "th-400" || got.Version != 6 || got.Name != "Boiler A" {
				t.Fatalf("UpdateDevice: %+v, %v", got, err)
			}
			_, err = e.admin.UpdateDevice(context.Background(), d.ID, herd.DeviceUpdate{Model: new("th-500"), IfVersion: 5})
			if herd.ErrorCode(err) != herd.EPRECONDITION {
				t.Fatalf("stale UpdateDevice: %v, want %s", err, herd.EPRECONDITION)
			}
		})
		t.Run("OKLabels", func(t *testing.T) {
			r := e.patch(path, bob, `{"labels":{"ring":"canary","old":"x"}}`, patchReq{ifMatch: `"6"`})
			r.wantStatus(t, http.StatusOK)
			r = e.patch(path, bob, `{"labels":{"ring":"beta","old":null,"gone":null}}`, patchReq{ifMatch: `"7"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 8)
			var got herd.Device
			r.decode(t, &got)
			if len(got.Labels) != 1 || got.Labels["ring"] != "beta" {
				t.Fatalf("patched %s", r.Body)
			}
			before := countEvents(t, db, herd.EventDeviceUpdated)
			r = e.patch(path, bob, `{"labels":null}`, patchReq{ifMatch: `"8"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 9)
			if !strings.Contains(string(r.Body), `"labels":{}`) {
				t.Fatalf("labels cleared: %s", r.Body)
			}
			unchanged(t, before+1, 9)
			c, err := e.admin.UpdateDevice(context.Background(), d.ID, herd.DeviceUpdate{Labels: map[string]*string{"floor": new("2"), "ring": nil}, IfVersion: 9})
			if err != nil || c.Version != 10 || len(c.Labels) != 1 || c.Labels["floor"] != "2" {
				t.Fatalf("UpdateDevice with labels: %+v, %v", c, err)
			}
		})
	})
}

// TestPatch_Nodes: PATCH /v1/nodes/{id}.
func TestPatch_Nodes(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		path := fmt.Sprintf("/v1/nodes/%d", f.n1.ID)
		bob := f.bobToken.Secret
		t.Run("OK", func(t *testing.T) {
			e.do("GET", path, bob, nil).wantVersion(t, 1)
			r := e.patch(path, bob, `{"name":"Oslo","kind":"city"}`, patchReq{ifMatch: `"1"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 2)
			var n herd.Node
			r.decode(t, &n)
			if n.Name != "Oslo" || n.Kind != "city" || n.Path != f.n1.Path {
				t.Fatalf("patched %s", r.Body)
			}
			if c := countEvents(t, db, herd.EventNodeUpdated); c != 1 {
				t.Fatalf("%d node.updated events", c)
			}
		})
		for _, tt := range []struct {
			name, body string
			opt        patchReq
			status     int
			code       string
			parts      []string
		}{
			{"ErrNullName", `{"name":null}`, patchReq{}, 400, herd.EINVALID, []string{`"name"`, "may not be null"}},
			{"ErrEmptyKind", `{"kind":""}`, patchReq{}, 400, herd.EINVALID, []string{"kind is required"}},
			{"ErrParent", `{"parent_id":"1"}`, patchReq{}, 400, herd.EINVALID, []string{`"parent_id"`, "/move"}},
			{"ErrUnknown", `{"colour":"red"}`, patchReq{}, 400, herd.EINVALID, []string{`unknown field "colour"`}},
			{"ErrStale", `{"name":"late"}`, patchReq{ifMatch: `"1"`}, 412, herd.EPRECONDITION, nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e.patch(path, bob, tt.body, tt.opt).wantError(t, tt.status, tt.code, tt.parts...)
				e.do("GET", path, bob, nil).wantVersion(t, 2)
			})
		}
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			e.patch(fmt.Sprintf("/v1/nodes/%d", f.s1.ID), bob, `{"name":"x"}`, patchReq{}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			// bob sees n1 from its grant, not its parent.
			e.patch(fmt.Sprintf("/v1/nodes/%d", f.north.ID), bob, `{"name":"x"}`, patchReq{}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.patch(path, f.aliceToken.Secret, `{"name":"x"}`, patchReq{}).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("IdempotentReplay", func(t *testing.T) {
			first := e.patch(path, bob, `{"name":"Bergen"}`, patchReq{key: "node-1"})
			again := e.patch(path, bob, `{"name":"Bergen"}`, patchReq{key: "node-1"})
			if first.Status != http.StatusOK || again.Status != http.StatusOK || !bytes.Equal(first.Body, again.Body) || again.Header.Get(httpapi.HeaderReplayed) != "true" {
				t.Fatalf("first %d %s, again %d %s", first.Status, first.Body, again.Status, again.Body)
			}
			if c := countEvents(t, db, herd.EventNodeUpdated); c != 2 {
				t.Fatalf("%d node.updated events, want 2", c)
			}
		})
	})
}

// TestPatch_Users: PATCH /v1/users/{id}, and a disabled user's token is a
// 401 on its next request.
func TestPatch_Users(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		path := fmt.Sprintf("/v1/users/%d", f.alice.ID)
		alice := f.aliceToken.Secret
		t.Run("OKDisable", func(t *testing.T) {
			e.do("GET", path, alice, nil).wantVersion(t, 1)
			r := e.patch(path, adminSecret, `{"disabled":true}`, patchReq{ifMatch: `"1"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 2)
			var u herd.User
			r.decode(t, &u)
			if !u.Disabled || u.Name != "alice" {
				t.Fatalf("patched %s", r.Body)
			}
			e.do("GET", fmt.Sprintf("/v1/devices/%d", f.devices["n1-a"].ID), alice, nil).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			// Another user is not touched.
			e.do("GET", fmt.Sprintf("/v1/devices/%d", f.devices["n1-a"].ID), f.bobToken.Secret, nil).wantStatus(t, http.StatusOK)
			if c := countEvents(t, db, herd.EventUserUpdated); c != 1 {
				t.Fatalf("%d user.updated events", c)
			}
		})
		t.Run("OKEnableAndRename", func(t *testing.T) {
			r := e.patch(path, adminSecret, `{"disabled":false,"name":"Alice A."}`, patchReq{ifMatch: `"2"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 3)
			e.do("GET", path, alice, nil).wantStatus(t, http.StatusOK)
		})
		for _, tt := range []struct {
			name, body string
			opt        patchReq
			status     int
			code       string
			parts      []string
		}{
			{"ErrNullDisabled", `{"disabled":null}`, patchReq{}, 400, herd.EINVALID, []string{`"disabled"`, "may not be null"}},
			{"ErrDisabledType", `{"disabled":"yes"}`, patchReq{}, 400, herd.EINVALID, []string{`"disabled"`, "true or false, not a string"}},
			{"ErrTenant", `{"tenant_id":"2"}`, patchReq{}, 400, herd.EINVALID, []string{`"tenant_id"`, "cannot be patched"}},
			{"ErrUnknown", `{"email":"a@example.com"}`, patchReq{}, 400, herd.EINVALID, []string{`unknown field "email"`}},
			{"ErrStale", `{"name":"late"}`, patchReq{ifMatch: `"2"`}, 412, herd.EPRECONDITION, nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e.patch(path, adminSecret, tt.body, tt.opt).wantError(t, tt.status, tt.code, tt.parts...)
				e.do("GET", path, adminSecret, nil).wantVersion(t, 3)
			})
		}
		t.Run("ErrForbidden", func(t *testing.T) {
			// bob is an admin of a site, not of the tenant.
			e.patch(path, f.bobToken.Secret, `{"disabled":true}`, patchReq{}).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrOtherTenant", func(t *testing.T) {
			other := &herd.Tenant{Name: "other"}
			if err := e.admin.CreateTenant(context.Background(), other); err != nil {
				t.Fatal(err)
			}
			stranger := &herd.User{TenantID: other.ID, Name: "stranger"}
			if err := e.admin.CreateUser(context.Background(), stranger); err != nil {
				t.Fatal(err)
			}
			e.patch(fmt.Sprintf("/v1/users/%d", stranger.ID), f.bobToken.Secret, `{"disabled":true}`, patchReq{}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("IdempotentReplay", func(t *testing.T) {
			before := countEvents(t, db, herd.EventUserUpdated)
			first := e.patch(path, adminSecret, `{"name":"Alice B."}`, patchReq{key: "user-1"})
			again := e.patch(path, adminSecret, `{"name":"Alice B."}`, patchReq{key: "user-1"})
			if first.Status != http.StatusOK || !bytes.Equal(first.Body, again.Body) || again.Header.Get(httpapi.HeaderReplayed) != "true" {
				t.Fatalf("first %d %s, again %d %s", first.Status, first.Body, again.Status, again.Body)
			}
			if c := countEvents(t, db, herd.EventUserUpdated); c != before+1 {
				t.Fatalf("%d user.updated events, want %d", c, before+1)
			}
		})
	})
}

// TestPatch_Tenants: PATCH /v1/tenants/{id}, a super-admin's.
func TestPatch_Tenants(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		path := fmt.Sprintf("/v1/tenants/%d", f.tenant.ID)
		t.Run("OK", func(t *testing.T) {
			e.do("GET", path, f.bobToken.Secret, nil).wantVersion(t, 1)
			r := e.patch(path, adminSecret, `{"name":"Acme AS"}`, patchReq{ifMatch: `"1"`})
			r.wantStatus(t, http.StatusOK)
			r.wantVersion(t, 2)
			var got herd.Tenant
			r.decode(t, &got)
			if got.Name != "Acme AS" || got.RootNodeID != f.tenant.RootNodeID {
				t.Fatalf("patched %s", r.Body)
			}
			if c := countEvents(t, db, herd.EventTenantUpdated); c != 1 {
				t.Fatalf("%d tenant.updated events", c)
			}
		})
		for _, tt := range []struct {
			name, body string
			opt        patchReq
			status     int
			code       string
		}{
			{"ErrNullName", `{"name":null}`, patchReq{}, 400, herd.EINVALID},
			{"ErrRoot", `{"root_node_id":"1"}`, patchReq{}, 400, herd.EINVALID},
			{"ErrStale", `{"name":"late"}`, patchReq{ifMatch: `"1"`}, 412, herd.EPRECONDITION},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e.patch(path, adminSecret, tt.body, tt.opt).wantError(t, tt.status, tt.code)
				e.do("GET", path, adminSecret, nil).wantVersion(t, 2)
			})
		}
		t.Run("ErrForbidden", func(t *testing.T) {
			e.patch(path, f.bobToken.Secret, `{"name":"mine"}`, patchReq{}).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrOtherTenant", func(t *testing.T) {
			other := &herd.Tenant{Name: "other"}
			if err := e.admin.CreateTenant(context.Background(), other); err != nil {
				t.Fatal(err)
			}
			e.patch(fmt.Sprintf("/v1/tenants/%d", other.ID), f.bobToken.Secret, `{"name":"mine"}`, patchReq{}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("IdempotentReplay", func(t *testing.T) {
			first := e.patch(path, adminSecret, `{"name":"Acme Group"}`, patchReq{key: "tenant-1"})
			again := e.patch(path, adminSecret, `{"name":"Acme Group"}`, patchReq{key: "tenant-1"})
			if first.Status != http.StatusOK || !bytes.Equal(first.Body, again.Body) || again.Header.Get(httpapi.HeaderReplayed) != "true" {
				t.Fatalf("first %d %s, again %d %s", first.Status, first.Body, again.Status, again.Body)
			}
			if c := countEvents(t, db, herd.EventTenantUpdated); c != 2 {
				t.Fatalf("%d tenant.updated events, want 2", c)
			}
		})
	})
}

// TestPatch_CORS: a console on an allowed origin may send a PATCH with
// If-Match and read the ETag of the answer.
func TestPatch_CORS(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db, withStream(db, "https://app.example"))
	ten := &herd.Tenant{Name: "cors"}
	if err := e.admin.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/v1/tenants/%d", ten.ID)
	pre := cors(t, e, "PATCH", path, "https://app.example", true)
	pre.wantStatus(t, http.StatusNoContent)
	if m, h := pre.Header.Get("Access-Control-Allow-Methods"), pre.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(m, "PATCH") || !strings.Contains(h, "If-Match") {
		t.Fatalf("preflight of a PATCH: methods %q, headers %q", m, h)
	}
	r := cors(t, e, "GET", path, "https://app.example", false)
	r.wantStatus(t, http.StatusOK)
	if exp := r.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(exp, "ETag") || r.Header.Get("ETag") != httpapi.ETag(1) {
		t.Fatalf("exposed %q, ETag %q", exp, r.Header.Get("ETag"))
	}
}
