package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// handleTicketCreate handles POST /v1/stream/tickets: a ticket that opens
// one WebSocket for the token that asked, for a browser, which cannot send
// the token in an Authorization header. The answer's url opens the stream;
// the same ticket opens /v1/apps/socket?ticket=… instead. A super-admin
// names the tenant with ?tenant_id=, which the url then carries.
func (s *Server) handleTicketCreate(w http.ResponseWriter, r *http.Request) {
	if s.TicketService == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "tickets are not served here"))
		return
	}
	q := url.Values{}
	// A super-admin must name the tenant now: the stream is a tenant's,
	// and a url without one would be refused only once the ticket is
	// spent.
	if r.URL.Query().Has("tenant_id") || herd.ActorFromContext(r.Context()).Super {
		tenant, err := callerTenant(r)
		if err != nil {
			Error(w, r, err)
			return
		}
		q.Set("tenant_id", strconv.FormatInt(tenant, 10))
	}
	t, err := s.TicketService.CreateTicket(r.Context())
	if err != nil {
		Error(w, r, err)
		return
	}
	q.Set("ticket", t.Secret)
	t.URL = socketBase(r) + "/v1/stream?" + q.Encode()
	// The ticket must not linger in caches between here and the client.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, t)
}

// socketBase is the ws:// or wss:// root of this server as the client
// reached it. X-Forwarded-Proto is believed, as it can only change the url
// handed back to the client that sent it.
func socketBase(r *http.Request) string {
	scheme := "ws"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "wss"
	}
	return scheme + "://" + r.Host
}

// redactedQuery returns the request's query for its log line with the
// ticket's value hidden: a ticket in a log could be spent by whoever reads
// it first.
func redactedQuery(u *url.URL) string {
	if u.RawQuery == "" || !strings.Contains(strings.ToLower(u.RawQuery), "ticket") {
		return u.RawQuery
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "(unparsed query)"
	}
	for k, vs := range q {
		if strings.EqualFold(k, "ticket") {
			for i := range vs {
				vs[i] = "REDACTED"
			}
		}
	}
	return q.Encode()
}

// CreateTicket asks for a ticket for the client's token (POST
// /v1/stream/tickets); tenantID matters only to a super-admin's token.
func (c *Client) CreateTicket(ctx context.Context, tenantID int64) (*herd.Ticket, error) {
	var q url.Values
	if tenantID != 0 {
		q = url.Values{"tenant_id": {strconv.FormatInt(tenantID, 10)}}
	}
	var t herd.Ticket
	if err := c.do(ctx, http.MethodPost, "/v1/stream/tickets", q, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}
