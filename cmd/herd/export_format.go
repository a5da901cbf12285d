package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/herd-iot/herd"
	"github.com/parquet-go/parquet-go"
)

// defaultRowGroup is the Parquet row group of an export: 128k readings make
// groups of a few MB compressed, large enough for the columnar reads of
// DuckDB and ClickHouse and small enough that the writer holds one in
// memory without notice.
const defaultRowGroup = 128 << 10

// parquetReading is a row of an export's Parquet file: typed columns, the
// times as TIMESTAMP(MILLIS, UTC), a field the device did not send NULL,
// the extras as a JSON string.
type parquetReading struct {
	DeviceID    int64     `parquet:"device_id"`
	Key         string    `parquet:"key,dict"`
	TS          time.Time `parquet:"ts,timestamp(millisecond:utc),delta"`
	ReceivedAt  time.Time `parquet:"received_at,timestamp(millisecond:utc),delta"`
	Temperature *float64  `parquet:"temperature,optional"`
	Humidity    *float64  `parquet:"humidity,optional"`
	Pressure    *float64  `parquet:"pressure,optional"`
	Voltage     *float64  `parquet:"voltage,optional"`
	Current     *float64  `parquet:"current,optional"`
	Power       *float64  `parquet:"power,optional"`
	Battery     *float64  `parquet:"battery,optional"`
	RSSI        *int64    `parquet:"rssi,optional"`
	UptimeS     *int64    `parquet:"uptime_s,optional"`
	ErrorCount  *int64    `parquet:"error_count,optional"`
	Status      *string   `parquet:"status,optional,dict"`
	Firmware    *string   `parquet:"firmware,optional,dict"`
	Extra       *string   `parquet:"extra,optional,json"`
}

func toParquet(r *herd.ExportReading) parquetReading {
	p := parquetReading{
		DeviceID: r.DeviceID, Key: r.Key, TS: r.TS.UTC(), ReceivedAt: r.ReceivedAt.UTC(),
		Temperature: r.Temperature, Humidity: r.Humidity, Pressure: r.Pressure, Voltage: r.Voltage,
		Current: r.Current, Power: r.Power, Battery: r.Battery,
		RSSI: r.RSSI, UptimeS: r.UptimeS, ErrorCount: r.ErrorCount,
		Status: r.Status, Firmware: r.Firmware,
	}
	if len(r.Extra) > 0 {
		s := string(r.Extra)
		p.Extra = &s
	}
	return p
}

// readingsWriter writes an export's readings to a file; Close finishes the
// file (the Parquet footer, the buffers) without closing what it writes to.
type readingsWriter interface {
	Write(*herd.ExportReading) error
	Close() error
}

func newReadingsWriter(format string, w io.Writer, rowGroup int) (readingsWriter, error) {
	switch format {
	case herd.ExportParquet:
		pw := parquet.NewGenericWriter[parquetReading](w,
			parquet.Compression(&parquet.Zstd),
			parquet.MaxRowsPerRowGroup(int64(rowGroup)),
			parquet.CreatedBy("herd", herd.Version, ""),
		)
		return &parquetWriter{w: pw, buf: make([]parquetReading, 0, 1024)}, nil
	case herd.ExportCSV:
		bw := bufio.NewWriterSize(w, 64<<10)
		cw := csv.NewWriter(bw)
		if err := cw.Write(csvHeader); err != nil {
			return nil, err
		}
		return &csvWriter{bw: bw, w: cw, rec: make([]string, len(csvHeader))}, nil
	case herd.ExportNDJSON:
		bw := bufio.NewWriterSize(w, 64<<10)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		return &ndjsonWriter{bw: bw, enc: enc}, nil
	}
	return nil, fmt.Errorf("unknown format %q", format)
}

// parquetWriter hands rows to parquet-go a batch at a time: one call per
// row would cost a reflection walk each.
type parquetWriter struct {
	w   *parquet.GenericWriter[parquetReading]
	buf []parquetReading
}

func (p *parquetWriter) Write(r *herd.ExportReading) error {
	p.buf = append(p.buf, toParquet(r))
	if len(p.buf) == cap(p.buf) {
		return p.flush()
	}
	return nil
}

func (p *parquetWriter) flush() error {
	if _, err := p.w.Write(p.buf); err != nil {
		return err
	}
	p.buf = p.buf[:0]
	return nil
}

func (p *parquetWriter) Close() error {
	if err := p.flush(); err != nil {
		return err
	}
	return p.w.Close()
}

// csvHeader names the CSV columns: those of the Parquet file, in its order.
var csvHeader = []string{"device_id", "key", "ts", "received_at", "temperature", "humidity", "pressure", "voltage",
	"current", "power", "battery", "rssi", "uptime_s", "error_count", "status", "firmware", "extra"}

// csvTime is how the CSV writes times: RFC 3339 in UTC with milliseconds,
// which DuckDB, ClickHouse and spreadsheets all read as a timestamp.
const csvTime = "2006-01-02T15:04:05.000Z"

type csvWriter struct {
	bw  *bufio.Writer
	w   *csv.Writer
	rec []string
}

func (c *csvWriter) Write(r *herd.ExportReading) error {
	f := func(p *float64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatFloat(*p, 'g', -1, 64)
	}
	i := func(p *int64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatInt(*p, 10)
	}
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	c.rec = append(c.rec[:0], strconv.FormatInt(r.DeviceID, 10), r.Key, r.TS.UTC().Format(csvTime), r.ReceivedAt.UTC().Format(csvTime),
		f(r.Temperature), f(r.Humidity), f(r.Pressure), f(r.Voltage), f(r.Current), f(r.Power), f(r.Battery),
		i(r.RSSI), i(r.UptimeS), i(r.ErrorCount), s(r.Status), s(r.Firmware), string(r.Extra))
	return c.w.Write(c.rec)
}

func (c *csvWriter) Close() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return err
	}
	return c.bw.Flush()
}

// ndjsonWriter writes the readings as the API streams them, one JSON
// object a line, without the trailer: a file that exists is whole (it is
// renamed into place only after the stream's trailer was read).
type ndjsonWriter struct {
	bw  *bufio.Writer
	enc *json.Encoder
}

func (n *ndjsonWriter) Write(r *herd.ExportReading) error { return n.enc.Encode(r) }
func (n *ndjsonWriter) Close() error                      { return n.bw.Flush() }
