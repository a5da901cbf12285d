package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// adminSecret is the super-admin token of every test server.
const adminSecret = "herd_test_admin_token_0123456789abcdef"

// env is a real server on :0 over a real store, with a client acting as the
// super-admin.
type env struct {
	t     testing.TB
	db    *sqldb.DB
	srv   *httpapi.Server
	admin *httpapi.Client
	logs  *testutil.SyncBuffer
}

// mustOpenServer starts a server on db. configure, when given, adjusts the
// server (for example wraps a service) before it opens.
func mustOpenServer(t testing.TB, db *sqldb.DB, configure ...func(*httpapi.Server)) *env {
	t.Helper()
	if _, err := db.EnsureAdminToken(context.Background(), adminSecret); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	s := httpapi.NewServer()
	s.Addr = "127.0.0.1:0"
	s.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.TenantService = sqldb.NewTenantService(db)
	s.NodeService = sqldb.NewNodeService(db)
	s.DeviceService = sqldb.NewDeviceService(db)
	s.UserService = sqldb.NewUserService(db)
	s.GrantService = sqldb.NewGrantService(db)
	s.ListService = sqldb.NewListService(db)
	s.Ready = db.Ping
	for _, fn := range configure {
		fn(s)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return &env{t: t, db: db, srv: s, admin: httpapi.NewClient(s.URL(), adminSecret), logs: logs}
}

// response is a raw answer of the server.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request with an optional bearer token. body may be nil, a
// string or []byte sent as is, or any value sent as JSON. Every answer but
// a 204 must be JSON; do checks that for every test.
func (e *env) do(method, path, token string, body any) response {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.srv.URL()+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent && !strings.HasPrefix(path, "/metrics") {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			e.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
		}
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: buf}
}

// decode unmarshals the body into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// wantError checks the status, the error code and that the message holds
// every one of parts.
func (r response) wantError(t *testing.T, status int, code string, parts ...string) {
	t.Helper()
	var er httpapi.ErrorResponse
	if err := json.Unmarshal(r.Body, &er); err != nil {
		t.Fatalf("status %d, body %s is not an error: %v", r.Status, r.Body, err)
	}
	if r.Status != status || er.Error.Code != code {
		t.Fatalf("got %d %s (%q), want %d %s", r.Status, er.Error.Code, er.Error.Message, status, code)
	}
	for _, p := range parts {
		if !strings.Contains(er.Error.Message, p) {
			t.Errorf("message %q does not mention %q", er.Error.Message, p)
		}
	}
}

func (r response) wantStatus(t testing.TB, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
}

// fleet is the tree most tests work on:
//
//	acme (root)
//	├── north (region): n1 (site: n1-a n1-b n1-c), n2 (site: n2-a n2-b)
//	└── south (region): s1 (site: s1-a s1-b)
//
// alice is a viewer of north; bob is an admin of n1.
type fleet struct {
	tenant                   *herd.Tenant
	north, south, n1, n2, s1 *herd.Node
	devices                  map[string]*herd.Device
	alice, bob               *herd.User
	aliceGrant, bobGrant     *herd.Grant
	aliceToken, bobToken     *herd.Token
}

func (e *env) mustCreateFleet() *fleet {
	e.t.Helper()
	ctx := context.Background()
	c := e.admin
	f := &fleet{tenant: &herd.Tenant{Name: "acme"}, devices: map[string]*herd.Device{}}
	must := func(err error) {
		e.t.Helper()
		if err != nil {
			e.t.Fatal(err)
		}
	}
	must(c.CreateTenant(ctx, f.tenant))
	node := func(parent *herd.Node, kind, name string) *herd.Node {
		n := &herd.Node{TenantID: f.tenant.ID, Kind: kind, Name: name}
		if parent != nil {
			n.ParentID = parent.ID
		}
		must(c.CreateNode(ctx, n))
		return n
	}
	f.north, f.south = node(nil, "region", "north"), node(nil, "region", "south")
	f.n1, f.n2, f.s1 = node(f.north, "site", "n1"), node(f.north, "site", "n2"), node(f.south, "site", "s1")
	var ds []*herd.Device
	for _, spec := range []struct {
		node  *herd.Node
		key   string
		model string
	}{
		{f.n1, "n1-a", "th-200"}, {f.n1, "n1-b", "th-200"}, {f.n1, "n1-c", "co2-10"},
		{f.n2, "n2-a", "th-200"}, {f.n2, "n2-b", "co2-10"},
		{f.s1, "s1-a", "th-200"}, {f.s1, "s1-b", "co2-10"},
	} {
		ds = append(ds, &herd.Device{NodeID: spec.node.ID, Key: spec.key, Name: "dev " + spec.key, Model: spec.model, Firmware: "1.0.0"})
	}
	must(c.CreateDevices(ctx, ds))
	for _, d := range ds {
		f.devices[d.Key] = d
	}
	f.alice, f.bob = &herd.User{TenantID: f.tenant.ID, Name: "alice"}, &herd.User{TenantID: f.tenant.ID, Name: "bob"}
	must(c.CreateUser(ctx, f.alice))
	must(c.CreateUser(ctx, f.bob))
	f.aliceGrant = &herd.Grant{UserID: f.alice.ID, NodeID: f.north.ID, Role: herd.RoleViewer}
	f.bobGrant = &herd.Grant{UserID: f.bob.ID, NodeID: f.n1.ID, Role: herd.RoleAdmin}
	must(c.CreateGrant(ctx, f.aliceGrant))
	must(c.CreateGrant(ctx, f.bobGrant))
	var err error
	f.aliceToken, err = c.CreateToken(ctx, f.alice.ID)
	must(err)
	f.bobToken, err = c.CreateToken(ctx, f.bob.ID)
	must(err)
	return f
}

