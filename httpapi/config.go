package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/herd-iot/herd"
)

type configProfileCreateRequest struct {
	TenantID int64           `json:"tenant_id,string"`
	Name     string          `json:"name"`
	Schema   json.RawMessage `json:"schema"`
}

type configVersionCreateRequest struct {
	Document json.RawMessage `json:"document"`
}

func (s *Server) configs() (herd.ConfigService, error) {
	if s.ConfigService == nil {
		return nil, herd.Errorf(herd.ENOTFOUND, "device configuration is not served here")
	}
	return s.ConfigService, nil
}

// queryAfter reads ?after=N, the keyset cursor of the config and firmware
// lists: the last id (or version) of the page before, 0 for the first.
func queryAfter(r *http.Request) (int64, error) { return queryCursor(r, "after") }

// handleConfigProfileCreate handles POST /v1/config-profiles.
func (s *Server) handleConfigProfileCreate(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	var req configProfileCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		return err
	}
	p := &herd.ConfigProfile{TenantID: req.TenantID, Name: req.Name, Schema: req.Schema}
	if err := svc.CreateConfigProfile(r.Context(), p); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

// handleConfigProfileList handles GET /v1/config-profiles?tenant_id=&after=&limit=.
func (s *Server) handleConfigProfileList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	tenant, err := callerTenant(r)
	if err != nil {
		return err
	}
	after, limit, err := keysetPage(r)
	if err != nil {
		return err
	}
	page, err := svc.FindConfigProfiles(r.Context(), tenant, after, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleConfigProfileView handles GET /v1/config-profiles/{id}.
func (s *Server) handleConfigProfileView(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	return viewByID(w, r, svc.FindConfigProfileByID)
}

// handleConfigVersionCreate handles POST /v1/config-profiles/{id}/versions:
// the document becomes the profile's next version, or a 400 names the
// JSON pointer where it fails the schema.
func (s *Server) handleConfigVersionCreate(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var req configVersionCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		return err
	}
	v := &herd.ConfigVersion{ProfileID: id, Document: req.Document}
	if err := svc.CreateConfigVersion(r.Context(), v); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// handleConfigVersionList handles GET /v1/config-profiles/{id}/versions?after=&limit=.
func (s *Server) handleConfigVersionList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	after, limit, err := keysetPage(r)
	if err != nil {
		return err
	}
	page, err := svc.FindConfigVersions(r.Context(), id, after, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleConfigVersionView handles GET /v1/config-profiles/{id}/versions/{n}.
func (s *Server) handleConfigVersionView(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.configs()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	return viewByID(w, r, func(ctx context.Context, n int64) (*herd.ConfigVersion, error) {
		return svc.FindConfigVersion(ctx, id, n)
	}, "n")
}

var _ herd.ConfigService = (*Client)(nil)

// CreateConfigProfile creates a config profile.
func (c *Client) CreateConfigProfile(ctx context.Context, p *herd.ConfigProfile) error {
	return c.do(ctx, http.MethodPost, "/v1/config-profiles", nil, configProfileCreateRequest{TenantID: p.TenantID, Name: p.Name, Schema: p.Schema}, p)
}

// FindConfigProfileByID returns a config profile.
func (c *Client) FindConfigProfileByID(ctx context.Context, id int64) (*herd.ConfigProfile, error) {
	var p herd.ConfigProfile
	if err := c.do(ctx, http.MethodGet, idPath("/v1/config-profiles/%d", id), nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// FindConfigProfiles lists a page of a tenant's config profiles; tenantID
// matters only to a super-admin's token.
func (c *Client) FindConfigProfiles(ctx context.Context, tenantID, after int64, limit int) (*herd.ConfigPage[*herd.ConfigProfile], error) {
	var page herd.ConfigPage[*herd.ConfigProfile]
	if err := c.do(ctx, http.MethodGet, "/v1/config-profiles", pageQuery(tenantID, after, limit), nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// CreateConfigVersion adds a version to a profile; v.Version is its number.
func (c *Client) CreateConfigVersion(ctx context.Context, v *herd.ConfigVersion) error {
	return c.do(ctx, http.MethodPost, idPath("/v1/config-profiles/%d/versions", v.ProfileID), nil, configVersionCreateRequest{Document: v.Document}, v)
}

// FindConfigVersion returns one version of a profile.
func (c *Client) FindConfigVersion(ctx context.Context, profileID, version int64) (*herd.ConfigVersion, error) {
	var v herd.ConfigVersion
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/config-profiles/%d/versions/%d", profileID, version), nil, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// FindConfigVersions lists a page of a profile's versions.
func (c *Client) FindConfigVersions(ctx context.Context, profileID, after int64, limit int) (*herd.ConfigPage[*herd.ConfigVersion], error) {
	var page herd.ConfigPage[*herd.ConfigVersion]
	if err := c.do(ctx, http.MethodGet, idPath("/v1/config-profiles/%d/versions", profileID), pageQuery(0, after, limit), nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// pageQuery is the query of a keyset-paged list.
func pageQuery(tenantID, after int64, limit int) url.Values {
	q := url.Values{}
	if tenantID != 0 {
		q.Set("tenant_id", strconv.FormatInt(tenantID, 10))
	}
	if after != 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}
