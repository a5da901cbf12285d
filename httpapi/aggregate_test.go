package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestAggregateAPI: GET /v1/readings/aggregate over the caller's scope
// (alice sees north, not south), grouped by node under the scope's root,
// through the Go client; bad input is a 400 naming the parameter, a node
// outside the grants a 404.
func TestAggregateAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.HistoryService = sqldb.NewHistoryService(db) })
		f := e.mustCreateFleet()
		base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		var items []herd.IngestItem
		for key, temp := range map[string]float64{"n1-a": 10, "n1-b": 20, "n2-a": 30, "s1-a": 1000} {
			d := f.devices[key]
			for h := range 3 {
				ts := base.Add(time.Duration(h)*time.Hour + 10*time.Minute).UnixMilli()
				items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: f.tenant.ID, At: ts,
					Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature, Temperature: temp + float64(h)}})
			}
		}
		if err := sqldb.NewIngestService(db).Ingest(context.Background(), items); err != nil {
			t.Fatal(err)
		}
		alice := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
		q := herd.AggregateQuery{Field: "temperature", Aggs: []string{herd.AggAvg, herd.AggMax, herd.AggCount}, From: base, To: base.Add(3 * time.Hour), Step: time.Hour}
		res, err := alice.AggregateReadings(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		// north only: n1-a 10,11,12, n1-b 20,21,22, n2-a 30,31,32.
		want := map[string][]float64{herd.AggAvg: {20, 21, 22}, herd.AggMax: {30, 31, 32}, herd.AggCount: {3, 3, 3}}
		if res.Source != "rollup_1h" || len(res.Series) != 3 {
			t.Fatalf("got %+v", res)
		}
		for _, s := range res.Series {
			for i, p := range s.Points {
				if p.TS != base.Add(time.Duration(i)*time.Hour).UnixMilli() || p.Value != want[s.Agg][i] {
					t.Fatalf("%s point %d = %+v, want %v at hour %d", s.Agg, i, p, want[s.Agg][i], i)
				}
			}
		}
		q.GroupBy, q.Aggs = "node", []string{herd.AggAvg}
		res, err = alice.AggregateReadings(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		groups := map[string]string{}
		for _, s := range res.Series {
			groups[s.Group] = s.GroupName
		}
		if len(groups) != 2 || groups[strconv.FormatInt(f.n1.ID, 10)] != "n1" || groups[strconv.FormatInt(f.n2.ID, 10)] != "n2" {
			t.Fatalf("groups under north: %v", groups)
		}

		for _, c := range []struct{ query, code, part string }{
			{"field=temperature&bogus=1", herd.EINVALID, "bogus"},
			{"", herd.EINVALID, "field is required"},
			{"field=status", herd.EINVALID, "status"},
			{"field=temperature&agg=median", herd.EINVALID, "median"},
			{"field=temperature&step=30s", herd.EINVALID, "whole minutes"},
			{"field=temperature&step=1m&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", herd.EINVALID, "more than the limit"},
			{"field=temperature&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", herd.EINVALID, "before"},
			{"field=temperature&from=yesterday", herd.EINVALID, "from"},
			{"field=temperature&group_by=status", herd.EINVALID, "group_by"},
			{"field=temperature&filter=colour:eq:red", herd.EINVALIDFILTER, "colour"},
			{"field=temperature&filter=model:eq:%zz", herd.EINVALID, "malformed query string"},
		} {
			e.do("GET", "/v1/readings/aggregate?"+c.query, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, c.code, c.part)
		}
		e.do("GET", "/v1/readings/aggregate?field=temperature&node_id="+strconv.FormatInt(f.s1.ID, 10), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		v := url.Values{"field": {"temperature"}, "node_id": {strconv.FormatInt(f.s1.ID, 10)}, "tenant_id": {strconv.FormatInt(f.tenant.ID, 10)}, "from": {base.Format(time.RFC3339)}, "to": {base.Add(3 * time.Hour).Format(time.RFC3339)}}
		r := e.do("GET", "/v1/readings/aggregate?"+v.Encode(), adminSecret, nil)
		r.wantStatus(t, http.StatusOK)
	})
}