func TestServer_Open(t *testing.T) {
	t.Parallel()
	t.Run("ListenAddrOnPortZero", func(t *testing.T) {
		e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite))
		addr := e.srv.ListenAddr()
		if strings.HasSuffix(addr, ":0") || !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("ListenAddr %q, want the real port", addr)
		}
		if got, want := e.srv.URL(), "http://"+addr; got != want {
			t.Fatalf("URL %q, want %q", got, want)
		}
	})
	t.Run("ErrPortTaken", func(t *testing.T) {
		e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite))
		s := httpapi.NewServer()
		s.Addr = e.srv.ListenAddr()
		s.TenantService, s.NodeService, s.DeviceService, s.UserService, s.GrantService =
			e.srv.TenantService, e.srv.NodeService, e.srv.DeviceService, e.srv.UserService, e.srv.GrantService
		err := s.Open()
		if err == nil {
			s.Close()
			t.Fatal("second server on the same port opened")
		} else if !strings.Contains(err.Error(), s.Addr) {
			t.Fatalf("error %q does not name the address", err)
		}
	})
	t.Run("ErrNoServices", func(t *testing.T) {
		s := httpapi.NewServer()
		s.Addr = "127.0.0.1:0"
		if err := s.Open(); err == nil {
			s.Close()
			t.Fatal("server without services opened")
		}
	})
}

