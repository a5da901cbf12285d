package httpapi

import (
	"net/http"
	"strings"

	"github.com/herd-iot/herd"
)

// authed wraps a handler so that it runs only for a valid bearer token or
// session cookie (session.go), with its actor in the request context. The actor, grants included, is
// loaded on every request: there is no cache, so a revoked grant or token
// stops working on the very next request.
func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var a *herd.Actor
		var err error
		if secret, ok := bearerToken(r); ok {
			a, err = s.UserService.Authenticate(r.Context(), secret)
		} else if c, ok := s.sessionCookie(r); ok {
			a, err = s.sessionActor(r, c)
		} else {
			err = herd.Errorf(herd.EUNAUTHORIZED, "missing bearer token: send Authorization: Bearer <token>, or sign in (POST /v1/sessions) for the session cookie")
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
		h(w, r.WithContext(herd.NewContextWithActor(r.Context(), a)))
	}
}

// bearerToken returns the token of an "Authorization: Bearer …" header. The
// scheme is case-insensitive (RFC 7235).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
