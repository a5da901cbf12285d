package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/herd-iot/herd/bench"
)

// historyParts are the parts of `herd bench history`, in the order they run.
var historyParts = []string{"device", "fleet", "ingest"}

// runBenchHistory runs the telemetry-history scenarios: one device's
// history read stepped and raw, fleet aggregates from the rollups against
// the readings, and ingest with the rollups against ingest without them.
func runBenchHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fleet := bench.DefaultHistoryFleetConfig()
	ingest := bench.DefaultHistoryIngestConfig()
	device := bench.DefaultDeviceHistoryConfig()
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench stores (fresh ones per run)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL with search_path=herd_<name>, a schema the run drops and makes again (env HERD_BENCH_POSTGRES_URL)")
	fs.IntVar(&device.Readings, "device-readings", device.Readings, "readings of the one device whose history is read (every --device-interval)")
	fs.DurationVar(&device.Interval, "device-interval", device.Interval, "between two readings of that device")
	fs.IntVar(&device.Samples, "device-samples", device.Samples, "timed requests of each device read")
	fs.IntVar(&fleet.Devices, "devices", fleet.Devices, "devices of the fleet-aggregate tenant")
	fs.IntVar(&fleet.Sites, "sites", fleet.Sites, "sites they are spread over (the rollups are per site)")
	fs.IntVar(&fleet.Hours, "hours", fleet.Hours, "hours of readings, and of the aggregate's range")
	fs.IntVar(&fleet.PerHour, "per-hour", fleet.PerHour, "readings an hour from each device")
	fs.IntVar(&fleet.Queries, "queries", fleet.Queries, "runs of each aggregate from the rollups, for the p99")
	fs.IntVar(&ingest.Devices, "ingest-devices", ingest.Devices, "devices of the ingest comparison (over MQTT)")
	fs.IntVar(&ingest.PerSite, "ingest-per-site", ingest.PerSite, "devices a site in the ingest comparison")
	fs.DurationVar(&ingest.Duration, "duration", ingest.Duration, "each ingest phase")
	fs.IntVar(&ingest.Rounds, "rounds", ingest.Rounds, "ingest phases of each kind, alternating with and without rollups")
	pgOnly := fs.Bool("postgres-only", false, "run on --postgres only, not SQLite too")
	only := fs.String("only", "", "run one part: "+strings.Join(historyParts, " or ")+" (default all)")
	markdown := fs.String("markdown", "", "also write the result tables in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	switch {
	case fleet.Devices < 1 || fleet.Devices > 5_000_000 || fleet.Sites < 1 || fleet.Sites > fleet.Devices:
		return &usageError{msg: "--devices must be from 1 to 5,000,000 and --sites from 1 to --devices"}
	case fleet.Hours < 1 || fleet.Hours > 24*400 || fleet.PerHour < 1 || fleet.PerHour > 3600 || fleet.Queries < 1:
		return &usageError{msg: "--hours must be from 1 to 9,600, --per-hour from 1 to 3,600, --queries 1 or more"}
	case device.Readings < 1 || device.Interval <= 0 || device.Samples < 1:
		return &usageError{msg: "--device-readings, --device-interval and --device-samples must be over 0"}
	case ingest.Devices < 1 || ingest.Devices > 19000 || ingest.PerSite < 1 || ingest.Duration <= 0 || ingest.Rounds < 1:
		return &usageError{msg: "--ingest-devices must be from 1 to 19,000, --ingest-per-site, --duration and --rounds over 0"}
	case *only != "" && !slices.Contains(historyParts, *only):
		return &usageError{msg: fmt.Sprintf("--only %q: want %s", *only, strings.Join(historyParts, " or "))}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	stores := benchStores(*pg)
	if *pgOnly {
		if *pg == "" {
			return &usageError{msg: "--postgres-only needs --postgres"}
		}
		stores = []string{*pg}
	}
	fleet.Herd, fleet.Stores, fleet.Dir, fleet.Out = exe, stores, *dir, stderr
	ingest.Herd, ingest.Stores, ingest.Dir, ingest.Out = exe, stores, *dir, stderr
	device.Out = stderr
	var md string
	var runErr error
	if *only == "" || *only == "device" {
		rs, err := bench.RunDeviceHistory(ctx, stores, *dir, device)
		md, runErr = bench.DeviceHistoryMarkdown(rs), err
	}
	if (*only == "" || *only == "fleet") && runErr == nil {
		rs, err := bench.RunHistoryFleet(ctx, fleet)
		md, runErr = md+"\n"+bench.HistoryFleetMarkdown(rs), err
	}
	if (*only == "" || *only == "ingest") && runErr == nil {
		rs, err := bench.RunHistoryIngest(ctx, ingest)
		md, runErr = md+"\n"+bench.HistoryIngestMarkdown(rs), err
	}
	return emitMarkdown(stdout, *markdown, md, runErr)
}
