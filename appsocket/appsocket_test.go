package appsocket_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/appsocket"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
	"github.com/prometheus/client_golang/prometheus"
)

const adminSecret = "herd_admin_secret_for_appsocket_tests"

type env struct {
	db      *sqldb.DB
	url     string
	handler *appsocket.Handler
	super   context.Context
	tenant  *herd.Tenant
	inside  *herd.Node // bob views it
	outside *herd.Node
	bob     string // bob's token
}

func newEnv(t *testing.T, configure func(*appsocket.Handler)) *env {
	t.Helper()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	bus := testutil.MustOpenBus(t, "embedded", nil)
	if _, err := db.EnsureAdminToken(context.Background(), adminSecret); err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, super: testutil.SuperContext()}
	e.tenant = &herd.Tenant{Name: "acme"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(sqldb.NewTenantService(db).CreateTenant(e.super, e.tenant))
	e.inside = &herd.Node{ParentID: e.tenant.RootNodeID, Kind: "site", Name: "in"}
	e.outside = &herd.Node{ParentID: e.tenant.RootNodeID, Kind: "site", Name: "out"}
	must(sqldb.NewNodeService(db).CreateNode(e.super, e.inside))
	must(sqldb.NewNodeService(db).CreateNode(e.super, e.outside))
	users := sqldb.NewUserService(db)
	u := &herd.User{TenantID: e.tenant.ID, Name: "bob"}
	must(users.CreateUser(e.super, u))
	must(sqldb.NewGrantService(db).CreateGrant(e.super, &herd.Grant{UserID: u.ID, NodeID: e.inside.ID, Role: herd.RoleViewer}))
	tok, err := users.CreateToken(e.super, u.ID)
	must(err)
	e.bob = tok.Secret

	// The fixture's own events (bob's grant among them) reach the stream
	// before any app's feed starts, so no test sees them.
	testutil.StartRelay(t, db, bus)
	e.handler = appsocket.NewHandler(bus)
	if configure != nil {
		configure(e.handler)
	}
	s := httpapi.NewServer()
	s.Addr = "127.0.0.1:0"
	s.TenantService, s.NodeService, s.DeviceService = sqldb.NewTenantService(db), sqldb.NewNodeService(db), sqldb.NewDeviceService(db)
	s.UserService, s.GrantService = users, sqldb.NewGrantService(db)
	s.AppSocket = e.handler
	s.TicketService = sqldb.NewTicketService(db)
	must(s.Open())
	e.url = strings.Replace(s.URL(), "http://", "ws://", 1) + "/v1/apps/socket"
	t.Cleanup(func() {
		e.handler.Close()
		s.Close()
	})
	return e
}

func (e *env) device(t *testing.T, node *herd.Node) *herd.Device {
	t.Helper()
	d := &herd.Device{NodeID: node.ID, Key: fmt.Sprintf("app-%d", time.Now().UnixNano())}
	if err := sqldb.NewDeviceService(e.db).CreateDevices(e.super, []*herd.Device{d}); err != nil {
		t.Fatal(err)
	}
	return d
}

type frame struct {
	Type         string      `json:"type"`
	EnvelopeID   string      `json:"envelope_id"`
	RetryAttempt int         `json:"retry_attempt"`
	AckTimeoutMS int64       `json:"ack_timeout_ms"`
	Event        *herd.Event `json:"event"`
}

type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func (e *env) dial(t *testing.T, token string) *client {
	t.Helper()
	ws, _, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, ws: ws}
	t.Cleanup(func() { ws.CloseNow() })
	if f := c.read(); f.Type != "hello" || f.AckTimeoutMS <= 0 {
		t.Fatalf("first frame %+v, want hello", f)
	}
	return c
}

func (c *client) read() frame {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, data, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatal(err)
	}
	return f
}

func (c *client) ack(id string) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte(`{"envelope_id":"`+id+`"}`)); err != nil {
		c.t.Fatal(err)
	}
}

func counter(t *testing.T, h *appsocket.Handler, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.Collectors()...)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestAppSocket_AckedWithinGrants: events arrive in envelopes, only those
// within the token's grants, and an acknowledged one is not sent again.
func TestAppSocket_AckedWithinGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.dial(t, e.bob)
	d1 := e.device(t, e.inside)
	f := c.read()
	if f.Type != "event" || f.Event.Type != herd.EventDeviceCreated || f.Event.SubjectID != d1.ID || f.RetryAttempt != 0 || f.EnvelopeID == "" {
		t.Fatalf("frame %+v", f)
	}
	c.ack(f.EnvelopeID)
	e.device(t, e.outside) // not bob's
	d3 := e.device(t, e.inside)
	if f := c.read(); f.Event.SubjectID != d3.ID {
		t.Fatalf("next event is of device %d (%s), want %d: outside grants or sent again", f.Event.SubjectID, f.Event.Path, d3.ID)
	}
}

