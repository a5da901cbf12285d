package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
	"github.com/herd-iot/herd/stream"
	"github.com/prometheus/client_golang/prometheus"
)

const adminSecret = "herd_admin_secret_for_stream_tests_0123"

// env is the whole path of a hint: store, relay, embedded NATS, the tail,
// the hub behind the API's authentication.
type env struct {
	db      *sqldb.DB
	hub     *stream.Hub
	url     string
	super   context.Context
	tenant  *herd.Tenant
	inside  *herd.Node
	outside *herd.Node
	bob     string
}

func newEnv(t *testing.T, configure func(*stream.Hub)) *env {
	t.Helper()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	bus := testutil.MustOpenBus(t, "embedded", nil)
	if _, err := db.EnsureAdminToken(context.Background(), adminSecret); err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, super: testutil.SuperContext()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	e.tenant = &herd.Tenant{Name: "acme"}
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

	events := sqldb.NewEventService(db)
	e.hub = stream.NewHub(events.Head)
	if configure != nil {
		configure(e.hub)
	}
	// The fixture's own events reach the stream before the tail starts
	// at its end, so no test sees them.
	testutil.StartRelay(t, db, bus)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tailing := make(chan struct{})
	wg.Go(func() { bus.Tail(ctx, e.hub.Publish, func() { close(tailing) }) })
	<-tailing
	s := httpapi.NewServer()
	s.Addr = "127.0.0.1:0"
	s.TenantService, s.NodeService, s.DeviceService = sqldb.NewTenantService(db), sqldb.NewNodeService(db), sqldb.NewDeviceService(db)
	s.UserService, s.GrantService, s.EventService = users, sqldb.NewGrantService(db), events
	s.Stream = e.hub
	s.TicketService = sqldb.NewTicketService(db)
	must(s.Open())
	e.url = strings.Replace(s.URL(), "http://", "ws://", 1) + "/v1/stream"
	t.Cleanup(func() {
		e.hub.Close()
		s.Close()
		cancel()
		wg.Wait()
	})
	return e
}

func (e *env) device(t *testing.T, node *herd.Node) *herd.Device {
	t.Helper()
	d := &herd.Device{NodeID: node.ID, Key: fmt.Sprintf("s-%d", time.Now().UnixNano())}
	if err := sqldb.NewDeviceService(e.db).CreateDevices(e.super, []*herd.Device{d}); err != nil {
		t.Fatal(err)
	}
	return d
}

type frame struct {
	Type   string        `json:"type"`
	Head   int64         `json:"head,string"`
	Hints  []stream.Hint `json:"hints"`
	Reason string        `json:"reason"`
}

type client struct {
	t     *testing.T
	ws    *websocket.Conn
	hello frame
}

