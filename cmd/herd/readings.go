package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// runReadings runs `herd readings DEVICE_ID`: one device's history through
// GET /v1/devices/{id}/readings. Raw readings print as NDJSON, one reading
// a line, oldest first (--all follows next_cursor to the end of the range;
// without it a next cursor is said on stderr). With --step it prints one
// row per step (the step's start in the offset of --from) and one column
// per field, or the answer's JSON with --json.
func runReadings(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd readings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	from := fs.String("from", "", "start of the range, RFC 3339 (2026-12-01T00:00:00+05:30) or unix ms (default: a day before --to)")
	to := fs.String("to", "", "end of the range, excluded (default: now)")
	fields := fs.String("fields", "", "comma list of fields: temperature, battery, …, status, firmware, extra.KEY (default: all)")
	step := fs.String("step", "", "one point per step (1m, 5m, 1h, 1d, …) instead of raw readings")
	agg := fs.String("agg", "", "with --step: avg, min, max, last, count or sum (default avg)")
	limit := fs.Int("limit", 0, fmt.Sprintf("raw readings per page, at most %d (default %d)", herd.MaxReadingsLimit, herd.DefaultReadingsLimit))
	cursor := fs.String("cursor", "", "raw readings: start at this next_cursor of an earlier page")
	all := fs.Bool("all", false, "raw readings: follow next_cursor to the end of the range")
	asJSON := fs.Bool("json", false, "with --step: print the answer as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd readings [flags] DEVICE_ID\n\nPrints one device's readings in [--from, --to): raw, one JSON object a line,\nor with --step one row per step and a column per field.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{msg: fmt.Sprintf("readings takes one DEVICE_ID, got %q", fs.Args())}
	}
	id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil || id <= 0 {
		return &usageError{msg: fmt.Sprintf("readings: DEVICE_ID %q is not a device id", fs.Arg(0))}
	}
	if *token == "" {
		return &usageError{msg: "readings needs a token: --token or HERD_TOKEN"}
	}
	if *step == "" && *asJSON {
		return &usageError{msg: "readings: --json goes with --step (raw readings are JSON already)"}
	}
	if *step != "" && *all {
		return &usageError{msg: "readings: --all pages raw readings; a --step answer comes whole"}
	}
	// The flags are checked as the server checks the query string, and the
	// range is fixed here (to defaults to this machine's now), so that
	// every page of --all reads the same range.
	v := url.Values{}
	for name, val := range map[string]string{"from": *from, "to": *to, "fields": *fields, "step": *step, "agg": *agg, "cursor": *cursor} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if *limit != 0 {
		v.Set("limit", strconv.Itoa(*limit))
	}
	q, err := herd.ParseReadingsQuery(v, time.Now())
	if err != nil {
		return &usageError{msg: "readings: " + herd.ErrorMessage(err)}
	}
	q.DeviceID = id
	c := httpapi.NewClient(*api, *token)
	if q.Step != 0 {
		res, err := c.DeviceSeries(ctx, q)
		if err != nil {
			return fmt.Errorf("readings: %w", err)
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			return enc.Encode(res)
		}
		return printSeries(stdout, res, q.From.Location())
	}
	enc := json.NewEncoder(stdout)
	for {
		p, err := c.DeviceReadings(ctx, q)
		if err != nil {
			return fmt.Errorf("readings: %w", err)
		}
		for _, r := range p.Items {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		if p.NextCursor == "" {
			return nil
		}
		if !*all {
			fmt.Fprintf(stderr, "herd readings: more readings follow: --cursor %s (or --all)\n", p.NextCursor)
			return nil
		}
		q.Cursor = p.NextCursor
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// printSeries writes a stepped answer as a table: a row per step that has
// a point in any series, the step's start in loc, a column per field ("-"
// where that field has no point).
func printSeries(w io.Writer, res *herd.SeriesResult, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "ts")
	byTS := map[int64][]string{}
	var order []int64
	for i, s := range res.Series {
		fmt.Fprintf(tw, "\t%s", s.Field)
		for _, p := range s.Points {
			row, ok := byTS[p.TS]
			if !ok {
				row = make([]string, len(res.Series))
				for j := range row {
					row[j] = "-"
				}
				order = append(order, p.TS)
			}
			row[i] = strconv.FormatFloat(p.Value, 'g', -1, 64)
			byTS[p.TS] = row
		}
	}
	fmt.Fprintln(tw)
	slices.Sort(order)
	for _, ts := range order {
		fmt.Fprint(tw, time.UnixMilli(ts).In(loc).Format(time.RFC3339))
		for _, cell := range byTS[ts] {
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
