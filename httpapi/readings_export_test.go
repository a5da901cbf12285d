package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// exportEnv is a server with the history over a store holding readings of
// the test fleet: every device reports at t0, t0+1s, … t0+9s.
func exportEnv(t *testing.T) (*env, *fleet, time.Time) {
	t.Helper()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db, func(s *httpapi.Server) { s.HistoryService = sqldb.NewHistoryService(db) })
	f := e.mustCreateFleet()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var items []herd.IngestItem
	for _, d := range f.devices {
		for i := range 10 {
			ts := t0.Add(time.Duration(i) * time.Second).UnixMilli()
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts + 5,
				Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature, Temperature: float64(i), Extra: []byte(`{"k":"` + d.Key + `"}`)}})
		}
	}
	if err := sqldb.NewIngestService(db).Ingest(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	return e, f, t0
}

func TestReadingsExport(t *testing.T) {
	e, f, t0 := exportEnv(t)
	alice := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
	from, to := t0, t0.Add(10*time.Second)

	t.Run("Stream", func(t *testing.T) {
		// alice sees north: n1's three devices and n2's two.
		q := herd.ExportQuery{From: from, To: to, Filters: []herd.DeviceFilter{{Field: "model", Op: "eq", Values: []any{"th-200"}}}}
		req, _ := http.NewRequest("GET", e.srv.URL()+"/v1/readings/export?"+q.Values("ndjson").Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+f.aliceToken.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		// Go's transport asked for gzip and unpacked it.
		if !resp.Uncompressed {
			t.Fatal("the stream was not gzip-compressed for a client that takes it")
		}
		var lines []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		// n1-a, n1-b and n2-a are th-200 in north: 3 devices × 10 readings.
		if len(lines) != 31 || lines[30] != `{"end":true,"count":30}` {
			t.Fatalf("%d lines, last %q", len(lines), lines[len(lines)-1])
		}
		want := []string{f.devices["n1-a"].Key, f.devices["n1-b"].Key, f.devices["n2-a"].Key}
		for i, l := range lines[:30] {
			var r herd.ExportReading
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("line %d %q: %v", i, l, err)
			}
			// Time order, then device id (created in the order of want).
			if key := want[i%3]; r.Key != key || r.DeviceID != f.devices[key].ID || !r.TS.Equal(t0.Add(time.Duration(i/3)*time.Second)) ||
				r.Temperature == nil || *r.Temperature != float64(i/3) || string(r.Extra) != `{"k":"`+key+`"}` || !r.ReceivedAt.Equal(r.TS.Add(5*time.Millisecond)) {
				t.Fatalf("line %d: %s", i, l)
			}
		}
		// The client reads the same stream.
		var got []string
		err = alice.ExportReadings(context.Background(), q, func(r *herd.ExportReading) error {
			b, _ := json.Marshal(r)
			got = append(got, string(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, lines[:30]) {
			t.Fatalf("client read %d readings:\n%v\nwant\n%v", len(got), got, lines[:30])
		}
	})
	t.Run("Identity", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.srv.URL()+"/v1/readings/export?"+herd.ExportQuery{From: from, To: to}.Values("").Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+f.aliceToken.Secret)
		req.Header.Set("Accept-Encoding", "gzip;q=0, identity")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		// alice's five devices × 10 readings, then the trailer.
		if resp.Header.Get("Content-Encoding") != "" || !strings.HasSuffix(string(body), "\n{\"end\":true,\"count\":50}\n") {
			t.Fatalf("encoding %q, body ends %q", resp.Header.Get("Content-Encoding"), body[max(0, len(body)-60):])
		}
	})
	t.Run("Empty", func(t *testing.T) {
		q := herd.ExportQuery{From: to, To: to.Add(time.Hour)}
		n := 0
		if err := alice.ExportReadings(context.Background(), q, func(*herd.ExportReading) error { n++; return nil }); err != nil || n != 0 {
			t.Fatalf("got %v and %d readings", err, n)
		}
	})
	t.Run("BadInput", func(t *testing.T) {
		tok := f.aliceToken.Secret
		for _, tc := range []struct {
			query  string
			status int
			code   string
			part   string
		}{
			{"limit=5", 400, herd.EINVALID, `unknown query parameter "limit"`},
			{"from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", 400, herd.EINVALID, "must come before to"},
			{"format=parquet", 400, herd.EINVALID, "ndjson only"},
			{"format=xml", 400, herd.EINVALID, "not an export format"},
			{"filter=colour:eq:red", 400, herd.EINVALIDFILTER, "colour"},
			{fmt.Sprintf("node_id=%d", f.south.ID), 404, herd.ENOTFOUND, "not found"},
		} {
			e.do("GET", "/v1/readings/export?"+tc.query, tok, nil).wantError(t, tc.status, tc.code, tc.part)
		}
		e.do("GET", "/v1/readings/export", "", nil).wantError(t, 401, herd.EUNAUTHORIZED)
	})
}

// slowHistory streams n readings, one every gap, and fails after them with
// fail when it is set. It stops when its context ends.
type slowHistory struct {
	herd.HistoryService
	n    int
	gap  time.Duration
	fail error
}

func (h slowHistory) ExportReadings(ctx context.Context, q herd.ExportQuery, each func(*herd.ExportReading) error) error {
	for i := range h.n {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(h.gap):
			}
		}
		if err := each(&herd.ExportReading{DeviceID: int64(i + 1), Key: "k", HistoryReading: herd.HistoryReading{TS: q.From.Add(time.Duration(i) * time.Millisecond)}}); err != nil {
			return err
		}
	}
	return h.fail
}

