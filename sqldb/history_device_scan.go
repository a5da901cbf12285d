package sqldb

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/herd-iot/herd"
)

// readingScanner turns the rows of a raw page (ts, received_at, the typed
// columns cols, and extra when withExtra) into HistoryReadings. A page is
// up to 10,000 rows of up to fifteen columns, and the work per column is
// most of a page's time once SQLite has found the row: so the row is
// scanned into one reused []any (database/sql hands a driver value to an
// *any as it is, where a **float64 goes through reflection and an
// allocation), and the readings and their numbers are cut from slabs, not
// allocated one by one.
type readingScanner struct {
	cols      []string
	withExtra bool
	all       bool     // every field: extras kept whole
	keys      []string // else the extras' keys to keep
	vals      []any
	dest      []any
	readings  []herd.HistoryReading
	floats    []float64
	ints      []int64
}

func newReadingScanner(cols []string, withExtra, all bool, keys []string) *readingScanner {
	n := 2 + len(cols)
	if withExtra {
		n++
	}
	s := &readingScanner{cols: cols, withExtra: withExtra, all: all, keys: keys, vals: make([]any, n), dest: make([]any, n)}
	for i := range s.vals {
		s.dest[i] = &s.vals[i]
	}
	return s
}

const scanSlab = 256

func (s *readingScanner) float(v float64) *float64 {
	if len(s.floats) == cap(s.floats) {
		s.floats = make([]float64, 0, 4*scanSlab)
	}
	s.floats = append(s.floats, v)
	return &s.floats[len(s.floats)-1]
}

func (s *readingScanner) int(v int64) *int64 {
	if len(s.ints) == cap(s.ints) {
		s.ints = make([]int64, 0, scanSlab)
	}
	s.ints = append(s.ints, v)
	return &s.ints[len(s.ints)-1]
}

// scan reads the current row; it returns the reading and its ts in
// milliseconds (the page's cursor).
func (s *readingScanner) scan(rows *sql.Rows) (*herd.HistoryReading, int64, error) {
	if err := rows.Scan(s.dest...); err != nil {
		return nil, 0, err
	}
	ts, err := scanInt(s.vals[0], "ts")
	if err != nil {
		return nil, 0, err
	}
	recv, err := scanInt(s.vals[1], "received_at")
	if err != nil {
		return nil, 0, err
	}
	if len(s.readings) == cap(s.readings) {
		s.readings = make([]herd.HistoryReading, 0, scanSlab)
	}
	s.readings = append(s.readings, herd.HistoryReading{TS: time.UnixMilli(ts).UTC(), ReceivedAt: time.UnixMilli(recv).UTC()})
	r := &s.readings[len(s.readings)-1]
	for i, c := range s.cols {
		v := s.vals[2+i]
		if v == nil {
			continue
		}
		if err := s.set(r, c, v); err != nil {
			return nil, 0, err
		}
	}
	if s.withExtra {
		if err := s.extra(r, s.vals[len(s.vals)-1]); err != nil {
			return nil, 0, err
		}
	}
	return r, ts, nil
}

// set stores the non-NULL value v of column c in r.
func (s *readingScanner) set(r *herd.HistoryReading, c string, v any) error {
	var fp **float64
	var ip **int64
	var sp **string
	switch c {
	case "temperature":
		fp = &r.Temperature
	case "humidity":
		fp = &r.Humidity
	case "pressure":
		fp = &r.Pressure
	case "voltage":
		fp = &r.Voltage
	case "current":
		fp = &r.Current
	case "power":
		fp = &r.Power
	case "battery":
		fp = &r.Battery
	case "rssi":
		ip = &r.RSSI
	case "uptime_s":
		ip = &r.UptimeS
	case "error_count":
		ip = &r.ErrorCount
	case "status":
		sp = &r.Status
	case "firmware":
		sp = &r.Firmware
	default:
		return fmt.Errorf("scan a reading: no field %q", c)
	}
	switch {
	case fp != nil:
		switch x := v.(type) {
		case float64:
			*fp = s.float(x)
		case int64: // SQLite may hand back a whole REAL as an integer
			*fp = s.float(float64(x))
		default:
			return fmt.Errorf("scan a reading: %s is a %T, not a number", c, v)
		}
	case ip != nil:
		x, err := scanInt(v, c)
		if err != nil {
			return err
		}
		*ip = s.int(x)
	default:
		switch x := v.(type) {
		case string:
			*sp = &x
		case []byte:
			str := string(x)
			*sp = &str
		default:
			return fmt.Errorf("scan a reading: %s is a %T, not text", c, v)
		}
	}
	return nil
}

func scanInt(v any, c string) (int64, error) {
	if x, ok := v.(int64); ok {
		return x, nil
	}
	return 0, fmt.Errorf("scan a reading: %s is a %T, not an integer", c, v)
}

// extra keeps a reading's extras: whole when every field was asked for,
// else only the keys asked for (none kept: no extras).
func (s *readingScanner) extra(r *herd.HistoryReading, v any) error {
	var raw []byte
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		raw = []byte(x)
	case []byte:
		raw = x // database/sql copied it into the *any
	default:
		return fmt.Errorf("scan a reading: extra is a %T, not text", v)
	}
	if len(raw) == 0 {
		return nil
	}
	if s.all {
		r.Extra = json.RawMessage(raw)
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("scan a reading's extra: %w", err)
	}
	kept := map[string]json.RawMessage{}
	for _, k := range s.keys {
		if v, ok := m[k]; ok {
			kept[k] = v
		}
	}
	if len(kept) == 0 {
		return nil
	}
	buf, err := json.Marshal(kept)
	if err != nil {
		return fmt.Errorf("encode a reading's extra: %w", err)
	}
	r.Extra = buf
	return nil
}
