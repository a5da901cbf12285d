package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/password"
	"github.com/herd-iot/herd/sqldb"
)

// browserReq is a request as a browser page would send it: with the
// session cookie, an Origin and herd's request header as given.
type browserReq struct {
	method, path, body string
	cookie             string
	origin             string // "" sends none; "self" the server's own
	herdHeader         bool
	contentType        string
	bearer             string
}

func (e *env) browser(r browserReq) response {
	e.t.Helper()
	req, err := http.NewRequest(r.method, e.srv.URL()+r.path, strings.NewReader(r.body))
	if err != nil {
		e.t.Fatal(err)
	}
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: herd.SessionCookie, Value: r.cookie})
	}
	switch r.origin {
	case "":
	case "self":
		req.Header.Set("Origin", e.srv.URL())
	default:
		req.Header.Set("Origin", r.origin)
	}
	if r.herdHeader {
		req.Header.Set(httpapi.HeaderHerdRequest, "1")
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: buf}
}

// signIn signs a user in from herd's own page and returns the cookie.
func (e *env) signIn(tenantID int64, name, pw string) (*http.Cookie, response) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"tenant_id": strconv.FormatInt(tenantID, 10), "name": name, "password": pw})
	r := e.browser(browserReq{method: "POST", path: "/v1/sessions", body: string(body), origin: "self", herdHeader: true})
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == herd.SessionCookie {
			return c, r
		}
	}
	return nil, r
}

