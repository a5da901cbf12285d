package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/internal/wsconn"
	"github.com/herd-iot/herd/sqldb"
	"github.com/herd-iot/herd/stream"
)

// withStream serves the stream (with no tail: these tests need its hello
// only) and tickets on the server's store.
func withStream(db *sqldb.DB, origins string) func(*httpapi.Server) {
	return func(s *httpapi.Server) {
		hub := stream.NewHub(sqldb.NewEventService(db).Head)
		s.Stream = hub
		s.TicketService = sqldb.NewTicketService(db)
		s.Origins, _ = wsconn.ParseOrigins(origins)
		s.Registry().MustRegister(hub.Collectors()...)
	}
}

// dialSocket opens a socket at url with the header (nil: none) and returns
// the first frame, or the error answer of a refused handshake.
func dialSocket(t *testing.T, url string, header http.Header) (map[string]any, *response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		return nil, &response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	defer ws.CloseNow()
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	return f, nil
}

// TestStreamTickets: a ticket asked for by a token opens the stream once,
// from another process on the same store, within its 30 s, while its
// token lives, as that token (tenant included); a request that cannot be a
// socket or comes from a refused origin does not spend it; it never
// reaches the request log.
func TestStreamTickets(t *testing.T) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "herd.db")
			if d == sqldb.Postgres {
				dsn = testutil.PostgresSchemaDSN(t)
			}
			var skew atomic.Int64
			open := func(skew *atomic.Int64) *sqldb.DB {
				db := sqldb.NewDB(dsn)
				db.Now = func() time.Time { return time.Now().UTC().Add(time.Duration(skew.Load())) }
				if err := db.Open(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			}
			dbA, dbB := open(new(atomic.Int64)), open(&skew)
			a := mustOpenServer(t, dbA, withStream(dbA, ""))
			b := mustOpenServer(t, dbB, withStream(dbB, "http://app.example"))
			f := a.mustCreateFleet()
			alice := httpapi.NewClient(a.srv.URL(), f.aliceToken.Secret)
			ctx := t.Context()
			var secrets []string
			ticket := func(c *httpapi.Client, tenant int64) (*herd.Ticket, string) {
				t.Helper()
				tk, err := c.CreateTicket(ctx, tenant)
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, tk.Secret)
				// The same ticket, for the other process.
				return tk, strings.Replace(tk.URL, strings.TrimPrefix(a.srv.URL(), "http://"), strings.TrimPrefix(b.srv.URL(), "http://"), 1)
			}
			wantHello := func(t *testing.T, f map[string]any, refused *response, tenant int64) {
				t.Helper()
				if refused != nil {
					t.Fatalf("refused: %d %s", refused.Status, refused.Body)
				}
				if f["type"] != "hello" || f["tenant_id"] != fmt.Sprint(tenant) {
					t.Fatalf("first frame %v, want the hello of tenant %d", f, tenant)
				}
			}

			t.Run("OK", func(t *testing.T) {
				tk, onB := ticket(alice, 0)
				if !strings.HasPrefix(tk.URL, strings.Replace(a.srv.URL(), "http://", "ws://", 1)+"/v1/stream?ticket=herd_ticket_") ||
					time.Until(tk.ExpiresAt) > herd.TicketTTL || time.Until(tk.ExpiresAt) < herd.TicketTTL-5*time.Second {
					t.Fatalf("ticket %+v", tk)
				}
				fr, refused := dialSocket(t, onB, nil)
				wantHello(t, fr, refused, f.tenant.ID)
			})
			t.Run("ErrUsed", func(t *testing.T) {
				tk, onB := ticket(alice, 0)
				fr, refused := dialSocket(t, onB, nil)
				wantHello(t, fr, refused, f.tenant.ID)
				for _, u := range []string{onB, tk.URL} {
					_, refused := dialSocket(t, u, nil)
					refused.wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED, "POST /v1/stream/tickets")
				}
			})
			t.Run("ErrExpired", func(t *testing.T) {
				_, onB := ticket(alice, 0)
				skew.Store(int64(herd.TicketTTL + time.Second))
				defer skew.Store(0)
				_, refused := dialSocket(t, onB, nil)
				refused.wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			})
			t.Run("ErrTokenRevoked", func(t *testing.T) {
				tok, err := a.admin.CreateToken(ctx, f.alice.ID)
				if err != nil {
					t.Fatal(err)
				}
				_, onB := ticket(httpapi.NewClient(a.srv.URL(), tok.Secret), 0)
				a.do("DELETE", fmt.Sprintf("/v1/tokens/%d", tok.ID), adminSecret, nil).wantStatus(t, http.StatusNoContent)
				_, refused := dialSocket(t, onB, nil)
				refused.wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			})
			t.Run("SuperAdminNamesTheTenant", func(t *testing.T) {
				tk, onB := ticket(a.admin, f.tenant.ID)
				if !strings.Contains(tk.URL, fmt.Sprintf("tenant_id=%d", f.tenant.ID)) {
					t.Fatalf("url %s does not name the tenant", tk.URL)
				}
				fr, refused := dialSocket(t, onB, nil)
				wantHello(t, fr, refused, f.tenant.ID)
				// A user's ticket is for the user's own tenant only, as the
				// user's token is.
				other := &herd.Tenant{Name: "other"}
				if err := a.admin.CreateTenant(ctx, other); err != nil {
					t.Fatal(err)
				}
				_, onB = ticket(alice, 0)
				_, refused = dialSocket(t, onB+fmt.Sprintf("&tenant_id=%d", other.ID), nil)
				refused.wantError(t, http.StatusNotFound, herd.ENOTFOUND)
				// A super-admin's ticket without a tenant would open
				// nothing (the stream is a tenant's): it is not issued.
				a.do("POST", "/v1/stream/tickets", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
			})
			t.Run("NotSpentByWhatCannotBeASocket", func(t *testing.T) {
				_, onB := ticket(alice, 0)
				plain := strings.Replace(onB, "ws://", "http://", 1)
				resp, err := http.Get(plain)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				(&response{Status: resp.StatusCode, Body: body}).wantError(t, http.StatusBadRequest, herd.EINVALID, "WebSocket")
				_, refused := dialSocket(t, onB, http.Header{"Authorization": {"Bearer " + f.aliceToken.Secret}})
				refused.wantError(t, http.StatusBadRequest, herd.EINVALID, "not both")
				_, refused = dialSocket(t, onB, http.Header{"Origin": {"http://evil.example"}})
				refused.wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "http://evil.example", "--allowed-origins")
				fr, refused := dialSocket(t, onB, http.Header{"Origin": {"http://app.example"}})
				wantHello(t, fr, refused, f.tenant.ID)
			})
			t.Run("ErrNoReplay", func(t *testing.T) {
				a.doKey("POST", "/v1/stream/tickets", f.aliceToken.Secret, "k1", "").wantError(t, http.StatusBadRequest, herd.EINVALID)
				a.do("POST", "/v1/stream/tickets", "", nil).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			})
			t.Run("NeverLogged", func(t *testing.T) {
				logs := a.logs.String() + b.logs.String()
				if !strings.Contains(logs, "ticket=REDACTED") {
					t.Fatalf("no redacted query in the logs:\n%s", logs)
				}
				for _, s := range secrets {
					if strings.Contains(logs, s) || strings.Contains(logs, s[len(herd.TicketPrefix):]) {
						t.Fatalf("ticket %s in the logs", s)
					}
				}
			})
		})
	}
}