func TestServer_Probes(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		t.Run("Healthz", func(t *testing.T) {
			r := e.do("GET", "/healthz", "", nil)
			r.wantStatus(t, http.StatusOK)
			if !bytes.Contains(r.Body, []byte(`"ok"`)) {
				t.Fatalf("body %s", r.Body)
			}
		})
		t.Run("Readyz", func(t *testing.T) {
			e.do("GET", "/readyz", "", nil).wantStatus(t, http.StatusOK)
			if err := e.admin.Ready(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
		t.Run("ReadyzUnavailable", func(t *testing.T) {
			down := errors.New("store unreachable")
			e := mustOpenServer(t, db, func(s *httpapi.Server) {
				s.Ready = func(context.Context) error { return down }
			})
			r := e.do("GET", "/readyz", "", nil)
			r.wantStatus(t, http.StatusServiceUnavailable)
			// Liveness does not depend on the store.
			e.do("GET", "/healthz", "", nil).wantStatus(t, http.StatusOK)
			if !strings.Contains(e.logs.String(), "store unreachable") {
				t.Fatalf("readiness failure not logged: %s", e.logs.String())
			}
		})
	})
}

func TestServer_Metrics(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db)
	other := mustOpenServer(t, db)
	e.do("GET", "/v1/devices/999", adminSecret, nil).wantStatus(t, http.StatusNotFound)
	e.do("GET", "/v1/devices/999", adminSecret, nil).wantStatus(t, http.StatusNotFound)
	e.do("GET", "/no/such/route/1", "", nil).wantStatus(t, http.StatusNotFound)
	r := e.do("GET", "/metrics", "", nil)
	r.wantStatus(t, http.StatusOK)
	body := string(r.Body)
	for _, want := range []string{
		`herd_http_requests_total{method="GET",route="/v1/devices/{id}",status="404"} 2`,
		`herd_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`herd_http_request_duration_seconds_bucket{method="GET",route="/v1/devices/{id}",le="+Inf"} 2`,
		`herd_http_requests_in_flight 1`, // the scrape itself
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "/no/such/route") {
		t.Error("an unmatched path became a label value")
	}
	// Each server has its own registry: the other one counted nothing.
	if r := other.do("GET", "/metrics", "", nil); strings.Contains(string(r.Body), `route="/v1/devices/{id}"`) {
		t.Error("servers share metrics")
	}
}

func TestServer_Routing(t *testing.T) {
	t.Parallel()
	e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite))
	t.Run("ErrUnknownRoute", func(t *testing.T) {
		e.do("GET", "/v1/widgets", adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "/v1/widgets")
		e.do("GET", "/v1/devices/1/extra", adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		e.do("GET", "/v1/devices/", adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
	})
	t.Run("ErrUncleanPathNotRedirected", func(t *testing.T) {
		// A redirect would turn this POST into a GET in many clients.
		e.do("POST", "/v1//tenants", adminSecret, `{"name":"x"}`).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "/v1//tenants")
		e.do("GET", "/v1/tenants/../devices", adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
	})
	t.Run("ErrMethodNotAllowed", func(t *testing.T) {
		r := e.do("PUT", "/v1/devices", adminSecret, "{}")
		r.wantError(t, http.StatusMethodNotAllowed, httpapi.EMETHOD, "PUT")
		if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
			t.Fatalf("Allow %q", allow)
		}
		e.do("PUT", "/v1/tenants/1", adminSecret, "{}").wantError(t, http.StatusMethodNotAllowed, httpapi.EMETHOD)
	})
	t.Run("ErrBadPathID", func(t *testing.T) {
		e.do("GET", "/v1/devices/abc", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, `"abc"`)
		e.do("GET", "/v1/nodes/-4", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, `"-4"`)
	})
}

func TestServer_Auth(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		t.Run("ErrNoToken", func(t *testing.T) {
			r := e.do("GET", "/v1/devices", "", nil)
			r.wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED, "Bearer")
			if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Fatalf("WWW-Authenticate %q", got)
			}
		})
		t.Run("ErrBadToken", func(t *testing.T) {
			r := e.do("GET", "/v1/devices", "herd_not_a_token_anyone_was_given_0000", nil)
			r.wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
				t.Fatalf("WWW-Authenticate %q", got)
			}
		})
		t.Run("ErrWrongScheme", func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL()+"/v1/devices", nil)
			req.Header.Set("Authorization", "Basic "+f.aliceToken.Secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d", resp.StatusCode)
			}
		})
		t.Run("SchemeCaseInsensitive", func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL()+"/v1/devices", nil)
			req.Header.Set("Authorization", "bearer "+f.aliceToken.Secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
		})
		t.Run("ProbesNeedNoToken", func(t *testing.T) {
			e.do("GET", "/healthz", "", nil).wantStatus(t, http.StatusOK)
			e.do("GET", "/metrics", "", nil).wantStatus(t, http.StatusOK)
		})
		t.Run("RequestLogNamesActor", func(t *testing.T) {
			e.do("GET", "/v1/devices", f.aliceToken.Secret, nil).wantStatus(t, http.StatusOK)
			want := `"route":"/v1/devices","path":"/v1/devices","status":200`
			logs := e.logs.String()
			if !strings.Contains(logs, want) || !strings.Contains(logs, fmt.Sprintf(`"user_id":%d`, f.alice.ID)) {
				t.Fatalf("request log lacks route/status/user: %s", logs)
			}
		})
	})
}

func TestServer_Bodies(t *testing.T) {
	t.Parallel()
	e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite))
	f := e.mustCreateFleet()
	t.Run("ErrMalformedJSON", func(t *testing.T) {
		e.do("POST", "/v1/tenants", adminSecret, `{"name": "x",}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "malformed JSON", "byte")
		e.do("POST", "/v1/tenants", adminSecret, `{"name": "x"`).wantError(t, http.StatusBadRequest, herd.EINVALID, "middle of a JSON value")
		e.do("POST", "/v1/tenants", adminSecret, ``).wantError(t, http.StatusBadRequest, herd.EINVALID, "empty")
		e.do("POST", "/v1/tenants", adminSecret, `{"name":"a"} {"name":"b"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "more than one")
		e.do("POST", "/v1/tenants", adminSecret, `["x"]`).wantError(t, http.StatusBadRequest, herd.EINVALID, "must be an object")
	})
	t.Run("ErrUnknownField", func(t *testing.T) {
		e.do("POST", "/v1/tenants", adminSecret, `{"name":"x","nmae":"y"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `unknown field "nmae"`)
		// The projection is the device's to report, not the client's to set.
		body := fmt.Sprintf(`{"node_id":"%d","key":"k-temp","temperature":20}`, f.n1.ID)
		e.do("POST", "/v1/devices", adminSecret, body).wantError(t, http.StatusBadRequest, herd.EINVALID, `"temperature"`)
	})
	t.Run("ErrWrongType", func(t *testing.T) {
		e.do("POST", "/v1/tenants", adminSecret, `{"name":42}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `field "name" must be a string`)
		e.do("POST", "/v1/devices", adminSecret, `{"node_id":true,"key":"k"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `field "node_id" must be an id`)
		e.do("POST", "/v1/devices", adminSecret, `{"node_id":"12x","key":"k"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `"node_id"`, `"12x"`)
		e.do("POST", "/v1/devices", adminSecret, `{"node_id":1.5,"key":"k"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `"node_id"`)
		e.do("POST", "/v1/devices/batch", adminSecret, `{"devices":[{"node_id":"1","key":7}]}`).wantError(t, http.StatusBadRequest, herd.EINVALID, `"devices.key"`)
	})
	t.Run("IDAsNumberTolerated", func(t *testing.T) {
		r := e.do("POST", "/v1/devices", adminSecret, fmt.Sprintf(`{"node_id":%d,"key":"numeric-id"}`, f.n2.ID))
		r.wantStatus(t, http.StatusCreated)
		var d herd.Device
		r.decode(t, &d)
		if d.NodeID != f.n2.ID {
			t.Fatalf("node_id %d, want %d", d.NodeID, f.n2.ID)
		}
	})
	t.Run("ErrTooLarge", func(t *testing.T) {
		// Declared too large: refused before the body is read.
		status, body := rawRequest(t, e.srv.ListenAddr(), "POST", "/v1/tenants", adminSecret, httpapi.MaxBodySize+1)
		if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, herd.ETOOLARGE) || !strings.Contains(body, "1 MiB") {
			t.Fatalf("got %d %s", status, body)
		}
		// Streamed without a length: cut off at the limit.
		big := `{"name":"` + strings.Repeat("x", httpapi.MaxBodySize) + `"}`
		req, _ := http.NewRequest("POST", e.srv.URL()+"/v1/tenants", io.MultiReader(strings.NewReader(big)))
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(buf), herd.ETOOLARGE) {
			t.Fatalf("got %d %s", resp.StatusCode, buf)
		}
	})
	t.Run("BatchTakesLargerBodies", func(t *testing.T) {
		// 2 MiB of JSON whitespace: over the ordinary limit, under the
		// batch limit, so it must decode.
		body := fmt.Sprintf(`{"devices":[{"node_id":"%d","key":"ws-1"}]%s}`, f.n1.ID, strings.Repeat(" ", 2<<20))
		e.do("POST", "/v1/devices/batch", adminSecret, body).wantStatus(t, http.StatusCreated)
		status, resp := rawRequest(t, e.srv.ListenAddr(), "POST", "/v1/devices/batch", adminSecret, httpapi.MaxBatchBodySize+1)
		if status != http.StatusRequestEntityTooLarge || !strings.Contains(resp, "16 MiB") {
			t.Fatalf("got %d %s", status, resp)
		}
	})
}

