package herd

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Export formats. The API streams NDJSON; herd export readings turns the
// stream into a Parquet or CSV file on the caller's side, so the server
// never holds a file.
const (
	ExportNDJSON  = "ndjson"
	ExportCSV     = "csv"
	ExportParquet = "parquet"
)

// ExportEnd is the last line of an export stream: End is true and Count is
// the number of readings before it. A stream that stops without it was cut
// short (the server failed or the connection broke after the first line)
// and must not be taken for the whole export.
type ExportEnd struct {
	End   bool  `json:"end"`
	Count int64 `json:"count"`
}

// ParseExportQuery parses the query string of GET /v1/readings/export:
// tenant_id (a super-admin's tenant), node_id (narrows the scope to a
// subtree), filter= (the device filter language of GET /v1/devices, any
// number up to MaxFilters), from and to (as ParseHistoryRange reads them)
// and format (ndjson, the default and only format of the API). Unknown
// parameters, and a single-valued one given twice, are refused.
func ParseExportQuery(v url.Values, now time.Time) (q ExportQuery, format string, err error) {
	if err := checkHistoryParams(v, "tenant_id", "node_id", "filter", "from", "to", "format"); err != nil {
		return q, "", err
	}
	if q.TenantID, q.NodeID, q.Filters, err = parseScopeParams(v); err != nil {
		return q, "", err
	}
	if q.From, q.To, err = ParseHistoryRange(v.Get("from"), v.Get("to"), now); err != nil {
		return q, "", err
	}
	switch format = v.Get("format"); format {
	case "":
		format = ExportNDJSON
	case ExportNDJSON:
	case ExportCSV, ExportParquet:
		return q, "", Errorf(EINVALID, "format %q: the API streams ndjson only; herd export readings --format %s writes that file from the stream", format, format)
	default:
		return q, "", Errorf(EINVALID, "format %q is not an export format (ndjson)", format)
	}
	return q, format, nil
}

// Values returns the query string of GET /v1/readings/export that
// ParseExportQuery reads back as q, with format (empty leaves the
// server's default). Whole-millisecond times are written as unix
// milliseconds, which any time.Time of that precision fits (RFC 3339 stops
// at the year 9999); finer ones in RFC 3339.
func (q ExportQuery) Values(format string) url.Values {
	v := url.Values{}
	if q.TenantID != 0 {
		v.Set("tenant_id", strconv.FormatInt(q.TenantID, 10))
	}
	if q.NodeID != 0 {
		v.Set("node_id", strconv.FormatInt(q.NodeID, 10))
	}
	for _, f := range q.Filters {
		v.Add("filter", f.String())
	}
	v.Set("from", formatExportTime(q.From))
	v.Set("to", formatExportTime(q.To))
	if format != "" {
		v.Set("format", format)
	}
	return v
}

func formatExportTime(t time.Time) string {
	if t.Nanosecond()%int(time.Millisecond) == 0 {
		return strconv.FormatInt(t.UnixMilli(), 10)
	}
	return t.Format(time.RFC3339Nano)
}

// String writes the filter as ParseDeviceFilter reads it, FIELD:OP:VALUE,
// in canonical form: times as unix milliseconds, floats as their shortest
// decimal, the values of an in-list joined by "|". A filter the parser
// gave reads back the same.
func (f DeviceFilter) String() string {
	vals := make([]string, len(f.Values))
	for i, v := range f.Values {
		vals[i] = formatKey(v)
	}
	return f.Field + ":" + f.Op + ":" + strings.Join(vals, "|")
}
