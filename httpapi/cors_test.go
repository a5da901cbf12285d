package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// cors sends a request with an Origin; preflight makes it the OPTIONS a
// browser sends before a request with a token.
func cors(t *testing.T, e *env, method, path, origin string, preflight bool) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	if preflight {
		req.Method = http.MethodOptions
		req.Header.Set("Access-Control-Request-Method", method)
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,idempotency-key")
	} else {
		req.Header.Set("Authorization", "Bearer "+adminSecret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// TestCORS: a page of an allowed origin gets its preflight answered and
// may read /v1 answers; any other origin's preflight is refused and its
// answers carry nothing that lets the page read them; "*" never allows
// credentials; only /v1 speaks CORS.
func TestCORS(t *testing.T) {
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	listed := mustOpenServer(t, db, withStream(db, "https://app.example, http://localhost:5173"))
	anyOrigin := mustOpenServer(t, db, withStream(db, "*"))
	ten := &herd.Tenant{Name: "cors"}
	if err := listed.admin.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	tenantPath := fmt.Sprintf("/v1/tenants/%d", ten.ID)

	t.Run("PreflightAllowed", func(t *testing.T) {
		for _, origin := range []string{"https://app.example", "http://localhost:5173", listed.srv.URL()} {
			r := cors(t, listed, "POST", "/v1/devices", origin, true)
			r.wantStatus(t, http.StatusNoContent)
			h := r.Header
			if h.Get("Access-Control-Allow-Origin") != origin || h.Get("Access-Control-Allow-Credentials") != "true" ||
				!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "DELETE") ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Idempotency-Key") ||
				h.Get("Access-Control-Max-Age") == "" || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
				t.Fatalf("preflight from %s answered %v", origin, h)
			}
		}
	})
	t.Run("ErrPreflightRefused", func(t *testing.T) {
		for _, origin := range []string{"https://evil.example", "http://app.example", "null"} {
			r := cors(t, listed, "POST", "/v1/devices", origin, true)
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN, origin, "--allowed-origins")
			if r.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Fatalf("refused preflight allows %q", r.Header.Get("Access-Control-Allow-Origin"))
			}
		}
	})
	t.Run("Answers", func(t *testing.T) {
		r := cors(t, listed, "GET", tenantPath, "https://app.example", false)
		r.wantStatus(t, http.StatusOK)
		if r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || !strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
			t.Fatalf("answer headers %v", r.Header)
		}
		// Served, but the browser keeps it from the page.
		r = cors(t, listed, "GET", tenantPath, "https://evil.example", false)
		r.wantStatus(t, http.StatusOK)
		if r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("answer to another origin allows %q", r.Header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("AnyOriginWithoutCredentials", func(t *testing.T) {
		for _, preflight := range []bool{true, false} {
			r := cors(t, anyOrigin, "GET", tenantPath, "https://whoever.example", preflight)
			if r.Header.Get("Access-Control-Allow-Origin") != "*" || r.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatalf("with *: %d %v", r.Status, r.Header)
			}
		}
	})
	t.Run("OnlyV1", func(t *testing.T) {
		r := cors(t, listed, "GET", "/healthz", "https://app.example", true)
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("/healthz preflight: %d %v", r.Status, r.Header)
		}
	})
}
