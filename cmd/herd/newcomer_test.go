package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
)

// TestServe_ErrPortTakenLeavesNoStore: a start on a taken port fails before
// it touches the store, so the next start (on a free port) is a first start:
// no ./herd-data, no generated token printed and lost, a non-zero exit and
// a message naming the port.
func TestServe_ErrPortTakenLeavesNoStore(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, env string }{
		{"HTTP", "HERD_HTTP_ADDR"},
		{"MQTT", "HERD_MQTT_ADDR"},
		{"Debug", "HERD_DEBUG_ADDR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			dir := t.TempDir()
			cmd := herdCommand(t, "serve")
			cmd.Dir = dir
			cmd.Env = append(cleanEnv(), execMainEnv+"=1", "HERD_HTTP_ADDR=127.0.0.1:0", "HERD_MQTT_ADDR=127.0.0.1:0", tt.env+"="+ln.Addr().String())
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if code := exitCode(t, cmd.Run()); code == 0 {
				t.Fatalf("herd serve on a taken port exited 0: %s", stderr.String())
			}
			for _, want := range []string{ln.Addr().String(), "already in use", tt.env, "nothing was written"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q: %s", want, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "shown once") {
				t.Errorf("a token was generated (and lost) by a start that failed: %s", stderr.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "herd-data")); !os.IsNotExist(err) {
				t.Errorf("a failed start left ./herd-data behind (stat: %v)", err)
			}
		})
	}
}

// TestServe_AdminTokenIgnoredSaysWhatToDo walks the README in its order:
// `make run` (a generated token), then the quickstart's start with
// HERD_ADMIN_TOKEN on the same data dir. The token cannot be taken; herd
// must say so plainly, naming the data dir and how to start over.
func TestServe_AdminTokenIgnoredSaysWhatToDo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := serveIn(t, dir)
	if !strings.Contains(first.log.String(), "admin token (shown once)") {
		t.Fatalf("first start printed no token:\n%s", first.log.String())
	}
	first.stop()
	second := serveIn(t, dir, AdminTokenEnv+"=herd_quickstart_0123456789abcdef")
	for _, want := range []string{AdminTokenEnv + " is ignored", "the data dir ./herd-data", "rm -rf ./herd-data", "401"} {
		if !strings.Contains(second.log.String(), want) {
			t.Errorf("the second start's stderr lacks %q:\n%s", want, second.log.String())
		}
	}
	// The same token again is not a reason to warn.
	second.stop()
	dir = t.TempDir()
	serveIn(t, dir, AdminTokenEnv+"=herd_quickstart_0123456789abcdef").stop()
	if third := serveIn(t, dir, AdminTokenEnv+"=herd_quickstart_0123456789abcdef"); strings.Contains(third.log.String(), "is ignored") {
		t.Errorf("warned about the token the store has:\n%s", third.log.String())
	}
}

// TestWatch_ErrClientError: herd watch with a super-admin's token and no
// --tenant gets a 400 that no retry changes: it must exit non-zero with
// herd's message instead of retrying silently forever. So must a tenant
// that does not exist, and a token that does not work.
func TestWatch_ErrClientError(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "off")
	for _, tt := range []struct {
		name  string
		args  []string
		token string
		want  []string
	}{
		{"NoTenant", nil, testAdminToken, []string{"invalid_request", "tenant_id", "--tenant"}},
		{"BadToken", nil, "herd_not_a_token_0123456789abcdefgh", []string{"unauthorized"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := herdCommand(t, append([]string{"watch", "--api", m.HTTPServer.URL(), "--token", tt.token}, tt.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if code := exitCode(t, err); code != 1 {
					t.Fatalf("exit code %d, want 1: %s", code, stderr.String())
				}
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("herd watch still retrying after 20 s: %s", stderr.String())
			}
			for _, want := range tt.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q: %s", want, stderr.String())
				}
			}
		})
	}
}

// TestServe_ErrStoreScheme: a --store herd does not know is refused, and
// leaves no SQLite file named after it.
func TestServe_ErrStoreScheme(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ store, want string }{
		{"nonsense://x", `unknown scheme "nonsense"`},
		{"mysql://root@127.0.0.1:3306/test", "SQLite or PostgreSQL"},
		{"mariadb://root:secret@127.0.0.1/test", "SQLite or PostgreSQL"},
		{"postgres:db", "want a URL such as postgres://"},
		{"sqlite://host/x.db", "not a URL with a host"},
		{"sqlite:", "names no file"},
		// The store would cut these at "?" and open herd's own pragmas:
		// parameters the user asked for must not vanish without a word.
		{"file:x.db?_pragma=journal_mode(DELETE)", `without "?" or "#"`},
		{"sqlite:x.db?mode=ro", `without "?" or "#"`},
		{"x.db?_pragma=busy_timeout(1)", `without "?" or "#"`},
	} {
		t.Run(tt.store, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for _, sub := range [][]string{{"serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "off"}, {"seed", "--devices", "1"}} {
				cmd := herdCommand(t, append(sub, "--store", tt.store)...)
				cmd.Dir = dir
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if code := exitCode(t, cmd.Run()); code != 1 {
					t.Fatalf("herd %s --store %s: exit code %d, want 1: %s", sub[0], tt.store, code, stderr.String())
				}
				for _, want := range []string{tt.want, "--store (or HERD_STORE)"} {
					if !strings.Contains(stderr.String(), want) {
						t.Errorf("herd %s: stderr lacks %q: %s", sub[0], want, stderr.String())
					}
				}
				if strings.Contains(stderr.String(), "secret") {
					t.Errorf("the password is printed: %s", stderr.String())
				}
			}
			if left, _ := os.ReadDir(dir); len(left) > 0 {
				t.Errorf("a refused store left %v behind", left)
			}
		})
	}
}