// rawRequest sends only the head of a request that declares a body of
// length bytes and returns the answer: a server that refuses the body by
// its declared size must answer without waiting for it.
func rawRequest(t *testing.T, addr, method, path, token string, length int) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", method, path, addr, token, length)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(buf)
}

// faultyDevices is a DeviceService whose QueryDevices misbehaves in a
// chosen way, to test what the edge does with failures.
type faultyDevices struct {
	herd.DeviceService
	query func(ctx context.Context) error
}

func (s faultyDevices) QueryDevices(ctx context.Context, q herd.DeviceQuery) (*herd.DevicePage, error) {
	return nil, s.query(ctx)
}

func TestServer_Failures(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	t.Run("InternalErrorHidden", func(t *testing.T) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) {
			s.DeviceService = faultyDevices{s.DeviceService, func(context.Context) error {
				return fmt.Errorf("query devices: %w", errors.New("pq: secret table detail"))
			}}
		})
		r := e.do("GET", "/v1/devices?tenant_id=1", adminSecret, nil)
		r.wantError(t, http.StatusInternalServerError, herd.EINTERNAL)
		if strings.Contains(string(r.Body), "secret") {
			t.Fatalf("internal detail leaked: %s", r.Body)
		}
		if !strings.Contains(e.logs.String(), "secret table detail") || !strings.Contains(e.logs.String(), `"level":"ERROR"`) {
			t.Fatalf("internal error not logged: %s", e.logs.String())
		}
	})
	t.Run("RequestDeadline", func(t *testing.T) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) {
			s.RequestTimeout = 50 * time.Millisecond
			s.DeviceService = faultyDevices{s.DeviceService, func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					return errors.New("handler context has no deadline")
				}
				<-ctx.Done() // a query that never finishes on its own
				return fmt.Errorf("query devices: %w", ctx.Err())
			}}
		})
		e.do("GET", "/v1/devices?tenant_id=1", adminSecret, nil).wantError(t, http.StatusServiceUnavailable, httpapi.ETIMEOUT)
	})
	t.Run("PanicRecovered", func(t *testing.T) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) {
			s.DeviceService = faultyDevices{s.DeviceService, func(context.Context) error { panic("boom") }}
		})
		e.do("GET", "/v1/devices?tenant_id=1", adminSecret, nil).wantError(t, http.StatusInternalServerError, herd.EINTERNAL)
		if !strings.Contains(e.logs.String(), "boom") {
			t.Fatal("panic not logged")
		}
		// The server still serves.
		e.do("GET", "/healthz", "", nil).wantStatus(t, http.StatusOK)
	})
}

