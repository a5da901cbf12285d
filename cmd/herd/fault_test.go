package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// receipts is a webhook receiver that records every delivery and applies
// each event once, deduplicating by Herd-Event-Id as receivers are told to.
type receipts struct {
	mu      sync.Mutex
	secret  string
	raw     int
	byEvent map[string]int
	badSig  int
	got     chan struct{} // a delivery arrived (buffer 1: a wake-up, not a count)
}

func (rc *receipts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := httpapi.VerifyWebhook(rc.secret, r.Header, body, time.Now()); err != nil {
		rc.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rc.raw++
	rc.byEvent[r.Header.Get(herd.HeaderWebhookEventID)]++
	select {
	case rc.got <- struct{}{}:
	default:
	}
}

// natsServer is the machine's nats-server binary run by the test on a port
// of its own, so that restarting it disturbs no other test.
type natsServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *natsServer) start() {
	n.t.Helper()
	n.cmd = exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.dir)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server did not listen on %d: %v", n.port, err)
		}
		time.Sleep(20 * time.Millisecond) // a process that is starting says nothing
	}
}

func (n *natsServer) stop() {
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.cmd.Wait()
}

func startNATSServer(t *testing.T) *natsServer {
	t.Helper()
	if os.Getenv(testutil.NATSURLEnv) == "" {
		t.Skipf("fault run on an external NATS skipped: set %s (CI does)", testutil.NATSURLEnv)
	}
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("fault run on an external NATS skipped: no nats-server binary on this machine")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &natsServer{t: t, bin: bin, port: port, dir: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

// TestServe_FaultRun: herd runs as a child process while a client makes
// state changes through the API; it is killed with SIGKILL at random
// moments 20 times and started again on the same store and data dir. A
// webhook subscription receives the events. In the end no committed event
// is lost, none is applied twice by a receiver that deduplicates by event
// id, and the raw repeats are counted. On an external NATS server, that
// server is also restarted once half way.
func TestServe_FaultRun(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts herd 20 times")
	}
	t.Parallel()
	for _, bus := range []string{"embedded", "external"} {
		t.Run(bus, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := []string{"--store", filepath.Join(dir, "herd.db"), "--data-dir", dir}
			var nats *natsServer
			if bus == "external" {
				nats = startNATSServer(t)
				args = append(args, "--nats-url", nats.url())
			}
			rc := &receipts{byEvent: map[string]int{}, got: make(chan struct{}, 1)}
			receiver := httptest.NewServer(rc)
			defer receiver.Close()

			p := startHerd(t, "", args...)
			api := httpapi.NewClient(p.url, testAdminToken)
			ten := &herd.Tenant{Name: "faults"}
			if err := api.CreateTenant(t.Context(), ten); err != nil {
				t.Fatal(err)
			}
			hook := &herd.Webhook{NodeID: ten.RootNodeID, URL: receiver.URL, EventTypes: []string{"device.*"}}
			if err := api.CreateWebhook(t.Context(), hook); err != nil {
				t.Fatal(err)
			}
			rc.mu.Lock()
			rc.secret = hook.Secret
			rc.mu.Unlock()

			seed := time.Now().UnixNano()
			rng := rand.New(rand.NewPCG(uint64(seed), 0))
			t.Logf("seed %d", seed)
			var acked []int64 // devices whose creation herd answered 201
			var ackMu sync.Mutex
			const kills = 20
			for kill := range kills {
				// Load for a random while, then SIGKILL in the middle of it.
				ctx, stop := context.WithCancel(t.Context())
				var wg sync.WaitGroup
				c := httpapi.NewClient(p.url, testAdminToken)
				// The random moment counts from the round's first answer, so
				// that a slow start (the race detector, a busy machine)
				// still kills a herd under load, not one still warming up.
				first := make(chan struct{})
				firstOnce := sync.OnceFunc(func() { close(first) })
				for w := range 4 {
					wg.Go(func() {
						for i := 0; ctx.Err() == nil; i++ {
							d := &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("f-%d-%d-%d", kill, w, i)}
							if err := c.CreateDevice(ctx, d); err != nil {
								continue // the process died under the request: unknown, checked in the store
							}
							ackMu.Lock()
							acked = append(acked, d.ID)
							ackMu.Unlock()
							firstOnce()
						}
					})
				}
				select {
				case <-first:
				case <-time.After(time.Minute):
					stop()
					wg.Wait()
					t.Fatalf("round %d: no create answered within a minute", kill)
				}
				time.Sleep(time.Duration(50+rng.IntN(350)) * time.Millisecond) // the random moment
				p.cmd.Process.Signal(syscall.SIGKILL)
				p.cmd.Wait()
				stop()
				wg.Wait()
				if nats != nil && kill == kills/2 {
					nats.stop()
					nats.start()
				}
				p = startHerd(t, "", args...)
			}

			// Every device.created event in the store must reach the
			// receiver; the store is read beside the running herd.
			db := sqldb.NewDB(filepath.Join(dir, "herd.db"))
			if err := db.Open(); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			evs, err := sqldb.NewOutboxService(db).OutboxEvents(t.Context(), ten.ID, 0, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			stored := map[string]int64{} // event id → device
			devices := map[int64]int{}   // device → its device.created events
			for _, ev := range evs {
				if ev.Type == herd.EventDeviceCreated {
					stored[strconv.FormatInt(ev.ID, 10)] = ev.SubjectID
					devices[ev.SubjectID]++
				}
			}
			ackMu.Lock()
			lostAcked := 0
			for _, id := range acked {
				if devices[id] == 0 {
					lostAcked++
				}
			}
			ackMu.Unlock()
			var lost, raw, twice int
			deadline := time.After(90 * time.Second)
		wait:
			for {
				rc.mu.Lock()
				lost, raw = 0, rc.raw
				for id := range stored {
					if rc.byEvent[id] == 0 {
						lost++
					}
				}
				rc.mu.Unlock()
				if lost == 0 {
					break
				}
				select {
				case <-rc.got:
				case <-deadline:
					break wait
				}
			}
			for _, n := range devices {
				if n > 1 {
					twice++ // one change, two events: a receiver would apply it twice
				}
			}
			rc.mu.Lock()
			dupes := raw - len(rc.byEvent)
			bad := rc.badSig
			rc.mu.Unlock()
			t.Logf("%s NATS: %d kills, %d creates acknowledged, %d device.created events stored; lost %d, applied twice %d, raw repeat deliveries %d",
				bus, kills, len(acked), len(stored), lost, twice, dupes)
			if lostAcked != 0 || lost != 0 || twice != 0 || bad != 0 {
				t.Fatalf("acknowledged but not stored %d, lost %d, applied twice %d, bad signatures %d; want all 0", lostAcked, lost, twice, bad)
			}
			if len(stored) < kills {
				t.Fatalf("only %d events made under load: the run proves little", len(stored))
			}
		})
	}
}