// TestAppSocket_UnackedIsDeliveredAgain: an envelope not acknowledged in
// time comes again, with retry_attempt 1 and the same event.
func TestAppSocket_UnackedIsDeliveredAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(h *appsocket.Handler) { h.AckTimeout = 300 * time.Millisecond })
	c := e.dial(t, e.bob)
	d := e.device(t, e.inside)
	first := c.read()
	again := c.read() // no ack
	if again.Event.ID != first.Event.ID || again.RetryAttempt != 1 || again.EnvelopeID == first.EnvelopeID {
		t.Fatalf("second frame %+v after %+v: want the same event, retry 1, a new envelope", again, first)
	}
	c.ack(again.EnvelopeID)
	d2 := e.device(t, e.inside)
	if f := c.read(); f.Event.SubjectID != d2.ID {
		t.Fatalf("after the ack got device %d, want %d (device %d again?)", f.Event.SubjectID, d2.ID, d.ID)
	}
	if got := counter(t, e.handler, "herd_appsocket_envelopes_redelivered_total"); got != 1 {
		t.Fatalf("redelivered %v, want 1", got)
	}
}

// TestAppSocket_WaitsForTheApp: events committed while the app is away
// are delivered when it comes back.
func TestAppSocket_WaitsForTheApp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.dial(t, e.bob)
	c.ws.Close(websocket.StatusNormalClosure, "")
	d := e.device(t, e.inside)
	c = e.dial(t, e.bob)
	if f := c.read(); f.Event.SubjectID != d.ID {
		t.Fatalf("got %+v, want the device created while away", f)
	}
}

func TestAppSocket_Closes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	t.Run("OnlyAcks", func(t *testing.T) {
		c := e.dial(t, e.bob)
		c.ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"subscribe"}`))
		_, _, err := c.ws.Read(context.Background())
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("closed with %v, want 1008", err)
		}
	})
	t.Run("SuperToken", func(t *testing.T) {
		_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + adminSecret}}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial with the admin token: %v", err)
		}
	})
	t.Run("NoToken", func(t *testing.T) {
		_, resp, err := websocket.Dial(context.Background(), e.url, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial without a token: %v", err)
		}
	})
	t.Run("Shutdown", func(t *testing.T) {
		c := e.dial(t, e.bob)
		var wg sync.WaitGroup
		wg.Go(func() { e.handler.Close() })
		_, _, err := c.ws.Read(context.Background())
		wg.Wait()
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("closed with %v, want 1001", err)
		}
	})
}

// TestAppSocket_NewTokenDoesNotInheritFeed: an app's feed is named after
// its token (app-<token id>), so a token of another tenant that got the
// id of a deleted one would take over its feed, with the events waiting
// there. Deleting the token with the highest id and making one in another
// tenant must give that tenant's app only its own events.
func TestAppSocket_NewTokenDoesNotInheritFeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(h *appsocket.Handler) { h.AckTimeout = 300 * time.Millisecond })
	users := sqldb.NewUserService(e.db)
	c := e.dial(t, e.bob)
	secret := e.device(t, e.inside)
	if f := c.read(); f.Event.SubjectID != secret.ID {
		t.Fatalf("bob's app got %+v, want device %d", f, secret.ID)
	}
	c.ws.Close(websocket.StatusNormalClosure, "") // not acknowledged: it waits in bob's feed
	e.device(t, e.inside)                         // and so does this one
	bob, err := users.Authenticate(context.Background(), e.bob)
	if err != nil {
		t.Fatal(err)
	}
	if err := users.DeleteToken(e.super, bob.TokenID); err != nil {
		t.Fatal(err)
	}

	other := &herd.Tenant{Name: "other"}
	if err := sqldb.NewTenantService(e.db).CreateTenant(e.super, other); err != nil {
		t.Fatal(err)
	}
	u := &herd.User{TenantID: other.ID, Name: "eve"}
	if err := users.CreateUser(e.super, u); err != nil {
		t.Fatal(err)
	}
	if err := sqldb.NewGrantService(e.db).CreateGrant(e.super, &herd.Grant{UserID: u.ID, NodeID: other.RootNodeID, Role: herd.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	tok, err := users.CreateToken(e.super, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID == bob.TokenID {
		t.Errorf("the new token of tenant %d got the id of bob's deleted token, %d", other.ID, tok.ID)
	}
	eve := e.dial(t, tok.Secret)
	own := &herd.Device{NodeID: other.RootNodeID, Key: fmt.Sprintf("eve-%d", time.Now().UnixNano())}
	if err := sqldb.NewDeviceService(e.db).CreateDevices(e.super, []*herd.Device{own}); err != nil {
		t.Fatal(err)
	}
	for {
		f := eve.read()
		if f.Event.TenantID != other.ID {
			t.Fatalf("tenant %d's app got an event of tenant %d: %+v", other.ID, f.Event.TenantID, f.Event)
		}
		eve.ack(f.EnvelopeID)
		if f.Event.SubjectType == herd.EventSubjectDevice && f.Event.SubjectID == own.ID {
			return
		}
	}
}
