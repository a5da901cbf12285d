package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/natsbus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// NATSURLEnv names the environment variable holding the URL of the NATS
// server (with JetStream) that bus tests run against besides the embedded
// one. CI always sets it.
const NATSURLEnv = "HERD_TEST_NATS_URL"

// Buses names the two ways herd reaches NATS.
var Buses = []string{"embedded", "external"}

// RunWithBuses runs fn as a subtest on a fresh bus of each kind: embedded
// (a NATS server in the test process) and external (the machine's, from
// HERD_TEST_NATS_URL; skipped with a clear message when unset).
func RunWithBuses(t *testing.T, fn func(t *testing.T, bus *natsbus.Bus)) {
	t.Helper()
	for _, kind := range Buses {
		t.Run(kind, func(t *testing.T) { fn(t, MustOpenBus(t, kind, nil)) })
	}
}

// MustOpenBus opens a bus of the kind ("embedded" or "external") on a
// stream and subject prefix of its own, which are deleted when the test
// ends. configure, when set, adjusts the bus before it opens.
func MustOpenBus(tb testing.TB, kind string, configure func(*natsbus.Bus)) *natsbus.Bus {
	tb.Helper()
	url := ""
	if kind == "external" {
		if url = os.Getenv(NATSURLEnv); url == "" {
			tb.Skipf("tests on an external NATS skipped: set %s (for example nats://127.0.0.1:4222)", NATSURLEnv)
		}
	}
	b := natsbus.NewBus(url, tb.TempDir())
	buf := make([]byte, 6)
	rand.Read(buf)
	id := hex.EncodeToString(buf)
	b.Stream = "HERD_TEST_" + strings.ToUpper(id)
	b.SubjectPrefix = "herdtest." + id
	if configure != nil {
		configure(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Open(ctx); err != nil {
		tb.Fatalf("open %s bus: %v", kind, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.DeleteStream(ctx)
		b.Close()
	})
	return b
}

// WaitFor polls cond every few milliseconds until it holds, failing the
// test with what after timeout. For conditions that no event announces
// (rows reaching another process, a stream catching up).
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CounterValue reads a Prometheus counter or gauge.
func CounterValue(tb testing.TB, c prometheus.Metric) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
