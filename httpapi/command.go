package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/herd-iot/herd"
)

type commandCreateRequest struct {
	Name       string          `json:"name"`
	Args       json.RawMessage `json:"args"`
	TTLSeconds int64           `json:"ttl_s"`
}

func (s *Server) commands(w http.ResponseWriter, r *http.Request) herd.CommandService {
	if s.CommandService == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "commands are not served here"))
	}
	return s.CommandService
}

// handleCommandCreate handles POST /v1/devices/{id}/commands. It answers
// once the command and its event are committed; the device gets it from
// the gateway that holds it, now or when it comes back, until its TTL.
func (s *Server) handleCommandCreate(w http.ResponseWriter, r *http.Request) {
	svc := s.commands(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	var req commandCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	c := &herd.Command{DeviceID: id, Name: req.Name, Args: req.Args, TTLSeconds: req.TTLSeconds, IdempotencyKey: r.Header.Get(HeaderIdempotencyKey)}
	if err := svc.CreateCommand(r.Context(), c); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

// handleDeviceCommands handles GET /v1/devices/{id}/commands?limit=N.
func (s *Server) handleDeviceCommands(w http.ResponseWriter, r *http.Request) {
	svc := s.commands(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	limit, err := queryLimit(r, 100)
	if err != nil {
		Error(w, r, err)
		return
	}
	cs, err := svc.FindCommandsByDevice(r.Context(), id, limit)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse[*herd.Command]{Items: cs})
}

// handleCommandView handles GET /v1/commands/{id}.
func (s *Server) handleCommandView(w http.ResponseWriter, r *http.Request) {
	svc := s.commands(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	c, err := svc.FindCommandByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

var _ herd.CommandService = (*Client)(nil)

// CreateCommand sends a command. Its IdempotencyKey goes in the
// Idempotency-Key header (required): a retry with the same key after a
// timeout gets the first answer, never a second command.
func (c *Client) CreateCommand(ctx context.Context, cmd *herd.Command) error {
	req := commandCreateRequest{Name: cmd.Name, Args: cmd.Args, TTLSeconds: cmd.TTLSeconds}
	key := cmd.IdempotencyKey
	err := c.doHeader(ctx, http.MethodPost, idPath("/v1/devices/%d/commands", cmd.DeviceID), nil, http.Header{HeaderIdempotencyKey: {key}}, req, cmd)
	cmd.IdempotencyKey = key
	return err
}

// FindCommandByID returns a command.
func (c *Client) FindCommandByID(ctx context.Context, id int64) (*herd.Command, error) {
	var cmd herd.Command
	if err := c.do(ctx, http.MethodGet, idPath("/v1/commands/%d", id), nil, nil, &cmd); err != nil {
		return nil, err
	}
	return &cmd, nil
}

// FindCommandsByDevice lists a device's commands, newest first.
func (c *Client) FindCommandsByDevice(ctx context.Context, deviceID int64, limit int) ([]*herd.Command, error) {
	var resp listResponse[*herd.Command]
	err := c.do(ctx, http.MethodGet, idPath("/v1/devices/%d/commands", deviceID), url.Values{"limit": {strconv.Itoa(limit)}}, nil, &resp)
	return resp.Items, err
}
