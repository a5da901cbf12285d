package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
)

// handleDeviceReadings handles GET /v1/devices/{id}/readings.
func (s *Server) handleDeviceReadings(w http.ResponseWriter, r *http.Request) error {
	return herd.Errorf(herd.ENOTFOUND, "not built yet")
}
