package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

// handleDeviceSummary handles GET /v1/devices/summary: per group, the count
// of the devices in the caller's scope that match the filters and the min,
// avg and max of the fields asked for (herd.ParseSummaryQuery).
func (s *Server) handleDeviceSummary(w http.ResponseWriter, r *http.Request) error {
	hs, err := s.history()
	if err != nil {
		return err
	}
	values, err := strictQuery(r)
	if err != nil {
		return err
	}
	q, err := herd.ParseSummaryQuery(values)
	if err != nil {
		return err
	}
	sum, err := hs.SummarizeDevices(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

// SummarizeDevices returns the latest-state summary of the token's scope
// (GET /v1/devices/summary).
func (c *Client) SummarizeDevices(ctx context.Context, q herd.SummaryQuery) (*herd.Summary, error) {
	v, err := q.Values()
	if err != nil {
		return nil, err
	}
	var sum herd.Summary
	if err := c.do(ctx, http.MethodGet, "/v1/devices/summary", v, nil, &sum); err != nil {
		return nil, err
	}
	return &sum, nil
}
