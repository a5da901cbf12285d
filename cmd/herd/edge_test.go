package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

const testAdminToken = "herd_test_admin_token_0123456789abcdef"

// herdProc is herd serve running as a child process.
type herdProc struct {
	cmd    *exec.Cmd
	url    string // REST API
	mqtt   string // MQTT TCP address
	stderr *testutil.SyncBuffer
}

// startHerd starts `herd serve` on free ports and waits for its listening
// line. extra holds more flags; prefix, when set, runs herd under a shell
// prefix such as "ulimit -n 300;".
func startHerd(t *testing.T, prefix string, extra ...string) *herdProc {
	t.Helper()
	// The data dir holds the embedded NATS server's files even when the
	// store is elsewhere; a flag in extra wins (it comes later).
	args := append([]string{"serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--log-format", "json", "--data-dir", t.TempDir()}, extra...)
	cmd := herdCommand(t, args...)
	if prefix != "" {
		quoted := make([]string, len(cmd.Args))
		for i, a := range cmd.Args {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		cmd = exec.CommandContext(t.Context(), "/bin/sh", "-c", prefix+" exec "+strings.Join(quoted, " "))
		cmd.Env = herdCommand(t).Env
	}
	cmd.Env = append(cmd.Env, "HERD_ADMIN_TOKEN="+testAdminToken)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &herdProc{cmd: cmd, stderr: &testutil.SyncBuffer{}}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(pipe)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	for p.url == "" && lines.Scan() {
		p.stderr.Write(append(lines.Bytes(), '\n'))
		var rec struct {
			Msg  string `json:"msg"`
			URL  string `json:"url"`
			MQTT string `json:"mqtt"`
		}
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec.Msg == "herd listening" {
			p.url, p.mqtt = rec.URL, rec.MQTT
		}
	}
	if p.url == "" || p.mqtt == "" {
		t.Fatalf("herd never logged its addresses:\n%s", p.stderr.String())
	}
	go io.Copy(p.stderr, pipe)
	return p
}

// provisionFleet creates a tenant with n devices and a credential each, through
// the API.
func provisionFleet(t *testing.T, api *httpapi.Client, n int) (*herd.Tenant, []*herd.Device, map[string]string) {
	t.Helper()
	ctx := t.Context()
	ten := &herd.Tenant{Name: "edge"}
	if err := api.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	var ds []*herd.Device
	for i := range n {
		ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("edge-%d-%d", ten.ID, i)})
	}
	if err := api.CreateDevices(ctx, ds); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, d := range ds {
		c, err := api.CreateDeviceCredential(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		tokens[d.Key] = c.Token
	}
	return ten, ds, tokens
}

func mqttClient(addr, key, token string) paho.Client {
	return paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(key).SetUsername(key).SetPassword(token).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second))
}

