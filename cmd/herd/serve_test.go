package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	main "github.com/herd-iot/herd/cmd/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const adminSecret = "herd_e2e_admin_token_0123456789abcdef"

// mustRunMain runs the real Main with args and env in-process and closes it
// when the test ends.
func mustRunMain(t *testing.T, env map[string]string, args ...string) (*main.Main, *testutil.SyncBuffer) {
	t.Helper()
	m, stderr := newMain(env)
	if err := m.ParseFlags(context.Background(), args); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m, stderr
}

func newMain(env map[string]string) (*main.Main, *testutil.SyncBuffer) {
	m := main.NewMain()
	m.Getenv = func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		if k == "HERD_MQTT_ADDR" {
			return "127.0.0.1:0" // the machine's Mosquitto has 1883
		}
		return ""
	}
	stderr := &testutil.SyncBuffer{}
	m.Stderr = stderr
	return m, stderr
}

func TestMain_GeneratedAdminToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretRE := regexp.MustCompile(`admin token \(shown once\): (herd_\S+)`)

	m, stderr := newMain(nil)
	if err := m.ParseFlags(context.Background(), []string{"--http-addr", "127.0.0.1:0", "--data-dir", dir}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	match := secretRE.FindStringSubmatch(stderr.String())
	if match == nil {
		m.Close()
		t.Fatalf("no admin token printed: %s", stderr.String())
	}
	secret := match[1]
	if err := httpapi.NewClient(m.HTTPServer.URL(), secret).CreateTenant(context.Background(), &herd.Tenant{Name: "t"}); err != nil {
		t.Fatalf("printed token does not work: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "herd.db")); err != nil {
		t.Fatalf("default store not in the data dir: %v", err)
	}

	// The second start of the same store prints nothing and keeps the token.
	m2, stderr2 := mustRunMain(t, nil, "--http-addr", "127.0.0.1:0", "--data-dir", dir)
	if strings.Contains(stderr2.String(), "shown once") {
		t.Fatal("admin token printed again")
	}
	if _, err := httpapi.NewClient(m2.HTTPServer.URL(), secret).FindTenantByID(context.Background(), 1); err != nil {
		t.Fatalf("token lost across restart: %v", err)
	}
}

func TestMain_AdminTokenEnvIgnoredWarns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, _ := mustRunMain(t, map[string]string{"HERD_ADMIN_TOKEN": adminSecret}, "--http-addr", "127.0.0.1:0", "--data-dir", dir)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	_, stderr := mustRunMain(t, map[string]string{"HERD_ADMIN_TOKEN": "herd_another_token_0123456789abcdefgh"}, "--http-addr", "127.0.0.1:0", "--data-dir", dir)
	if !strings.Contains(stderr.String(), "HERD_ADMIN_TOKEN is ignored") {
		t.Fatalf("no warning: %s", stderr.String())
	}
}

