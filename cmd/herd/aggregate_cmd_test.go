package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sqldb"
)

// TestAggregateCLI: `herd aggregate` prints a row per step with a column per
// agg, from the server's rollups; bad flags are refused with the API's own
// message and exit code 2, before any request.
func TestAggregateCLI(t *testing.T) {
	t.Parallel()
	const adminSecret = "herd_agg_cli_admin_token_0123456789abcdef"
	m := NewMain()
	m.Getenv = func(k string) string {
		return map[string]string{"HERD_ADMIN_TOKEN": adminSecret, "HERD_MQTT_ADDR": "127.0.0.1:0"}[k]
	}
	m.Stderr = io.Discard
	if err := m.ParseFlags(context.Background(), []string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	api := httpapi.NewClient(m.HTTPServer.URL(), adminSecret)
	ctx := context.Background()
	ten := &herd.Tenant{Name: "agg-cli"}
	if err := api.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	ds := []*herd.Device{{NodeID: ten.RootNodeID, Key: "agg-cli-1"}, {NodeID: ten.RootNodeID, Key: "agg-cli-2"}}
	if err := api.CreateDevices(ctx, ds); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var items []herd.IngestItem
	for i, d := range ds {
		for h := range 2 {
			ts := base.Add(time.Duration(h)*time.Hour + time.Minute).UnixMilli()
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: ten.ID, At: ts,
				Reading: herd.Reading{TS: ts, Has: herd.ReadingBattery, Battery: float64(50 + 10*i + h)}})
		}
	}
	if err := sqldb.NewIngestService(m.DB).Ingest(ctx, items); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"aggregate", "--api", m.HTTPServer.URL(), "--token", adminSecret, "--tenant", strconv.FormatInt(ten.ID, 10),
		"--field", "battery", "--agg", "avg,max,count", "--from", base.Format(time.RFC3339), "--to", base.Add(2 * time.Hour).Format(time.RFC3339)}, &stdout, &stderr); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	want := []string{"time avg max count", "2026-12-01T00:00:00Z 55 60 2", "2026-12-01T01:00:00Z 56 61 2", "avg,max,count of battery, step 1h, from rollup_1h (2 rows)"}
	for i := range lines {
		lines[i] = strings.Join(strings.Fields(lines[i]), " ")
	}
	if !slices.Equal(lines, want) {
		t.Errorf("output\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--field", "status"}, `field "status" is not a numeric reading field`},
		{[]string{"--field", "battery", "--step", "10s"}, "whole minutes"},
		{[]string{"--field", "battery", "--from", "2026-12-02T00:00:00Z", "--to", "2026-12-01T00:00:00Z"}, "must come before"},
		{[]string{"--field", "battery", "--group-by", "colour"}, `group_by "colour"`},
	} {
		// No server at this address: the flags are refused before any
		// request, as a usage error (exit code 2).
		err := run(ctx, append([]string{"aggregate", "--api", "http://127.0.0.1:1", "--token", adminSecret}, c.args...), io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(ue.msg, c.msg) {
			t.Errorf("%v: %v; want a usage error with %q", c.args, err, c.msg)
		}
	}
}