func TestReadingsExportOutlivesRequestTimeout(t *testing.T) {
	// 12 readings 100 ms apart: more than four times the request timeout.
	e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite), func(s *httpapi.Server) {
		s.RequestTimeout = 250 * time.Millisecond
		s.HistoryService = slowHistory{n: 12, gap: 100 * time.Millisecond}
	})
	start := time.Now()
	n := 0
	err := e.admin.ExportReadings(context.Background(), herd.ExportQuery{TenantID: 1, From: time.UnixMilli(0), To: time.UnixMilli(1000)}, func(*herd.ExportReading) error { n++; return nil })
	if err != nil || n != 12 {
		t.Fatalf("got %v after %d readings in %s", err, n, time.Since(start))
	}
	if d := time.Since(start); d < 1100*time.Millisecond {
		t.Fatalf("export took %s: the test did not outlast the timeout", d)
	}
}

func TestReadingsExportTruncated(t *testing.T) {
	t.Run("ErrorLine", func(t *testing.T) {
		e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite), func(s *httpapi.Server) {
			s.HistoryService = slowHistory{n: 3, fail: herd.Errorf(herd.ECONFLICT, "the store went away")}
		})
		n := 0
		err := e.admin.ExportReadings(context.Background(), herd.ExportQuery{TenantID: 1, From: time.UnixMilli(0), To: time.UnixMilli(1000)}, func(*herd.ExportReading) error { n++; return nil })
		if n != 3 || herd.ErrorCode(err) != herd.ECONFLICT || !strings.Contains(err.Error(), "after 3 readings") {
			t.Fatalf("got %v (%s) after %d readings", err, herd.ErrorCode(err), n)
		}
	})
	for name, body := range map[string]string{
		"NoTrailer":  `{"device_id":"1","key":"k","ts":"2026-12-01T00:00:00Z","received_at":"2026-12-01T00:00:00Z"}` + "\n",
		"BadCount":   `{"device_id":"1","key":"k","ts":"2026-12-01T00:00:00Z","received_at":"2026-12-01T00:00:00Z"}` + "\n" + `{"end":true,"count":2}` + "\n",
		"CutInALine": `{"device_id":"1","key":"k","ts":"2026-12-01T00:0`,
	} {
		t.Run(name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-ndjson")
				fmt.Fprint(w, body)
			}))
			defer hs.Close()
			n := 0
			err := httpapi.NewClient(hs.URL, "t").ExportReadings(context.Background(), herd.ExportQuery{From: time.UnixMilli(0), To: time.UnixMilli(1)}, func(*herd.ExportReading) error { n++; return nil })
			if err == nil {
				t.Fatalf("a cut export read as whole after %d readings", n)
			}
			t.Log(err)
		})
	}
}

// endlessHistory streams readings until its context ends or each fails,
// and says which on done.
type endlessHistory struct {
	herd.HistoryService
	done chan error
}

func (h endlessHistory) ExportReadings(ctx context.Context, q herd.ExportQuery, each func(*herd.ExportReading) error) error {
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			h.done <- err
			return err
		}
		if err := each(&herd.ExportReading{DeviceID: int64(i + 1), Key: "k", HistoryReading: herd.HistoryReading{TS: q.From}}); err != nil {
			h.done <- err
			return err
		}
	}
}

// TestReadingsExportClientGone: an export whose client hangs up stops,
// though its context no longer carries the request's deadline.
func TestReadingsExportClientGone(t *testing.T) {
	h := endlessHistory{done: make(chan error, 1)}
	e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite), func(s *httpapi.Server) { s.HistoryService = h })
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := e.admin.ExportReadings(ctx, herd.ExportQuery{TenantID: 1, From: time.UnixMilli(0), To: time.UnixMilli(1000)}, func(*herd.ExportReading) error {
		if n++; n == 5000 {
			cancel() // the client goes away mid-stream
		}
		return nil
	})
	if err == nil {
		t.Fatal("an endless export ended well")
	}
	select {
	case err := <-h.done:
		t.Logf("the export stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the export goes on after its client went away")
	}
}
