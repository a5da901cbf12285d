package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestDeviceReadingsAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.HistoryService = sqldb.NewHistoryService(db) })
		f := e.mustCreateFleet()
		dev, far := f.devices["n1-a"], f.devices["s1-a"]
		// An hour of readings a minute apart from 10:00 UTC, temperature
		// i and co2 10*i among the extras.
		t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		var items []herd.IngestItem
		for i := range 60 {
			ts := t0.Add(time.Duration(i) * time.Minute).UnixMilli()
			for _, d := range []*herd.Device{dev, far} {
				items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts,
					Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature, Temperature: float64(i), Extra: fmt.Appendf(nil, `{"co2":%d}`, 10*i)}})
			}
		}
		if err := sqldb.NewIngestService(db).Ingest(context.Background(), items); err != nil {
			t.Fatal(err)
		}
		alice := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
		ctx := context.Background()
		from, to := t0, t0.Add(time.Hour)

		t.Run("Raw", func(t *testing.T) {
			var all []*herd.HistoryReading
			q := herd.ReadingsQuery{DeviceID: dev.ID, From: from, To: to, Limit: 25, Fields: []string{"temperature", "extra.co2"}}
			for {
				p, err := alice.DeviceReadings(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, p.Items...)
				if p.NextCursor == "" {
					break
				}
				q.Cursor = p.NextCursor
			}
			if len(all) != 60 {
				t.Fatalf("%d readings, want 60", len(all))
			}
			for i, r := range all {
				if !r.TS.Equal(t0.Add(time.Duration(i)*time.Minute)) || r.Temperature == nil || *r.Temperature != float64(i) || string(r.Extra) != fmt.Sprintf(`{"co2":%d}`, 10*i) {
					t.Fatalf("reading %d: %+v %s", i, r, r.Extra)
				}
			}
			// The wire form: RFC 3339 times.
			r := e.do("GET", fmt.Sprintf("/v1/devices/%d/readings?from=%s&to=%s&limit=1", dev.ID, url.QueryEscape(from.Format(time.RFC3339)), url.QueryEscape(to.Format(time.RFC3339))), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var raw struct {
				Items []map[string]any `json:"items"`
				Next  string           `json:"next_cursor"`
			}
			r.decode(t, &raw)
			if len(raw.Items) != 1 || raw.Items[0]["ts"] != "2026-12-01T10:00:00Z" || raw.Next == "" {
				t.Fatalf("body %s", r.Body)
			}
		})
		t.Run("Stepped", func(t *testing.T) {
			// 25-minute steps over the hour: 0-24, 25-49, 50-59 (the last
			// one partial).
			res, err := alice.DeviceSeries(ctx, herd.ReadingsQuery{DeviceID: dev.ID, From: from, To: to, Step: 25 * time.Minute, Agg: herd.AggSum, Fields: []string{"temperature", "extra.co2"}})
			if err != nil {
				t.Fatal(err)
			}
			ms := func(m int) int64 { return t0.Add(time.Duration(m) * time.Minute).UnixMilli() }
			sum := func(a, b int) float64 { return float64((a + b) * (b - a + 1) / 2) }
			want := []herd.Series{
				{Field: "temperature", Points: []herd.Point{{TS: ms(0), Value: sum(0, 24)}, {TS: ms(25), Value: sum(25, 49)}, {TS: ms(50), Value: sum(50, 59)}}},
				{Field: "extra.co2", Points: []herd.Point{{TS: ms(0), Value: 10 * sum(0, 24)}, {TS: ms(25), Value: 10 * sum(25, 49)}, {TS: ms(50), Value: 10 * sum(50, 59)}}},
			}
			if fmt.Sprint(res.Series) != fmt.Sprint(want) || res.Step != "25m" || res.Agg != "sum" {
				t.Fatalf("got %+v, want %+v", res, want)
			}
			r := e.do("GET", fmt.Sprintf("/v1/devices/%d/readings?from=%d&to=%d&step=1h&fields=temperature&agg=count", dev.ID, from.UnixMilli(), to.UnixMilli()), f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			if want := fmt.Sprintf(`"series":[{"field":"temperature","points":[[%d,60]]}]`, from.UnixMilli()); !strings.Contains(string(r.Body), want) {
				t.Fatalf("body %s, want %s", r.Body, want)
			}
		})
		t.Run("BadInput", func(t *testing.T) {
			base := fmt.Sprintf("/v1/devices/%d/readings?", dev.ID)
			for _, tc := range []struct{ query, code, mention string }{
				{"fields=temperature,colour", herd.EINVALID, `"colour"`},
				{"from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z&step=1m", herd.EINVALID, "more than the limit of 10000"},
				{"from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", herd.EINVALID, "must come before to"},
				{"agg=avg", herd.EINVALID, "needs a step"},
				{"cursor=bogus.cursor", herd.EINVALIDCURSOR, "cursor"},
				{"cursor=%2B%2B", herd.EINVALIDCURSOR, "cursor"},
				{"limit=10001", herd.EINVALIDLIMIT, "limit"},
				{"fields=status&step=1h", herd.EINVALID, "status"},
				{"page=2", herd.EINVALID, `"page"`},
			} {
				e.do("GET", base+tc.query, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, tc.code, tc.mention)
			}
			// A cursor of another device's readings.
			p, err := alice.DeviceReadings(ctx, herd.ReadingsQuery{DeviceID: dev.ID, From: from, To: to, Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			other := f.devices["n1-b"].ID
			e.do("GET", fmt.Sprintf("/v1/devices/%d/readings?cursor=%s", other, p.NextCursor), f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR, "another device")
		})
		t.Run("OutsideGrants", func(t *testing.T) {
			for _, q := range []string{"", "step=1h"} {
				e.do("GET", fmt.Sprintf("/v1/devices/%d/readings?%s", far.ID, q), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, fmt.Sprintf("device %d not found", far.ID))
				e.do("GET", fmt.Sprintf("/v1/devices/%d/readings?%s", dev.ID+1000, q), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			}
			_, err := alice.DeviceSeries(ctx, herd.ReadingsQuery{DeviceID: far.ID, From: from, To: to, Step: time.Hour, Agg: herd.AggAvg})
			if herd.ErrorCode(err) != herd.ENOTFOUND {
				t.Fatalf("client: %v", err)
			}
			// The super-admin sees it.
			p, err := e.admin.DeviceReadings(ctx, herd.ReadingsQuery{DeviceID: far.ID, From: from, To: to, Limit: 100})
			if err != nil || len(p.Items) != 60 {
				t.Fatalf("admin: %v", err)
			}
		})
	})
}
