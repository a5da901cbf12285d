package sqldb

import (
	"context"

	"github.com/herd-iot/herd"
)

// DeviceReadings returns a page of one device's raw readings.
func (s *HistoryService) DeviceReadings(ctx context.Context, q herd.ReadingsQuery) (*herd.ReadingsPage, error) {
	return nil, herd.Errorf(herd.ENOTFOUND, "device history is not built yet")
}

// DeviceSeries returns one device's readings one point per step.
func (s *HistoryService) DeviceSeries(ctx context.Context, q herd.ReadingsQuery) (*herd.SeriesResult, error) {
	return nil, herd.Errorf(herd.ENOTFOUND, "device history is not built yet")
}