func dial(t *testing.T, url, token string, opts *websocket.DialOptions) *client {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	if token != "" { // none: the url carries a ticket
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + token}}
	}
	ws, _, err := websocket.Dial(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	c := &client{t: t, ws: ws}
	t.Cleanup(func() { ws.CloseNow() })
	if c.hello = c.read(); c.hello.Type != "hello" {
		t.Fatalf("first frame %+v, want hello", c.hello)
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

// hint reads the next hint, whatever frames carry them.
func (c *client) hints(n int) []stream.Hint {
	c.t.Helper()
	var out []stream.Hint
	for len(out) < n {
		f := c.read()
		if f.Type != "hints" {
			c.t.Fatalf("frame %+v, want hints", f)
		}
		out = append(out, f.Hints...)
	}
	return out
}

func counter(t *testing.T, h *stream.Hub, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.Collectors()...)
	mfs, _ := reg.Gather()
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return v
}

// TestStream_HintsWithinGrants: a hint per committed event under the
// caller's grants, in order, each carrying the seq of the previous hint on
// the connection; none for events elsewhere.
func TestStream_HintsWithinGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := dial(t, e.url, e.bob, nil)
	if c.hello.Head == 0 {
		t.Fatalf("hello %+v has no head", c.hello)
	}
	d1 := e.device(t, e.inside)
	e.device(t, e.outside)
	d3 := e.device(t, e.inside)
	hs := c.hints(2)
	if hs[0].SubjectID != d1.ID || hs[0].Type != herd.EventDeviceCreated || hs[0].PrevSeq != 0 {
		t.Fatalf("first hint %+v", hs[0])
	}
	if hs[1].SubjectID != d3.ID || hs[1].PrevSeq != hs[0].Seq || hs[1].Seq <= hs[0].Seq+1 {
		t.Fatalf("second hint %+v after %+v: want device %d, prev_seq %d, and a seq past the outside device's", hs[1], hs[0], d3.ID, hs[0].Seq)
	}
	// The log holds what the hints point to, and the outside device is
	// not in it for bob either.
	page, err := sqldb.NewEventService(e.db).FindEvents(asUser(t, e, e.bob), e.tenant.ID, c.hello.Head, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 2 || page.Items[0].Seq != hs[0].Seq || page.Items[1].Seq != hs[1].Seq {
		t.Fatalf("log after the hello's head: %v", page.Items)
	}
}

func asUser(t *testing.T, e *env, token string) context.Context {
	a, err := sqldb.NewUserService(e.db).Authenticate(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	return herd.NewContextWithActor(context.Background(), a)
}

// TestStream_Frames: a ping is answered; any other client frame closes the
// connection with 1008 and a pointer to the HTTP API; a shutdown closes
// with 1001.
func TestStream_Frames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := dial(t, e.url, e.bob, nil)
	c.ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`))
	if f := c.read(); f.Type != "pong" {
		t.Fatalf("answer to ping: %+v", f)
	}
	c.ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"command","name":"reboot"}`))
	if f := c.read(); f.Type != "error" {
		t.Fatalf("frame %+v, want an error frame first", f)
	}
	_, _, err := c.ws.Read(context.Background())
	var ce websocket.CloseError
	if !asClose(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "HTTP API") {
		t.Fatalf("closed with %v, want 1008 naming the HTTP API", err)
	}

	c = dial(t, e.url, e.bob, nil)
	go e.hub.Close()
	_, _, err = c.ws.Read(context.Background())
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("shutdown closed with %v, want 1001", err)
	}
}

func asClose(err error, ce *websocket.CloseError) bool { return errors.As(err, ce) }

// TestStream_HalfOpen: a client that stops reading and never closes
// answers no pings; it is closed within the ping bound (two intervals
// after a ping), and its hints stop being queued.
func TestStream_HalfOpen(t *testing.T) {
	t.Parallel()
	const ping = 100 * time.Millisecond
	e := newEnv(t, func(h *stream.Hub) { h.Ping = ping })
	dial(t, e.url, e.bob, nil) // reads nothing from here on
	testutil.WaitFor(t, 5*time.Second, "the hub to count the connection", func() bool { return e.hub.Connections() == 1 })
	start := time.Now()
	testutil.WaitFor(t, 10*time.Second, "the half-open connection to be closed", func() bool { return e.hub.Connections() == 0 })
	if took := time.Since(start); took > 4*ping+time.Second {
		t.Fatalf("closed after %s, want within about three ping intervals (%s)", took, 3*ping)
	}
	if got := counter(t, e.hub, "herd_stream_ping_failures_total"); got != 1 {
		t.Fatalf("ping failures %v, want 1", got)
	}
}

