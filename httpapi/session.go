package httpapi

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/wsconn"
)

// People sign in with a password and are then known by the session cookie
// (herd.SessionCookie: HttpOnly, SameSite=Strict, Secure under TLS). A
// cookie is sent by the browser whoever made the request, so the API takes
// it only from herd's own pages: a request with the cookie and an Origin
// of another site is refused, and a write (any method but GET and HEAD)
// needs both an Origin of herd's own and the HeaderHerdRequest header,
// which no form can send and no other origin may send without a preflight
// that herd refuses. Bearer tokens are unchanged, and win over a cookie
// sent with one.

// HeaderHerdRequest must accompany every write made with the session
// cookie (any value).
const HeaderHerdRequest = "X-Herd-Request"

// Failed sign-ins allowed before they are refused unheard (429), and how
// fast that allowance comes back: per account (tenant and name) and, so
// that one client cannot try many accounts, per address.
const (
	signInFailsPerAccount = 5
	signInAccountRefill   = 12 * time.Second // 5 a minute
	signInFailsPerAddress = 20
	signInAddressRefill   = 3 * time.Second // 20 a minute
)

type signInAccount struct {
	tenantID int64
	login    string
}

type signInLimits struct {
	accounts  *limiter[signInAccount]
	addresses *limiter[string]
}

func newSignInLimits() signInLimits {
	return signInLimits{
		accounts:  newLimiter[signInAccount](1/signInAccountRefill.Seconds(), signInFailsPerAccount),
		addresses: newLimiter[string](1/signInAddressRefill.Seconds(), signInFailsPerAddress),
	}
}

// sessionActor authenticates a request by its session cookie, holding it
// to the rules above.
func (s *Server) sessionActor(r *http.Request, c *http.Cookie) (*herd.Actor, error) {
	if err := cookieOrigin(r); err != nil {
		return nil, err
	}
	return s.SessionService.AuthenticateSession(r.Context(), c.Value)
}

// cookieOrigin checks that a request carrying the session cookie comes
// from herd's own page.
func cookieOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin != "" && !wsconn.SameOrigin(r) {
		return herd.Errorf(herd.EFORBIDDEN, "the session cookie is taken from herd's own pages only, not from %q: send Authorization: Bearer <token> from other origins", origin)
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	if origin == "" {
		return herd.Errorf(herd.EFORBIDDEN, "a write with the session cookie must say its Origin (browsers do)")
	}
	if r.Header.Get(HeaderHerdRequest) == "" {
		return herd.Errorf(herd.EFORBIDDEN, "a write with the session cookie must send the %s header", HeaderHerdRequest)
	}
	return nil
}

// withSessions answers 404 on the routes of passwords and sign-in when no
// SessionService is set (the server's routes are registered before its
// services are).
func (s *Server) withSessions(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.SessionService == nil {
			Error(w, r, herd.Errorf(herd.ENOTFOUND, "passwords and sign-in are not served here"))
			return
		}
		h(w, r)
	}
}

// sessionCookie returns the request's session cookie, if it has one and
// sessions are served here.
func (s *Server) sessionCookie(r *http.Request) (*http.Cookie, bool) {
	if s.SessionService == nil {
		return nil, false
	}
	c, err := r.Cookie(herd.SessionCookie)
	return c, err == nil && c.Value != ""
}

type signInRequest struct {
	TenantID id     `json:"tenant_id"`
	Name     string `json:"name"`
	Password string `json:"password"`
}