// TestMain_StoreSchemes: what --store accepts, and the engine each names.
func TestMain_StoreSchemes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		name, store string
		dialect     string
		file        string // the SQLite file it must create
	}{
		{"Path", filepath.Join(dir, "plain.db"), "sqlite", "plain.db"},
		{"SQLitePrefix", "sqlite:" + filepath.Join(dir, "prefixed.db"), "sqlite", "prefixed.db"},
		{"SQLiteAbsoluteURL", "sqlite://" + filepath.Join(dir, "url.db"), "sqlite", "url.db"},
		{"FilePrefix", "file:" + filepath.Join(dir, "file.db"), "sqlite", "file.db"},
		{"Postgres", "postgres", "postgres", ""},
		{"PostgresUpper", "Postgres", "postgres", ""},
		{"PostgreSQL", "postgresql", "postgres", ""},
		{"PostgreSQLUpper", "POSTGRESQL", "postgres", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := tt.store
			if tt.dialect == "postgres" {
				dsn := testutil.PostgresSchemaDSN(t)
				store = tt.store + strings.TrimPrefix(dsn, "postgres")
			}
			m := runTestMain(t, "--mqtt-addr", "off", "--store", store)
			if got := string(m.DB.Dialect()); got != tt.dialect {
				t.Fatalf("--store %s runs on %s, want %s", store, got, tt.dialect)
			}
			if tt.file != "" {
				if _, err := os.Stat(filepath.Join(dir, tt.file)); err != nil {
					t.Fatalf("--store %s: %v", store, err)
				}
			}
		})
	}
}

// TestClientCommands_Env: every command that talks to a running herd reads
// HERD_URL and HERD_TOKEN, with no flag; the simulator finds the broker on
// the port of HERD_MQTT_ADDR.
func TestClientCommands_Env(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten := &herd.Tenant{Name: "client-env"}
	if err := api.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	env := []string{URLEnv + "=" + m.HTTPServer.URL(), TokenEnv + "=" + testAdminToken}
	t.Run("simulate", func(t *testing.T) {
		t.Parallel()
		cmd := herdCommand(t, "simulate", "--node", strconv.FormatInt(ten.RootNodeID, 10), "--devices", "2", "--rate", "0", "--duration", "10ms")
		// The broker too, from the variable that moved the server's port.
		cmd.Env = append(append(cleanEnv(), execMainEnv+"=1", "HERD_MQTT_ADDR="+m.Gateway.TCPAddr().String()), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if code := exitCode(t, cmd.Run()); code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "devices created: 2/2") || !strings.Contains(stdout.String(), "devices 2  connected 2") {
			t.Fatalf("simulate did not provision through $%s:\nstdout %s\nstderr %s", URLEnv, stdout.String(), stderr.String())
		}
	})
	t.Run("simulateBrokerOnAPIHost", func(t *testing.T) {
		// The devices provisioned through $HERD_URL connect to the broker
		// of that herd, on its host, not to one on 127.0.0.1.
		t.Parallel()
		_, port, _ := net.SplitHostPort(m.HTTPServer.ListenAddr())
		cmd := herdCommand(t, "simulate", "--node", strconv.FormatInt(ten.RootNodeID, 10), "--devices", "2", "--rate", "0", "--duration", "10ms")
		cmd.Env = append(cleanEnv(), execMainEnv+"=1", "HERD_MQTT_ADDR="+m.Gateway.TCPAddr().String(),
			URLEnv+"=http://localhost:"+port, TokenEnv+"="+testAdminToken)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if code := exitCode(t, cmd.Run()); code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr.String())
		}
		_, mqttPort, _ := net.SplitHostPort(m.Gateway.TCPAddr().String())
		if want := "against tcp://localhost:" + mqttPort; !strings.Contains(stderr.String(), want) || !strings.Contains(stdout.String(), "devices 2  connected 2") {
			t.Fatalf("simulate did not connect to the broker of $%s's host (%q):\nstdout %s\nstderr %s", URLEnv, want, stdout.String(), stderr.String())
		}
	})
	t.Run("watch", func(t *testing.T) {
		t.Parallel()
		cmd := herdCommand(t, "watch", "--tenant", strconv.FormatInt(ten.ID, 10))
		cmd.Env = append(append(cleanEnv(), execMainEnv+"=1"), env...)
		stderr := &testutil.SyncBuffer{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		testutil.WaitFor(t, 30*time.Second, "herd watch to follow $HERD_URL", func() bool {
			return strings.Contains(stderr.String(), "following "+m.HTTPServer.URL())
		})
	})
}

