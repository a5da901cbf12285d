package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/herd-iot/herd"
)

// handlePasswordLinkCreate handles POST /v1/users/{id}/password-link: an
// admin's one-time link for the user to set their password with. The
// answer carries the secret, the only time it is shown.
func (s *Server) handlePasswordLinkCreate(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	l, err := s.SessionService.CreatePasswordLink(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, l)
}

type passwordWithLinkRequest struct {
	Token    string `json:"token"`
	Password string `json:"password"`
}

// handlePasswordWithLink handles POST /v1/password: a person sets their
// password with a link, without signing in. It is a write from herd's own
// page (cookieOrigin's rule), and a made-up link counts against its
// address's sign-in allowance, as a wrong password does.
func (s *Server) handlePasswordWithLink(w http.ResponseWriter, r *http.Request) {
	if err := cookieOrigin(r); err != nil {
		Error(w, r, err)
		return
	}
	var req passwordWithLinkRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	now := time.Now()
	addr := clientAddress(r)
	tries, wait := s.signInFails.addresses.take(addr, now)
	if tries == nil {
		tooMany(w, r, wait, "too many failed attempts from this address")
		return
	}
	err := s.SessionService.SetPasswordWithLink(r.Context(), req.Token, req.Password)
	if herd.ErrorCode(err) == herd.EUNAUTHORIZED {
		s.Logger.Warn("password link refused", "remote", addr)
	} else {
		tries.CancelAt(now)
	}
	if err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CreatePasswordLink makes a one-time password link for a user (POST
// /v1/users/{id}/password-link).
func (c *Client) CreatePasswordLink(ctx context.Context, userID int64) (*herd.PasswordLink, error) {
	var l herd.PasswordLink
	if err := c.do(ctx, http.MethodPost, idPath("/v1/users/%d/password-link", userID), nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}
