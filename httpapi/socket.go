package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/wsconn"
)

// Socket serves a WebSocket that the API accepted (its Origin allowed)
// for a caller it authenticated, by a bearer token or by a ticket; the
// peer carries the way to read the caller's grants again.
type Socket interface {
	ServeConn(c *wsconn.Conn, p wsconn.Peer)
}

// socketHandler is a WebSocket route's handler, given the way to read the
// caller's actor again.
type socketHandler func(w http.ResponseWriter, r *http.Request, reauth herd.Reauthenticator)

// socketAuthed is authed for the WebSocket routes, which a browser opens
// without an Authorization header: the Origin is checked first (so that a
// page of another site never spends a ticket), then either the bearer
// token or a ticket (?ticket=, from POST /v1/stream/tickets) authenticates
// the request. Either way the token's tenant and grants apply, read now,
// and again by the socket after every change of access.
func (s *Server) socketAuthed(h socketHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.Origins.Allows(r) {
			Error(w, r, originError(r))
			return
		}
		ticket, hasTicket := r.URL.Query()["ticket"]
		var a *herd.Actor
		var reauth herd.Reauthenticator
		var err error
		switch {
		case hasTicket && r.Header.Get("Authorization") != "":
			err = herd.Errorf(herd.EINVALID, "send a ticket or an Authorization header, not both")
		case hasTicket:
			// Not spent on a request that cannot become a socket.
			if !isWebSocketUpgrade(r) {
				err = herd.Errorf(herd.EINVALID, "%s is a WebSocket: open it with a WebSocket client", r.URL.Path)
			} else if s.TicketService == nil {
				err = herd.Errorf(herd.EUNAUTHORIZED, "tickets are not served here: send Authorization: Bearer <token>")
			} else {
				a, reauth, err = s.TicketService.RedeemTicket(r.Context(), ticket[0])
			}
		default:
			secret, ok := bearerToken(r)
			if !ok {
				err = herd.Errorf(herd.EUNAUTHORIZED, "missing bearer token: send Authorization: Bearer <token>, or, from a browser, open the socket with the ticket of POST /v1/stream/tickets (?ticket=…)")
				break
			}
			if a, err = s.UserService.Authenticate(r.Context(), secret); err == nil {
				reauth = func(ctx context.Context) (*herd.Actor, error) { return s.UserService.Authenticate(ctx, secret) }
			}
		}
		if err != nil {
			Error(w, r, err)
			return
		}
		if rw, ok := w.(*responseWriter); ok {
			rw.actor = a
		}
		if s.limited(w, r, a) {
			return
		}
		h(w, r.WithContext(herd.NewContextWithActor(r.Context(), a)), reauth)
	}
}

func originError(r *http.Request) error {
	return herd.Errorf(herd.EFORBIDDEN, "origin %q may not open this socket: start herd with --allowed-origins naming it", r.Header.Get("Origin"))
}

// isWebSocketUpgrade reports whether the request asks for a WebSocket.
func isWebSocketUpgrade(r *http.Request) bool {
	for v := range strings.SplitSeq(r.Header.Get("Connection"), ",") {
		if strings.EqualFold(strings.TrimSpace(v), "upgrade") {
			return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
		}
	}
	return false
}

// serveSocket upgrades the request and hands the connection to sock.
func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request, sock Socket, p wsconn.Peer) {
	c, err := wsconn.Accept(w, r, s.Origins)
	if errors.Is(err, wsconn.ErrOrigin) {
		Error(w, r, originError(r))
		return
	} else if err != nil {
		return // Accept answered
	}
	sock.ServeConn(c, p)
}

// handleStream handles GET /v1/stream.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, reauth herd.Reauthenticator) {
	if s.Stream == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "the stream is not served here"))
		return
	}
	tenant, err := callerTenant(r)
	if err != nil {
		Error(w, r, err)
		return
	}
	s.serveSocket(w, r, s.Stream, wsconn.Peer{Actor: herd.ActorFromContext(r.Context()), Reauth: reauth, TenantID: tenant})
}

// handleAppSocket handles GET /v1/apps/socket.
func (s *Server) handleAppSocket(w http.ResponseWriter, r *http.Request, reauth herd.Reauthenticator) {
	if s.AppSocket == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "the apps socket is not served here"))
		return
	}
	a := herd.ActorFromContext(r.Context())
	if a.Super {
		Error(w, r, herd.Errorf(herd.EFORBIDDEN, "the apps socket serves user tokens: an app acts as a user of one tenant, with that user's grants"))
		return
	}
	s.serveSocket(w, r, s.AppSocket, wsconn.Peer{Actor: a, Reauth: reauth, TenantID: a.TenantID})
}
