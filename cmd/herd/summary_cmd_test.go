package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sqldb"
)

// TestSummaryCommand runs herd summary against a real server over a SQLite
// store whose devices have reported.
func TestSummaryCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := sqldb.NewDB(filepath.Join(t.TempDir(), "herd.db"))
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const secret = "herd_summary_admin_token_0123456789abcdef"
	if _, err := db.EnsureAdminToken(ctx, secret); err != nil {
		t.Fatal(err)
	}
	s := httpapi.NewServer()
	s.Addr = "127.0.0.1:0"
	s.TenantService, s.NodeService, s.DeviceService = sqldb.NewTenantService(db), sqldb.NewNodeService(db), sqldb.NewDeviceService(db)
	s.UserService, s.GrantService, s.HistoryService = sqldb.NewUserService(db), sqldb.NewGrantService(db), sqldb.NewHistoryService(db)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := httpapi.NewClient(s.URL(), secret)
	ten := &herd.Tenant{Name: "cli"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.CreateTenant(ctx, ten))
	site := &herd.Node{TenantID: ten.ID, Kind: "site", Name: "plant 1"}
	must(c.CreateNode(ctx, site))
	ds := []*herd.Device{
		{NodeID: site.ID, Key: "cli-a", Model: "th-200"}, {NodeID: site.ID, Key: "cli-b", Model: "th-200"}, {NodeID: site.ID, Key: "cli-c", Model: "co2-10"},
	}
	must(c.CreateDevices(ctx, ds))
	now := time.Now()
	var items []herd.IngestItem
	for i, d := range ds[:2] {
		rs, err := herd.ParseTelemetry(fmt.Appendf(nil, `{"temperature":%d.5,"battery":%d,"status":"ok"}`, 20+i, 80+10*i), now, 1<<16)
		must(err)
		items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: ten.ID, At: now.UnixMilli(), Reading: rs[0]})
	}
	must(sqldb.NewIngestService(db).Ingest(ctx, items))
	tenant := strconv.FormatInt(ten.ID, 10)

	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := runSummary(ctx, append([]string{"--api", s.URL(), "--token", secret}, args...), &stdout, &stderr)
		return stdout.String(), err
	}
	t.Run("Table", func(t *testing.T) {
		out, err := run("--tenant", tenant, "--group-by", "status", "--fields", "temperature,battery")
		must(err)
		want := "STATUS           DEVICES  temperature N  MIN   AVG  MAX   battery N  MIN  AVG  MAX\n" +
			"(none reported)  1        0              -     -    -     0          -    -    -\n" +
			"ok               2        2              20.5  21   21.5  2          80   85   90\n" +
			"3 devices in 2 groups (from devices)\n"
		if out != want {
			t.Fatalf("got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("NodeAndFilter", func(t *testing.T) {
		out, err := run("--tenant", tenant, "--node", strconv.FormatInt(site.ID, 10), "--group-by", "node", "--filter", "model:eq:th-200")
		must(err)
		lines := strings.Split(out, "\n")
		if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "NODE NAME DEVICES" ||
			strings.Join(strings.Fields(lines[1]), " ") != strconv.FormatInt(site.ID, 10)+" plant 1 2" || lines[2] != "2 devices in 1 groups (from devices)" {
			t.Fatalf("got\n%s", out)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		out, err := run("--tenant", tenant, "--group-by", "model", "--json")
		must(err)
		var sum herd.Summary
		must(json.Unmarshal([]byte(out), &sum))
		if sum.Count != 3 || len(sum.Groups) != 2 || sum.Groups[0].Key != "co2-10" || sum.Groups[1].Count != 2 {
			t.Fatalf("got %+v", sum)
		}
	})
	t.Run("BadFlags", func(t *testing.T) {
		for _, tc := range []struct {
			args  []string
			names string
		}{
			{[]string{"--group-by", "colour"}, `--group-by "colour"`},
			{[]string{"--fields", "name"}, `--fields: "name" is not a numeric field`},
			{[]string{"--fields", "colour"}, `--fields: unknown field "colour"`},
			{[]string{"--filter", "temperature:gt:hot"}, `filter "temperature:gt:hot"`},
			{[]string{"--node", "-3"}, `--node "-3"`},
			{[]string{"extra"}, "takes no arguments"},
		} {
			_, err := run(append([]string{"--tenant", tenant}, tc.args...)...)
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(ue.msg, tc.names) {
				t.Errorf("%q: got %v, want a usage error naming %q", tc.args, err, tc.names)
			}
		}
		// What only the server can tell is an error too: a node outside
		// the scope, a super-admin without a tenant.
		for _, args := range [][]string{{"--tenant", tenant, "--node", "987654321"}, {}} {
			if _, err := run(args...); err == nil || errors.As(err, new(*usageError)) {
				t.Errorf("%q: got %v, want the server's error", args, err)
			}
		}
	})
}

// TestSummaryCommand_Exit checks that the process says what is wrong and
// exits non-zero: 2 for flags it cannot use, 1 for an API it cannot reach.
func TestSummaryCommand_Exit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"summary", "--token", "x", "--group-by", "colour"}, 2, `herd: --group-by "colour" is not one of status model firmware online node`},
		{[]string{"summary"}, 2, "summary needs a token"},
		{[]string{"summary", "--token", "x", "--api", "http://127.0.0.1:1"}, 1, "herd: summary:"},
		{[]string{"summary", "-h"}, 0, "Usage: herd summary"},
	} {
		cmd := herdCommand(t, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if code := exitCode(t, cmd.Run()); code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}
