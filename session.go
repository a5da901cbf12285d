package herd

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"
)

// People sign in with their tenant, name and password, and get a session:
// a secret the HTTP API sets in an HttpOnly cookie and then takes in place
// of a bearer token. A session is a token of its user (the same row, id
// sequence and grants, so everything keyed by a token, idempotency keys,
// rate limits and stream tickets, works for it unchanged) that expires and
// that is only ever taken from the cookie: a session secret sent as a
// bearer token, or an API token sent as the cookie, is refused.

const (
	// MinPasswordRunes and MaxPasswordBytes bound a password (NIST SP
	// 800-63B: length, no rules about which characters; the maximum only
	// keeps one hash's input bounded).
	MinPasswordRunes = 10
	MaxPasswordBytes = 1024
	// SessionTTL is how long a session lasts from its sign-in, whatever
	// its use (AWS's console signs people out after 12 hours too).
	SessionTTL = 12 * time.Hour
	// SessionCookie is the name of the cookie that carries the secret.
	SessionCookie = "herd_session"
)

// A password link is a one-time secret an admin hands a person (in a URL
// of the dashboard) with which they set their password without signing in:
// the first password of a new user, or a new one for a user who forgot
// theirs. It lasts PasswordLinkTTL, is spent by its use, and a new link of
// the user ends the ones before.
const (
	PasswordLinkPrefix = "herd_setpw_"
	PasswordLinkTTL    = 24 * time.Hour
	// EventUserPasswordLink says an admin made a password link for a user
	// (the event carries no secret).
	EventUserPasswordLink = "user.password_link_created"
)

// PasswordLink is a made link; Secret is only set when it is made.
type PasswordLink struct {
	UserID    int64     `json:"user_id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	Secret    string    `json:"token,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// IsPasswordLinkSecret reports whether s has the shape of a link's secret.
func IsPasswordLinkSecret(s string) bool {
	return strings.HasPrefix(s, PasswordLinkPrefix) && len(s) > len(PasswordLinkPrefix)+20
}

// EventUserPasswordSet says a user's password was set or changed (the
// event carries no password or hash); the user's sessions end with it.
const EventUserPasswordSet = "user.password_set"

// Session is a signed-in person's session. Secret is only set when it is
// made and never leaves the server but in the Set-Cookie header.
type Session struct {
	ID        int64     `json:"id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	UserID    int64     `json:"user_id,string"`
	Secret    string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CheckPassword is the rule a new password must meet.
func CheckPassword(p string) error {
	switch {
	case !utf8.ValidString(p):
		return Errorf(EINVALID, "password must be UTF-8 text")
	case utf8.RuneCountInString(p) < MinPasswordRunes:
		return Errorf(EINVALID, "password must be at least %d characters", MinPasswordRunes)
	case len(p) > MaxPasswordBytes:
		return Errorf(EINVALID, "password must be at most %d bytes", MaxPasswordBytes)
	}
	return nil
}

// SessionService sets people's passwords and signs them in and out.
type SessionService interface {
	// SetPassword sets a user's password, ending their sessions: the
	// user themself or an admin of their tenant's root (or a super-admin)
	// may, as for CreateToken. A user changing their own password gives
	// the one they have as current (so that a stolen session cannot take
	// the account for good); an admin setting another's does not.
	// EINVALID for a password CheckPassword refuses or a missing current,
	// EFORBIDDEN for a wrong current, ECONFLICT when another user of the
	// tenant signs in with the same name (names compare case-folded),
	// ENOTFOUND as for FindUserByID.
	SetPassword(ctx context.Context, userID int64, password, current string) error
	// SignIn starts a session for the user of the tenant with that name
	// and password. Every failure (no such tenant or user, no password,
	// the wrong one, a disabled user) is the same EUNAUTHORIZED, in about
	// the same time.
	SignIn(ctx context.Context, tenantID int64, name, password string) (*Session, error)
	// AuthenticateSession returns the actor of a session secret, with its
	// grants loaded now; EUNAUTHORIZED when it is unknown, ended, expired,
	// an API token's, or its user is disabled.
	AuthenticateSession(ctx context.Context, secret string) (*Actor, error)
	// SignOut ends the session of the secret; ending one already gone is
	// not an error.
	SignOut(ctx context.Context, secret string) error
	// CreatePasswordLink makes a password link for user id: an admin of
	// the tenant's root (or a super-admin) may. ENOTFOUND as for
	// FindUserByID, EFORBIDDEN for anyone else.
	CreatePasswordLink(ctx context.Context, userID int64) (*PasswordLink, error)
	// SetPasswordWithLink sets the password of the link's user, as
	// SetPassword does, and spends the link. EUNAUTHORIZED for a link
	// unknown, spent, ended or expired; EINVALID as CheckPassword.
	SetPasswordWithLink(ctx context.Context, secret, password string) error
}