// TestServer_RateLimit: a token over its rate gets 429 with Retry-After;
// another token is not held back by it.
func TestServer_RateLimit(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db, func(s *httpapi.Server) { s.RateLimit, s.RateBurst = 1, 3 })
	var limited response
	for i := 0; i < 10; i++ {
		r := e.do("GET", "/v1/tenants/1", adminSecret, nil)
		if r.Status == http.StatusTooManyRequests {
			limited = r
			break
		}
	}
	if limited.Status == 0 {
		t.Fatal("10 requests at once within a burst of 3: none refused")
	}
	limited.wantError(t, http.StatusTooManyRequests, herd.ERATELIMITED)
	if ra, err := strconv.Atoi(limited.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", limited.Header.Get("Retry-After"))
	}
}

// TestServer_RateLimitByTokenKind: a super-admin's token and a user's token
// with the same id (they are counted in two tables) have a bucket each: the
// super-admin over its rate does not hold the user back.
func TestServer_RateLimitByTokenKind(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.RateLimit, s.RateBurst = 0.001, 2 })
		// Made in the store, not through the API, whose requests would
		// spend the buckets.
		ctx := context.Background()
		super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
		tenant := &herd.Tenant{Name: "acme"}
		if err := sqldb.NewTenantService(db).CreateTenant(super, tenant); err != nil {
			t.Fatal(err)
		}
		users := sqldb.NewUserService(db)
		u := &herd.User{TenantID: tenant.ID, Name: "alice"}
		if err := users.CreateUser(super, u); err != nil {
			t.Fatal(err)
		}
		tok, err := users.CreateToken(super, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		admin, err := users.Authenticate(ctx, adminSecret)
		if err != nil {
			t.Fatal(err)
		}
		if admin.TokenID != tok.ID {
			t.Fatalf("the super-admin's token is %d, the user's %d: the test needs the same id", admin.TokenID, tok.ID)
		}
		path := fmt.Sprintf("/v1/tenants/%d", tenant.ID)
		for i := 0; ; i++ {
			if r := e.do("GET", path, adminSecret, nil); r.Status == http.StatusTooManyRequests {
				break
			} else if i == 10 {
				t.Fatal("10 requests within a burst of 2: none refused")
			}
		}
		e.do("GET", path, tok.Secret, nil).wantStatus(t, http.StatusOK)
	})
}

// TestServer_IDSpaceExhausted: when a table of herd's own runs out of ids,
// the API answers 503 id_space_exhausted, never 409.
func TestServer_IDSpaceExhausted(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.Postgres)
	e := mustOpenServer(t, db)
	f := e.mustCreateFleet()
	if _, err := db.SQL().Exec(`SELECT setval(pg_get_serial_sequence('nodes', 'id'), 9223372036854775807)`); err != nil {
		t.Fatal(err)
	}
	body := map[string]any{"tenant_id": fmt.Sprint(f.tenant.ID), "kind": "site", "name": "one too many"}
	e.do("POST", "/v1/nodes", adminSecret, body).wantError(t, http.StatusServiceUnavailable, herd.EIDEXHAUSTED, "not a duplicate")
}