// TestServe_PubackAfterCommit kills herd with SIGKILL while devices publish
// QoS 1 telemetry, restarts it on the same store, and finds every reading
// whose PUBACK a device received.
func TestServe_PubackAfterCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs herd twice as a child process")
	}
	t.Parallel()
	stores := map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return filepath.Join(t.TempDir(), "herd.db") },
		"postgres": func(t *testing.T) string { return testutil.PostgresSchemaDSN(t) },
	}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := store(t)
			p := startHerd(t, "", "--store", dsn)
			_, ds, tokens := provisionFleet(t, httpapi.NewClient(p.url, testAdminToken), 8)

			type ack struct {
				key string
				ts  int64
			}
			var mu sync.Mutex
			var acked []ack
			enough := make(chan struct{})
			var once sync.Once
			var wg sync.WaitGroup
			base := time.Now().Add(-time.Hour).UnixMilli()
			for _, d := range ds {
				c := mqttClient(p.mqtt, d.Key, tokens[d.Key])
				if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("connect %s: %v", d.Key, tok.Error())
				}
				wg.Go(func() {
					for i := int64(0); ; i++ {
						ts := base + i
						tok := c.Publish("devices/"+d.Key+"/telemetry", 1, false, fmt.Sprintf(`{"ts":%d,"temperature":%d}`, ts, i%50))
						if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
							return // herd is gone
						}
						mu.Lock()
						acked = append(acked, ack{d.Key, ts})
						if len(acked) >= 400 {
							once.Do(func() { close(enough) })
						}
						mu.Unlock()
					}
				})
			}
			select {
			case <-enough:
			case <-time.After(30 * time.Second):
				t.Fatal("devices did not get 400 PUBACKs in 30 s")
			}
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			p.cmd.Wait()
			wg.Wait()

			// The restarted herd opens the same store: it must start cleanly.
			startHerd(t, "", "--store", dsn)
			db := sqldb.NewDB(dsn)
			if err := db.Open(); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			mu.Lock()
			defer mu.Unlock()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			missing := 0
			for _, a := range acked {
				var n int
				if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM readings r JOIN devices d ON d.id = r.device_id WHERE d.key = ? AND r.ts = ?`), a.key, a.ts).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 1 {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%d of %d acknowledged readings are not in the store", missing, len(acked))
			}
			t.Logf("%d acknowledged readings, all stored", len(acked))
		})
	}
}

// TestServe_ConnectionCap runs herd with a low open-file limit: it derives
// a small connection cap from it, refuses the devices beyond it with a
// CONNACK instead of failing accept, and keeps the admitted ones working.
func TestServe_ConnectionCap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs herd as a child process")
	}
	t.Parallel()
	// 256 of the 300 files are kept for the store and the rest: 44 devices.
	p := startHerd(t, "ulimit -n 300;", "--data-dir", t.TempDir())
	_, ds, tokens := provisionFleet(t, httpapi.NewClient(p.url, testAdminToken), 60)
	var admitted []paho.Client
	refused := 0
	for _, d := range ds {
		c := mqttClient(p.mqtt, d.Key, tokens[d.Key])
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			t.Fatalf("connect %s timed out", d.Key)
		}
		switch err := tok.Error(); {
		case err == nil:
			admitted = append(admitted, c)
			t.Cleanup(func() { c.Disconnect(0) })
		case strings.Contains(strings.ToLower(err.Error()), "server unavailable"):
			refused++
		default:
			t.Fatalf("connect %s: %v", d.Key, err)
		}
	}
	if len(admitted) < 30 || len(admitted) > 44 || refused == 0 {
		t.Fatalf("%d admitted, %d refused; want about 44 admitted and the rest refused\n%s", len(admitted), refused, p.stderr.String())
	}
	for _, c := range admitted {
		if !c.IsConnectionOpen() {
			t.Fatal("an admitted device lost its connection")
		}
		r := c.OptionsReader()
		key := r.ClientID()
		tok := c.Publish("devices/"+key+"/telemetry", 1, false, `{"temperature":20}`)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("admitted device %s cannot publish: %v", key, tok.Error())
		}
	}
	if !strings.Contains(p.stderr.String(), "connection cap reached") {
		t.Errorf("no log line for the refusals:\n%s", p.stderr.String())
	}
}

// TestServe_AcceptBackoff runs herd with a connection cap above what its
// open-file limit allows, so that accept fails with EMFILE: the listener
// backs off and says so instead of spinning or stopping, and takes devices
// again once files are free.
func TestServe_AcceptBackoff(t *testing.T) {
	if testing.Short() {
		t.Skip("runs herd as a child process")
	}
	t.Parallel()
	p := startHerd(t, "ulimit -n 100;", "--data-dir", t.TempDir(), "--mqtt-max-connections", "10000")
	_, ds, tokens := provisionFleet(t, httpapi.NewClient(p.url, testAdminToken), 1)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// More sockets than herd has files: the kernel completes them all into
	// the listen queue, and herd's accept fails once its files run out.
	for range 150 {
		c, err := net.DialTimeout("tcp", p.mqtt, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testutil.WaitFor(t, 30*time.Second, "an accept back-off after 150 sockets under a limit of 100 files", func() bool {
		return strings.Contains(p.stderr.String(), "accept failed, backing off")
	})
	t.Logf("%s", grepLines(p.stderr.String(), "accept failed"))
	if !strings.Contains(p.stderr.String(), "too many open files") {
		t.Errorf("the back-off does not say why:\n%s", p.stderr.String())
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// With the files free again herd accepts: a device connects and stores
	// a reading.
	key := ds[0].Key
	var c paho.Client
	deadline := time.Now().Add(30 * time.Second)
	for {
		c = mqttClient(p.mqtt, key, tokens[key])
		tok := c.Connect()
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no device admitted after the sockets closed: %v\n%s", tok.Error(), p.stderr.String())
		}
	}
	defer c.Disconnect(0)
	if tok := c.Publish("devices/"+key+"/telemetry", 1, false, `{"temperature":20}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish after the back-off: %v", tok.Error())
	}
	body := httpGet(t, p.url+"/metrics")
	var backoffs float64
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "herd_mqtt_accept_backoffs_total "); ok {
			fmt.Sscan(v, &backoffs)
		}
	}
	if backoffs < 1 {
		t.Errorf("herd_mqtt_accept_backoffs_total = %v, want at least 1", backoffs)
	}
}

