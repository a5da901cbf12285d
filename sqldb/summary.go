package sqldb

import (
	"context"

	"github.com/herd-iot/herd"
)

// SummarizeDevices summarises the latest state of a scope.
func (s *HistoryService) SummarizeDevices(ctx context.Context, q herd.SummaryQuery) (*herd.Summary, error) {
	return nil, herd.Errorf(herd.ENOTFOUND, "the summary is not built yet")
}
