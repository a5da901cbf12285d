package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

type firmwareCreateRequest struct {
	TenantID int64  `json:"tenant_id,string"`
	Model    string `json:"model"`
	Version  string `json:"version"`
	URL      string `json:"url"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
}

func (s *Server) firmware() (herd.FirmwareService, error) {
	if s.FirmwareService == nil {
		return nil, herd.Errorf(herd.ENOTFOUND, "firmware is not served here")
	}
	return s.FirmwareService, nil
}

// handleFirmwareCreate handles POST /v1/firmware: metadata only, the
// image stays where url points.
func (s *Server) handleFirmwareCreate(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.firmware()
	if err != nil {
		return err
	}
	var req firmwareCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		return err
	}
	f := &herd.Firmware{TenantID: req.TenantID, Model: req.Model, Version: req.Version, URL: req.URL, SHA256: req.SHA256, Size: req.Size}
	if err := svc.CreateFirmware(r.Context(), f); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, f)
	return nil
}

// handleFirmwareList handles GET /v1/firmware?tenant_id=&model=&after=&limit=.
func (s *Server) handleFirmwareList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.firmware()
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
	page, err := svc.FindFirmware(r.Context(), tenant, r.URL.Query().Get("model"), after, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleFirmwareView handles GET /v1/firmware/{id}.
func (s *Server) handleFirmwareView(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.firmware()
	if err != nil {
		return err
	}
	return viewByID(w, r, svc.FindFirmwareByID)
}

var _ herd.FirmwareService = (*Client)(nil)

// CreateFirmware records a firmware's metadata.
func (c *Client) CreateFirmware(ctx context.Context, f *herd.Firmware) error {
	req := firmwareCreateRequest{TenantID: f.TenantID, Model: f.Model, Version: f.Version, URL: f.URL, SHA256: f.SHA256, Size: f.Size}
	return c.do(ctx, http.MethodPost, "/v1/firmware", nil, req, f)
}

// FindFirmwareByID returns a firmware's metadata.
func (c *Client) FindFirmwareByID(ctx context.Context, id int64) (*herd.Firmware, error) {
	var f herd.Firmware
	if err := c.do(ctx, http.MethodGet, idPath("/v1/firmware/%d", id), nil, nil, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// FindFirmware lists a page of a tenant's firmware, of one model or all.
func (c *Client) FindFirmware(ctx context.Context, tenantID int64, model string, after int64, limit int) (*herd.ConfigPage[*herd.Firmware], error) {
	q := pageQuery(tenantID, after, limit)
	if model != "" {
		q.Set("model", model)
	}
	var page herd.ConfigPage[*herd.Firmware]
	if err := c.do(ctx, http.MethodGet, "/v1/firmware", q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}