// httpGet returns the body of a GET that must answer 200.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestServe_RevokeDisconnects revokes a connected device's credential, and
// deletes another connected device, through the API of a running herd:
// each is disconnected at once, and the revoked token no longer admits.
func TestServe_RevokeDisconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("runs herd as a child process")
	}
	t.Parallel()
	p := startHerd(t, "", "--data-dir", t.TempDir())
	api := httpapi.NewClient(p.url, testAdminToken)
	_, ds, tokens := provisionFleet(t, api, 2)
	connect := func(d *herd.Device) <-chan error {
		lost := make(chan error, 1)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + p.mqtt).
			SetClientID(d.Key).SetUsername(d.Key).SetPassword(tokens[d.Key]).SetProtocolVersion(4).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", d.Key, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(0) })
		return lost
	}
	for _, tc := range []struct {
		d    *herd.Device
		what string
		act  func(id int64) error
	}{
		{ds[0], "its credential was revoked", func(id int64) error { return api.DeleteDeviceCredential(t.Context(), id) }},
		{ds[1], "it was deleted", func(id int64) error { return api.DeleteDevice(t.Context(), id) }},
	} {
		d := tc.d
		lost := connect(d)
		if err := tc.act(d.ID); err != nil {
			t.Fatal(err)
		}
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatalf("the device is still connected 10 s after %s", tc.what)
		}
	}
	d := ds[0]
	again := mqttClient(p.mqtt, d.Key, tokens[d.Key])
	tok := again.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		again.Disconnect(0)
		t.Fatal("the revoked token still connects")
	}
}