// TestSocketOrigins: the sockets take no page of another origin unless
// the policy allows it, whatever the credential; herd's own origin and
// clients that send no Origin always pass.
func TestSocketOrigins(t *testing.T) {
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	for _, tc := range []struct {
		policy, origin string
		ok             bool
	}{
		{"", "", true},
		{"", "self", true},
		{"", "http://evil.example", false},
		{"", "null", false},
		{"https://app.example", "https://app.example", true},
		{"https://app.example", "https://APP.example:443", true},
		{"https://app.example", "http://app.example", false},
		{"https://app.example", "https://app.example:8443", false},
		{"https://app.example", "https://evil.example", false},
		{"*", "https://anything.example", true},
	} {
		t.Run(tc.policy+" "+tc.origin, func(t *testing.T) {
			e := mustOpenServer(t, db, withStream(db, tc.policy))
			origin := tc.origin
			if origin == "self" {
				origin = e.srv.URL()
			}
			h := http.Header{"Authorization": {"Bearer " + adminSecret}}
			if origin != "" {
				h.Set("Origin", origin)
			}
			ten := &herd.Tenant{Name: "o"}
			if err := e.admin.CreateTenant(t.Context(), ten); err != nil {
				t.Fatal(err)
			}
			u := strings.Replace(e.srv.URL(), "http://", "ws://", 1) + fmt.Sprintf("/v1/stream?tenant_id=%d", ten.ID)
			fr, refused := dialSocket(t, u, h)
			switch {
			case tc.ok && refused != nil:
				t.Fatalf("refused: %d %s", refused.Status, refused.Body)
			case tc.ok && fr["type"] != "hello":
				t.Fatalf("first frame %v", fr)
			case !tc.ok && refused == nil:
				t.Fatalf("origin %q opened the stream", origin)
			case !tc.ok:
				refused.wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "--allowed-origins")
			}
		})
	}
}
