package httpapi

import "github.com/herd-iot/herd"

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
