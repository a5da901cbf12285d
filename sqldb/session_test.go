package sqldb_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/password"
	"github.com/herd-iot/herd/sqldb"
)

// cheapHash keeps the tests' argon2id fast; the code path is the same.
var cheapHash = password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestSessionService(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.SetPasswordParams(cheapHash)
		var clock atomic.Int64
		clock.Store(time.Now().UnixMilli())
		db.Now = func() time.Time { return time.UnixMilli(clock.Load()) }
		f := newFixture(db)
		ss := sqldb.NewSessionService(db)
		ten := f.mustTenant(t, "acme")
		other := f.mustTenant(t, "globex")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ann, annToken := f.mustUser(t, ten.ID, "Ann Admin")
		f.mustGrant(t, ann.ID, ten.RootNodeID, herd.RoleAdmin)
		bob, bobToken := f.mustUser(t, ten.ID, "bob")
		f.mustGrant(t, bob.ID, site.ID, herd.RoleOperator)
		const pw = "correct horse battery"

		t.Run("OKSignIn", func(t *testing.T) {
			// Bob sets his first one himself; the name matches case-folded.
			mustOK(t, ss.SetPassword(f.as(t, bobToken), bob.ID, pw, ""))
			s, err := ss.SignIn(context.Background(), ten.ID, "BOB", pw)
			mustOK(t, err)
			if s.UserID != bob.ID || s.TenantID != ten.ID || !herd.IsTokenSecret(s.Secret) || !s.ExpiresAt.Equal(s.CreatedAt.Add(herd.SessionTTL)) {
				t.Fatalf("session %+v", s)
			}
			a, err := ss.AuthenticateSession(context.Background(), s.Secret)
			mustOK(t, err)
			if a.UserID != bob.ID || a.TenantID != ten.ID || a.TokenID != s.ID || len(a.Grants) != 1 || a.Grants[0].NodeID != site.ID {
				t.Fatalf("actor %+v", a)
			}
			// A session is not a bearer token, and a token is not a session.
			_, err = f.Users.Authenticate(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = ss.AuthenticateSession(context.Background(), bobToken)
			wantCode(t, err, herd.EUNAUTHORIZED)
			// Nor is it listed or revoked as one.
			toks, err := sqldb.NewListService(db).FindTokens(f.super, bob.ID, herd.ListParams{})
			mustOK(t, err)
			for _, tok := range toks.Items {
				if tok.ID == s.ID {
					t.Fatalf("the session is listed among the tokens: %+v", toks.Items)
				}
			}
			wantCode(t, f.Users.DeleteToken(f.super, s.ID), herd.ENOTFOUND)
			// A stream ticket of the session works, and ends with it.
			tickets := sqldb.NewTicketService(db)
			tk, err := tickets.CreateTicket(herd.NewContextWithActor(context.Background(), a))
			mustOK(t, err)
			mustOK(t, ss.SignOut(context.Background(), s.Secret))
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, _, err = tickets.RedeemTicket(context.Background(), tk.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			mustOK(t, ss.SignOut(context.Background(), s.Secret)) // again: nothing to end
			if ev := f.lastEvent(t, ten.ID, herd.EventTokenDeleted); ev == nil || ev.SubjectID != s.ID {
				t.Fatalf("sign-out wrote %+v, want token.deleted of the session", ev)
			}
		})

		t.Run("ErrSignIn", func(t *testing.T) {
			for _, c := range []struct {
				name     string
				tenantID int64
				user, pw string
			}{
				{"wrong password", ten.ID, "bob", pw + "!"},
				{"empty password", ten.ID, "bob", ""},
				{"unknown user", ten.ID, "carol", pw},
				{"no password set", ten.ID, "ann admin", pw},
				{"other tenant", other.ID, "bob", pw},
				{"no tenant", 0, "bob", pw},
			} {
				if _, err := ss.SignIn(context.Background(), c.tenantID, c.user, c.pw); err == nil || herd.ErrorCode(err) != herd.EUNAUTHORIZED {
					t.Errorf("%s: err %v, want %s", c.name, err, herd.EUNAUTHORIZED)
				} else if strings.Contains(err.Error(), c.pw) && c.pw != "" {
					t.Errorf("%s: the error %q holds the password", c.name, err)
				}
			}
		})

		t.Run("ErrSetPassword", func(t *testing.T) {
			before := f.state(t, ten.ID)
			wantCode(t, ss.SetPassword(f.as(t, annToken), bob.ID, "short", ""), herd.EINVALID)
			wantCode(t, ss.SetPassword(f.as(t, annToken), bob.ID, strings.Repeat("x", herd.MaxPasswordBytes+1), ""), herd.EINVALID)
			wantCode(t, ss.SetPassword(f.as(t, annToken), bob.ID, "\xff\xfe not text at all", ""), herd.EINVALID)
			// Bob, an operator, may not set Ann's.
			wantCode(t, ss.SetPassword(f.as(t, bobToken), ann.ID, pw, ""), herd.EFORBIDDEN)
			// Nobody of another tenant finds him.
			_, globexToken := f.mustUser(t, other.ID, "gus")
			wantCode(t, ss.SetPassword(f.as(t, globexToken), bob.ID, pw, ""), herd.ENOTFOUND)
			// Changing his own, bob gives the one he has: none, or a wrong
			// one, changes nothing.
			wantCode(t, ss.SetPassword(f.as(t, bobToken), bob.ID, "bob's new passphrase", ""), herd.EINVALID)
			wantCode(t, ss.SetPassword(f.as(t, bobToken), bob.ID, "bob's new passphrase", pw+"?"), herd.EFORBIDDEN)
			f.wantUnchanged(t, ten.ID, before)
			if _, err := ss.SignIn(context.Background(), ten.ID, "bob", pw); err != nil {
				t.Fatalf("bob's password changed by a refused change: %v", err)
			}
			// Another "Bob" may not take bob's login.
			bob2, _ := f.mustUser(t, ten.ID, "Bob")
			wantCode(t, ss.SetPassword(f.super, bob2.ID, pw, ""), herd.ECONFLICT)
			// Nor may a user with a password be renamed onto it.
			mustOK(t, ss.SetPassword(f.super, ann.ID, pw, ""))
			_, err := f.Users.UpdateUser(f.super, ann.ID, herd.UserUpdate{Name: new("BOB")})
			wantCode(t, err, herd.ECONFLICT)
			// A user without one may: there is no login to clash.
			_, err = f.Users.UpdateUser(f.super, bob2.ID, herd.UserUpdate{Name: new("bob")})
			mustOK(t, err)
		})

		t.Run("OKAdminResetsAndRename", func(t *testing.T) {
			s, err := ss.SignIn(context.Background(), ten.ID, "bob", pw)
			mustOK(t, err)
			// An admin sets a new password: the old one stops, and so does
			// every session of bob's; his API token goes on.
			const pw2 = "a different passphrase"
			mustOK(t, ss.SetPassword(f.as(t, annToken), bob.ID, pw2, ""))
			if ev := f.lastEvent(t, ten.ID, herd.EventUserPasswordSet); ev == nil || ev.SubjectID != bob.ID || strings.Contains(string(ev.Payload), "argon2") {
				t.Fatalf("event %+v", ev)
			}
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = ss.SignIn(context.Background(), ten.ID, "bob", pw)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = f.Users.Authenticate(context.Background(), bobToken)
			mustOK(t, err)
			// Renamed, he signs in by his new name only.
			_, err = f.Users.UpdateUser(f.super, bob.ID, herd.UserUpdate{Name: new("Robert")})
			mustOK(t, err)
			_, err = ss.SignIn(context.Background(), ten.ID, "bob", pw2)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = ss.SignIn(context.Background(), ten.ID, "robert", pw2)
			mustOK(t, err)
		})

		t.Run("ErrExpiredAndDisabled", func(t *testing.T) {
			const pw2 = "a different passphrase"
			s, err := ss.SignIn(context.Background(), ten.ID, "robert", pw2)
			mustOK(t, err)
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			mustOK(t, err)
			// Disabled: the session ends, and stays ended once he is
			// enabled again; no new one starts while he is disabled.
			_, err = f.Users.UpdateUser(f.super, bob.ID, herd.UserUpdate{Disabled: new(true)})
			mustOK(t, err)
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = ss.SignIn(context.Background(), ten.ID, "robert", pw2)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = f.Users.UpdateUser(f.super, bob.ID, herd.UserUpdate{Disabled: new(false)})
			mustOK(t, err)
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			// Past its end a session is refused, and so is a ticket asked
			// with it just before, whose own 30 s have not run out.
			s, err = ss.SignIn(context.Background(), ten.ID, "robert", pw2)
			mustOK(t, err)
			a, err := ss.AuthenticateSession(context.Background(), s.Secret)
			mustOK(t, err)
			clock.Add((herd.SessionTTL - 5*time.Second).Milliseconds())
			tk, err := sqldb.NewTicketService(db).CreateTicket(herd.NewContextWithActor(context.Background(), a))
			mustOK(t, err)
			clock.Add((10 * time.Second).Milliseconds())
			if !tk.ExpiresAt.After(time.UnixMilli(clock.Load())) {
				t.Fatalf("the ticket expired (%v) before the test asks for it", tk.ExpiresAt)
			}
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = sqldb.NewTicketService(db).CreateTicket(herd.NewContextWithActor(context.Background(), a))
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, _, err = sqldb.NewTicketService(db).RedeemTicket(context.Background(), tk.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			// The next sign-in sweeps the ended session's row.
			_, err = ss.SignIn(context.Background(), ten.ID, "robert", pw2)
			mustOK(t, err)
			if n := f.count(t, `SELECT COUNT(*) FROM tokens WHERE user_id = ? AND session AND expires_at <= ?`, bob.ID, clock.Load()); n != 0 {
				t.Fatalf("%d ended sessions left", n)
			}
		})

		t.Run("OKRehashedWithNewCosts", func(t *testing.T) {
			// The store's costs are raised: the next sign-in makes the hash
			// again with them, and both it and the session it starts work.
			raised := cheapHash
			raised.Time = 2
			db.SetPasswordParams(raised)
			defer db.SetPasswordParams(cheapHash)
			hashOf := func() string {
				var h string
				mustOK(t, db.SQL().QueryRowContext(t.Context(), db.Rebind(`SELECT hash FROM user_passwords WHERE user_id = ?`), bob.ID).Scan(&h))
				return h
			}
			before := hashOf()
			s, err := ss.SignIn(context.Background(), ten.ID, "robert", "a different passphrase")
			mustOK(t, err)
			after := hashOf()
			if p, _, _, err := password.Parse(after); err != nil || p != raised || after == before {
				t.Fatalf("hash %q after the sign-in (was %q): params %+v, %v", after, before, p, err)
			}
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			mustOK(t, err)
			_, err = ss.SignIn(context.Background(), ten.ID, "robert", "a different passphrase")
			mustOK(t, err)
			if hashOf() != after {
				t.Fatal("a hash with the store's costs was made again")
			}
		})

		t.Run("OKOwnChange", func(t *testing.T) {
			// With the one he has, bob changes his own; his other
			// sessions end with it.
			const pw2, pw3 = "a different passphrase", "and a third passphrase"
			s, err := ss.SignIn(context.Background(), ten.ID, "robert", pw2)
			mustOK(t, err)
			mustOK(t, ss.SetPassword(f.as(t, bobToken), bob.ID, pw3, pw2))
			_, err = ss.AuthenticateSession(context.Background(), s.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			_, err = ss.SignIn(context.Background(), ten.ID, "robert", pw3)
			mustOK(t, err)
		})
	})
}
