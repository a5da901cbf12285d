package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
)

// handleReadingsExport handles GET /v1/readings/export.
func (s *Server) handleReadingsExport(w http.ResponseWriter, r *http.Request) error {
	return herd.Errorf(herd.ENOTFOUND, "not built yet")
}
