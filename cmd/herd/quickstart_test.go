package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/testutil"
)

// quickstart is the README's quickstart: the command that starts herd, the
// block a newcomer pastes in another terminal, and what that block prints.
type quickstart struct {
	start, block, output string
}

// readQuickstart takes the blocks of README.md's "## Quickstart" section:
// its first ```sh block starts herd, its second is the one to paste, and
// the ```text block after it is the output.
func readQuickstart(t *testing.T) quickstart {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Quickstart\n")
	if !ok {
		t.Fatal(`README.md has no "## Quickstart" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	blockRE := regexp.MustCompile("(?ms)^```(\\w+)\n(.*?)^```$")
	var q quickstart
	var sh []string
	for _, m := range blockRE.FindAllStringSubmatch(section, -1) {
		switch {
		case m[1] == "sh":
			sh = append(sh, m[2])
		case m[1] == "text" && len(sh) == 2 && q.output == "":
			q.output = m[2]
		}
	}
	if len(sh) != 2 || q.output == "" {
		t.Fatalf("the quickstart has %d sh blocks (want 2: start, paste) and output %q", len(sh), q.output)
	}
	q.start, q.block = sh[0], sh[1]
	return q
}

// startEnv reads the start command, NAME=VALUE ... make run, into the
// environment it gives herd.
func startEnv(t *testing.T, start string) []string {
	t.Helper()
	fields := strings.Fields(start)
	var env []string
	for len(fields) > 0 && strings.Contains(fields[0], "=") {
		env, fields = append(env, fields[0]), fields[1:]
	}
	if strings.Join(fields, " ") != "make run" {
		t.Fatalf("the quickstart starts herd with %q, not NAME=VALUE ... make run (what this test runs)", start)
	}
	return env
}

// compareOutput compares the output with the README's, line by line: the
// text as it is, with <id> matching an id and <time> an RFC 3339 time. It
// returns the lines that differ, or "".
func compareOutput(want, got string) string {
	wl, gl := strings.Split(strings.TrimSuffix(want, "\n"), "\n"), strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	var diff strings.Builder
	for i := range max(len(wl), len(gl)) {
		w, g := "(nothing)", "(nothing)"
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if i >= len(wl) || i >= len(gl) || !linePattern(w).MatchString(g) {
			fmt.Fprintf(&diff, "line %d: README %s\n        printed %s\n", i+1, w, g)
		}
	}
	return diff.String()
}

// linePattern is one line of the README's output as a pattern.
func linePattern(line string) *regexp.Regexp {
	s := regexp.QuoteMeta(line)
	s = strings.ReplaceAll(s, "<id>", `[0-9]+`)
	s = strings.ReplaceAll(s, "<time>", `[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})`)
	return regexp.MustCompile(`\A` + s + `\z`)
}

// TestQuickstart_README runs the README's quickstart verbatim: herd started
// as its first block says (in the directory where the set-up section's
// `make run` ran before, on free ports given through
// HERD_HTTP_ADDR and HERD_MQTT_ADDR, the variables the README names for
// moving them), then the block a newcomer pastes, with bash, curl, jq and
// mosquitto_pub. Every command must succeed and the output must be the
// README's, ids and times aside. On PostgreSQL too, with HERD_STORE.
func TestQuickstart_README(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "jq", "mosquitto_pub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the quickstart needs %s (.ci/run installs it): %v", tool, err)
		}
	}
	q := readQuickstart(t)
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			env := startEnv(t, q.start)
			if store == "postgres" {
				env = append(env, "HERD_STORE="+testutil.PostgresSchemaDSN(t))
			}
			// In the README's order: the set-up section's `make run` first,
			// which makes ./herd-data with a generated token, stopped; then
			// the quickstart's start in the same directory.
			dir := t.TempDir()
			setup := serveIn(t, dir)
			setup.stop()
			if !strings.Contains(setup.log.String(), "admin token (shown once)") {
				t.Fatalf("the set-up section's make run printed no token:\n%s", setup.log.String())
			}
			h := serveIn(t, dir, env...)
			if strings.Contains(h.log.String(), "shown once") {
				t.Fatalf("herd generated an admin token although the quickstart sets one:\n%s", h.log.String())
			}
			url, mqtt := h.url, h.mqtt

			script := filepath.Join(t.TempDir(), "quickstart.sh")
			// Pasted into a shell, a failing command shows and the next
			// runs; here any failing command fails the test.
			prelude := `trap 'echo "quickstart: exit status $? from: $BASH_COMMAND" >&2; exit 97' ERR` + "\n"
			if err := os.WriteFile(script, []byte(prelude+q.block), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.CommandContext(t.Context(), "bash", "--noprofile", "--norc", script)
			cmd.Dir = dir
			cmd.Env = append(cleanEnv(), "HERD_URL="+url, "HERD_MQTT_ADDR="+mqtt)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("the quickstart failed: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
			}
			if diff := compareOutput(q.output, stdout.String()); diff != "" {
				t.Fatalf("the quickstart's output is not the README's:\n%s\nall of it:\n%s\nstderr:\n%s", diff, stdout.String(), stderr.String())
			}

			// The store's own figures are served beside the HTTP ones.
			resp, err := http.Get(url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{`herd_store_device_query_duration_seconds_count{page="first",plan="scope"}`, "herd_store_statements_refused_total 0",
				// The gateway's figures, after the boiler's reading.
				`herd_mqtt_connects_total{result="ok"} 1`, `herd_mqtt_publishes_total{result="stored",topic="telemetry"} 1`,
				"herd_mqtt_connected_devices ", "herd_mqtt_connection_cap ", "herd_ingest_items_committed_total ", "herd_ingest_commit_seconds_bucket",
				"herd_mqtt_puback_seconds_bucket",
				// Open files and their limit, and the runtime: GC pauses, GC
				// CPU, heap.
				"process_open_fds ", "process_max_fds ", "go_sched_pauses_total_gc_seconds_bucket", "go_cpu_classes_gc_total_cpu_seconds_total ", "go_gc_heap_live_bytes ",
				// The event pipeline: the outbox read from the store, the
				// relay, webhooks and the apps socket.
				"herd_outbox_pending ", "herd_outbox_oldest_age_seconds ", "herd_relay_published_total ", "herd_relay_stream_duplicates_total ",
				"herd_webhook_dead_letters 0", "herd_appsocket_connections 0", "herd_appsocket_envelopes_redelivered_total 0",
			} {
				if !strings.Contains(string(body), want) {
					t.Fatalf("/metrics lacks %s", want)
				}
			}
		})
	}
}

// cleanEnv is the test's environment without any HERD_ variable, so that
// neither the developer's shell nor the test setup leaks into a process.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERD_") {
			env = append(env, kv)
		}
	}
	return env
}

// servedHerd is `herd serve` running in a directory of its own.
type servedHerd struct {
	cmd       *exec.Cmd
	url, mqtt string
	log       *testutil.SyncBuffer // its stderr, as it comes
	copied    chan struct{}        // closed when all of stderr is in log
}

// serveIn runs `herd serve` in dir with env (after free ports, so env may
// name others) and returns once it listens.
func serveIn(t *testing.T, dir string, env ...string) *servedHerd {
	t.Helper()
	cmd := herdCommand(t, "serve")
	cmd.Dir = dir
	cmd.Env = append(append(cleanEnv(), execMainEnv+"=1", "HERD_HTTP_ADDR=127.0.0.1:0", "HERD_MQTT_ADDR=127.0.0.1:0"), env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &servedHerd{cmd: cmd, log: &testutil.SyncBuffer{}, copied: make(chan struct{})}
	t.Cleanup(h.stop)
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	listening := regexp.MustCompile(`msg="herd listening".* url=(\S+) mqtt=(\S+)`)
	lines := bufio.NewScanner(pipe)
	for h.url == "" && lines.Scan() {
		fmt.Fprintln(h.log, lines.Text())
		if m := listening.FindStringSubmatch(lines.Text()); m != nil {
			h.url, h.mqtt = m[1], m[2]
		}
	}
	go func() {
		defer close(h.copied)
		io.Copy(h.log, pipe)
	}()
	if h.url == "" {
		t.Fatalf("herd never logged its addresses:\n%s", h.log.String())
	}
	return h
}

// stop ends the process (the store is committed; no shutdown is needed)
// and waits for it.
func (h *servedHerd) stop() {
	h.cmd.Process.Kill()
	<-h.copied
	h.cmd.Wait()
}
