package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// execMainEnv makes the test binary run herd's main() instead of the
// tests, so that tests can drive the real process: exit codes, signals.
const execMainEnv = "HERD_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		testServerHook = dieAtFailpoint
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// herdCommand returns a command running herd with args in a child process.
func herdCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), execMainEnv+"=1", "HERD_ADMIN_TOKEN=", "HERD_HTTP_ADDR=", "HERD_MQTT_ADDR=", "HERD_DATA_DIR=", "HERD_STORE=", "HERD_URL=", "HERD_TOKEN=")
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	} else if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

func TestCLI(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"Help", []string{"help"}, 0, "Commands:", ""},
		{"Version", []string{"version"}, 0, "herd dev go1.", ""},
		{"ErrNoCommand", nil, 2, "", "no command given"},
		{"ErrUnknownCommand", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"ErrUnknownCommandShowsUsage", []string{"frobnicate"}, 2, "", "herd <command> [flags]"},
		{"ServeHelp", []string{"serve", "-h"}, 0, "", "HERD_HTTP_ADDR"},
		{"ErrServeBadFlag", []string{"serve", "--log-level", "loud"}, 1, "", "HERD_LOG_LEVEL"},
		{"ErrServeMQTTKeepalive", []string{"serve", "--mqtt-max-keepalive", "0s"}, 1, "", "HERD_MQTT_MAX_KEEPALIVE"},
		{"SimulateHelp", []string{"simulate", "-h"}, 0, "", "reboot-storm"},
		{"ErrSimulateQoS", []string{"simulate", "--qos", "2", "--keys", "x"}, 2, "", "--qos must be 0 or 1"},
		{"ErrSimulateNoDevices", []string{"simulate", "--token", ""}, 2, "", "give --keys, or --node and --token"},
		{"ErrSimulateScenario", []string{"simulate", "--scenario", "chaos"}, 2, "", `--scenario "chaos"`},
		{"ErrSimulateShard", []string{"simulate", "--keys", "/dev/null", "--shard", "2/2"}, 2, "", `--shard "2/2"`},
		{"ErrSimulateKeysFile", []string{"simulate", "--keys", "/nonexistent/keys"}, 1, "", "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := herdCommand(t, tt.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if code := exitCode(t, cmd.Run()); code != tt.code {
				t.Fatalf("exit code %d, want %d; stderr %s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.stderr)
			}
		})
	}
}

// TestServe_SignalShutdown runs `herd serve` as a process, waits for its
// "listening" log line, and stops it with SIGTERM: it must drain and exit 0.
func TestServe_SignalShutdown(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			cmd := herdCommand(t, "serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-format", "json")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(stderr)
			url := ""
			urlRE := regexp.MustCompile(`"url":"(http://[^"]+)"`)
			for url == "" && lines.Scan() {
				if m := urlRE.FindStringSubmatch(lines.Text()); m != nil {
					url = m[1]
				}
			}
			if url == "" {
				cmd.Process.Kill()
				t.Fatal("serve never logged its address")
			}
			resp, err := http.Get(url + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("healthz %d", resp.StatusCode)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(stderr)
			if code := exitCode(t, cmd.Wait()); code != 0 {
				t.Fatalf("exit code %d after %s; stderr %s", code, sig, rest)
			}
			if !strings.Contains(string(rest), `"msg":"stopped"`) {
				t.Fatalf("no clean stop logged: %s", rest)
			}
		})
	}
}
