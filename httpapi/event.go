package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/herd-iot/herd"
)

// DefaultEventsPage is the page size of GET /v1/events without a limit.
const DefaultEventsPage = 100

// handleEvents handles GET /v1/events?after=SEQ&limit=N: the caller's view
// of its tenant's event log, in order, with the head. A super-admin names
// the tenant with tenant_id.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if s.EventService == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "the event log is not served here"))
		return
	}
	q := r.URL.Query()
	tenant, err := callerTenant(r)
	if err != nil {
		Error(w, r, err)
		return
	}
	after := int64(0)
	if v := q.Get("after"); v == "head" {
		after = -1 // the head only: where to follow from
	} else if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			Error(w, r, herd.Errorf(herd.EINVALID, `after %q is not a sequence number (0 or more) or "head"`, v))
			return
		}
		after = n
	}
	limit, err := queryLimit(r, DefaultEventsPage)
	if err != nil {
		Error(w, r, err)
		return
	}
	page, err := s.EventService.FindEvents(r.Context(), tenant, after, limit)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// callerTenant is the tenant a request is about: the caller's own, or for
// a super-admin the one named by tenant_id (required then).
func callerTenant(r *http.Request) (int64, error) {
	a := herd.ActorFromContext(r.Context())
	v := r.URL.Query().Get("tenant_id")
	if v == "" && !a.Super {
		return a.TenantID, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, herd.Errorf(herd.EINVALID, "tenant_id %q is not an id; a super-admin must name the tenant", v)
	} else if !a.SeesTenant(n) {
		return 0, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", n)
	}
	return n, nil
}

var _ herd.EventService = (*Client)(nil)

// FindEvents reads a page of the event log. tenantID matters only to a
// super-admin's token; a user's is always their own tenant.
func (c *Client) FindEvents(ctx context.Context, tenantID, after int64, limit int) (*herd.EventPage, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {strconv.Itoa(limit)}}
	if after < 0 {
		q.Set("after", "head")
	}
	if tenantID != 0 {
		q.Set("tenant_id", strconv.FormatInt(tenantID, 10))
	}
	var page herd.EventPage
	if err := c.do(ctx, http.MethodGet, "/v1/events", q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}
