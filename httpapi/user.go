package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

type userCreateRequest struct {
	TenantID id     `json:"tenant_id"`
	Name     string `json:"name"`
}

// tokenCreateRequest is the optional body of POST /v1/users/{id}/tokens.
// It has no fields yet; decoding it still refuses unknown ones, so a client
// sending, say, an expiry learns that it is not supported instead of
// getting a token that never expires.
type tokenCreateRequest struct{}

// handleUserCreate handles POST /v1/users.
func (s *Server) handleUserCreate(w http.ResponseWriter, r *http.Request) {
	var req userCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	u := &herd.User{TenantID: int64(req.TenantID), Name: req.Name}
	if err := s.UserService.CreateUser(r.Context(), u); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, u)
}

// handleUserView handles GET /v1/users/{id}.
func (s *Server) handleUserView(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	u, err := s.UserService.FindUserByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeVersioned(w, u, u.Version)
}

// handleTokenCreate handles POST /v1/users/{id}/tokens. The answer is the
// only time the secret is ever shown: the store keeps its hash.
func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	var req tokenCreateRequest
	if err := decodeOptionalJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	t, err := s.UserService.CreateToken(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	// The secret must not linger in caches between here and the client.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, t)
}

// handleTokenDelete handles DELETE /v1/tokens/{id}; the token stops
// working on the next request.
func (s *Server) handleTokenDelete(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	if err := s.UserService.DeleteToken(r.Context(), id); err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CreateUser creates a user and fills in u from the answer.
func (c *Client) CreateUser(ctx context.Context, u *herd.User) error {
	return c.do(ctx, http.MethodPost, "/v1/users", nil, userCreateRequest{TenantID: id(u.TenantID), Name: u.Name}, u)
}

// FindUserByID returns a user.
func (c *Client) FindUserByID(ctx context.Context, userID int64) (*herd.User, error) {
	var u herd.User
	if err := c.do(ctx, http.MethodGet, idPath("/v1/users/%d", userID), nil, nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// CreateToken creates a token for a user; the answer carries its secret.
func (c *Client) CreateToken(ctx context.Context, userID int64) (*herd.Token, error) {
	var t herd.Token
	if err := c.do(ctx, http.MethodPost, idPath("/v1/users/%d/tokens", userID), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// DeleteToken revokes a token.
func (c *Client) DeleteToken(ctx context.Context, tokenID int64) error {
	return c.do(ctx, http.MethodDelete, idPath("/v1/tokens/%d", tokenID), nil, nil, nil)
}
