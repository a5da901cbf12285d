package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

// DeviceDisconnecter closes a device's live connection; the MQTT gateway
// is one. A revoked credential or a deleted device must not stay connected.
type DeviceDisconnecter interface {
	DisconnectDevice(key string) bool
}

// handleCredentialCreate handles POST /v1/devices/{id}/credentials: a new
// token for the device, shown once, replacing the old one. A device still
// connected with the old token stays connected until it reconnects.
func (s *Server) handleCredentialCreate(w http.ResponseWriter, r *http.Request) {
	if s.CredentialService == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "device credentials are not served here"))
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	c, err := s.CredentialService.CreateDeviceCredential(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

// handleCredentialDelete handles DELETE /v1/devices/{id}/credentials: the
// token stops working and the device is disconnected.
func (s *Server) handleCredentialDelete(w http.ResponseWriter, r *http.Request) {
	if s.CredentialService == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "device credentials are not served here"))
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	d, err := s.DeviceService.FindDeviceByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	if err := s.CredentialService.DeleteDeviceCredential(r.Context(), id); err != nil {
		Error(w, r, err)
		return
	}
	s.disconnect(d.Key)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) disconnect(key string) {
	if s.Disconnecter != nil && s.Disconnecter.DisconnectDevice(key) {
		s.Logger.Info("device disconnected", "key", key)
	}
}

// CreateDeviceCredential makes a new MQTT token for the device.
func (c *Client) CreateDeviceCredential(ctx context.Context, deviceID int64) (*herd.DeviceCredential, error) {
	var out herd.DeviceCredential
	if err := c.do(ctx, http.MethodPost, idPath("/v1/devices/%d/credentials", deviceID), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteDeviceCredential revokes the device's token and disconnects it.
func (c *Client) DeleteDeviceCredential(ctx context.Context, deviceID int64) error {
	return c.do(ctx, http.MethodDelete, idPath("/v1/devices/%d/credentials", deviceID), nil, nil, nil)
}

// handleMQTT hands /mqtt to the gateway's WebSocket endpoint.
func (s *Server) handleMQTT(w http.ResponseWriter, r *http.Request) {
	if s.MQTT == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "no MQTT gateway runs here"))
		return
	}
	// The device authenticates in CONNECT, not by a cookie, but a page of
	// a site the operator did not name has no business here either: the
	// one origin policy of every socket (docs/browsers.md).
	if !s.Origins.Allows(r) {
		Error(w, r, originError(r))
		return
	}
	s.MQTT.ServeHTTP(w, r)
}
