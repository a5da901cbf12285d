package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/herd-iot/herd"
)

// handleDeviceReadings handles GET /v1/devices/{id}/readings: one device's
// readings, a page of raw readings (herd.ReadingsPage) or, with step=, one
// point per step per field (herd.SeriesResult). The query string is
// herd.ParseReadingsQuery's; the device is found as GET /v1/devices/{id}
// finds it (404 outside the caller's grants).
func (s *Server) handleDeviceReadings(w http.ResponseWriter, r *http.Request) error {
	h, err := s.history()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	v, err := strictQuery(r)
	if err != nil {
		return err
	}
	q, err := herd.ParseReadingsQuery(v, time.Now())
	if err != nil {
		return err
	}
	q.DeviceID = id
	if q.Step != 0 {
		res, err := h.DeviceSeries(r.Context(), q)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	page, err := h.DeviceReadings(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// readingsPath is the route of a device's readings.
func readingsPath(deviceID int64) string { return idPath("/v1/devices/%d/readings", deviceID) }

// DeviceReadings returns a page of one device's raw readings (q.Step must
// be zero); pass the page's NextCursor as q.Cursor for the next.
func (c *Client) DeviceReadings(ctx context.Context, q herd.ReadingsQuery) (*herd.ReadingsPage, error) {
	if q.Step != 0 {
		return nil, herd.Errorf(herd.EINVALID, "a query with a step is answered by DeviceSeries")
	}
	var p herd.ReadingsPage
	if err := c.do(ctx, http.MethodGet, readingsPath(q.DeviceID), q.Values(), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// DeviceSeries returns one device's readings one point per step (q.Step
// must be set).
func (c *Client) DeviceSeries(ctx context.Context, q herd.ReadingsQuery) (*herd.SeriesResult, error) {
	if q.Step == 0 {
		return nil, herd.Errorf(herd.EINVALID, "a query without a step is answered by DeviceReadings")
	}
	var res herd.SeriesResult
	if err := c.do(ctx, http.MethodGet, readingsPath(q.DeviceID), q.Values(), nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
