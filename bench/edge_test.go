package bench_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-iot/herd/bench"
)

// herdBinary builds the herd command for the scenarios that run herd serve
// in a child process.
func herdBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds herd and runs it as a child process")
	}
	exe := filepath.Join(t.TempDir(), "herd")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/herd-iot/herd/cmd/herd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// TestEdgeScenarios runs the ingest, idle and storm scenarios small, so
// that they keep working; their figures mean nothing here, their checks do.
func TestEdgeScenarios(t *testing.T) {
	exe := herdBinary(t)
	ctx := context.Background()
	t.Run("Ingest", func(t *testing.T) {
		res, err := bench.RunIngest(ctx, bench.IngestConfig{Herd: exe, Stores: []string{""}, Dir: t.TempDir(), Devices: []int{5, 20}, Inflight: []int{1, 8}, Duration: 700 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 4 {
			t.Fatalf("%d results", len(res))
		}
		for _, r := range res {
			if r.MaxRate <= 0 || r.At80Rate <= 0 || r.P99 < r.P50 || r.P50 <= 0 {
				t.Fatalf("result %+v", r)
			}
			// Each PUBACK means a committed reading.
			if r.Stored < r.Acked {
				t.Fatalf("%d readings acknowledged, %d stored", r.Acked, r.Stored)
			}
		}
	})
	t.Run("Idle", func(t *testing.T) {
		res, err := bench.RunIdle(ctx, bench.IdleConfig{Herd: exe, Dir: t.TempDir(), Devices: 200})
		if err != nil {
			t.Fatal(err)
		}
		if res.Connected != 200 || res.HeapAfter <= 0 || res.FDsAfter < 200 {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("Storm", func(t *testing.T) {
		res, err := bench.RunStorm(ctx, bench.StormConfig{Herd: exe, Dir: t.TempDir(), Devices: 100, Reboot: 40})
		if err != nil {
			t.Fatal(err)
		}
		if res.Dropped != 0 || res.ConnectedAfter != 100 || res.BackIn <= 0 || res.MaxOpenFDs <= 0 || res.Cap <= 0 {
			t.Fatalf("result %+v", res)
		}
	})
}
