package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/herd-iot/herd"
)

// handleReadingsAggregate handles GET /v1/readings/aggregate: a field of the
// readings of the caller's scope, one point per step per agg, optionally
// per group (see herd.ParseAggregateQuery and docs/history.md).
func (s *Server) handleReadingsAggregate(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.history()
	if err != nil {
		return err
	}
	v, err := strictQuery(r)
	if err != nil {
		return err
	}
	q, err := herd.ParseAggregateQuery(v, time.Now())
	if err != nil {
		return err
	}
	res, err := svc.AggregateReadings(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// AggregateReadings asks for a fleet aggregate.
func (c *Client) AggregateReadings(ctx context.Context, q herd.AggregateQuery) (*herd.AggregateResult, error) {
	v, err := q.Values()
	if err != nil {
		return nil, err
	}
	var res herd.AggregateResult
	if err := c.do(ctx, http.MethodGet, "/v1/readings/aggregate", v, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