func TestMain_ErrPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, _ := newMain(nil)
	if err := m.ParseFlags(context.Background(), []string{"--http-addr", ln.Addr().String(), "--data-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	err = m.Run(context.Background())
	m.Close()
	if err == nil {
		t.Fatal("Run succeeded on a taken port")
	}
	for _, want := range []string{ln.Addr().String(), "already in use", "--http-addr", "HERD_HTTP_ADDR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestMain_ParseFlags(t *testing.T) {
	t.Parallel()
	t.Run("Defaults", func(t *testing.T) {
		m, _ := newMain(map[string]string{"HERD_MQTT_ADDR": ""}) // unset: the built-in default
		if err := m.ParseFlags(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if got, want := m.Config, main.DefaultConfig(); got != want {
			t.Fatalf("config %+v, want %+v", got, want)
		}
		if got := m.Config.StoreDSN(); got != filepath.Join("herd-data", "herd.db") {
			t.Fatalf("default store %q", got)
		}
	})
	t.Run("EnvThenFlag", func(t *testing.T) {
		m, _ := newMain(map[string]string{
			"HERD_HTTP_ADDR":  "127.0.0.1:7000",
			"HERD_DATA_DIR":   "/srv/herd",
			"HERD_STORE":      "postgres://db/herd",
			"HERD_LOG_LEVEL":  "debug",
			"HERD_LOG_FORMAT": "json",

			"HERD_STATE_CACHE_MIN_DEVICES": "5000",
			"HERD_MQTT_MAX_KEEPALIVE":      "90s",
		})
		if err := m.ParseFlags(context.Background(), []string{"--http-addr", "127.0.0.1:9000", "--log-level", "warn"}); err != nil {
			t.Fatal(err)
		}
		want := main.DefaultConfig()
		want.DataDir, want.HTTPAddr, want.Store, want.LogLevel, want.LogFormat = "/srv/herd", "127.0.0.1:9000", "postgres://db/herd", "warn", "json"
		want.StateCacheMinDevices, want.MQTTAddr, want.MQTTMaxKeepalive = 5000, "127.0.0.1:0", 90*time.Second
		if m.Config != want {
			t.Fatalf("config %+v, want %+v", m.Config, want)
		}
	})
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"ErrLogLevel", nil, []string{"--log-level", "loud"}, []string{"--log-level", "HERD_LOG_LEVEL", "loud"}},
		{"ErrLogFormatFromEnv", map[string]string{"HERD_LOG_FORMAT": "xml"}, nil, []string{"--log-format", "HERD_LOG_FORMAT", "xml"}},
		{"ErrEmptyAddr", nil, []string{"--http-addr", ""}, []string{"--http-addr"}},
		{"ErrUnknownFlag", nil, []string{"--colour"}, []string{"colour"}},
		{"ErrArgument", nil, []string{"now"}, []string{"now"}},
		{"ErrStateCacheNegative", nil, []string{"--state-cache-min-devices", "-1"}, []string{"--state-cache-min-devices", "HERD_STATE_CACHE_MIN_DEVICES"}},
		{"ErrStateCacheEnv", map[string]string{"HERD_STATE_CACHE_MIN_DEVICES": "many"}, nil, []string{"--state-cache-min-devices", "HERD_STATE_CACHE_MIN_DEVICES", "many"}},
		{"ErrAllowedOrigins", nil, []string{"--allowed-origins", "app.example"}, []string{"--allowed-origins", "HERD_ALLOWED_ORIGINS", "app.example", "https://host"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, stderr := newMain(tt.env)
			err := m.ParseFlags(context.Background(), tt.args)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error() + stderr.String()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestMain_ErrStore(t *testing.T) {
	t.Parallel()
	m, _ := newMain(nil)
	// A file where the data directory should be.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.ParseFlags(context.Background(), []string{"--http-addr", "127.0.0.1:0", "--data-dir", file}); err != nil {
		t.Fatal(err)
	}
	err := m.Run(context.Background())
	if cerr := m.Close(); cerr != nil {
		t.Errorf("close after a failed run: %v", cerr)
	}
	if err == nil || !strings.Contains(err.Error(), "open store") {
		t.Fatalf("err %v, want an open store error", err)
	}
	var ce *main.ConfigError
	if errors.As(err, &ce) {
		t.Fatal("a store failure is not a config error")
	}
}

// TestServe_HintsCrossProcesses: two herd processes on one PostgreSQL and
// one NATS; a client of the stream on one gets the hint of a change
// committed through the other.
func TestServe_HintsCrossProcesses(t *testing.T) {
	t.Parallel()
	natsURL := os.Getenv(testutil.NATSURLEnv)
	if natsURL == "" {
		t.Skipf("needs an external NATS: set %s (CI does)", testutil.NATSURLEnv)
	}
	dsn := testutil.PostgresSchemaDSN(t)
	name := fmt.Sprintf("HERD_TEST_X%d", time.Now().UnixNano())
	args := func() []string {
		return []string{"--http-addr", "127.0.0.1:0", "--mqtt-addr", "off", "--data-dir", t.TempDir(), "--store", dsn,
			"--nats-url", natsURL, "--nats-stream", name, "--nats-subject-prefix", strings.ToLower(name)}
	}
	env := map[string]string{"HERD_ADMIN_TOKEN": adminSecret}
	a, _ := mustRunMain(t, env, args()...)
	b, _ := mustRunMain(t, env, args()...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		nc, err := nats.Connect(natsURL)
		if err == nil {
			js, _ := jetstream.New(nc)
			js.DeleteStream(ctx, name)
			nc.Close()
		}
	})
	api := httpapi.NewClient(a.HTTPServer.URL(), adminSecret)
	ten := &herd.Tenant{Name: "two"}
	if err := api.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(b.HTTPServer.URL(), "http://", "ws://", 1) + fmt.Sprintf("/v1/stream?tenant_id=%d", ten.ID)
	ws, _, err := websocket.Dial(t.Context(), url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + adminSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() map[string]any {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var f map[string]any
		json.Unmarshal(data, &f)
		return f
	}
	if f := read(); f["type"] != "hello" {
		t.Fatalf("first frame %v", f)
	}
	d := &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("x-%d", time.Now().UnixNano())}
	if err := api.CreateDevice(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	for {
		f := read()
		hints, _ := f["hints"].([]any)
		for _, h := range hints {
			if h.(map[string]any)["subject_id"] == fmt.Sprint(d.ID) {
				return // committed through a, hinted by b
			}
		}
	}
}

// proxy forwards TCP connections to addr until cut, which closes them all
// and refuses new ones until restore: a network that drops a client.
type proxy struct {
	ln    net.Listener
	addr  string
	mu    sync.Mutex
	conns []net.Conn
	down  bool
}

func newProxy(t *testing.T, addr string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, addr: addr}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", p.addr)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestWatcher_GapAfterReconnect: the watcher's socket is cut, 5 commands
// are sent meanwhile, and once it reconnects it has handed over exactly
// those 5 events: no gap, no repeat.
func TestWatcher_GapAfterReconnect(t *testing.T) {
	t.Parallel()
	m, _ := mustRunMain(t, map[string]string{"HERD_ADMIN_TOKEN": adminSecret},
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "off", "--data-dir", t.TempDir())
	api := httpapi.NewClient(m.HTTPServer.URL(), adminSecret)
	ten := &herd.Tenant{Name: "watch"}
	if err := api.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	dev := &herd.Device{NodeID: ten.RootNodeID, Key: "watched"}
	if err := api.CreateDevice(t.Context(), dev); err != nil {
		t.Fatal(err)
	}
	page, err := api.FindEvents(t.Context(), ten.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, strings.TrimPrefix(m.HTTPServer.URL(), "http://"))
	var mu sync.Mutex
	var got []*herd.Event
	handled := make(chan struct{}, 100)
	w := &httpapi.Watcher{
		Client:     httpapi.NewClient("http://"+p.ln.Addr().String(), adminSecret),
		TenantID:   ten.ID,
		After:      page.Head,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Handle: func(_ context.Context, ev *herd.Event) error {
			mu.Lock()
			got = append(got, ev)
			mu.Unlock()
			handled <- struct{}{}
			return nil
		},
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Live: a first change reaches the watcher through a hint.
	send := func(name string) {
		c := &herd.Command{DeviceID: dev.ID, Name: name, TTLSeconds: 600, IdempotencyKey: name}
		if err := api.CreateCommand(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	send("first")
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher never got the first event")
	}
	p.cut()
	for i := range 5 {
		send(fmt.Sprintf("while-away-%d", i))
	}
	p.restore()
	for range 5 {
		select {
		case <-handled:
		case <-time.After(30 * time.Second):
			t.Fatal("the watcher did not catch up after reconnecting")
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 6 {
		t.Fatalf("handled %d events, want 6", len(got))
	}
	for i, ev := range got {
		if ev.Type != herd.EventCommandCreated || (i > 0 && ev.Seq != got[i-1].Seq+1) {
			t.Fatalf("event %d: %s seq %d after %d: want command.created, no gap", i, ev.Type, ev.Seq, got[max(i-1, 0)].Seq)
		}
	}
	if w.Cursor() != got[5].Seq {
		t.Fatalf("cursor %d, want %d", w.Cursor(), got[5].Seq)
	}
}
