package bench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/bench"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestDeviceHistoryBench runs the device history bench on a few days of
// readings so that it keeps working; its timings mean nothing here. With
// HERD_BENCH_HISTORY=1 it runs the 30 days at 10 s on every store
// and prints the figures (go test -v -run TestDeviceHistoryBench ./bench).
func TestDeviceHistoryBench(t *testing.T) {
	full := os.Getenv("HERD_BENCH_HISTORY") == "1"
	var rs []bench.DeviceHistoryResult
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		cfg := bench.DefaultDeviceHistoryConfig()
		if full {
			cfg.Out = os.Stdout
		} else {
			cfg.Readings, cfg.Others, cfg.Samples, cfg.PageSize = 8640, 1, 3, 1000 // a day of one device, a day of another
		}
		store := strings.Split(t.Name(), "/")[1]
		got, err := bench.DeviceHistoryBench(context.Background(), db, store, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(cfg.FieldSets) {
			t.Fatalf("%d results for %d field sets", len(got), len(cfg.FieldSets))
		}
		for i, r := range got {
			wantPoints := int(time.Duration(cfg.Readings) * cfg.Interval / time.Hour)
			if cfg.FieldSets[i] == nil {
				wantPoints *= 3 // temperature, humidity and battery
			}
			if r.MaxRelErr > 1e-9 {
				t.Fatalf("%+v: the rollups' answer is %g off the readings'", r, r.MaxRelErr)
			}
			if r.Points != wantPoints || r.Items != cfg.PageSize || r.TotalReadings != cfg.Readings*(1+cfg.Others) {
				t.Fatalf("%+v: want %d points, pages of %d", r, wantPoints, cfg.PageSize)
			}
		}
		rs = append(rs, got...)
	})
	if full {
		t.Log("\n" + bench.DeviceHistoryMarkdown(rs))
	}
}
