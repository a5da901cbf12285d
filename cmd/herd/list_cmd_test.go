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

// TestListCommand runs herd list against a real server over a SQLite
// store: the tables, every page with --all, JSON, and the flags it refuses
// before sending anything.
func TestListCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := sqldb.NewDB(filepath.Join(t.TempDir(), "herd.db"))
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const secret = "herd_list_admin_token_0123456789abcdef"
	if _, err := db.EnsureAdminToken(ctx, secret); err != nil {
		t.Fatal(err)
	}
	s := httpapi.NewServer()
	s.Addr = "127.0.0.1:0"
	s.TenantService, s.NodeService, s.DeviceService = sqldb.NewTenantService(db), sqldb.NewNodeService(db), sqldb.NewDeviceService(db)
	s.UserService, s.GrantService, s.ListService = sqldb.NewUserService(db), sqldb.NewGrantService(db), sqldb.NewListService(db)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := httpapi.NewClient(s.URL(), secret)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ten := &herd.Tenant{Name: "cli"}
	must(c.CreateTenant(ctx, ten))
	region := &herd.Node{TenantID: ten.ID, Kind: "region", Name: "Oslo region"}
	must(c.CreateNode(ctx, region))
	siteA := &herd.Node{ParentID: region.ID, Kind: "site", Name: "oslo-a"}
	siteB := &herd.Node{ParentID: region.ID, Kind: "site", Name: "oslo-b"}
	must(c.CreateNode(ctx, siteA))
	must(c.CreateNode(ctx, siteB))
	ds := []*herd.Device{{NodeID: siteA.ID, Key: "list-a1"}, {NodeID: siteA.ID, Key: "list-a2"}, {NodeID: siteB.ID, Key: "list-b1"}}
	must(c.CreateDevices(ctx, ds))
	now := time.Now().UnixMilli()
	must(sqldb.NewIngestService(db).Ingest(ctx, []herd.IngestItem{
		{Kind: herd.IngestConnect, DeviceID: ds[0].ID, TenantID: ten.ID, At: now},
		{Kind: herd.IngestReading, DeviceID: ds[1].ID, TenantID: ten.ID, At: now, Reading: herd.Reading{TS: now, Has: herd.ReadingStatus, Status: herd.StatusAlarm}},
	}))
	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := runList(ctx, append(args[:1:1], append([]string{"--api", s.URL(), "--token", secret}, args[1:]...)...), &stdout, &stderr)
		return stdout.String(), err
	}
	id := func(n int64) string { return strconv.FormatInt(n, 10) }

	t.Run("Children", func(t *testing.T) {
		out, err := run("children", "--node", id(region.ID))
		must(err)
		want := "cli / Oslo region\n" +
			"ID  NAME    KIND  DEVICES  ONLINE  ALARM  CHILDREN\n" +
			fmt.Sprintf("%-2d  oslo-a  site  2        1       1      0\n", siteA.ID) +
			fmt.Sprintf("%-2d  oslo-b  site  1        0       0      0\n", siteB.ID)
		if out != want {
			t.Fatalf("got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("Devices", func(t *testing.T) {
		canary := "canary"
		_, err := c.UpdateDevice(ctx, ds[2].ID, herd.DeviceUpdate{Labels: map[string]*string{"ring": &canary}})
		must(err)
		keys := func(out string) []string {
			var ks []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
				ks = append(ks, strings.Fields(line)[1])
			}
			return ks
		}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--q", "OSLO-A"}, "list-a1 list-a2"}, // through the site's name
			{[]string{"--q", "list b1"}, ""},               // every word: "b1" alone is too short, so no match of "list b1"
			{[]string{"--q", "list-b"}, "list-b1"},
			{[]string{"--node", id(siteB.ID)}, "list-b1"},
			{[]string{"--node", id(region.ID), "--sort", "-key"}, "list-b1 list-a2 list-a1"},
			{[]string{"--filter", "label.ring:eq:canary"}, "list-b1"},
			{[]string{"--filter", "key:contains:T-A", "--filter", "status:eq:alarm"}, "list-a2"},
		} {
			out, err := run(append([]string{"devices", "--tenant", id(ten.ID)}, tc.args...)...)
			if tc.want == "" {
				// A word under 3 characters is refused before anything is sent.
				if !errors.As(err, new(*usageError)) || !strings.Contains(err.Error(), "--q") {
					t.Errorf("%q: got %v, want a usage error naming --q", tc.args, err)
				}
				continue
			}
			must(err)
			if got := strings.Join(keys(out), " "); got != tc.want {
				t.Errorf("%q: got %q, want %q:\n%s", tc.args, got, tc.want, out)
			}
		}
		out, err := run("devices", "--tenant", id(ten.ID), "--filter", "label.ring:exists:true")
		must(err)
		if !strings.Contains(out, "ring=canary") || !strings.Contains(out, "LABELS") {
			t.Fatalf("the labels column:\n%s", out)
		}
		out, err = run("devices", "--tenant", id(ten.ID), "--limit", "2", "--json", "--all")
		must(err)
		if n := strings.Count(out, "\n"); n != 2 || !strings.Contains(out, `"key":"list-b1"`) {
			t.Fatalf("two JSON pages of 3 devices, got %d lines:\n%s", n, out)
		}
	})
	t.Run("Pages", func(t *testing.T) {
		// One page says how to go on; --all prints every page.
		out, err := run("nodes", "--tenant", id(ten.ID), "--q", "OSLO", "--limit", "2")
		must(err)
		if !strings.Contains(out, "Oslo region") || !strings.Contains(out, "oslo-a") || strings.Contains(out, "oslo-b") || !strings.Contains(out, "more: --cursor ") {
			t.Fatalf("first page:\n%s", out)
		}
		cursor := strings.TrimSuffix(strings.TrimPrefix(out[strings.Index(out, "more: --cursor "):], "more: --cursor "), " (or --all)\n")
		out, err = run("nodes", "--tenant", id(ten.ID), "--q", "OSLO", "--limit", "2", "--cursor", cursor)
		must(err)
		if !strings.Contains(out, "oslo-b") || strings.Contains(out, "oslo-a") || strings.Contains(out, "more:") {
			t.Fatalf("second page:\n%s", out)
		}
		out, err = run("nodes", "--tenant", id(ten.ID), "--q", "OSLO", "--limit", "1", "--all")
		must(err)
		for _, name := range []string{"Oslo region", "oslo-a", "oslo-b"} {
			if !strings.Contains(out, name) {
				t.Fatalf("--all misses %s:\n%s", name, out)
			}
		}
	})
	t.Run("JSON", func(t *testing.T) {
		out, err := run("tenants", "--json", "--limit", "1", "--all")
		must(err)
		var page herd.ListPage[*herd.Tenant]
		must(json.Unmarshal([]byte(out), &page))
		if len(page.Items) != 1 || page.Items[0].ID != ten.ID || page.NextCursor != "" {
			t.Fatalf("tenants as JSON: %s", out)
		}
	})
	t.Run("ErrUsage", func(t *testing.T) {
		for _, args := range [][]string{
			{"children"},
			{"grants"},
			{"tokens"},
			{"nodes", "--q", "os"},
			{"gadgets"},
			{"devices", "--q", "ab"},
			{"devices", "--filter", "name:like:pump"},
			{"devices", "--filter", "label.ring:contains:c"},
			{"devices", "--sort", "colour"},
			{"users", "--limit", "0"},
		} {
			if _, err := run(args...); !errors.As(err, new(*usageError)) {
				t.Errorf("%q: got %v, want a usage error", args, err)
			}
		}
		// The server's refusal comes back as it is: a super-admin names
		// the tenant.
		if _, err := run("users"); err == nil || errors.As(err, new(*usageError)) || !strings.Contains(err.Error(), "tenant_id") {
			t.Errorf("users without a tenant: got %v, want the server's error", err)
		}
	})
}
