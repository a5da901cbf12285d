package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
	"github.com/parquet-go/parquet-go"
)

// exportStore is a store with a fleet and its readings, made before herd
// serves it: north (sites n1, n2) and south, a viewer of north, and every
// device reporting random fields every 10 s for an hour.
type exportStore struct {
	path         string
	viewer       string // the viewer's token
	north, n2    int64
	readings     []*herd.ExportReading // every reading, in (ts, device_id) order
	devices      map[int64]*herd.Device
	t0           time.Time
	southDevices map[int64]bool
}

func newExportStore(t *testing.T, store string) *exportStore {
	t.Helper()
	x := &exportStore{path: store, devices: map[int64]*herd.Device{}, southDevices: map[int64]bool{},
		t0: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	db := sqldb.NewDB(x.path)
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := testutil.SuperContext()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ten := &herd.Tenant{Name: "export"}
	must(sqldb.NewTenantService(db).CreateTenant(ctx, ten))
	nodes := sqldb.NewNodeService(db)
	node := func(parent int64, name string) *herd.Node {
		n := &herd.Node{ParentID: parent, Kind: "site", Name: name}
		must(nodes.CreateNode(ctx, n))
		return n
	}
	north, south := node(ten.RootNodeID, "north"), node(ten.RootNodeID, "south")
	n1, n2 := node(north.ID, "n1"), node(north.ID, "n2")
	x.north, x.n2 = north.ID, n2.ID
	var ds []*herd.Device
	for i, n := range []*herd.Node{n1, n1, n1, n2, n2, south, south} {
		ds = append(ds, &herd.Device{NodeID: n.ID, Key: fmt.Sprintf("exp-%d", i), Model: []string{"th-200", "co2-10"}[i%2]})
	}
	must(sqldb.NewDeviceService(db).CreateDevices(ctx, ds))
	for _, d := range ds {
		x.devices[d.ID] = d
		if d.NodeID == south.ID {
			x.southDevices[d.ID] = true
		}
	}
	users := sqldb.NewUserService(db)
	u := &herd.User{TenantID: ten.ID, Name: "viewer"}
	must(users.CreateUser(ctx, u))
	must(sqldb.NewGrantService(db).CreateGrant(ctx, &herd.Grant{UserID: u.ID, NodeID: north.ID, Role: herd.RoleViewer}))
	tok, err := users.CreateToken(ctx, u.ID)
	must(err)
	x.viewer = tok.Secret

	rng := rand.New(rand.NewPCG(5, 14))
	var items []herd.IngestItem
	for step := range 360 {
		ts := x.t0.Add(time.Duration(step) * 10 * time.Second).UnixMilli()
		for _, d := range ds {
			r := herd.Reading{TS: ts, Has: herd.ReadingFields(rng.IntN(1 << 12)),
				Temperature: rng.NormFloat64()*5 + 20, Humidity: rng.Float64() * 100, Pressure: 1013.25, Voltage: 3.3, Current: 0.1,
				Power: rng.Float64(), Battery: rng.Float64() * 100, RSSI: -int64(rng.IntN(90)), UptimeS: int64(step) * 10, ErrorCount: int64(rng.IntN(3)),
				Status: "ok", Firmware: "1.2.3"}
			if rng.IntN(3) == 0 {
				r.Extra = fmt.Appendf(nil, `{"fan":%d,"note":"a, \"quoted\"\nline"}`, rng.IntN(9))
			}
			at := ts + int64(rng.IntN(300))
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: at, Reading: r})
			x.readings = append(x.readings, exportedReading(d, at, r))
		}
	}
	ingest := sqldb.NewIngestService(db)
	for len(items) > 0 {
		n := min(len(items), 500)
		must(ingest.Ingest(context.Background(), items[:n]))
		items = items[n:]
	}
	return x
}

