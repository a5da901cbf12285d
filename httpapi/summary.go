package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
)

// handleDeviceSummary handles GET /v1/devices/summary.
func (s *Server) handleDeviceSummary(w http.ResponseWriter, r *http.Request) error {
	return herd.Errorf(herd.ENOTFOUND, "not built yet")
}