func TestServer_Sessions(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.SetPasswordParams(password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.SessionService = sqldb.NewSessionService(db) })
		f := e.mustCreateFleet()
		const alicePW, bobPW = "alice's passphrase", "bob's long passphrase"
		setPW := func(userID int64, token, pw string) response {
			body, _ := json.Marshal(map[string]string{"password": pw})
			return e.do("POST", "/v1/users/"+strconv.FormatInt(userID, 10)+"/password", token, string(body))
		}

		t.Run("SetPassword", func(t *testing.T) {
			setPW(f.alice.ID, f.aliceToken.Secret, alicePW).wantStatus(t, http.StatusNoContent)
			setPW(f.bob.ID, adminSecret, bobPW).wantStatus(t, http.StatusNoContent)
			setPW(f.alice.ID, f.aliceToken.Secret, "short").wantError(t, http.StatusBadRequest, herd.EINVALID, "at least 10 characters")
			// Bob administers a site, not the tenant: not alice's password.
			setPW(f.alice.ID, f.bobToken.Secret, "bob chose this one").wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			req, _ := http.NewRequest("POST", e.srv.URL()+"/v1/users/"+strconv.FormatInt(f.alice.ID, 10)+"/password", strings.NewReader(`{"password":"with a key, no"}`))
			req.Header.Set("Authorization", "Bearer "+f.aliceToken.Secret)
			req.Header.Set(httpapi.HeaderIdempotencyKey, "k1")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("a password with an Idempotency-Key: %d, want 400", resp.StatusCode)
			}
		})

		t.Run("SignIn", func(t *testing.T) {
			c, r := e.signIn(f.tenant.ID, "Alice", alicePW)
			r.wantStatus(t, http.StatusCreated)
			if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != int(herd.SessionTTL.Seconds()) || c.Secure {
				t.Fatalf("cookie %+v (Set-Cookie %q)", c, r.Header.Get("Set-Cookie"))
			}
			if strings.Contains(string(r.Body), c.Value) || r.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("the answer %s holds the secret, or may be cached (%q)", r.Body, r.Header.Get("Cache-Control"))
			}
			var s herd.Session
			r.decode(t, &s)
			if s.UserID != f.alice.ID || s.TenantID != f.tenant.ID {
				t.Fatalf("session %+v", s)
			}
			// The cookie reads exactly alice's devices (north's five).
			r = e.browser(browserReq{method: "GET", path: "/v1/devices", cookie: c.Value})
			r.wantStatus(t, http.StatusOK)
			var page herd.DevicePage
			r.decode(t, &page)
			var keys []string
			for _, d := range page.Items {
				keys = append(keys, d.Key)
			}
			if strings.Join(keys, ",") != "n1-a,n1-b,n1-c,n2-a,n2-b" {
				t.Fatalf("alice's session sees %v", keys)
			}
			// The session is not a bearer token, nor a token a session.
			e.browser(browserReq{method: "GET", path: "/v1/devices", bearer: c.Value}).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			e.browser(browserReq{method: "GET", path: "/v1/devices", cookie: f.aliceToken.Secret}).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			// A viewer's session gets no write through.
			r = e.browser(browserReq{method: "PATCH", path: "/v1/devices/" + strconv.FormatInt(f.devices["n1-a"].ID, 10), body: `{"name":"viewer"}`, cookie: c.Value, origin: "self", herdHeader: true})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			if strings.Contains(string(r.Body), "cookie") {
				t.Fatalf("refused for its cookie, not its role: %s", r.Body)
			}
			// Another site cannot sign her out.
			e.browser(browserReq{method: "DELETE", path: "/v1/sessions/current", cookie: c.Value, origin: "https://evil.example", herdHeader: true}).
				wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "cookie")
			e.browser(browserReq{method: "GET", path: "/v1/devices", cookie: c.Value}).wantStatus(t, http.StatusOK)
			// Signed out: the cookie is cleared and reads nothing more.
			r = e.browser(browserReq{method: "DELETE", path: "/v1/sessions/current", cookie: c.Value, origin: "self", herdHeader: true})
			r.wantStatus(t, http.StatusNoContent)
			if sc := r.Header.Get("Set-Cookie"); !strings.Contains(sc, herd.SessionCookie+"=;") || !strings.Contains(sc, "Max-Age=0") {
				t.Fatalf("sign-out's Set-Cookie %q does not clear it", sc)
			}
			e.browser(browserReq{method: "GET", path: "/v1/devices", cookie: c.Value}).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
		})

		t.Run("OnlyHerdsOwnPages", func(t *testing.T) {
			c, r := e.signIn(f.tenant.ID, "bob", bobPW)
			r.wantStatus(t, http.StatusCreated)
			dev := "/v1/devices/" + strconv.FormatInt(f.devices["n1-a"].ID, 10)
			name := func() string {
				var d herd.Device
				e.do("GET", dev, adminSecret, nil).decode(t, &d)
				return d.Name
			}
			before := name()
			for what, req := range map[string]browserReq{
				"a cross-site form post": {method: "POST", path: dev + "/move", body: url.Values{"node_id": {strconv.FormatInt(f.n2.ID, 10)}}.Encode(), contentType: "application/x-www-form-urlencoded", cookie: c.Value, origin: "https://evil.example"},
				"a cross-origin fetch":   {method: "PATCH", path: dev, body: `{"name":"evil"}`, cookie: c.Value, origin: "https://evil.example", herdHeader: true},
				"no Origin":              {method: "PATCH", path: dev, body: `{"name":"evil"}`, cookie: c.Value, herdHeader: true},
				"no X-Herd-Request":      {method: "PATCH", path: dev, body: `{"name":"evil"}`, cookie: c.Value, origin: "self"},
				"a cross-origin read":    {method: "GET", path: dev, cookie: c.Value, origin: "https://evil.example"},
				"a cross-origin sign-in": {method: "POST", path: "/v1/sessions", body: `{"tenant_id":"` + strconv.FormatInt(f.tenant.ID, 10) + `","name":"bob","password":"` + bobPW + `"}`, origin: "https://evil.example", herdHeader: true},
			} {
				if r := e.browser(req); r.Status != http.StatusForbidden {
					t.Errorf("%s: %d %s, want 403", what, r.Status, r.Body)
				}
			}
			if got := name(); got != before {
				t.Fatalf("the device was renamed to %q", got)
			}
			// From herd's own page, with the header, bob's write goes.
			e.browser(browserReq{method: "PATCH", path: dev, body: `{"name":"bob's"}`, cookie: c.Value, origin: "self", herdHeader: true}).wantStatus(t, http.StatusOK)
			if got := name(); got != "bob's" {
				t.Fatalf("name %q after bob's own write", got)
			}
		})

		t.Run("OwnPasswordWithTheCookie", func(t *testing.T) {
			c, r := e.signIn(f.tenant.ID, "bob", bobPW)
			r.wantStatus(t, http.StatusCreated)
			path := "/v1/users/" + strconv.FormatInt(f.bob.ID, 10) + "/password"
			e.browser(browserReq{method: "POST", path: path, body: `{"password":"bob's next passphrase"}`, cookie: c.Value, origin: "self", herdHeader: true}).
				wantError(t, http.StatusBadRequest, herd.EINVALID, "current_password")
			e.browser(browserReq{method: "POST", path: path, body: `{"password":"bob's next passphrase","current_password":"not it at all"}`, cookie: c.Value, origin: "self", herdHeader: true}).
				wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "current_password")
			body, _ := json.Marshal(map[string]string{"password": "bob's next passphrase", "current_password": bobPW})
			e.browser(browserReq{method: "POST", path: path, body: string(body), cookie: c.Value, origin: "self", herdHeader: true}).wantStatus(t, http.StatusNoContent)
			// Changed, his sessions end, this one too.
			e.browser(browserReq{method: "GET", path: "/v1/devices", cookie: c.Value}).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			setPW(f.bob.ID, adminSecret, bobPW).wantStatus(t, http.StatusNoContent)
		})

		t.Run("TenantIDAsANumber", func(t *testing.T) {
			// Ids are strings in answers, and numbers are taken in requests.
			body := `{"tenant_id":` + strconv.FormatInt(f.tenant.ID, 10) + `,"name":"bob","password":"` + bobPW + `"}`
			e.browser(browserReq{method: "POST", path: "/v1/sessions", body: body, origin: "self", herdHeader: true}).wantStatus(t, http.StatusCreated)
		})

		t.Run("SecureBehindAProxy", func(t *testing.T) {
			body, _ := json.Marshal(map[string]string{"tenant_id": strconv.FormatInt(f.tenant.ID, 10), "name": "bob", "password": bobPW})
			req, _ := http.NewRequest("POST", e.srv.URL()+"/v1/sessions", strings.NewReader(string(body)))
			req.Header.Set("Origin", e.srv.URL())
			req.Header.Set(httpapi.HeaderHerdRequest, "1")
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if cs := resp.Cookies(); resp.StatusCode != http.StatusCreated || len(cs) != 1 || !cs[0].Secure {
				t.Fatalf("%d, cookies %+v: want one Secure", resp.StatusCode, cs)
			}
		})

		t.Run("PasswordLink", func(t *testing.T) {
			carol := &herd.User{TenantID: f.tenant.ID, Name: "carol"}
			if err := e.admin.CreateUser(t.Context(), carol); err != nil {
				t.Fatal(err)
			}
			path := "/v1/users/" + strconv.FormatInt(carol.ID, 10) + "/password-link"
			e.do("POST", path, f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			r := e.do("POST", path, adminSecret, nil)
			r.wantStatus(t, http.StatusCreated)
			var l herd.PasswordLink
			r.decode(t, &l)
			if !herd.IsPasswordLinkSecret(l.Secret) || r.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("link %+v, Cache-Control %q", l, r.Header.Get("Cache-Control"))
			}
			body, _ := json.Marshal(map[string]string{"token": l.Secret, "password": "carol's passphrase"})
			// From another site: refused, the link unspent.
			e.browser(browserReq{method: "POST", path: "/v1/password", body: string(body), origin: "https://evil.example", herdHeader: true}).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			e.browser(browserReq{method: "POST", path: "/v1/password", body: string(body), origin: "self", herdHeader: true}).wantStatus(t, http.StatusNoContent)
			e.browser(browserReq{method: "POST", path: "/v1/password", body: string(body), origin: "self", herdHeader: true}).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			_, r = e.signIn(f.tenant.ID, "carol", "carol's passphrase")
			r.wantStatus(t, http.StatusCreated)
		})

		t.Run("FailedSignInsLimited", func(t *testing.T) {
			wrong := "not alice's passphrase"
			for i := range 5 {
				if _, r := e.signIn(f.tenant.ID, "alice", wrong); r.Status != http.StatusUnauthorized {
					t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
				}
			}
			// The sixth is refused unheard, the right password too.
			_, r := e.signIn(f.tenant.ID, "alice", alicePW)
			r.wantError(t, http.StatusTooManyRequests, herd.ERATELIMITED)
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("no Retry-After")
			}
			// Another account from the same address still may.
			_, r = e.signIn(f.tenant.ID, "bob", bobPW)
			r.wantStatus(t, http.StatusCreated)
			// Concurrent guesses get no more: of twenty at once on a fresh
			// account, five are heard (401) and the rest refused (429).
			results := make(chan int, 20)
			for range 20 {
				go func() {
					_, r := e.signIn(f.tenant.ID, "bob", "concurrent guess")
					results <- r.Status
				}()
			}
			heard := 0
			for range 20 {
				switch st := <-results; st {
				case http.StatusUnauthorized:
					heard++
				case http.StatusTooManyRequests:
				default:
					t.Fatalf("a concurrent guess: %d", st)
				}
			}
			if heard != 5 {
				t.Fatalf("%d of 20 concurrent guesses were heard, want 5", heard)
			}
			logs := e.logs.String()
			if !strings.Contains(logs, "sign-in failed") || strings.Contains(logs, wrong) || strings.Contains(logs, alicePW) || strings.Contains(logs, bobPW) {
				t.Fatalf("the logs do not say the failures, or hold a password:\n%s", logs)
			}
		})
	})
}

// TestServer_NoSessions: without a SessionService the sign-in routes are
// 404 and a cookie authenticates nothing.
func TestServer_NoSessions(t *testing.T) {
	e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite))
	e.browser(browserReq{method: "POST", path: "/v1/sessions", body: `{}`, origin: "self", herdHeader: true}).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
	e.browser(browserReq{method: "GET", path: "/v1/devices", cookie: adminSecret}).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
}
