package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// dieAtHeader names the failpoint stage at which the test binary's herd
// kills itself while serving the request that carries it (see
// dieAtFailpoint). Only the test binary reads it.
const dieAtHeader = "Herd-Test-Die-At"

// dieAtFailpoint is the test binary's testServerHook: a request that says
// Herd-Test-Die-At: <stage> gets its process killed with SIGKILL at that
// stage of its idempotent run, the way a crash or an OOM kill would.
//
// Herd-Test-Stop-At: <stage> freezes it there with SIGSTOP instead, the way
// a host cut off from its database, or a stalled one, keeps its
// connections open and says nothing. HERD_TEST_REQUEST_TIMEOUT, in the
// environment, sets the server's request timeout.
func dieAtFailpoint(s *httpapi.Server) {
	if d, err := time.ParseDuration(os.Getenv("HERD_TEST_REQUEST_TIMEOUT")); err == nil {
		s.RequestTimeout = d
	}
	s.IdempotencyHook = func(r *http.Request, stage string) {
		// The signal is the process's: the kernel may hand it to another
		// thread, and this one can return from kill and go on (to its
		// COMMIT) before the stop or the death reaches it. So the request
		// goes no further than its failpoint.
		if r.Header.Get(dieAtHeader) == stage {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		if r.Header.Get(stopAtHeader) == stage {
			syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			select {} // the test kills the process
		}
	}
}

// stopAtHeader names the failpoint stage at which the test binary's herd
// stops itself (see dieAtFailpoint).
const stopAtHeader = "Herd-Test-Stop-At"

// keyedPost sends a POST with an Idempotency-Key as the admin, and the
// failpoint header when dieAt is set.
func keyedPost(url, path, key, dieAt, body string) (status int, replayed bool, answer []byte, err error) {
	req, err := http.NewRequest("POST", url+path, strings.NewReader(body))
	if err != nil {
		return 0, false, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(httpapi.HeaderIdempotencyKey, key)
	if dieAt != "" {
		req.Header.Set(dieAtHeader, dieAt)
	}
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return 0, false, nil, err
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(httpapi.HeaderReplayed) == "true", answer, err
}

// TestServe_IdempotencyAcrossCrash: herd is killed with SIGKILL while it
// serves a keyed move, device batch or grant, once just after the request's
// transaction committed (the answer not sent) and once just before it
// commits, and started again on the same store. The client's retry with
// the same key and body must get, at once (no 409 "still running" for a
// claim that died), the one answer of the one effect: after a commit the
// stored answer, replayed; before it a fresh run, since nothing committed.
// The store then holds each effect once: one device.moved event, the
// batch's devices with the ids the answer gives, one grant.
func TestServe_IdempotencyAcrossCrash(t *testing.T) {
	t.Parallel()
	stores := map[string]func(t *testing.T, dir string) string{
		"sqlite":   func(t *testing.T, dir string) string { return filepath.Join(dir, "herd.db") },
		"postgres": func(t *testing.T, dir string) string { return testutil.PostgresSchemaDSN(t) },
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			dsn := stores[name](t, dir)
			args := []string{"--store", dsn, "--data-dir", dir}
			p := startHerd(t, "", args...)
			ctx := t.Context()
			api := httpapi.NewClient(p.url, testAdminToken)
			ten := &herd.Tenant{Name: "crash"}
			if err := api.CreateTenant(ctx, ten); err != nil {
				t.Fatal(err)
			}
			from := &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "from"}
			to := &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "to"}
			for _, n := range []*herd.Node{from, to} {
				if err := api.CreateNode(ctx, n); err != nil {
					t.Fatal(err)
				}
			}
			db := sqldb.NewDB(dsn)
			if err := db.Open(); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			events := func(typ string) []*herd.Event {
				t.Helper()
				evs, err := sqldb.NewOutboxService(db).OutboxEvents(ctx, ten.ID, 0, 1<<30)
				if err != nil {
					t.Fatal(err)
				}
				return slices.DeleteFunc(evs, func(ev *herd.Event) bool { return ev.Type != typ })
			}

			type op struct {
				name, path, body string
				check            func(t *testing.T, answer []byte)
			}
			ops := func(stage string) []op {
				d := &herd.Device{NodeID: from.ID, Key: "mover-" + stage}
				u := &herd.User{TenantID: ten.ID, Name: "user-" + stage}
				if err := api.CreateDevice(ctx, d); err != nil {
					t.Fatal(err)
				}
				if err := api.CreateUser(ctx, u); err != nil {
					t.Fatal(err)
				}
				batch := `{"devices":[`
				for i := range 3 {
					batch += fmt.Sprintf(`%s{"node_id":"%d","key":"batch-%s-%d"}`, map[bool]string{true: ",", false: ""}[i > 0], to.ID, stage, i)
				}
				batch += `]}`
				return []op{
					{"move", fmt.Sprintf("/v1/devices/%d/move", d.ID), fmt.Sprintf(`{"node_id":"%d"}`, to.ID), func(t *testing.T, answer []byte) {
						var got herd.Device
						if err := json.Unmarshal(answer, &got); err != nil || got.ID != d.ID || got.NodeID != to.ID {
							t.Fatalf("move answered %s (%v), want device %d on node %d", answer, err, d.ID, to.ID)
						}
						n := 0
						for _, ev := range events(herd.EventDeviceMoved) {
							if ev.SubjectID == d.ID {
								n++
							}
						}
						if n != 1 {
							t.Fatalf("%d device.moved events for one keyed move, want 1", n)
						}
					}},
					{"batch", "/v1/devices/batch", batch, func(t *testing.T, answer []byte) {
						var got struct{ Items []*herd.Device }
						if err := json.Unmarshal(answer, &got); err != nil || len(got.Items) != 3 {
							t.Fatalf("batch answered %s (%v), want 3 devices", answer, err)
						}
						created := map[string][]int64{}
						for _, ev := range events(herd.EventDeviceCreated) {
							var dev herd.Device
							json.Unmarshal(ev.Payload, &dev)
							created[dev.Key] = append(created[dev.Key], ev.SubjectID)
						}
						for i, dev := range got.Items {
							key := fmt.Sprintf("batch-%s-%d", stage, i)
							if ids := created[key]; dev.Key != key || len(ids) != 1 || ids[0] != dev.ID {
								t.Fatalf("the answer gives %s as id %d; the store made %v", key, dev.ID, ids)
							}
						}
					}},
					{"grant", "/v1/grants", fmt.Sprintf(`{"user_id":"%d","node_id":"%d","role":"viewer"}`, u.ID, to.ID), func(t *testing.T, answer []byte) {
						var got herd.Grant
						if err := json.Unmarshal(answer, &got); err != nil || got.ID == 0 {
							t.Fatalf("grant answered %s (%v)", answer, err)
						}
						gs, err := api.FindGrantsByUser(ctx, u.ID)
						if err != nil || len(gs) != 1 || gs[0].ID != got.ID {
							t.Fatalf("user's grants %v (%v), want the one answered, %d", gs, err, got.ID)
						}
						n := 0
						for _, ev := range events(herd.EventGrantCreated) {
							if ev.SubjectID == got.ID {
								n++
							}
						}
						if n != 1 {
							t.Fatalf("%d grant.created events, want 1", n)
						}
					}},
				}
			}

			for _, stage := range []string{"after-commit", "before-commit"} {
				for _, o := range ops(stage) {
					key := o.name + "-" + stage
					if status, _, answer, err := keyedPost(p.url, o.path, key, stage, o.body); err == nil {
						t.Fatalf("%s: herd answered %d %s instead of dying %s", key, status, answer, stage)
					}
					err := p.cmd.Wait()
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
						t.Fatalf("%s: herd ended with %v, not killed at the failpoint", key, err)
					}
					p = startHerd(t, "", args...)
					api = httpapi.NewClient(p.url, testAdminToken)
					// One retry, no loop: a retry that has to wait for the
					// dead request's claim to run out fails here.
					status, replayed, answer, err := keyedPost(p.url, o.path, key, "", o.body)
					if err != nil {
						t.Fatalf("%s retried: %v", key, err)
					}
					if status/100 != 2 || replayed != (stage == "after-commit") {
						t.Fatalf("%s retried: %d (replayed %v) %s; want a 2xx, replayed only if the first committed", key, status, replayed, answer)
					}
					o.check(t, answer)
					// And again: now the stored answer, whatever happened.
					status2, replayed, answer2, err := keyedPost(p.url, o.path, key, "", o.body)
					if err != nil || status2 != status || !replayed || !bytes.Equal(answer2, answer) {
						t.Fatalf("%s again: %d (replayed %v) %s, %v; want %d %s replayed", key, status2, replayed, answer2, err, status, answer)
					}
					o.check(t, answer2)
				}
			}
			t.Logf("%s: 6 kills at the failpoints, every retry answered at once with the one effect", name)
		})
	}
}