// TestSimulate_InterruptSummary: `herd simulate` stopped with Ctrl-C
// reports the devices connected when it was stopped, as its progress lines
// did, not the fewer left while they were already leaving.
func TestSimulate_InterruptSummary(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten := &herd.Tenant{Name: "sim-sigint"}
	if err := api.CreateTenant(t.Context(), ten); err != nil {
		t.Fatal(err)
	}
	const n = 200
	cmd := herdCommand(t, "simulate", "--broker", "tcp://"+m.Gateway.TCPAddr().String(), "--node", strconv.FormatInt(ten.RootNodeID, 10),
		"--devices", strconv.Itoa(n), "--rate", "0")
	cmd.Env = append(cmd.Env, URLEnv+"="+m.HTTPServer.URL(), TokenEnv+"="+testAdminToken)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	go func() {
		<-ctx.Done()
		cmd.Process.Kill() // ends the scan below if the line never comes
	}()
	// A progress line after every device connected: the count to report.
	progress := regexp.MustCompile(`^\s*\S+ steady\s+connected=(\d+) `)
	lines := bufio.NewScanner(pipe)
	var seen strings.Builder
	last := ""
	for last == "" && lines.Scan() {
		fmt.Fprintln(&seen, lines.Text())
		if m := progress.FindStringSubmatch(lines.Text()); m != nil {
			last = m[1]
		}
	}
	if last != strconv.Itoa(n) {
		t.Fatalf("no progress line with connected=%d:\n%s", n, seen.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
	}
	if code := exitCode(t, cmd.Wait()); code != 0 {
		t.Fatalf("exit code %d after SIGINT: %s", code, stdout.String())
	}
	want := fmt.Sprintf("devices %d  connected %d ", n, n)
	if !strings.HasPrefix(stdout.String(), want) {
		t.Fatalf("summary after SIGINT %q, want it to start %q (the last progress line said connected=%s)", stdout.String(), want, last)
	}
}

// TestServe_ErrBadAdminTokenLeavesNoStore: a HERD_ADMIN_TOKEN that cannot
// be a token is refused before the store is touched, so a first start that
// fails on it leaves no ./herd-data (a store without any admin token) behind.
func TestServe_ErrBadAdminTokenLeavesNoStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := herdCommand(t, "serve")
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), execMainEnv+"=1", "HERD_HTTP_ADDR=127.0.0.1:0", "HERD_MQTT_ADDR=off", AdminTokenEnv+"=secret")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if code := exitCode(t, cmd.Run()); code != 1 {
		t.Fatalf("herd serve with %s=secret: exit code %d, want 1: %s", AdminTokenEnv, code, stderr.String())
	}
	for _, want := range []string{AdminTokenEnv + ` must start with "herd_"`, "nothing was written"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, stderr.String())
		}
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("a start refused for its token left %v behind", left)
	}
}

// TestServe_ServesOnReservedPorts: the listeners bound before the store
// opens are the ones the servers serve on. Closing them and listening
// again would leave a window, after the store was opened and a token
// printed, in which another process could take the port.
func TestServe_ServesOnReservedPorts(t *testing.T) {
	t.Parallel()
	m := NewMain()
	m.Getenv = func(k string) string {
		if k == AdminTokenEnv {
			return testAdminToken
		}
		return ""
	}
	m.Stderr = io.Discard
	var reserved []string
	m.listen = func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err == nil {
			reserved = append(reserved, ln.Addr().String())
		}
		return ln, err
	}
	if err := m.ParseFlags(t.Context(), []string{"--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	got := []string{m.HTTPServer.ListenAddr(), m.Gateway.TCPAddr().String()}
	if !slices.Equal(got, reserved) {
		t.Fatalf("herd serves HTTP and MQTT on %v; it reserved %v before opening the store", got, reserved)
	}
}

// TestBench_PostgresURL: herd bench reads --postgres as herd serve reads
// --store, the scheme in any case, and refuses what is not PostgreSQL; a
// Postgres:// URL used to be benchmarked as a SQLite file named after it.
func TestBench_PostgresURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url, want string
		code      int
	}{
		// Read as PostgreSQL: the run stops at its check of the schema.
		{"Postgres://postgres@127.0.0.1:1/test?search_path=public", "needs search_path=herd_", 1},
		{"mysql://root@127.0.0.1:3306/test", "--postgres mysql://", 2},
		{"bench.db", "not a PostgreSQL URL", 2},
	} {
		cmd := herdCommand(t, "bench", "doctor", "--postgres", tt.url)
		cmd.Dir = t.TempDir()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if code := exitCode(t, cmd.Run()); code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("herd bench doctor --postgres %s: exit %d, want %d and %q: %s", tt.url, code, tt.code, tt.want, stderr.String())
		}
		if left, _ := os.ReadDir(cmd.Dir); len(left) > 0 {
			t.Errorf("--postgres %s left %v behind", tt.url, left)
		}
	}
}
