package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/herd-iot/herd/bench"
	"github.com/herd-iot/herd/seed"
)

// runBench runs `herd bench <scenario>`.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return &usageError{msg: "bench needs a scenario: scoped, or all"}
	}
	scenario, args := args[0], args[1:]
	switch scenario {
	case "scoped", "all":
		return runBenchScoped(ctx, args, stdout, stderr)
	}
	return &usageError{msg: fmt.Sprintf("unknown bench scenario %q (scoped, all)", scenario)}
}

// runBenchScoped runs the scoped-query scenario on SQLite and, when a
// PostgreSQL URL is given, on PostgreSQL in the same run.
func runBenchScoped(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench scoped", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.DefaultScopedConfig()
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (reused between runs)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL to bench as well (env HERD_BENCH_POSTGRES_URL); the fleet is kept there for reuse")
	devices := fs.Int64("devices", def.Devices, "fleet size")
	shapeFlag := fs.String("shape", "5x2x10x10", "tree shape; the first node of each level is one scope")
	pages := fs.Int("pages", def.Pages, "pages timed per scope and query")
	naive := fs.Int("naive-pages", def.NaivePages, "pages timed per scope and query the naive way")
	markdown := fs.String("markdown", "", "also write the result tables in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	shape, err := seed.ParseShape(*shapeFlag)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	stores := []string{filepath.Join(*dir, fmt.Sprintf("scoped-%d-%s.db", *devices, *shapeFlag))}
	if *pg != "" {
		stores = append(stores, *pg)
	}
	var all []bench.ScopedResult
	for _, store := range stores {
		cfg := def
		cfg.Store, cfg.Devices, cfg.Shape, cfg.Pages, cfg.NaivePages, cfg.Out = store, *devices, shape, *pages, *naive, stdout
		res, err := bench.RunScoped(ctx, cfg)
		if err != nil {
			return fmt.Errorf("bench scoped on %s: %w", redactDSN(store), err)
		}
		all = append(all, res...)
	}
	md := bench.ScopedMarkdown(all)
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, md)
	if *markdown != "" {
		return os.WriteFile(*markdown, []byte(md), 0o644)
	}
	return nil
}
