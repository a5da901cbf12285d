package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
)

// handleReadingsAggregate handles GET /v1/readings/aggregate.
func (s *Server) handleReadingsAggregate(w http.ResponseWriter, r *http.Request) error {
	return herd.Errorf(herd.ENOTFOUND, "not built yet")
}
