package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// rolloutCreateRequest is the body of POST /v1/rollouts: what a caller
// chooses of a rollout, and nothing the store fills in (id, state,
// members, progress), so that a body naming one of those is refused as an
// unknown field instead of being silently ignored.
type rolloutCreateRequest struct {
	TenantID int64  `json:"tenant_id,string"`
	Name     string `json:"name"`
	herd.RolloutSpec
	// StartAt is RFC 3339 text, parsed by the handler so that a bad one is
	// refused naming the field (encoding/json's time error names none).
	StartAt string `json:"start_at,omitempty"`
}

func (s *Server) rollouts() (herd.RolloutService, error) {
	if s.RolloutService == nil {
		return nil, herd.Errorf(herd.ENOTFOUND, "rollouts are not served here")
	}
	return s.RolloutService, nil
}

// handleRolloutCreate handles POST /v1/rollouts. The spec is validated
// here, with the server's default max_in_flight, before the store chooses
// the members; the store checks the caller's role on the target node.
func (s *Server) handleRolloutCreate(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.rollouts()
	if err != nil {
		return err
	}
	var req rolloutCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		return err
	}
	ro := &herd.Rollout{TenantID: req.TenantID, Name: req.Name, RolloutSpec: req.RolloutSpec}
	if req.StartAt != "" {
		at, err := time.Parse(time.RFC3339, req.StartAt)
		if err != nil {
			return herd.Errorf(herd.EINVALID, "start_at %q is not an RFC 3339 time (such as 2026-12-02T12:00:00Z)", req.StartAt)
		}
		ro.StartAt = &at
	}
	if err := ro.Validate(s.RolloutMaxInFlight); err != nil {
		return err
	}
	if err := svc.CreateRollout(r.Context(), ro); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, ro)
	return nil
}

// handleRolloutList handles GET /v1/rollouts?tenant_id=&before=&limit=:
// newest first, so the cursor is before=, the page's next.
func (s *Server) handleRolloutList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.rollouts()
	if err != nil {
		return err
	}
	tenant, err := callerTenant(r)
	if err != nil {
		return err
	}
	before, limit, err := keysetPageBefore(r)
	if err != nil {
		return err
	}
	page, err := svc.FindRollouts(r.Context(), tenant, before, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleRolloutView handles GET /v1/rollouts/{id}: the rollout with its
// per-wave counts and its gates' last evaluations.
func (s *Server) handleRolloutView(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.rollouts()
	if err != nil {
		return err
	}
	return viewByID(w, r, svc.FindRolloutByID)
}

// handleRolloutMembers handles GET /v1/rollouts/{id}/devices?state=&after=&limit=:
// the members in member order, of one state or all.
func (s *Server) handleRolloutMembers(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.rollouts()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	state := r.URL.Query().Get("state")
	if state != "" && !slices.Contains(herd.MemberStates, state) {
		return herd.Errorf(herd.EINVALID, "state %q is not a member state: one of %s", state, strings.Join(herd.MemberStates, ", "))
	}
	after, limit, err := keysetPage(r)
	if err != nil {
		return err
	}
	page, err := svc.FindRolloutMembers(r.Context(), id, state, after, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleRolloutAction handles POST /v1/rollouts/{id}/{action}, one route
// per action; the body, if any, is not read. The answer is the rollout as
// the action left it.
func (s *Server) handleRolloutAction(action string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		svc, err := s.rollouts()
		if err != nil {
			return err
		}
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		ro, err := svc.ActOnRollout(r.Context(), id, action)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, ro)
		return nil
	}
}

var _ herd.RolloutService = (*Client)(nil)

// CreateRollout creates a rollout under a fresh Idempotency-Key and fills
// in ro as the server stored it; CreateRolloutKey names the key, so that a
// retry after a lost answer cannot start a second rollout.
func (c *Client) CreateRollout(ctx context.Context, ro *herd.Rollout) error {
	return c.CreateRolloutKey(ctx, newIdempotencyKey(), ro)
}

// CreateRolloutKey is CreateRollout with the Idempotency-Key given.
func (c *Client) CreateRolloutKey(ctx context.Context, key string, ro *herd.Rollout) error {
	req := rolloutCreateRequest{TenantID: ro.TenantID, Name: ro.Name, RolloutSpec: ro.RolloutSpec}
	if ro.StartAt != nil {
		req.StartAt = ro.StartAt.Format(time.RFC3339Nano)
	}
	return c.doHeader(ctx, http.MethodPost, "/v1/rollouts", nil, http.Header{HeaderIdempotencyKey: {key}}, req, ro)
}

// FindRolloutByID returns a rollout with its progress and gate
// evaluations.
func (c *Client) FindRolloutByID(ctx context.Context, id int64) (*herd.Rollout, error) {
	var ro herd.Rollout
	if err := c.do(ctx, http.MethodGet, idPath("/v1/rollouts/%d", id), nil, nil, &ro); err != nil {
		return nil, err
	}
	return &ro, nil
}

// FindRollouts lists a page of a tenant's rollouts, newest first, those
// with an id under before (0 for the first page; a page's Next is the
// next page's before). tenantID matters only to a super-admin's token.
func (c *Client) FindRollouts(ctx context.Context, tenantID, before int64, limit int) (*herd.ConfigPage[*herd.Rollout], error) {
	q := pageQuery(tenantID, 0, limit)
	if before != 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	var page herd.ConfigPage[*herd.Rollout]
	if err := c.do(ctx, http.MethodGet, "/v1/rollouts", q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// FindRolloutMembers lists a page of a rollout's members, of one state or
// all (""), those after the ord given.
func (c *Client) FindRolloutMembers(ctx context.Context, id int64, state string, after int64, limit int) (*herd.ConfigPage[*herd.RolloutMember], error) {
	q := pageQuery(0, after, limit)
	if state != "" {
		q.Set("state", state)
	}
	var page herd.ConfigPage[*herd.RolloutMember]
	if err := c.do(ctx, http.MethodGet, idPath("/v1/rollouts/%d/devices", id), q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// ActOnRollout pauses, resumes, aborts or cancels a rollout and returns it
// as the action left it. An action repeated changes nothing, so a retry
// needs no Idempotency-Key.
func (c *Client) ActOnRollout(ctx context.Context, id int64, action string) (*herd.Rollout, error) {
	switch action {
	case herd.RolloutPause, herd.RolloutResume, herd.RolloutAbort, herd.RolloutCancel:
	default:
		return nil, herd.Errorf(herd.EINVALID, "rollout action %q is not pause, resume, abort or cancel", action)
	}
	var ro herd.Rollout
	if err := c.do(ctx, http.MethodPost, idPath("/v1/rollouts/%d/", id)+action, nil, nil, &ro); err != nil {
		return nil, err
	}
	return &ro, nil
}
