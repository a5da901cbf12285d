package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestDeviceSummary(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.HistoryService = sqldb.NewHistoryService(db) })
		f := e.mustCreateFleet()
		ctx := context.Background()
		alice := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
		id := func(n *herd.Node) string { return strconv.FormatInt(n.ID, 10) }

		t.Run("ByNode", func(t *testing.T) {
			// alice sees north: its sites are the groups, named.
			s, err := alice.SummarizeDevices(ctx, herd.SummaryQuery{GroupBy: "node", Fields: []string{"temperature"}})
			if err != nil {
				t.Fatal(err)
			}
			if s.Count != 5 || s.Source != "devices" || len(s.Groups) != 2 {
				t.Fatalf("summary %+v", s)
			}
			for i, want := range []struct {
				node  *herd.Node
				count int64
			}{{f.n1, 3}, {f.n2, 2}} {
				g := s.Groups[i]
				if g.Key != id(want.node) || g.Name != want.node.Name || g.Count != want.count {
					t.Errorf("group %d: %+v, want %s %q %d", i, g, id(want.node), want.node.Name, want.count)
				}
				if fs, ok := g.Fields["temperature"]; !ok || fs.Count != 0 || fs.Min != nil || fs.Avg != nil || fs.Max != nil {
					t.Errorf("group %d temperature: %+v (%v), want a zero count and no figures", i, fs, ok)
				}
			}
		})
		t.Run("FilteredByModel", func(t *testing.T) {
			// The super-admin names the tenant; a filter narrows the scope.
			s, err := e.admin.SummarizeDevices(ctx, herd.SummaryQuery{TenantID: f.tenant.ID, GroupBy: "model",
				Filters: []herd.DeviceFilter{{Field: "firmware", Op: herd.OpEq, Values: []any{"1.0.0"}}, {Field: "key", Op: herd.OpPrefix, Values: []any{"n"}}}})
			if err != nil {
				t.Fatal(err)
			}
			if s.Count != 5 || len(s.Groups) != 2 || s.Groups[0].Key != "co2-10" || s.Groups[0].Count != 2 || s.Groups[1].Key != "th-200" || s.Groups[1].Count != 3 {
				t.Fatalf("summary %+v", s)
			}
		})
		t.Run("Wire", func(t *testing.T) {
			r := e.do("GET", "/v1/devices/summary?node_id="+id(f.n1)+"&fields=battery,rssi", f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			want := `{"count":3,"group_by":"","groups":[{"key":"","count":3,"fields":{"battery":{"count":0,"min":null,"avg":null,"max":null},"rssi":{"count":0,"min":null,"avg":null,"max":null}}}],"source":"devices"}`
			if got := strings.TrimSpace(string(r.Body)); got != want {
				t.Fatalf("body\n%s\nwant\n%s", got, want)
			}
		})
		t.Run("NodeOutsideGrants", func(t *testing.T) {
			// bob holds n1 only: n2, its parent north and south are not his.
			for _, n := range []*herd.Node{f.n2, f.north, f.south} {
				e.do("GET", "/v1/devices/summary?node_id="+id(n), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "node "+id(n))
			}
			e.do("GET", "/v1/devices/summary?node_id=987654321", f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("BadInput", func(t *testing.T) {
			for _, tc := range []struct{ query, code, names string }{
				{"group_by=colour", herd.EINVALID, `group_by "colour"`},
				{"fields=colour", herd.EINVALID, `unknown field "colour"`},
				{"fields=temperature,name", herd.EINVALID, `"name" is not a numeric field`},
				{"filter=temperature:gt:hot", herd.EINVALIDFILTER, `filter "temperature:gt:hot"`},
				{"filter=colour:eq:red", herd.EINVALIDFILTER, `unknown field "colour"`},
				{"limit=10", herd.EINVALID, `unknown query parameter "limit"`},
				{"node_id=north", herd.EINVALID, `node_id "north"`},
				{"filter=status:eq:ok;x=%zz", herd.EINVALID, "malformed query string"},
			} {
				t.Run(tc.query, func(t *testing.T) {
					e.do("GET", "/v1/devices/summary?"+tc.query, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, tc.code, tc.names)
				})
			}
			// The super-admin must name the tenant.
			e.do("GET", "/v1/devices/summary", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
		})
		t.Run("Unauthenticated", func(t *testing.T) {
			e.do("GET", "/v1/devices/summary", "", nil).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
		})
	})
}
