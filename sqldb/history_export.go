package sqldb

import (
	"context"

	"github.com/herd-iot/herd"
)

// ExportReadings calls each for every reading of the scope in the range.
func (s *HistoryService) ExportReadings(ctx context.Context, q herd.ExportQuery, each func(*herd.ExportReading) error) error {
	return herd.Errorf(herd.ENOTFOUND, "the export is not built yet")
}
