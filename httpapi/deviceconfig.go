package httpapi

import (
	"context"
	"crypto/rand"
	"net/http"

	"github.com/herd-iot/herd"
)

type deviceConfigRequest struct {
	ProfileID int64 `json:"profile_id,string"`
	Version   int64 `json:"version"`
}

// handleDeviceConfigView handles GET /v1/devices/{id}/config.
func (s *Server) handleDeviceConfigView(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	return viewByID(w, r, svc.FindDeviceConfig)
}

// handleDeviceConfigSet handles PUT /v1/devices/{id}/config: the device's
// desired config, committed with its event before the answer; the gateway
// holding the device sends it the document.
func (s *Server) handleDeviceConfigSet(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var req deviceConfigRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		return err
	}
	c, err := svc.SetDesiredConfig(r.Context(), id, req.ProfileID, req.Version)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// FindDeviceConfig returns a device's desired and reported config.
func (c *Client) FindDeviceConfig(ctx context.Context, deviceID int64) (*herd.DeviceConfig, error) {
	var dc herd.DeviceConfig
	if err := c.do(ctx, http.MethodGet, idPath("/v1/devices/%d/config", deviceID), nil, nil, &dc); err != nil {
		return nil, err
	}
	return &dc, nil
}

// SetDesiredConfig sets a device's desired config under a fresh
// Idempotency-Key; SetDesiredConfigKey names the key, to retry.
func (c *Client) SetDesiredConfig(ctx context.Context, deviceID, profileID, version int64) (*herd.DeviceConfig, error) {
	return c.SetDesiredConfigKey(ctx, newIdempotencyKey(), deviceID, profileID, version)
}

// SetDesiredConfigKey is SetDesiredConfig with the Idempotency-Key given.
func (c *Client) SetDesiredConfigKey(ctx context.Context, key string, deviceID, profileID, version int64) (*herd.DeviceConfig, error) {
	var dc herd.DeviceConfig
	err := c.doHeader(ctx, http.MethodPut, idPath("/v1/devices/%d/config", deviceID), nil, http.Header{HeaderIdempotencyKey: {key}}, deviceConfigRequest{ProfileID: profileID, Version: version}, &dc)
	if err != nil {
		return nil, err
	}
	return &dc, nil
}

// newIdempotencyKey returns a random key for one operation.
func newIdempotencyKey() string { return rand.Text() }
