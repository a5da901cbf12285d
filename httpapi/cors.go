package httpapi

import (
	"net/http"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/wsconn"
)

// What a page on an allowed origin may send and read (CORS). herd's routes
// use no other methods, and read no other request headers.
var (
	corsMethods = "GET, POST, PUT, PATCH, DELETE"
	corsHeaders = "Authorization, Content-Type, If-Match, " + HeaderIdempotencyKey
	corsExpose  = "ETag, Retry-After, WWW-Authenticate, " + HeaderReplayed
)

// corsMaxAge is how long a browser may keep a preflight's answer (in
// seconds): a change of --allowed-origins reaches pages within it.
const corsMaxAge = "600"

// cors applies the origin policy to a /v1 request that carries an Origin
// (one made by a web page). It answers a preflight itself, and reports
// true when it did; other requests go on, with the headers that let the
// page read the answer when its origin is allowed. A request from an origin
// that is not allowed is still served (without those headers the browser
// keeps the answer from the page, and a page cannot send a token without a
// preflight, which is refused); its preflight is answered 403.
//
// With "*" the answer says Access-Control-Allow-Origin: * and never allows
// credentials (browsers refuse the two together); with a list, the page's
// own origin is named and credentials are allowed. Other origins
// authenticate by the Authorization header only: the session cookie is
// SameSite=Strict and taken from herd's own pages only (session.go), so
// credentials add nothing a page could abuse.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	h := w.Header()
	h.Add("Vary", "Origin")
	if preflight {
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
	}
	if !wsconn.SameOrigin(r) && !s.Origins.AllowsOrigin(origin) {
		if preflight {
			Error(w, r, herd.Errorf(herd.EFORBIDDEN, "origin %q may not call this API from a browser: start herd with --allowed-origins naming it", origin))
			return true
		}
		return false
	}
	if s.Origins.Any() {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if !preflight {
		h.Set("Access-Control-Expose-Headers", corsExpose)
		return false
	}
	h.Set("Access-Control-Allow-Methods", corsMethods)
	h.Set("Access-Control-Allow-Headers", corsHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}

// isAPIPath reports whether CORS applies to the path: the /v1 API, not the
// probes, /metrics or /mqtt.
func isAPIPath(p string) bool { return strings.HasPrefix(p, "/v1/") }