func exportedReading(d *herd.Device, at int64, r herd.Reading) *herd.ExportReading {
	e := &herd.ExportReading{DeviceID: d.ID, Key: d.Key}
	e.TS, e.ReceivedAt = time.UnixMilli(r.TS).UTC(), time.UnixMilli(at).UTC()
	for _, f := range []struct {
		bit herd.ReadingFields
		set func()
	}{
		{herd.ReadingTemperature, func() { e.Temperature = new(r.Temperature) }},
		{herd.ReadingHumidity, func() { e.Humidity = new(r.Humidity) }},
		{herd.ReadingPressure, func() { e.Pressure = new(r.Pressure) }},
		{herd.ReadingVoltage, func() { e.Voltage = new(r.Voltage) }},
		{herd.ReadingCurrent, func() { e.Current = new(r.Current) }},
		{herd.ReadingPower, func() { e.Power = new(r.Power) }},
		{herd.ReadingBattery, func() { e.Battery = new(r.Battery) }},
		{herd.ReadingRSSI, func() { e.RSSI = new(r.RSSI) }},
		{herd.ReadingUptimeS, func() { e.UptimeS = new(r.UptimeS) }},
		{herd.ReadingErrorCount, func() { e.ErrorCount = new(r.ErrorCount) }},
		{herd.ReadingStatus, func() { e.Status = new(r.Status) }},
		{herd.ReadingFirmware, func() { e.Firmware = new(r.Firmware) }},
	} {
		if r.Has&f.bit != 0 {
			f.set()
		}
	}
	if r.Extra != nil {
		e.Extra = json.RawMessage(r.Extra)
	}
	return e
}

// want is the brute-force export: readings of devices for which keep
// holds, with ts in [from, to).
func (x *exportStore) want(from, to time.Time, keep func(*herd.Device) bool) []*herd.ExportReading {
	var out []*herd.ExportReading
	for _, r := range x.readings {
		if keep(x.devices[r.DeviceID]) && !r.TS.Before(from) && r.TS.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

func sameReadings(t *testing.T, got, want []*herd.ExportReading) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the oracle expects nothing: the case tests nothing")
	}
	if len(got) != len(want) {
		t.Fatalf("file holds %d readings, want %d", len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			g, _ := json.Marshal(got[i])
			w, _ := json.Marshal(want[i])
			t.Fatalf("reading %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

func TestExportReadings(t *testing.T) {
	t.Parallel()
	stores := map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return filepath.Join(t.TempDir(), "herd.db") },
		"postgres": func(t *testing.T) string { return testutil.PostgresSchemaDSN(t) },
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testExportReadings(t, newExportStore(t, stores[name](t)))
		})
	}
}

