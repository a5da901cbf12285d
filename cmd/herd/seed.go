package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/bench"
	"github.com/herd-iot/herd/seed"
	"github.com/herd-iot/herd/sqldb"
)

// runSeed runs `herd seed`: a synthetic fleet for demos and benchmarks,
// written straight into the store (the server need not run).
func runSeed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := DefaultConfig()
	storeFlags(fs, os.Getenv, &cfg)
	devices := fs.Int64("devices", 10000, "number of devices")
	shapeFlag := fs.String("shape", "5x20x10", "fan-out of each tree level below the tenant root: regions x sites x ...")
	tenant := fs.String("tenant", "", `tenant name (default "demo-<time>")`)
	seedN := fs.Uint64("seed", 1, "random seed; the same seed makes the same fleet")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd seed [flags]\n\nCreates a tenant with a node tree of the given shape and spreads the devices\nevenly over its leaves, with realistic readings. Progress goes to stderr.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("seed takes no arguments, got %q", fs.Args())}
	}
	if _, err := normalizeStore(cfg.Store); err != nil {
		return &ConfigError{Field: "store", Value: redactDSN(cfg.Store), Err: err}
	}
	shape, err := seed.ParseShape(*shapeFlag)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if *devices < 0 || *devices > 100_000_000 {
		return &usageError{msg: "--devices must be between 0 and 100,000,000"}
	}
	if *tenant == "" {
		*tenant = "demo-" + time.Now().UTC().Format("20060102-150405")
	}

	dsn := cfg.StoreDSN()
	db := sqldb.NewDB(dsn)
	if err := db.Open(); err != nil {
		return fmt.Errorf("open store %s: %w", redactDSN(dsn), err)
	}
	defer db.Close()
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	start := time.Now()
	fleet, err := seed.Run(super, seed.Config{Tenant: *tenant, Devices: *devices, Shape: shape, Seed: *seedN},
		sqldb.NewTenantService(db), sqldb.NewNodeService(db), db, bench.ProgressPrinter(stderr))
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "seeded tenant %q (id %d, root node %d): %d nodes in %d levels, %d devices in %s (%.0f devices/s)\n",
		fleet.Tenant.Name, fleet.Tenant.ID, fleet.Tenant.RootNodeID, countNodes(fleet), len(fleet.Levels), fleet.Devices,
		elapsed.Round(time.Millisecond), float64(fleet.Devices)/elapsed.Seconds())
	for i, level := range fleet.Levels {
		fmt.Fprintf(stdout, "  level %d (%s): %d nodes, first id %d\n", i+1, level[0].Kind, len(level), level[0].ID)
	}
	return nil
}

func countNodes(f *seed.Fleet) int {
	n := 0
	for _, l := range f.Levels {
		n += len(l)
	}
	return n
}