// handleSessionCreate handles POST /v1/sessions: a sign-in. It answers the
// session (never its secret, which goes in the Set-Cookie header only).
// Each attempt takes a token of its address's and its account's failure
// allowance before anything is checked, and gets it back unless it failed
// with the wrong tenant, name or password; past the allowance a sign-in is
// refused unheard. Each failure is logged, without the password.
func (s *Server) handleSessionCreate(w http.ResponseWriter, r *http.Request) {
	// A sign-in too comes from herd's own page (so that no other site can
	// sign a browser in to an account of its choosing).
	if err := cookieOrigin(r); err != nil {
		Error(w, r, err)
		return
	}
	var req signInRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	switch {
	case req.TenantID == 0 || req.Name == "" || req.Password == "":
		Error(w, r, herd.Errorf(herd.EINVALID, "a sign-in needs tenant_id, name and password"))
		return
	case len(req.Name) > herd.MaxNameLen || len(req.Password) > herd.MaxPasswordBytes:
		// No user has such a name or password: refused before it costs a
		// hash or a bucket.
		Error(w, r, herd.Errorf(herd.EINVALID, "a name is at most %d bytes and a password at most %d", herd.MaxNameLen, herd.MaxPasswordBytes))
		return
	}
	addr := clientAddress(r)
	name := logName(req.Name)
	refuse := func(wait time.Duration) {
		s.Logger.Warn("sign-in refused: too many failures", "tenant_id", req.TenantID, "name", name, "remote", addr)
		tooMany(w, r, wait, "too many failed sign-ins for this account or address")
	}
	now := time.Now()
	byAddr, wait := s.signInFails.addresses.take(addr, now)
	if byAddr == nil {
		refuse(wait)
		return
	}
	byAccount, wait := s.signInFails.accounts.take(signInAccount{tenantID: int64(req.TenantID), login: herd.FoldText(req.Name)}, now)
	if byAccount == nil {
		byAddr.CancelAt(now)
		refuse(wait)
		return
	}
	ss, err := s.SessionService.SignIn(r.Context(), int64(req.TenantID), req.Name, req.Password)
	if herd.ErrorCode(err) == herd.EUNAUTHORIZED {
		s.Logger.Warn("sign-in failed", "tenant_id", req.TenantID, "name", name, "remote", addr)
	} else {
		byAddr.CancelAt(now)
		byAccount.CancelAt(now)
	}
	if err != nil {
		Error(w, r, err)
		return
	}
	s.Logger.Info("signed in", "tenant_id", ss.TenantID, "user_id", ss.UserID, "session", ss.ID, "remote", addr)
	http.SetCookie(w, s.newSessionCookie(r, ss.Secret, int(herd.SessionTTL.Seconds())))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, ss)
}

// tooMany refuses an attempt past its failure allowance: 429 with a
// Retry-After in whole seconds.
func tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration, what string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	Error(w, r, herd.Errorf(herd.ERATELIMITED, "%s: retry after the Retry-After header's seconds", what))
}

// logName is a sign-in's name as logged: its first 64 bytes (people type
// their password into the name field; a log line is no place for a whole
// one, nor for a megabyte).
func logName(n string) string {
	if len(n) <= 64 {
		return n
	}
	n = n[:64]
	for !utf8.ValidString(n) {
		n = n[:len(n)-1]
	}
	return n + "…"
}

// handleSessionDelete handles DELETE /v1/sessions/current: the session of
// the cookie ends, and the cookie is cleared, whether or not it still
// worked.
func (s *Server) handleSessionDelete(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCookie(r)
	if !ok {
		Error(w, r, herd.Errorf(herd.EUNAUTHORIZED, "no session cookie: nothing to sign out of"))
		return
	}
	if err := cookieOrigin(r); err != nil {
		Error(w, r, err)
		return
	}
	if err := s.SessionService.SignOut(r.Context(), c.Value); err != nil {
		Error(w, r, err)
		return
	}
	http.SetCookie(w, s.newSessionCookie(r, "", -1))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) newSessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     herd.SessionCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil || s.SecureCookies || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"),
		SameSite: http.SameSiteStrictMode,
	}
}

type passwordRequest struct {
	Password string `json:"password"`
	// Current is the password the user has, when they change their own.
	Current string `json:"current_password,omitempty"`
}

// handlePasswordSet handles POST /v1/users/{id}/password. No idempotency
// record is kept of it: the record fingerprints the body, and a fast hash
// of a password is what argon2id is there to avoid storing. A wrong
// current password counts against the user's sign-in allowance, so that a
// stolen session cannot guess it at the API's rate.
func (s *Server) handlePasswordSet(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	var req passwordRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	now := time.Now()
	// The user's own allowance: tenant 0 is no sign-in's (those need one).
	key := signInAccount{login: "user " + strconv.FormatInt(id, 10)}
	tries, wait := s.signInFails.accounts.take(key, now)
	if tries == nil {
		tooMany(w, r, wait, "too many wrong current passwords for this user")
		return
	}
	err = s.SessionService.SetPassword(r.Context(), id, req.Password, req.Current)
	if herd.ErrorCode(err) != herd.EFORBIDDEN || req.Current == "" {
		tries.CancelAt(now)
	}
	if err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// SetPassword sets a user's password (POST /v1/users/{id}/password);
// current is the password the user has when they change their own.
func (c *Client) SetPassword(ctx context.Context, userID int64, password, current string) error {
	return c.do(ctx, http.MethodPost, idPath("/v1/users/%d/password", userID), nil, passwordRequest{Password: password, Current: current}, nil)
}

// clientAddress is the key of the per-address sign-in allowance: the
// request's peer address, an IPv6 one by its /64 (what one subscriber
// gets). Behind a proxy every client has the proxy's; the per-account
// allowance still holds.
func clientAddress(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}
