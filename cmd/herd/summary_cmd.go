package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// runSummary is herd summary: the latest state of the devices in the
// token's scope, per group, from GET /v1/devices/summary.
func runSummary(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd summary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	tenant := fs.Int64("tenant", 0, "tenant to summarise: needed with a super-admin token only")
	node := fs.Int64("node", 0, "summarise this node's subtree only (default: the token's whole scope)")
	var filters multiFlag
	fs.Var(&filters, "filter", `only devices matching FIELD:OP:VALUE, as GET /v1/devices takes it ("status:eq:alarm"); repeat for more`)
	groupBy := fs.String("group-by", "", "group by "+strings.Join(herd.SummaryGroupBys, ", ")+" (default: one group)")
	fields := fs.String("fields", "", "comma list of numeric fields to take min, avg and max of: "+strings.Join(herd.NumericReadingFields, ","))
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd summary [flags]\n\nPrints the latest state of the devices the token may see: per group, the\ncount of devices and the count, min, avg and max of each field asked for.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("summary takes no arguments, got %q", fs.Args())}
	}
	if *token == "" {
		return &usageError{msg: "summary needs a token: --token or HERD_TOKEN"}
	}
	// The flags are checked here as the server checks the query, so that a
	// typo is told before anything is sent, in the flags' names.
	v := url.Values{}
	if *tenant != 0 {
		v.Set("tenant_id", strconv.FormatInt(*tenant, 10))
	}
	if *node != 0 {
		v.Set("node_id", strconv.FormatInt(*node, 10))
	}
	for _, f := range filters {
		v.Add("filter", f)
	}
	if *groupBy != "" {
		v.Set("group_by", *groupBy)
	}
	if *fields != "" {
		v.Set("fields", *fields)
	}
	q, err := herd.ParseSummaryQuery(v)
	if err != nil {
		msg := herd.ErrorMessage(err)
		for param, flagName := range map[string]string{"group_by": "--group-by", "node_id": "--node", "tenant_id": "--tenant", "fields:": "--fields:"} {
			msg = strings.Replace(msg, param, flagName, 1)
		}
		return &usageError{msg: msg}
	}
	sum, err := httpapi.NewClient(*api, *token).SummarizeDevices(ctx, q)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	return printSummary(stdout, q, sum)
}

// printSummary writes the summary as a table: a row per group, its count,
// then per field how many devices have a value and their min, avg and max.
func printSummary(w io.Writer, q herd.SummaryQuery, sum *herd.Summary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{strings.ToUpper(q.GroupBy)}
	if q.GroupBy == "" {
		head[0] = "SCOPE"
	}
	if q.GroupBy == herd.SummaryByNode {
		head = append(head, "NAME")
	}
	head = append(head, "DEVICES")
	for _, f := range q.Fields {
		head = append(head, f+" N", "MIN", "AVG", "MAX")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, g := range sum.Groups {
		row := []string{groupLabel(q.GroupBy, g.Key)}
		if q.GroupBy == herd.SummaryByNode {
			row = append(row, orDash(g.Name))
		}
		row = append(row, strconv.FormatInt(g.Count, 10))
		for _, f := range q.Fields {
			fs := g.Fields[f]
			row = append(row, strconv.FormatInt(fs.Count, 10), figure(fs.Min), figure(fs.Avg), figure(fs.Max))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	note := ""
	if sum.GroupsTruncated {
		note = fmt.Sprintf("; only the %d largest groups are shown", len(sum.Groups))
	}
	_, err := fmt.Fprintf(w, "%d devices in %d groups (from %s)%s\n", sum.Count, len(sum.Groups), sum.Source, note)
	return err
}

// groupLabel writes a group's key as a person reads it: the empty key
// says what it stands for.
func groupLabel(groupBy, key string) string {
	if key != "" {
		return key
	}
	switch groupBy {
	case "":
		return "all"
	case herd.SummaryByStatus:
		return "(none reported)"
	}
	return "(empty)"
}

func figure(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p, 'g', 6, 64)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
