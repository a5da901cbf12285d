package sqldb

import (
	"context"

	"github.com/herd-iot/herd"
)

// AggregateReadings aggregates a field over a scope from the rollups.
func (s *HistoryService) AggregateReadings(ctx context.Context, q herd.AggregateQuery) (*herd.AggregateResult, error) {
	return nil, herd.Errorf(herd.ENOTFOUND, "fleet aggregates are not built yet")
}
