package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// runAggregate runs `herd aggregate`: GET /v1/readings/aggregate as a table,
// one row per group and step, one column per aggregation function.
func runAggregate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd aggregate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	tenant := fs.Int64("tenant", 0, "tenant: needed with a super-admin token only")
	node := fs.Int64("node", 0, "only the devices under this node")
	field := fs.String("field", "", "the numeric reading field: "+strings.Join(herd.NumericReadingFields, ", "))
	agg := fs.String("agg", "avg", "aggregation functions, comma separated: "+strings.Join(herd.AggregateFuncs, ", "))
	from := fs.String("from", "", "start: RFC 3339 or unix ms (default: 24 hours before --to)")
	to := fs.String("to", "", "end, exclusive: RFC 3339 or unix ms (default: now)")
	step := fs.String("step", "1h", "step: whole minutes, such as 1m, 15m, 1h, 1d")
	groupBy := fs.String("group-by", "", "group by node, model or firmware")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	var filters multiFlag
	fs.Var(&filters, "filter", "device filter FIELD:OP:VALUE, as GET /v1/devices takes it; repeat for more")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd aggregate --field F [flags]\n\nPrints a reading field aggregated over the devices the token may see,\none row per step (and group).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("aggregate takes no arguments, got %q", fs.Args())}
	}
	v := url.Values{"field": {*field}, "agg": {*agg}, "step": {*step}, "filter": filters}
	for name, s := range map[string]string{"from": *from, "to": *to, "group_by": *groupBy} {
		if s != "" {
			v.Set(name, s)
		}
	}
	if *tenant != 0 {
		v.Set("tenant_id", strconv.FormatInt(*tenant, 10))
	}
	if *node != 0 {
		v.Set("node_id", strconv.FormatInt(*node, 10))
	}
	// The API's own parser: a bad flag is refused here with the message
	// the server would give, before any request.
	q, err := herd.ParseAggregateQuery(v, time.Now())
	if err != nil {
		return &usageError{msg: herd.ErrorMessage(err)}
	}
	if *token == "" {
		return &usageError{msg: "aggregate needs a token: --token or HERD_TOKEN"}
	}
	res, err := httpapi.NewClient(*api, *token).AggregateReadings(ctx, q)
	if err != nil {
		var he *herd.Error
		if errors.As(err, &he) {
			return fmt.Errorf("aggregate: herd answered %s: %s", he.Code, he.Message)
		}
		return fmt.Errorf("aggregate %s: %w", *api, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return printAggregate(stdout, res, q.Aggs)
}

// printAggregate writes one row per group and step with a column per agg.
func printAggregate(w io.Writer, res *herd.AggregateResult, aggs []string) error {
	type rowKey struct {
		group string
		ts    int64
	}
	values := map[rowKey]map[string]float64{}
	names := map[string]string{}
	var keys []rowKey
	for _, s := range res.Series {
		names[s.Group] = s.GroupName
		for _, p := range s.Points {
			k := rowKey{s.Group, p.TS}
			if values[k] == nil {
				values[k] = map[string]float64{}
				keys = append(keys, k)
			}
			values[k][s.Agg] = p.Value
		}
	}
	slices.SortFunc(keys, func(a, b rowKey) int {
		if c := strings.Compare(a.group, b.group); c != 0 {
			return c
		}
		return cmp.Compare(a.ts, b.ts)
	})
	grouped := slices.ContainsFunc(res.Series, func(s herd.AggregateSeries) bool { return s.Group != "" })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "time\t"
	if grouped {
		header += "group\t"
	}
	fmt.Fprintf(tw, "%s%s\t\n", header, strings.Join(aggs, "\t"))
	for _, k := range keys {
		group := ""
		if grouped {
			group = k.group + "\t"
			if n := names[k.group]; n != "" {
				group = n + " (" + k.group + ")\t"
			}
		}
		cols := make([]string, len(aggs))
		for i, a := range aggs {
			if v, ok := values[k][a]; ok {
				cols[i] = strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
		fmt.Fprintf(tw, "%s\t%s%s\t\n", time.UnixMilli(k.ts).UTC().Format(time.RFC3339), group, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s of %s, step %s, from %s (%d rows)\n", strings.Join(aggs, ","), res.Field, res.Step, res.Source, len(keys))
	return nil
}