func testExportReadings(t *testing.T, x *exportStore) {
	p := startHerd(t, "", "--store", x.path)
	dir := t.TempDir()
	from, to := x.t0.Add(10*time.Minute), x.t0.Add(50*time.Minute)
	inNorth := func(d *herd.Device) bool { return !x.southDevices[d.ID] }
	export := func(t *testing.T, args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"readings", "--api", p.url, "--token", x.viewer,
			"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339)}, args...)
		if err := runExport(t.Context(), args, &stdout, &stderr); err != nil {
			t.Fatalf("herd export %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}

	t.Run("Parquet", func(t *testing.T) {
		out := filepath.Join(dir, "north.parquet")
		msg := export(t, "--out", out, "--row-group", "1000")
		want := x.want(from, to, inNorth)
		if !strings.Contains(msg, fmt.Sprintf("wrote %d readings", len(want))) {
			t.Fatalf("final line %q", msg)
		}
		rows, err := parquet.ReadFile[parquetReading](out)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]*herd.ExportReading, len(rows))
		for i, r := range rows {
			got[i] = fromParquet(r)
		}
		sameReadings(t, got, want)
		// The file's layout: row groups of the size asked for, zstd, the
		// times as UTC millisecond timestamps.
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		if n := len(pf.RowGroups()); n != (len(want)+999)/1000 {
			t.Fatalf("%d row groups for %d readings", n, len(want))
		}
		for _, rg := range pf.Metadata().RowGroups {
			for _, c := range rg.Columns {
				if c.MetaData.Codec.String() != "ZSTD" {
					t.Fatalf("column %v compressed with %s", c.MetaData.PathInSchema, c.MetaData.Codec)
				}
			}
		}
		schema := pf.Schema().String()
		for _, col := range []string{"required int64 device_id", "required binary key (STRING)", "required int64 ts (TIMESTAMP(isAdjustedToUTC=true,unit=MILLIS))",
			"optional double temperature", "optional int64 rssi", "optional binary status (STRING)", "optional binary extra (JSON)"} {
			if !strings.Contains(schema, col) {
				t.Fatalf("schema lacks %q:\n%s", col, schema)
			}
		}
		if tmp := tempFiles(t, out); len(tmp) > 0 {
			t.Fatalf("the temporary file stays: %v", tmp)
		}
		t.Logf("%d readings, %d bytes: %.1f bytes a reading", len(want), st.Size(), float64(st.Size())/float64(len(want)))
	})
	t.Run("CSV", func(t *testing.T) {
		out := filepath.Join(dir, "th.csv")
		export(t, "--filter", "model:eq:th-200", "--out", out)
		got := readCSV(t, out)
		sameReadings(t, got, x.want(from, to, func(d *herd.Device) bool { return inNorth(d) && d.Model == "th-200" }))
	})
	t.Run("NDJSON", func(t *testing.T) {
		out := filepath.Join(dir, "n2.data")
		export(t, "--node", strconv.FormatInt(x.n2, 10), "--format", "ndjson", "--out", out)
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var got []*herd.ExportReading
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r herd.ExportReading
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("line %d: %v", len(got)+1, err)
			}
			got = append(got, &r)
		}
		sameReadings(t, got, x.want(from, to, func(d *herd.Device) bool { return d.NodeID == x.n2 }))
	})
	t.Run("Refused", func(t *testing.T) {
		out := filepath.Join(dir, "refused.parquet")
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"--format", "xlsx"}, 2, `--format "xlsx" is not parquet, csv or ndjson`},
			{[]string{"--from", to.Format(time.RFC3339), "--to", from.Format(time.RFC3339)}, 2, "--from/--to: from (2026-12-01T00:50:00Z) must come before to"},
			{[]string{"--from", "yesterday"}, 2, `from "yesterday" is neither an RFC 3339 time`},
			{[]string{"--filter", "colour:eq:red"}, 2, `unknown field "colour"`},
			{[]string{"--row-group", "0"}, 2, "--row-group 0 must be 1 or more"},
			// The server refuses: a node outside the token's grants.
			{[]string{"--node", strconv.FormatInt(x.devices[firstSouth(x)].NodeID, 10)}, 1, "herd answered not_found"},
		} {
			args := append([]string{"export", "readings", "--api", p.url, "--token", x.viewer,
				"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339), "--out", out}, tc.args...)
			cmd := herdCommand(t, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			code := exitCode(t, cmd.Run())
			if code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
				t.Fatalf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), tc.code, tc.msg)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("%v left %s behind", tc.args, out)
			}
			if tmp := tempFiles(t, out); len(tmp) > 0 {
				t.Fatalf("%v left %v behind", tc.args, tmp)
			}
		}
	})
}

func firstSouth(x *exportStore) int64 {
	for id := range x.southDevices {
		return id
	}
	return 0
}

func fromParquet(p parquetReading) *herd.ExportReading {
	e := &herd.ExportReading{DeviceID: p.DeviceID, Key: p.Key}
	e.TS, e.ReceivedAt = p.TS.UTC(), p.ReceivedAt.UTC()
	e.Temperature, e.Humidity, e.Pressure, e.Voltage = p.Temperature, p.Humidity, p.Pressure, p.Voltage
	e.Current, e.Power, e.Battery = p.Current, p.Power, p.Battery
	e.RSSI, e.UptimeS, e.ErrorCount = p.RSSI, p.UptimeS, p.ErrorCount
	e.Status, e.Firmware = p.Status, p.Firmware
	if p.Extra != nil {
		e.Extra = json.RawMessage(*p.Extra)
	}
	return e
}