// TestStream_SlowClientDelaysNoOne: one client that stops reading while a
// burst of events comes its way fills its queue, is told to resync and is
// dropped; 100 others, reading, get every hint meant for them.
func TestStream_SlowClientDelaysNoOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	// alice sees the outside site, where the burst happens; she reads
	// nothing, through small socket buffers, so her stall reaches the
	// server after a few frames rather than megabytes.
	users := sqldb.NewUserService(e.db)
	alice := &herd.User{TenantID: e.tenant.ID, Name: "alice"}
	if err := users.CreateUser(e.super, alice); err != nil {
		t.Fatal(err)
	}
	if err := sqldb.NewGrantService(e.db).CreateGrant(e.super, &herd.Grant{UserID: alice.ID, NodeID: e.outside.ID, Role: herd.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	tok, err := users.CreateToken(e.super, alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	small := &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
		}}
		return d.DialContext(ctx, network, addr)
	}}}}
	dial(t, e.url, tok.Secret, small)
	const others, burst, every = 100, 20000, 20
	cs := make([]*client, others)
	for i := range cs {
		cs[i] = dial(t, e.url, e.bob, nil)
	}
	testutil.WaitFor(t, 10*time.Second, "every connection to join", func() bool { return e.hub.Connections() == others+1 })
	// Events straight into the hub, as the tail hands them over: the
	// burst at alice's site, and every 20th event one at bob's.
	go func() {
		for i := range int64(burst) {
			e.hub.Publish(&herd.Event{ID: 1_000_000 + i, TenantID: e.tenant.ID, Seq: 1_000_000 + i, Type: "device.online", SubjectType: "device", SubjectID: i, Path: e.outside.Path})
			if i%every == 0 {
				e.hub.Publish(&herd.Event{ID: 2_000_000 + i, TenantID: e.tenant.ID, Seq: 2_000_000 + i, Type: "device.online", SubjectType: "device", SubjectID: i, Path: e.inside.Path})
			}
		}
	}()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			hs := c.hints(burst / every)
			if last := hs[len(hs)-1]; last.SubjectID != burst-every {
				t.Errorf("a reader's last hint is of %d, want %d", last.SubjectID, burst-every)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the readers did not get every hint within 60 s")
	}
	testutil.WaitFor(t, 30*time.Second, "the slow client to be dropped", func() bool { return e.hub.Connections() == others })
	if got := counter(t, e.hub, "herd_stream_resyncs_total"); got != 1 {
		t.Fatalf("resyncs %v, want 1", got)
	}
}

