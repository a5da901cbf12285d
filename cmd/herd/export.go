package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// runExport runs `herd export readings`: the readings of a scope over a
// range, streamed from the API (GET /v1/readings/export, so the token's
// grants decide what is in it) and written here as Parquet, CSV or NDJSON.
// The file is written under a temporary name beside FILE and renamed at the
// end, so an export that fails leaves no half file where the whole one was
// expected.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "readings" {
		return &usageError{msg: "export takes what to export: herd export readings --from … --out FILE"}
	}
	fs := flag.NewFlagSet("herd export readings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	from := fs.String("from", "", "start of the range, inclusive: RFC 3339 (2026-12-01T00:00:00Z, any offset) or unix ms (required)")
	to := fs.String("to", "", "end of the range, exclusive (default now)")
	tenant := fs.Int64("tenant", 0, "tenant: needed with a super-admin token only")
	node := fs.Int64("node", 0, "only the devices under this node (default the token's whole scope)")
	var filters multiFlag
	fs.Var(&filters, "filter", `device filter FIELD:OP:VALUE as GET /v1/devices takes it ("model:eq:th-200"); repeat for more`)
	format := fs.String("format", "", "parquet, csv or ndjson (default from the extension of --out, else parquet)")
	out := fs.String("out", "", "the file to write (required)")
	rowGroup := fs.Int("row-group", defaultRowGroup, "Parquet: readings per row group")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd export readings --from TIME [--to TIME] [--node N] [--filter F]... --out FILE [flags]\n\n"+
			"Writes the readings of the devices the token may see (under --node, matching\n"+
			"every --filter) with from <= ts < to, in time order, to FILE: Parquet (typed\n"+
			"columns, zstd), CSV with a header, or NDJSON. Devices are matched by the node\n"+
			"they are under now. See docs/history.md, \"Export\".\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		return &exitError{code: 2, msg: "herd export readings: " + fmt.Sprintf(format, a...)}
	}
	if fs.NArg() > 0 {
		return bad("unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		return bad("--out FILE is required")
	}
	if *from == "" {
		return bad("--from is required (RFC 3339 such as 2026-12-01T00:00:00Z, or unix ms)")
	}
	if *format == "" {
		*format = exportFormatOf(*out)
	}
	switch *format {
	case herd.ExportParquet, herd.ExportCSV, herd.ExportNDJSON:
	default:
		return bad("--format %q is not parquet, csv or ndjson", *format)
	}
	if *rowGroup < 1 {
		return bad("--row-group %d must be 1 or more", *rowGroup)
	}
	if *token == "" {
		return bad("a token is needed: --token or %s", TokenEnv)
	}
	q := herd.ExportQuery{TenantID: *tenant, NodeID: *node}
	var err error
	if q.From, q.To, err = herd.ParseHistoryRange(*from, *to, time.Now()); err != nil {
		return bad("--from/--to: %s", herd.ErrorMessage(err))
	}
	if len(filters) > herd.MaxFilters {
		return bad("at most %d --filter", herd.MaxFilters)
	}
	for _, s := range filters {
		f, err := herd.ParseDeviceFilter(s)
		if err != nil {
			return bad("--filter: %s", herd.ErrorMessage(err))
		}
		q.Filters = append(q.Filters, f)
	}

	n, size, err := exportToFile(ctx, httpapi.NewClient(*api, *token), q, *format, *out, *rowGroup, stderr)
	if err != nil {
		var he *herd.Error
		if errors.As(err, &he) {
			hint := ""
			if he.Code == herd.EINVALID && *tenant == 0 && strings.Contains(he.Message, "tenant_id") {
				hint = " (a super-admin's token names the tenant: --tenant ID)"
			}
			return fmt.Errorf("export readings from %s: herd answered %s: %s%s", *api, he.Code, he.Message, hint)
		}
		return fmt.Errorf("export readings from %s: %w", *api, err)
	}
	fmt.Fprintf(stdout, "wrote %d readings (%s, %s) to %s\n", n, exportBytes(size), *format, *out)
	return nil
}

// exportFormatOf is the format a file name's extension names, parquet by default.
func exportFormatOf(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return herd.ExportCSV
	case ".ndjson", ".jsonl":
		return herd.ExportNDJSON
	}
	return herd.ExportParquet
}

// exportToFile streams the export into a temporary file beside path
// (its own name, so two exports to one path, or a file of the user's named
// path.tmp, are safe) and renames it to path once the stream ended with its
// trailer and the file is synced, then syncs the directory so the rename
// survives a crash; on any error the temporary file goes.
func exportToFile(ctx context.Context, c *httpapi.Client, q herd.ExportQuery, format, path string, rowGroup int, stderr io.Writer) (n, size int64, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return 0, 0, err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	cw := &exportCounter{w: f}
	w, err := newReadingsWriter(format, cw, rowGroup)
	if err != nil {
		return 0, 0, err
	}
	var bar func(*herd.ExportReading, bool)
	if isTerminal(stderr) {
		bar = exportBar(stderr, q, &n, cw)
	}
	err = c.ExportReadings(ctx, q, func(r *herd.ExportReading) error {
		n++
		if bar != nil {
			bar(r, false)
		}
		return w.Write(r)
	})
	if bar != nil {
		bar(nil, true)
	}
	if err != nil {
		return n, cw.n, err
	}
	if err := w.Close(); err != nil {
		return n, cw.n, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return n, cw.n, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return n, cw.n, fmt.Errorf("close %s: %w", tmp, err)
	}
	// CreateTemp makes it 0600; an export is an ordinary file.
	if err := os.Chmod(tmp, 0o644); err != nil {
		return n, cw.n, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return n, cw.n, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return n, cw.n, fmt.Errorf("sync %s: %w", filepath.Dir(path), err)
		}
	}
	return n, cw.n, nil
}

// exportBar draws the export's progress over itself on a terminal, at
// most five times a second: readings come in time order, so the share of
// the range behind the last one is the share done.
func exportBar(w io.Writer, q herd.ExportQuery, n *int64, cw *exportCounter) func(*herd.ExportReading, bool) {
	var last time.Time
	span := q.To.Sub(q.From)
	return func(r *herd.ExportReading, done bool) {
		if done {
			fmt.Fprint(w, "\r\x1b[K")
			return
		}
		if time.Since(last) < 200*time.Millisecond {
			return
		}
		last = time.Now()
		share := float64(r.TS.Sub(q.From)) / float64(span)
		share = max(0, min(share, 1))
		const width = 30
		filled := int(share * width)
		fmt.Fprintf(w, "\r[%s%s] %3.0f%% %d readings, %s, at %s\x1b[K", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
			share*100, *n, exportBytes(cw.n), r.TS.UTC().Format(time.DateTime))
	}
}

// exportCounter counts the bytes written through it.
type exportCounter struct {
	w io.Writer
	n int64
}

func (c *exportCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func exportBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