// TestServe_IdempotencyFrozenClaim: on PostgreSQL a herd that stops in the
// middle of a keyed request without dying (frozen with SIGSTOP just before
// its commit: its connection stays open, as a host cut off from the
// database or a stalled one would leave it) holds the key's claim only
// until its request's deadline has passed, not until the server finds the
// connection gone, which takes TCP keepalive's hours. Another herd on the
// same store answers 409 meanwhile, then runs the retry once.
func TestServe_IdempotencyFrozenClaim(t *testing.T) {
	t.Parallel()
	dsn := testutil.PostgresSchemaDSN(t)
	args := []string{"--store", dsn}
	frozen := startHerd(t, "HERD_TEST_REQUEST_TIMEOUT=2s", args...)
	live := startHerd(t, "", args...)
	ctx := t.Context()
	api := httpapi.NewClient(live.url, testAdminToken)
	ten := &herd.Tenant{Name: "frozen"}
	if err := api.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"parent_id":"%d","kind":"site","name":"once"}`, ten.RootNodeID)
	sent := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", frozen.url+"/v1/nodes", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		req.Header.Set(httpapi.HeaderIdempotencyKey, "frozen-1")
		req.Header.Set(stopAtHeader, "before-commit")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the frozen herd answered %d", resp.StatusCode)
		}
		sent <- err
	}()
	defer func() {
		frozen.cmd.Process.Kill()
		<-sent
	}()
	// The live herd is asked only once the frozen one has stopped at its
	// failpoint, holding the claim: asked sooner, it could take the key
	// first. waitid with WNOWAIT reports the stop and leaves the process to
	// its own Wait.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, frozen.cmd.Process.Pid, &info, unix.WSTOPPED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("wait for the frozen herd to stop: %v", err)
	}
	// The frozen herd holds the claim: the live one answers 409 until its
	// deadline (2 s) and the margin have passed, then runs the request.
	deadline := time.Now().Add(20 * time.Second)
	conflicts := 0
	for {
		status, replayed, answer, err := keyedPost(live.url, "/v1/nodes", "frozen-1", "", body)
		if err != nil {
			t.Fatal(err)
		}
		if status == http.StatusConflict {
			conflicts++
			if time.Now().After(deadline) {
				t.Fatalf("still 409 after 20 s: the frozen herd's claim outlives its request's deadline (%s)", answer)
			}
			time.Sleep(100 * time.Millisecond) // polling the server's own timer: no signal to wait for
			continue
		}
		if status != http.StatusCreated || replayed {
			t.Fatalf("retry: %d (replayed %v) %s after %d conflicts, want a fresh 201", status, replayed, answer, conflicts)
		}
		break
	}
	if conflicts == 0 {
		t.Fatal("the live herd never saw the frozen herd's claim: the test froze nothing")
	}
	db := sqldb.NewDB(dsn)
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.SQL().QueryRow(`SELECT COUNT(*) FROM nodes WHERE tenant_id = $1 AND name = 'once'`, ten.ID).Scan(&n); err != nil {
		t.Fatal(err)
	} else if n != 1 {
		t.Fatalf("%d nodes made by the key, want the retry's one", n)
	}
}