// readCSV parses an export's CSV back into readings, column by its
// header name.
func readCSV(t *testing.T, path string) []*herd.ExportReading {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0], csvHeader) {
		t.Fatalf("header %v", recs[0])
	}
	var out []*herd.ExportReading
	for _, rec := range recs[1:] {
		col := map[string]string{}
		for i, h := range recs[0] {
			col[h] = rec[i]
		}
		fl := func(name string) *float64 {
			if col[name] == "" {
				return nil
			}
			v, err := strconv.ParseFloat(col[name], 64)
			if err != nil {
				t.Fatal(err)
			}
			return &v
		}
		in := func(name string) *int64 {
			if col[name] == "" {
				return nil
			}
			v, err := strconv.ParseInt(col[name], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return &v
		}
		st := func(name string) *string {
			if col[name] == "" {
				return nil
			}
			return new(col[name])
		}
		tm := func(name string) time.Time {
			v, err := time.Parse(time.RFC3339Nano, col[name])
			if err != nil {
				t.Fatal(err)
			}
			return v.UTC()
		}
		e := &herd.ExportReading{DeviceID: *in("device_id"), Key: col["key"]}
		e.TS, e.ReceivedAt = tm("ts"), tm("received_at")
		e.Temperature, e.Humidity, e.Pressure, e.Voltage = fl("temperature"), fl("humidity"), fl("pressure"), fl("voltage")
		e.Current, e.Power, e.Battery = fl("current"), fl("power"), fl("battery")
		e.RSSI, e.UptimeS, e.ErrorCount = in("rssi"), in("uptime_s"), in("error_count")
		e.Status, e.Firmware = st("status"), st("firmware")
		if col["extra"] != "" {
			e.Extra = json.RawMessage(col["extra"])
		}
		out = append(out, e)
	}
	return out
}

// TestExportBar: the bar shows the share of the range behind the last
// reading, and clears its line at the end.
func TestExportBar(t *testing.T) {
	var buf bytes.Buffer
	from := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	q := herd.ExportQuery{From: from, To: from.Add(4 * time.Hour)}
	n := int64(7)
	bar := exportBar(&buf, q, &n, &exportCounter{n: 3 << 20})
	bar(&herd.ExportReading{HistoryReading: herd.HistoryReading{TS: from.Add(time.Hour)}}, false)
	if got := buf.String(); !strings.Contains(got, "[#######.......................]  25% 7 readings, 3.0 MiB, at 2026-12-01 01:00:00") {
		t.Fatalf("bar %q", got)
	}
	buf.Reset()
	bar(nil, true)
	if buf.String() != "\r\x1b[K" {
		t.Fatalf("end %q", buf.String())
	}
}

// TestExportCutShort: a stream that ends without its trailer is an error,
// and leaves neither the file nor its temporary behind.
func TestExportCutShort(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := range 3000 {
			fmt.Fprintf(w, `{"device_id":"%d","key":"k","ts":"2026-12-01T00:00:00Z","received_at":"2026-12-01T00:00:00Z"}`+"\n", i+1)
		}
	}))
	defer hs.Close()
	out := filepath.Join(t.TempDir(), "cut.parquet")
	var stdout, stderr bytes.Buffer
	err := runExport(t.Context(), []string{"readings", "--api", hs.URL, "--token", "t", "--from", "0", "--to", "1000", "--out", out}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "cut short after 3000 readings") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a cut export left %s behind", out)
	}
	if tmp := tempFiles(t, out); len(tmp) > 0 {
		t.Fatalf("a cut export left %v behind", tmp)
	}
}

// tempFiles lists the export's temporary files beside out.
func tempFiles(t *testing.T, out string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
