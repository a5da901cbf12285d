package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

type tenantCreateRequest struct {
	Name string `json:"name"`
}

// handleTenantCreate handles POST /v1/tenants: a super-admin creates a
// tenant and, with it, the root node of its tree.
func (s *Server) handleTenantCreate(w http.ResponseWriter, r *http.Request) {
	var req tenantCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	t := &herd.Tenant{Name: req.Name}
	if err := s.TenantService.CreateTenant(r.Context(), t); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

// handleTenantView handles GET /v1/tenants/{id}.
func (s *Server) handleTenantView(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	t, err := s.TenantService.FindTenantByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeVersioned(w, t, t.Version)
}

var _ herd.TenantService = (*Client)(nil)

// CreateTenant creates a tenant and fills in t from the answer.
func (c *Client) CreateTenant(ctx context.Context, t *herd.Tenant) error {
	return c.do(ctx, http.MethodPost, "/v1/tenants", nil, tenantCreateRequest{Name: t.Name}, t)
}

// FindTenantByID returns a tenant.
func (c *Client) FindTenantByID(ctx context.Context, id int64) (*herd.Tenant, error) {
	var t herd.Tenant
	if err := c.do(ctx, http.MethodGet, idPath("/v1/tenants/%d", id), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}
