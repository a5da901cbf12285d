package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// devicePager is herd list devices: GET /v1/devices a page at a time. The
// query is checked here as the server checks it, so that a typo is told in
// the flags' names before anything is sent. --node becomes a filter on the
// node's path, which is how the API scopes a device query to a subtree.
func devicePager(ctx context.Context, c *httpapi.Client, stdout io.Writer, asJSON bool, tenant, node int64, q string, filters []string, sortBy string) (func(herd.ListParams) (string, error), error) {
	v := url.Values{}
	if tenant != 0 {
		v.Set("tenant_id", strconv.FormatInt(tenant, 10))
	}
	if q != "" {
		v.Set("q", q)
	}
	for _, f := range filters {
		v.Add("filter", f)
	}
	if sortBy != "" {
		v.Set("sort", sortBy)
	}
	if _, err := herd.ParseDeviceQuery(v); err != nil {
		return nil, &usageError{msg: flagMessage(herd.ErrorMessage(err))}
	}
	p := httpapi.DeviceQueryParams{TenantID: tenant, Filters: filters, Sort: sortBy, Search: q}
	if node != 0 {
		n, err := c.FindNodeByID(ctx, node)
		if err != nil {
			return nil, fmt.Errorf("list devices: node %d: %w", node, err)
		}
		p.Filters = append(slices.Clip(p.Filters), "path:prefix:"+n.Path)
	}
	return func(lp herd.ListParams) (string, error) {
		p.Limit, p.Cursor = lp.Limit, lp.Cursor
		pg, err := c.QueryDevices(ctx, p)
		if err != nil {
			return "", err
		}
		if asJSON {
			return pg.NextCursor, writeJSONLine(stdout, pg)
		}
		items := &herd.ListPage[*herd.Device]{Items: pg.Items, NextCursor: pg.NextCursor}
		return printPage(stdout, false, items, nil, "ID\tKEY\tNAME\tMODEL\tFIRMWARE\tSTATUS\tONLINE\tLAST SEEN\tLABELS", deviceRow)
	}, nil
}

// flagMessage names the flag where the server's message names its query
// parameter ("q: the word…" becomes "--q: the word…").
func flagMessage(msg string) string {
	for param, flagName := range map[string]string{"q": "--q", "sort": "--sort", "filter": "--filter", "tenant_id": "--tenant"} {
		if rest, ok := strings.CutPrefix(msg, param); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, ":")) {
			return flagName + rest
		}
	}
	return msg
}

// deviceRow is a device as one row of herd list devices; its labels in key
// order, so that the same device prints the same way each time.
func deviceRow(d *herd.Device) string {
	seen := "-"
	if d.LastSeen != nil {
		seen = d.LastSeen.UTC().Format(time.RFC3339)
	}
	labels := make([]string, 0, len(d.Labels))
	for _, k := range slices.Sorted(maps.Keys(d.Labels)) {
		labels = append(labels, k+"="+d.Labels[k])
	}
	return fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s", d.ID, d.Key, d.Name, d.Model, d.Firmware, d.Status, d.Online, seen, strings.Join(labels, ","))
}
