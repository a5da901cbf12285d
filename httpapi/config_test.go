package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// countEvents counts the events of one type in the store.
func countEvents(t *testing.T, db *sqldb.DB, typ string) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRow(`SELECT COUNT(*) FROM events WHERE type = '` + typ + `'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func openConfigServer(t *testing.T, db *sqldb.DB) *env {
	return mustOpenServer(t, db, func(s *httpapi.Server) {
		s.ConfigService = sqldb.NewConfigService(db)
		s.FirmwareService = sqldb.NewFirmwareService(db)
		s.Idempotency = sqldb.NewIdempotencyService(db)
	})
}

const rateSchema = `{"type":"object","properties":{"rate_s":{"type":"integer","minimum":1},"tags":{"type":"array","items":{"type":"string"}}},"required":["rate_s"],"additionalProperties":false}`

// TestConfigProfilesAPI: a schema that compiles makes a profile, one that
// does not (or refers outside itself) is a 400 saying why; documents that
// validate become versions 1, 2, … that never change, and one that does
// not is a 400 naming its JSON pointer; the lists page by keyset; a viewer
// of any node of the tenant reads profiles, only a tenant admin creates.
func TestConfigProfilesAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openConfigServer(t, db)
		f := e.mustCreateFleet()
		create := func(name, schema string) response {
			return e.do("POST", "/v1/config-profiles", adminSecret, fmt.Sprintf(`{"tenant_id":"%d","name":%q,"schema":%s}`, f.tenant.ID, name, schema))
		}
		var p herd.ConfigProfile
		r := create("sensor", rateSchema)
		r.wantStatus(t, http.StatusCreated)
		r.decode(t, &p)
		if p.ID == 0 || p.LatestVersion != 0 || p.TenantID != f.tenant.ID {
			t.Fatalf("profile %+v", p)
		}
		if n := countEvents(t, db, herd.EventConfigProfileCreated); n != 1 {
			t.Fatalf("%d config_profile.created events, want 1", n)
		}

		t.Run("ErrSchema", func(t *testing.T) {
			before := rowCounts(t, db)
			create("bad", `{"type":"nope"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "schema does not compile", `"/type"`)
			create("bad", `{"minimum":"one"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "schema does not compile", `"/minimum"`)
			create("bad", `{"$ref":"https://example.com/evil.json"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "no external schemas")
			create("bad", `{"$ref":"file:///etc/passwd"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "no external schemas")
			create("bad", `null`).wantError(t, http.StatusBadRequest, herd.EINVALID, "schema is required")
			create("sensor", `{}`).wantError(t, http.StatusConflict, herd.ECONFLICT)
			if after := rowCounts(t, db); after != before {
				t.Fatalf("a refused profile wrote: before %s, after %s", before, after)
			}
		})
		vpath := fmt.Sprintf("/v1/config-profiles/%d/versions", p.ID)
		t.Run("Versions", func(t *testing.T) {
			var v1, v2 herd.ConfigVersion
			r := e.do("POST", vpath, adminSecret, `{"document":{"rate_s":10}}`)
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &v1)
			r = e.do("POST", vpath, adminSecret, `{"document":{"rate_s":60,"tags":["a"]}}`)
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &v2)
			if v1.Version != 1 || v2.Version != 2 || v1.ProfileID != p.ID {
				t.Fatalf("versions %+v %+v", v1, v2)
			}
			before := rowCounts(t, db)
			e.do("POST", vpath, adminSecret, `{"document":{"rate_s":0}}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `"/rate_s"`)
			e.do("POST", vpath, adminSecret, `{"document":{"rate_s":5,"tags":["a",7]}}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `"/tags/1"`)
			e.do("POST", vpath, adminSecret, `{"document":{"rate":5}}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "document does not validate")
			e.do("POST", vpath, adminSecret, `{}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "document is required")
			if after := rowCounts(t, db); after != before {
				t.Fatalf("a refused version wrote: before %s, after %s", before, after)
			}
			// Version 1 is what it was; there is no route that changes it.
			var got herd.ConfigVersion
			r = e.do("GET", vpath+"/1", f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			r.decode(t, &got)
			if got.Version != 1 || string(got.Document) != `{"rate_s":10}` {
				t.Fatalf("version 1 now %+v %s", got, got.Document)
			}
			for _, m := range []string{"PUT", "PATCH", "DELETE"} {
				if r := e.do(m, vpath+"/1", adminSecret, `{"document":{"rate_s":99}}`); r.Status != http.StatusMethodNotAllowed {
					t.Fatalf("%s version: %d %s", m, r.Status, r.Body)
				}
			}
			e.do("GET", vpath+"/3", adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			if n := countEvents(t, db, herd.EventConfigVersionCreated); n != 2 {
				t.Fatalf("%d config_version.created events, want 2", n)
			}
			var prof herd.ConfigProfile
			r = e.do("GET", fmt.Sprintf("/v1/config-profiles/%d", p.ID), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			r.decode(t, &prof)
			if prof.LatestVersion != 2 {
				t.Fatalf("latest version %d, want 2", prof.LatestVersion)
			}
			// The versions list pages by keyset.
			var page herd.ConfigPage[*herd.ConfigVersion]
			r = e.do("GET", vpath+"?limit=1", f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			r.decode(t, &page)
			if len(page.Items) != 1 || page.Items[0].Version != 1 || page.Next != 1 {
				t.Fatalf("first page %s", r.Body)
			}
			next := page.Next
			page = herd.ConfigPage[*herd.ConfigVersion]{}
			r = e.do("GET", fmt.Sprintf("%s?limit=1&after=%d", vpath, next), f.aliceToken.Secret, nil)
			r.decode(t, &page)
			if len(page.Items) != 1 || page.Items[0].Version != 2 || page.Next != 0 {
				t.Fatalf("second page %s", r.Body)
			}
		})
		t.Run("List", func(t *testing.T) {
			create("gateway", `{"type":"object"}`).wantStatus(t, http.StatusCreated)
			page, err := e.admin.FindConfigProfiles(t.Context(), f.tenant.ID, 0, 1)
			if err != nil || len(page.Items) != 1 || page.Items[0].ID != p.ID || page.Next != p.ID {
				t.Fatalf("first page %+v, %v", page, err)
			}
			page, err = e.admin.FindConfigProfiles(t.Context(), f.tenant.ID, page.Next, 1)
			if err != nil || len(page.Items) != 1 || page.Items[0].Name != "gateway" || page.Next != 0 {
				t.Fatalf("second page %+v, %v", page, err)
			}
			// A viewer of one node lists the tenant's profiles.
			r := e.do("GET", "/v1/config-profiles", f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			for _, l := range []string{"0", "-1", "1001"} {
				e.do("GET", "/v1/config-profiles?limit="+l, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
				e.do("GET", vpath+"?limit="+l, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
				e.do("GET", "/v1/firmware?limit="+l, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
			}
			e.do("GET", "/v1/config-profiles?after=x", f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR)
		})
		t.Run("ErrNotTenantAdmin", func(t *testing.T) {
			// bob administers a region, not the tenant.
			e.do("POST", "/v1/config-profiles", f.bobToken.Secret, fmt.Sprintf(`{"tenant_id":"%d","name":"x","schema":{}}`, f.tenant.ID)).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			e.do("POST", vpath, f.bobToken.Secret, `{"document":{"rate_s":1}}`).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
	})
}

// TestFirmwareAPI: firmware metadata is validated (http(s) URL, 64 hex
// digits, a size), (tenant, model, version) is unique, and the list
// filters by model and pages.
func TestFirmwareAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openConfigServer(t, db)
		f := e.mustCreateFleet()
		sum := strings.Repeat("ab", 32)
		body := func(model, version, url, sha string, size int64) string {
			return fmt.Sprintf(`{"tenant_id":"%d","model":%q,"version":%q,"url":%q,"sha256":%q,"size":%d}`, f.tenant.ID, model, version, url, sha, size)
		}
		var fw herd.Firmware
		r := e.do("POST", "/v1/firmware", adminSecret, body("th-200", "1.5.0", "https://cdn.example/th-200-1.5.0.bin", strings.ToUpper(sum), 1024))
		r.wantStatus(t, http.StatusCreated)
		r.decode(t, &fw)
		if fw.ID == 0 || fw.SHA256 != sum || fw.Size != 1024 {
			t.Fatalf("firmware %+v", fw)
		}
		before := rowCounts(t, db)
		for name, c := range map[string]struct{ body, part string }{
			"url scheme": {body("th-200", "1.6", "ftp://cdn.example/x", sum, 1), "url"},
			"url host":   {body("th-200", "1.6", "https:///x", sum, 1), "url"},
			"sha short":  {body("th-200", "1.6", "https://cdn.example/x", sum[:63], 1), "sha256"},
			"sha hex":    {body("th-200", "1.6", "https://cdn.example/x", strings.Repeat("zz", 32), 1), "sha256"},
			"size":       {body("th-200", "1.6", "https://cdn.example/x", sum, 0), "size"},
			"model":      {body("", "1.6", "https://cdn.example/x", sum, 1), "model"},
			"version":    {body("th-200", strings.Repeat("v", 101), "https://cdn.example/x", sum, 1), "version"},
		} {
			t.Run(name, func(t *testing.T) {
				e.do("POST", "/v1/firmware", adminSecret, c.body).wantError(t, http.StatusBadRequest, herd.EINVALID, c.part)
			})
		}
		e.do("POST", "/v1/firmware", adminSecret, body("th-200", "1.5.0", "https://other.example/x", sum, 5)).wantError(t, http.StatusConflict, herd.ECONFLICT)
		if after := rowCounts(t, db); after != before {
			t.Fatalf("refused firmware wrote: before %s, after %s", before, after)
		}
		e.do("POST", "/v1/firmware", adminSecret, body("th-300", "1.5.0", "http://cdn.example/y", sum, 5)).wantStatus(t, http.StatusCreated)
		e.do("POST", "/v1/firmware", adminSecret, body("th-200", "1.6.0", "http://cdn.example/z", sum, 5)).wantStatus(t, http.StatusCreated)
		if n := countEvents(t, db, herd.EventFirmwareCreated); n != 3 {
			t.Fatalf("%d firmware.created events, want 3", n)
		}
		page, err := e.admin.FindFirmware(t.Context(), f.tenant.ID, "th-200", 0, 1)
		if err != nil || len(page.Items) != 1 || page.Items[0].ID != fw.ID || page.Next == 0 {
			t.Fatalf("first page %+v, %v", page, err)
		}
		page, err = e.admin.FindFirmware(t.Context(), f.tenant.ID, "th-200", page.Next, 10)
		if err != nil || len(page.Items) != 1 || page.Items[0].Version != "1.6.0" || page.Next != 0 {
			t.Fatalf("second page %+v, %v", page, err)
		}
		// A viewer reads firmware; only a tenant admin creates it.
		e.do("GET", fmt.Sprintf("/v1/firmware/%d", fw.ID), f.aliceToken.Secret, nil).wantStatus(t, http.StatusOK)
		e.do("POST", "/v1/firmware", f.bobToken.Secret, body("th-400", "1", "https://cdn.example/x", sum, 1)).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
	})
}
