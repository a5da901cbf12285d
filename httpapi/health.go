package httpapi

import (
	"context"
	"net/http"
	"time"
)

// readyTimeout bounds the readiness check, so that a hung store makes the
// probe fail fast instead of piling up probes.
const readyTimeout = 5 * time.Second

type statusResponse struct {
	Status string `json:"status"`
}

// handleHealthz answers 200 while the process runs: liveness only, so that
// an orchestrator does not restart herd because its database is down.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
}

// handleReadyz answers 200 when Ready passes and 503 otherwise, so that a
// load balancer sends traffic only to servers whose store answers.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.Ready(ctx); err != nil {
			s.Logger.Warn("not ready", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, statusResponse{Status: "unavailable"})
			return
		}
	}
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
}