// TestServe_Commands: a Paho device acks a command; another never acks and
// its command expires; an offline device gets its command when it comes
// back.
func TestServe_Commands(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	addr := m.Gateway.TCPAddr().String()
	_, ds, tokens := provisionFleet(t, api, 3)
	ctx := t.Context()
	send := func(d *herd.Device, name string, ttl int64) *herd.Command {
		t.Helper()
		c := &herd.Command{DeviceID: d.ID, Name: name, TTLSeconds: ttl, IdempotencyKey: fmt.Sprintf("%s-%d", name, time.Now().UnixNano())}
		if err := api.CreateCommand(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// device connects, subscribes, and (if answering) acks every command
	// it gets, once per id.
	device := func(d *herd.Device, answer bool) (paho.Client, <-chan string) {
		got := make(chan string, 16)
		c := mqttClient(addr, d.Key, tokens[d.Key])
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		seen := map[string]bool{}
		var mu sync.Mutex
		tok := c.Subscribe("devices/"+d.Key+"/commands", 1, func(_ paho.Client, msg paho.Message) {
			var cmd struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			}
			json.Unmarshal(msg.Payload(), &cmd)
			mu.Lock()
			dup := seen[cmd.ID]
			seen[cmd.ID] = true
			mu.Unlock()
			if dup {
				return // repeats are dropped by id
			}
			got <- cmd.Name
			if answer {
				c.Publish("devices/"+d.Key+"/commands/ack", 1, false, fmt.Sprintf(`{"id":%q,"status":"ok","result":{"done":%q}}`, cmd.ID, cmd.Name))
			}
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(0) })
		return c, got
	}
	waitStatus := func(id int64, want string) *herd.Command {
		t.Helper()
		var c *herd.Command
		testutil.WaitFor(t, 30*time.Second, "command "+want, func() bool {
			var err error
			c, err = api.FindCommandByID(ctx, id)
			return err == nil && c.Status == want
		})
		return c
	}

	_, got := device(ds[0], true)
	acked := send(ds[0], "reboot", 60)
	if name := <-got; name != "reboot" {
		t.Fatalf("device got %q", name)
	}
	if c := waitStatus(acked.ID, herd.CommandAcked); c.DeliveredAt == nil || string(c.Result) != `{"done":"reboot"}` {
		t.Fatalf("acked command %+v", c)
	}

	_, silentGot := device(ds[1], false)
	silent := send(ds[1], "ping", 1)
	<-silentGot
	waitStatus(silent.ID, herd.CommandDelivered)
	waitStatus(silent.ID, herd.CommandExpired)

	offline := send(ds[2], "update", 60) // nobody is connected as ds[2]
	if c, _ := api.FindCommandByID(ctx, offline.ID); c.Status != herd.CommandPending {
		t.Fatalf("offline command %s", c.Status)
	}
	_, laterGot := device(ds[2], true)
	if name := <-laterGot; name != "update" {
		t.Fatalf("device back got %q", name)
	}
	waitStatus(offline.ID, herd.CommandAcked)
}

// runTestMain runs herd serve in this process on free ports and a data dir
// of its own, with the test admin token; more flags come after.
func runTestMain(t *testing.T, args ...string) *Main {
	t.Helper()
	m := NewMain()
	m.Getenv = func(k string) string {
		if k == AdminTokenEnv {
			return testAdminToken
		}
		return ""
	}
	m.Stderr = io.Discard
	if err := m.ParseFlags(t.Context(), append([]string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestWatchCommand: herd watch prints the events of the types asked for,
// from the head on, as they are committed.
func TestWatchCommand(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "off")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten := &herd.Tenant{Name: "watch-cli"}
	if err := api.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	cmd := herdCommand(t, "watch", "--api", m.HTTPServer.URL(), "--token", testAdminToken, "--tenant", fmt.Sprint(ten.ID), "--type", "device.*")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testutil.WaitFor(t, 30*time.Second, "herd watch to start", func() bool { return strings.Contains(stderr.String(), "following") })
	lines := bufio.NewScanner(out)
	// A node (not asked for), then a device: the first line is the device.
	n := &herd.Node{TenantID: ten.ID, Kind: "site", Name: "s"}
	if err := api.CreateNode(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	if err := api.CreateDevice(t.Context(), &herd.Device{NodeID: n.ID, Key: "watched-0"}); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() {
		t.Fatalf("no line; stderr: %s", stderr.String())
	}
	line := lines.Text()
	if !strings.Contains(line, " device.created device/") || !strings.Contains(line, `"key":"watched-0"`) {
		t.Fatalf("line %q", line)
	}
}

// TestDoctorIDs: the doctor's exit codes and output on the machine's
// MariaDB: 0 below 70%, 1 at 75%, 2 for a full column, 3 when the database
// cannot be read.
func TestDoctorIDs(t *testing.T) {
	t.Parallel()
	dsn, db := testutil.MySQLDatabase(t)
	run := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		cmd := herdCommand(t, append([]string{"doctor", "ids"}, args...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		return exitCode(t, cmd.Run()), out.String(), errb.String()
	}
	if _, err := db.Exec(fmt.Sprintf(`CREATE TABLE cool (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY) AUTO_INCREMENT=%d`, 2147483647/10)); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run(t, "--dsn", dsn); code != 0 || !strings.Contains(out, "cool") || !strings.Contains(out, "ok") {
		t.Fatalf("at 10%%: exit %d\n%s", code, out)
	}
	if _, err := db.Exec(fmt.Sprintf(`CREATE TABLE warm (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY) AUTO_INCREMENT=%d`, 2147483647/4*3)); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run(t, "--dsn", dsn); code != 1 || !strings.Contains(out, "WARN") {
		t.Fatalf("at 75%%: exit %d\n%s", code, out)
	}
	// The levels are the caller's: --warn 80 leaves 75% alone, --crit 0.7 does not.
	if code, _, _ := run(t, "--dsn", dsn, "--warn", "80"); code != 0 {
		t.Fatalf("at 75%% with --warn 80: exit %d, want 0", code)
	}
	if code, _, _ := run(t, "--dsn", dsn, "--warn", "0.5", "--crit", "0.7"); code != 2 {
		t.Fatalf("at 75%% with --crit 0.7: exit %d, want 2", code)
	}
	if _, err := db.Exec(`CREATE TABLE events (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT) AUTO_INCREMENT=2147483646`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		db.Exec(`INSERT INTO events (v) VALUES (1)`)
	}
	code, out, _ := run(t, "--dsn", dsn, "--json")
	var report struct {
		Columns []struct {
			Table string  `json:"table"`
			Ratio float64 `json:"ratio"`
		} `json:"columns"`
		Exit int `json:"exit"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != 2 || report.Exit != 2 {
		t.Fatalf("full column: exit %d, %v\n%s", code, err, out)
	}
	if code, out, _ := run(t, "--dsn", dsn); code != 2 || !strings.Contains(out, "100.0%") || !strings.Contains(out, "CRITICAL") {
		t.Fatalf("full column, table: exit %d\n%s", code, out)
	}
	// A user without privileges on the database.
	user := fmt.Sprintf("herd_nopriv_%d", time.Now().UnixNano()%1_000_000)
	if _, err := db.Exec(`CREATE USER '` + user + `'@'%' IDENTIFIED BY 'pw'`); err != nil {
		t.Fatal(err)
	}
	defer db.Exec(`DROP USER '` + user + `'@'%'`)
	noPriv := strings.Replace(dsn, "mysql://root@", "mysql://"+user+":pw@", 1)
	for _, bad := range [][]string{
		{"--dsn", noPriv},
		{"--dsn", "mysql://root@127.0.0.1:1/nowhere"},
		{"--dsn", strings.Replace(dsn, "herd_test_", "herd_missing_", 1)},
		{"--dsn", filepath.Join(t.TempDir(), "missing.db")},
		{},
		{"--dsn", dsn, "--warn", "lots"},
	} {
		if code, _, stderr := run(t, bad...); code != 3 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 3 and a message", bad, code, stderr)
		}
	}
}

// TestServe_WatchesItsIDs: herd checks its own store's id columns, exports
// their headroom, and writes an event when one passes 70%.
func TestServe_WatchesItsIDs(t *testing.T) {
	t.Parallel()
	dsn := testutil.PostgresSchemaDSN(t)
	m := runTestMain(t, "--store", dsn, "--mqtt-addr", "off", "--id-watch-interval", "1s")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten := &herd.Tenant{Name: "ids"}
	if err := api.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DB.SQL().Exec(`SELECT setval(pg_get_serial_sequence('nodes', 'id'), 7378697629483820646)`); err != nil { // 80% of 2^63
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the warning event", func() bool {
		page, err := api.FindEvents(t.Context(), ten.ID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Items {
			if ev.Type == herd.EventIDHeadroomWarning && strings.Contains(string(ev.Payload), `"table":"nodes"`) {
				return true
			}
		}
		return false
	})
	resp, err := http.Get(m.HTTPServer.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `herd_id_headroom_ratio{column="id",table="nodes"} 0.8`) {
		t.Fatalf("metrics lack the nodes ratio:\n%s", grepLines(string(body), "herd_id_headroom"))
	}
}

// TestDoctorWiden: the plan by default, the ALTER with --execute, and a
// clear failure for a table that is not there.
func TestDoctorWiden(t *testing.T) {
	t.Parallel()
	dsn, db := testutil.MySQLDatabase(t)
	if _, err := db.Exec(`CREATE TABLE events (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT) AUTO_INCREMENT=2147483000`); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		cmd := herdCommand(t, append([]string{"doctor", "ids", "widen", "--dsn", dsn}, args...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		return exitCode(t, cmd.Run()), out.String(), errb.String()
	}
	code, out, _ := run("--table", "events")
	if code != 0 || !strings.Contains(out, "ALTER TABLE `events` MODIFY `id` BIGINT") || !strings.Contains(out, "plan only") {
		t.Fatalf("plan: exit %d\n%s", code, out)
	}
	var typ string
	db.QueryRow(`SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND COLUMN_NAME = 'id'`).Scan(&typ)
	if typ != "int" {
		t.Fatalf("the plan changed the column: %s", typ)
	}
	if code, out, errs := run("--table", "events", "--execute"); code != 0 || !strings.Contains(out, "widened") {
		t.Fatalf("execute: exit %d\n%s%s", code, out, errs)
	}
	db.QueryRow(`SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND COLUMN_NAME = 'id'`).Scan(&typ)
	if typ != "bigint" {
		t.Fatalf("after --execute the column is %s", typ)
	}
	if code, _, errs := run("--table", "nothing"); code != 3 || !strings.Contains(errs, "nothing") {
		t.Fatalf("unknown table: exit %d, %q", code, errs)
	}
}
