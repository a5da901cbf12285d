package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

type grantCreateRequest struct {
	UserID id        `json:"user_id"`
	NodeID id        `json:"node_id"`
	Role   herd.Role `json:"role"`
}

// handleGrantCreate handles POST /v1/grants.
func (s *Server) handleGrantCreate(w http.ResponseWriter, r *http.Request) {
	var req grantCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	g := &herd.Grant{UserID: int64(req.UserID), NodeID: int64(req.NodeID), Role: req.Role}
	if err := s.GrantService.CreateGrant(r.Context(), g); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, g)
}

// handleGrantDelete handles DELETE /v1/grants/{id}; the revoke applies to
// the user's very next request.
func (s *Server) handleGrantDelete(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	if err := s.GrantService.DeleteGrant(r.Context(), id); err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleUserGrants handles GET /v1/users/{id}/grants.
func (s *Server) handleUserGrants(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	gs, err := s.GrantService.FindGrantsByUser(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	if gs == nil {
		gs = []*herd.Grant{} // an empty list, not null
	}
	writeJSON(w, http.StatusOK, listResponse[*herd.Grant]{Items: gs})
}

var _ herd.GrantService = (*Client)(nil)

// CreateGrant creates a grant and fills in g from the answer.
func (c *Client) CreateGrant(ctx context.Context, g *herd.Grant) error {
	req := grantCreateRequest{UserID: id(g.UserID), NodeID: id(g.NodeID), Role: g.Role}
	return c.do(ctx, http.MethodPost, "/v1/grants", nil, req, g)
}

// DeleteGrant revokes a grant.
func (c *Client) DeleteGrant(ctx context.Context, grantID int64) error {
	return c.do(ctx, http.MethodDelete, idPath("/v1/grants/%d", grantID), nil, nil, nil)
}

// FindGrantsByUser lists a user's grants.
func (c *Client) FindGrantsByUser(ctx context.Context, userID int64) ([]*herd.Grant, error) {
	var resp listResponse[*herd.Grant]
	if err := c.do(ctx, http.MethodGet, idPath("/v1/users/%d/grants", userID), nil, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Items, nil
}
