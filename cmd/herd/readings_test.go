package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestReadingsCommand runs `herd readings` against a real server over a
// SQLite store holding 30 readings a minute apart.
func TestReadingsCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	const secret = "herd_test_admin_token_readings_0123456789"
	if _, err := db.EnsureAdminToken(ctx, secret); err != nil {
		t.Fatal(err)
	}
	s := httpapi.NewServer()
	s.Addr = "127.0.0.1:0"
	s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s.TenantService, s.NodeService, s.DeviceService = sqldb.NewTenantService(db), sqldb.NewNodeService(db), sqldb.NewDeviceService(db)
	s.UserService, s.GrantService, s.HistoryService = sqldb.NewUserService(db), sqldb.NewGrantService(db), sqldb.NewHistoryService(db)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	super := testutil.SuperContext()
	tn := &herd.Tenant{Name: "acme"}
	if err := s.TenantService.CreateTenant(super, tn); err != nil {
		t.Fatal(err)
	}
	n := &herd.Node{TenantID: tn.ID, Kind: "site", Name: "s"}
	if err := s.NodeService.CreateNode(super, n); err != nil {
		t.Fatal(err)
	}
	d := &herd.Device{NodeID: n.ID, Key: "readings-cli-1"}
	if err := s.DeviceService.CreateDevices(super, []*herd.Device{d}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var items []herd.IngestItem
	for i := range 30 {
		ts := t0.Add(time.Duration(i) * time.Minute).UnixMilli()
		items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts,
			Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature | herd.ReadingStatus, Temperature: float64(i), Status: herd.StatusOK}})
	}
	if err := sqldb.NewIngestService(db).Ingest(ctx, items); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, error) {
		var out, errs bytes.Buffer
		base := []string{"--api", s.URL(), "--token", secret, "--from", "2026-12-01T10:00:00Z", "--to", "2026-12-01T11:00:00Z"}
		err := runReadings(ctx, append(base, args...), &out, &errs)
		return out.String(), errs.String(), err
	}
	id := fmt.Sprint(d.ID)

	out, errs, err := run("--limit", "7", "--all", id)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 30 || !strings.HasPrefix(lines[0], `{"ts":"2026-12-01T10:00:00Z"`) || !strings.Contains(lines[29], `"temperature":29`) || errs != "" {
		t.Fatalf("--all: %d lines, first %s, stderr %q", len(lines), lines[0], errs)
	}
	out, errs, err = run("--limit", "7", "--fields", "temperature", id)
	if err != nil || strings.Count(out, "\n") != 7 || !strings.Contains(errs, "--cursor ") || strings.Contains(out, "status") {
		t.Fatalf("one page: %v, %q, stderr %q", err, out, errs)
	}
	out, _, err = run("--step", "20m", "--agg", "max", "--fields", "temperature", id)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ts                    temperature\n2026-12-01T10:00:00Z  19\n2026-12-01T10:20:00Z  29\n"; out != want {
		t.Fatalf("table:\n%s\nwant:\n%s", out, want)
	}
	out, _, err = run("--step", "1h", "--json", id)
	if err != nil || !strings.Contains(out, `"series":[{"field":"temperature","points":[[`) {
		t.Fatalf("json: %v %s", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{id, "extra"}, "one DEVICE_ID"},
		{[]string{"dev-7"}, `DEVICE_ID "dev-7"`},
		{[]string{"--fields", "colour", id}, `unknown field "colour"`},
		{[]string{"--agg", "avg", id}, "needs a step"},
		{[]string{"--from", "2026-11-01T00:00:00Z", "--step", "1m", id}, "more than the limit of 10000"},
		{[]string{"--limit", "20000", id}, "limit"},
		{[]string{"--json", id}, "--json goes with --step"},
		{[]string{"--step", "1h", "--all", id}, "--all pages raw readings"},
	} {
		_, _, err := run(tc.args...)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(ue.msg, tc.want) {
			t.Errorf("%q: got %v, want a usage error saying %q", tc.args, err, tc.want)
		}
	}
	// What the server refuses is an error too (exit 1): a device outside
	// reach.
	if _, _, err := run("999999"); herd.ErrorCode(err) != herd.ENOTFOUND {
		t.Errorf("unknown device: %v", err)
	}
}
