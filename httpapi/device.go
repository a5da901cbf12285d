package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/herd-iot/herd"
)

// deviceCreateRequest is what a client may set on a new device. The rest of
// the projection (status, readings, last_seen) belongs to the device and
// arrives with its telemetry, so it is refused here as an unknown field.
type deviceCreateRequest struct {
	NodeID   id     `json:"node_id"`
	Key      string `json:"key"`
	Name     string `json:"name,omitempty"`
	Model    string `json:"model,omitempty"`
	Firmware string `json:"firmware,omitempty"`
	// Labels are the device's first labels (see herd.MaxLabels).
	Labels map[string]string `json:"labels,omitempty"`
}

func (req deviceCreateRequest) device() *herd.Device {
	return &herd.Device{NodeID: int64(req.NodeID), Key: req.Key, Name: req.Name, Model: req.Model, Firmware: req.Firmware, Labels: req.Labels}
}

func newDeviceCreateRequest(d *herd.Device) deviceCreateRequest {
	return deviceCreateRequest{NodeID: id(d.NodeID), Key: d.Key, Name: d.Name, Model: d.Model, Firmware: d.Firmware, Labels: d.Labels}
}

type deviceBatchRequest struct {
	Devices []deviceCreateRequest `json:"devices"`
}

type deviceMoveRequest struct {
	NodeID id `json:"node_id"`
}

// handleDeviceQuery handles GET /v1/devices: one page of the devices under
// the caller's grants that match the filters, with a capped count.
func (s *Server) handleDeviceQuery(w http.ResponseWriter, r *http.Request) {
	// r.URL.Query drops malformed pairs silently; a filter lost that way
	// would widen the answer, so malformed query strings are refused.
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		Error(w, r, herd.Errorf(herd.EINVALID, "malformed query string: %s", err))
		return
	}
	q, err := herd.ParseDeviceQuery(values)
	if err != nil {
		Error(w, r, err)
		return
	}
	page, err := s.DeviceService.QueryDevices(r.Context(), q)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// handleDeviceCreate handles POST /v1/devices.
func (s *Server) handleDeviceCreate(w http.ResponseWriter, r *http.Request) {
	var req deviceCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	d := req.device()
	if err := s.DeviceService.CreateDevices(r.Context(), []*herd.Device{d}); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

// handleDeviceBatch handles POST /v1/devices/batch: every device is
// created or none is.
func (s *Server) handleDeviceBatch(w http.ResponseWriter, r *http.Request) {
	var req deviceBatchRequest
	if err := decodeJSON(w, r, MaxBatchBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	ds := make([]*herd.Device, len(req.Devices))
	for i, dr := range req.Devices {
		ds[i] = dr.device()
	}
	if err := s.DeviceService.CreateDevices(r.Context(), ds); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, listResponse[*herd.Device]{Items: ds})
}

// handleDeviceView handles GET /v1/devices/{id}. A device outside the
// caller's grants is a 404, exactly like one that does not exist.
func (s *Server) handleDeviceView(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	d, err := s.DeviceService.FindDeviceByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeVersioned(w, d, d.Version)
}

// handleDeviceMove handles POST /v1/devices/{id}/move.
func (s *Server) handleDeviceMove(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	var req deviceMoveRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	} else if req.NodeID == 0 {
		Error(w, r, herd.Errorf(herd.EINVALID, "node_id is required"))
		return
	}
	d, err := s.DeviceService.MoveDevice(r.Context(), id, int64(req.NodeID))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// handleDeviceDelete handles DELETE /v1/devices/{id}.
func (s *Server) handleDeviceDelete(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	var key string
	if s.Disconnecter != nil {
		d, err := s.DeviceService.FindDeviceByID(r.Context(), id)
		if err != nil {
			Error(w, r, err)
			return
		}
		key = d.Key
	}
	if err := s.DeviceService.DeleteDevice(r.Context(), id); err != nil {
		Error(w, r, err)
		return
	}
	if key != "" {
		s.disconnect(key)
	}
	w.WriteHeader(http.StatusNoContent)
}

// DeviceQueryParams is a device query as the client sends it: the same
// parts as the query string of GET /v1/devices.
type DeviceQueryParams struct {
	// TenantID picks the tenant; only a super-admin needs it.
	TenantID int64
	// Filters are FIELD:OP:VALUE conditions, ANDed.
	Filters []string
	// Sort is FIELD or -FIELD; empty sorts by id.
	Sort string
	// Limit is the page size; zero means the server's default.
	Limit int
	// Cursor is the next_cursor of the previous page.
	Cursor string
	// Search is q: words every one of which the device's name, key, model,
	// firmware, a label value or the name of one of its nodes holds.
	Search string
}

// Values returns the parameters as a query string.
func (p DeviceQueryParams) Values() url.Values {
	v := url.Values{}
	if p.Search != "" {
		v.Set("q", p.Search)
	}
	if p.TenantID != 0 {
		v.Set("tenant_id", strconv.FormatInt(p.TenantID, 10))
	}
	for _, f := range p.Filters {
		v.Add("filter", f)
	}
	if p.Sort != "" {
		v.Set("sort", p.Sort)
	}
	if p.Limit != 0 {
		v.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		v.Set("cursor", p.Cursor)
	}
	return v
}

// QueryDevices returns one page of the scoped device query.
func (c *Client) QueryDevices(ctx context.Context, p DeviceQueryParams) (*herd.DevicePage, error) {
	var page herd.DevicePage
	if err := c.do(ctx, http.MethodGet, "/v1/devices", p.Values(), nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// CreateDevice creates one device and fills in d from the answer.
func (c *Client) CreateDevice(ctx context.Context, d *herd.Device) error {
	return c.do(ctx, http.MethodPost, "/v1/devices", nil, newDeviceCreateRequest(d), d)
}

// CreateDevices creates all the devices or none, in one batch request, and
// fills them in from the answer.
func (c *Client) CreateDevices(ctx context.Context, ds []*herd.Device) error {
	req := deviceBatchRequest{Devices: make([]deviceCreateRequest, len(ds))}
	for i, d := range ds {
		req.Devices[i] = newDeviceCreateRequest(d)
	}
	var resp listResponse[*herd.Device]
	if err := c.do(ctx, http.MethodPost, "/v1/devices/batch", nil, req, &resp); err != nil {
		return err
	} else if len(resp.Items) != len(ds) {
		return fmt.Errorf("create devices: %d devices sent, %d returned", len(ds), len(resp.Items))
	}
	for i, d := range resp.Items {
		*ds[i] = *d
	}
	return nil
}

// FindDeviceByID returns a device.
func (c *Client) FindDeviceByID(ctx context.Context, deviceID int64) (*herd.Device, error) {
	var d herd.Device
	if err := c.do(ctx, http.MethodGet, idPath("/v1/devices/%d", deviceID), nil, nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// MoveDevice moves a device to another node.
func (c *Client) MoveDevice(ctx context.Context, deviceID, nodeID int64) (*herd.Device, error) {
	var d herd.Device
	if err := c.do(ctx, http.MethodPost, idPath("/v1/devices/%d/move", deviceID), nil, deviceMoveRequest{NodeID: id(nodeID)}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DeleteDevice deletes a device.
func (c *Client) DeleteDevice(ctx context.Context, deviceID int64) error {
	return c.do(ctx, http.MethodDelete, idPath("/v1/devices/%d", deviceID), nil, nil, nil)
}
