package httpapi

import (
	"net/http"
	"net/url"

	"github.com/herd-iot/herd"
)

// The routes of the telemetry history: one device's readings
// (history_device.go), fleet aggregates (aggregate.go), the latest-state
// summary (summary.go) and the export (readings_export.go).

// history returns the history service, or ENOTFOUND when none is set.
func (s *Server) history() (herd.HistoryService, error) {
	if s.HistoryService == nil {
		return nil, herd.Errorf(herd.ENOTFOUND, "the telemetry history is not served here")
	}
	return s.HistoryService, nil
}

// strictQuery parses the query string as GET /v1/devices does: a malformed
// pair, which r.URL.Query drops without a word, would widen the answer
// (a filter lost), so a malformed query string is refused.
func strictQuery(r *http.Request) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, herd.Errorf(herd.EINVALID, "malformed query string: %s", err)
	}
	return v, nil
}