// TestStream_NeverOutsideGrants is a property test: across random trees,
// grants, revocations and moves, a user never gets a hint of an event he
// could not see at some moment between its commit and the hint's arrival
// (the hub reads his grants again after every change of access), and the
// log never gives him an event outside his grants as they are.
func TestStream_NeverOutsideGrants(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			rng := rand.New(rand.NewPCG(seed, 42))
			users := sqldb.NewUserService(e.db)
			grants := sqldb.NewGrantService(e.db)
			nodes := sqldb.NewNodeService(e.db)
			devices := sqldb.NewDeviceService(e.db)
			carol := &herd.User{TenantID: e.tenant.ID, Name: "carol"}
			if err := users.CreateUser(e.super, carol); err != nil {
				t.Fatal(err)
			}
			tok, err := users.CreateToken(e.super, carol.ID)
			if err != nil {
				t.Fatal(err)
			}
			// She starts with the root, so that revocations have something
			// to take away from a live connection.
			first := &herd.Grant{UserID: carol.ID, NodeID: e.tenant.RootNodeID, Role: herd.RoleViewer}
			if err := grants.CreateGrant(e.super, first); err != nil {
				t.Fatal(err)
			}
			// The scope after each op, and the head seq after it.
			var mu sync.Mutex
			scopes := [][]string{nil}
			heads := []int64{0}
			events := sqldb.NewEventService(e.db)
			record := func() {
				gs, err := grants.FindGrantsByUser(e.super, carol.ID)
				if err != nil {
					t.Fatal(err)
				}
				var paths []string
				for _, g := range gs {
					paths = append(paths, g.Path)
				}
				head, err := events.Head(context.Background(), e.tenant.ID)
				if err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				scopes, heads = append(scopes, paths), append(heads, head)
				mu.Unlock()
			}
			record()
			c := dial(t, e.url, tok.Secret, nil)
			type got struct {
				seq  int64
				done int // ops completed when it arrived
			}
			var hints []got
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				for {
					_, data, err := c.ws.Read(context.Background())
					if err != nil {
						return
					}
					var f frame
					json.Unmarshal(data, &f)
					mu.Lock()
					done := len(scopes) - 1
					for _, h := range f.Hints {
						hints = append(hints, got{h.Seq, done})
					}
					mu.Unlock()
				}
			}()
			tree := []*herd.Node{{ID: e.tenant.RootNodeID}, e.inside, e.outside}
			var devs []*herd.Device
			held := []*herd.Grant{first}
			pick := func() *herd.Node { return tree[rng.IntN(len(tree))] }
			for op := 0; op < 60; op++ {
				switch k := rng.IntN(6); {
				case k == 0 && len(tree) < 12:
					n := &herd.Node{ParentID: pick().ID, Kind: "site", Name: fmt.Sprintf("n%d", op)}
					if err := nodes.CreateNode(e.super, n); err != nil {
						t.Fatal(err)
					}
					tree = append(tree, n)
				case k == 1:
					d := &herd.Device{NodeID: pick().ID, Key: fmt.Sprintf("p%d-%d-%d", seed, op, time.Now().UnixNano())}
					if err := devices.CreateDevices(e.super, []*herd.Device{d}); err != nil {
						t.Fatal(err)
					}
					devs = append(devs, d)
				case k == 2:
					g := &herd.Grant{UserID: carol.ID, NodeID: pick().ID, Role: herd.RoleViewer}
					if err := grants.CreateGrant(e.super, g); err == nil {
						held = append(held, g)
					} else if herd.ErrorCode(err) != herd.ECONFLICT {
						t.Fatal(err)
					}
				case k == 3 && len(held) > 0:
					i := rng.IntN(len(held))
					if err := grants.DeleteGrant(e.super, held[i].ID); err != nil {
						t.Fatal(err)
					}
					held = append(held[:i], held[i+1:]...)
				case k == 4 && len(tree) > 1:
					n, to := tree[1+rng.IntN(len(tree)-1)], pick()
					if _, err := nodes.MoveNode(e.super, n.ID, to.ID); err != nil && herd.ErrorCode(err) != herd.EINVALID {
						t.Fatal(err) // EINVALID: a move under its own subtree
					}
				case k == 5 && len(devs) > 0:
					if _, err := devices.MoveDevice(e.super, devs[rng.IntN(len(devs))].ID, pick().ID); err != nil {
						t.Fatal(err)
					}
				default:
					continue
				}
				record()
			}
			// A last op carol sees for certain: a grant on a new node. Its
			// hint comes after every earlier event's on her connection, so
			// once it is here, nothing earlier is on its way.
			last := &herd.Node{ParentID: e.tenant.RootNodeID, Kind: "site", Name: "last"}
			if err := nodes.CreateNode(e.super, last); err != nil {
				t.Fatal(err)
			}
			if err := grants.CreateGrant(e.super, &herd.Grant{UserID: carol.ID, NodeID: last.ID, Role: herd.RoleViewer}); err != nil {
				t.Fatal(err)
			}
			record()
			testutil.WaitFor(t, 30*time.Second, "the hint of the last grant", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(hints) > 0 && hints[len(hints)-1].seq == heads[len(heads)-1]
			})
			c.ws.CloseNow()
			<-readDone

			all, err := sqldb.NewOutboxService(e.db).OutboxEvents(context.Background(), e.tenant.ID, 0, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			path := map[int64]string{}
			for _, ev := range all {
				path[ev.Seq] = ev.Path
			}
			mu.Lock()
			defer mu.Unlock()
			opOf := func(seq int64) int {
				for i, h := range heads {
					if seq <= h {
						return i
					}
				}
				return len(heads) - 1
			}
			for _, h := range hints {
				from, to := opOf(h.seq), h.done+1 // the op in progress may have committed too
				ok := false
				for i := from; i <= min(to, len(scopes)-1) && !ok; i++ {
					ok = (herd.Scope{Paths: scopes[i]}).Covers(path[h.seq])
				}
				if !ok {
					t.Fatalf("hint of seq %d (%s) outside carol's grants from op %d to %d: %v", h.seq, path[h.seq], from, to, scopes[from:min(to, len(scopes)-1)+1])
				}
			}
			// The log, as carol reads it now: only what her grants cover now.
			as := herd.NewContextWithActor(context.Background(), mustActor(t, users, tok.Secret))
			page, err := events.FindEvents(as, e.tenant.ID, 0, herd.MaxEventsPage)
			if err != nil {
				t.Fatal(err)
			}
			final := herd.Scope{Paths: scopes[len(scopes)-1]}
			for _, ev := range page.Items {
				if !final.Covers(ev.Path) {
					t.Fatalf("the log gave carol seq %d (%s) outside her grants %v", ev.Seq, ev.Path, final.Paths)
				}
			}
			t.Logf("seed %d: %d ops, %d hints, %d log events for carol", seed, len(scopes)-1, len(hints), len(page.Items))
		})
	}
}

func mustActor(t *testing.T, users *sqldb.UserService, token string) *herd.Actor {
	a, err := users.Authenticate(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
