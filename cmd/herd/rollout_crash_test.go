package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
)

// killHerd kills p with SIGKILL, as a crash or an OOM kill would, and
// reaps it; it fails the test if p had died before.
func killHerd(t *testing.T, p *herdProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill herd: %v\n%s", err, p.stderr.String())
	}
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("herd ended with %v before the kill:\n%s", err, p.stderr.String())
	}
}

// TestRollout_CrashRun: a config rollout over 48 simulated devices while
// herd, a child process, is killed with SIGKILL 10 times and started again
// on the same store, data dir and ports (the devices know one broker
// address; they back off and reconnect). The kills fall at varied points:
// alternately once more members were told and once more had applied, so
// some land just after a step's tells committed and before their answers,
// others while answers come in. Each restart has to make progress for the
// next kill to come, so the run proves that every restart took the
// rollout back. In the end the rollout succeeded, every member applied,
// and each was told once: attempts 1 and one device.config_desired event
// of the version per device.
func TestRollout_CrashRun(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts herd 10 times per store")
	}
	t.Parallel()
	stores := map[string]func(t *testing.T, dir string) string{
		"sqlite":   func(t *testing.T, dir string) string { return filepath.Join(dir, "herd.db") },
		"postgres": func(t *testing.T, dir string) string { return testutil.PostgresSchemaDSN(t) },
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			dir := t.TempDir()
			dsn := stores[name](t, dir)
			mqttAddr := freeAddr(t)
			args := []string{"--store", dsn, "--data-dir", dir, "--http-addr", freeAddr(t), "--mqtt-addr", mqttAddr}
			p := startHerd(t, "", args...)
			api := httpapi.NewClient(p.url, testAdminToken)
			const devices, kills = 48, 10
			f := newRolloutFleet(t, api, devices, 1)
			runSims(t, "tcp://"+mqttAddr, f.sims)
			ro := f.configRollout("crash", 1, 5, herd.OnAbortStop)
			if err := api.CreateRollout(t.Context(), ro); err != nil {
				t.Fatal(err)
			}
			for kill := range kills {
				// The kth kill comes once k+1 twelfths of the members were
				// told (even kills) or had applied (odd ones): the last
				// falls with a sixth still to go.
				at := int64(devices * (kill + 1) / 12)
				what, count := "told", func(p progress) int64 { return p.told }
				if kill%2 == 1 {
					what, count = "applied", func(p progress) int64 { return p.applied }
				}
				r := waitRollout(t, api, ro.ID, 30*time.Second, fmt.Sprintf("%d members %s before kill %d", at, what, kill+1), func(r *herd.Rollout) bool {
					return count(sumProgress(r)) >= at || !herd.RolloutActive(r.State)
				})
				if r.State != herd.RolloutRunning {
					t.Fatalf("before kill %d the rollout is %s (%s), want running", kill+1, r.State, r.Reason)
				}
				killHerd(t, p)
				t.Logf("kill %d at %+v", kill+1, sumProgress(r))
				p = startHerd(t, "", args...)
			}
			r := waitRollout(t, api, ro.ID, 60*time.Second, "the rollout to end", func(r *herd.Rollout) bool { return !herd.RolloutActive(r.State) })
			if r.State != herd.RolloutSucceeded {
				t.Fatalf("rollout ended %s (%s), want succeeded\n%s", r.State, r.Reason, p.stderr.String())
			}
			checkAppliedOnce(t, api, f, r)
			t.Logf("%s: %d kills, %d members applied, each told once, in %s", name, kills, r.Members, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestRollout_Takeover: two herd processes on one PostgreSQL and one
// NATS, with data dirs of their own and a 2 s rollout lease. One drives a
// config rollout (GET /v1/rollouts/{id} names it); the devices are on the
// other's gateway, so that killing the driver with SIGKILL leaves them
// connected and the tells of either driver reach them through the outbox,
// NATS and the other's gateway. The other takes the lease over once it
// runs out, and the rollout completes with every member told once.
func TestRollout_Takeover(t *testing.T) {
	t.Parallel()
	start := time.Now()
	natsURL := os.Getenv(testutil.NATSURLEnv)
	if natsURL == "" {
		t.Skipf("needs an external NATS: set %s (CI does)", testutil.NATSURLEnv)
	}
	dsn := testutil.PostgresSchemaDSN(t)
	stream := fmt.Sprintf("HERD_TEST_ROLLOUT%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if nc, err := nats.Connect(natsURL); err == nil {
			js, _ := jetstream.New(nc)
			js.DeleteStream(ctx, stream)
			nc.Close()
		}
	})
	dirs := []string{t.TempDir(), t.TempDir()}
	var procs []*herdProc
	for _, dir := range dirs {
		procs = append(procs, startHerd(t, "", "--store", dsn, "--data-dir", dir, "--rollout-lease", "2s",
			"--nats-url", natsURL, "--nats-stream", stream, "--nats-subject-prefix", strings.ToLower(stream)))
	}
	apis := []*httpapi.Client{httpapi.NewClient(procs[0].url, testAdminToken), httpapi.NewClient(procs[1].url, testAdminToken)}
	f := newRolloutFleet(t, apis[0], 40, 1)
	ro := f.configRollout("takeover", 1, 3, herd.OnAbortStop)
	if err := apis[0].CreateRollout(t.Context(), ro); err != nil {
		t.Fatal(err)
	}
	// The driver is whichever controller claimed the rollout first; its
	// name is host:data dir.
	r := waitRollout(t, apis[0], ro.ID, 20*time.Second, "a driver", func(r *herd.Rollout) bool { return r.Driver != "" })
	driver := -1
	for i, dir := range dirs {
		if strings.HasSuffix(r.Driver, ":"+dir) {
			driver = i
		}
	}
	if driver < 0 {
		t.Fatalf("driver %q is neither process (%v)", r.Driver, dirs)
	}
	first := r.Driver
	other := 1 - driver
	runSims(t, "tcp://"+procs[other].mqtt, f.sims)
	r = waitRollout(t, apis[other], ro.ID, 30*time.Second, "a third of the members applied", func(r *herd.Rollout) bool {
		return sumProgress(r).applied >= r.Members/3 || !herd.RolloutActive(r.State)
	})
	if r.State != herd.RolloutRunning || r.Driver != first {
		t.Fatalf("before the kill the rollout is %s, driven by %q; want running, by %q", r.State, r.Driver, first)
	}
	killHerd(t, procs[driver])
	killed := time.Now()
	t.Logf("driver %s killed at %+v", first, sumProgress(r))
	r = waitRollout(t, apis[other], ro.ID, 30*time.Second, "the other process to drive", func(r *herd.Rollout) bool {
		return r.Driver != "" && r.Driver != first
	})
	if !strings.HasSuffix(r.Driver, ":"+dirs[other]) {
		t.Fatalf("driver after the kill %q, want the other process (%s)", r.Driver, dirs[other])
	}
	t.Logf("taken over by %s after %s", r.Driver, time.Since(killed).Round(time.Millisecond))
	r = waitRollout(t, apis[other], ro.ID, 60*time.Second, "the rollout to end", func(r *herd.Rollout) bool { return !herd.RolloutActive(r.State) })
	if r.State != herd.RolloutSucceeded {
		t.Fatalf("rollout ended %s (%s), want succeeded", r.State, r.Reason)
	}
	checkAppliedOnce(t, apis[other], f, r)
	t.Logf("two processes: %d members applied once, in %s", r.Members, time.Since(start).Round(time.Millisecond))
}
