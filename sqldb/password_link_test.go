package sqldb_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestSessionService_PasswordLinks(t *testing.T) {
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
		ann, annToken := f.mustUser(t, ten.ID, "ann")
		f.mustGrant(t, ann.ID, ten.RootNodeID, herd.RoleAdmin)
		bob, bobToken := f.mustUser(t, ten.ID, "bob")
		f.mustGrant(t, bob.ID, site.ID, herd.RoleAdmin)
		newbie, _ := f.mustUser(t, ten.ID, "newbie")
		const pw = "newbie's first passphrase"

		t.Run("OK", func(t *testing.T) {
			l, err := ss.CreatePasswordLink(f.as(t, annToken), newbie.ID)
			mustOK(t, err)
			if !herd.IsPasswordLinkSecret(l.Secret) || l.UserID != newbie.ID || !l.ExpiresAt.Equal(time.UnixMilli(clock.Load()).UTC().Add(herd.PasswordLinkTTL)) {
				t.Fatalf("link %+v", l)
			}
			if ev := f.lastEvent(t, ten.ID, herd.EventUserPasswordLink); ev.SubjectID != newbie.ID || strings.Contains(string(ev.Payload), l.Secret) {
				t.Fatalf("event %+v", ev)
			}
			// Too short: refused, and the link is not spent by it.
			wantCode(t, ss.SetPasswordWithLink(context.Background(), l.Secret, "short"), herd.EINVALID)
			mustOK(t, ss.SetPasswordWithLink(context.Background(), l.Secret, pw))
			_, err = ss.SignIn(context.Background(), ten.ID, "newbie", pw)
			mustOK(t, err)
			// Spent.
			wantCode(t, ss.SetPasswordWithLink(context.Background(), l.Secret, "another passphrase"), herd.EUNAUTHORIZED)
		})

		t.Run("ErrNotTheirs", func(t *testing.T) {
			// A site's admin is not the tenant's; another tenant's user
			// finds no one.
			_, err := ss.CreatePasswordLink(f.as(t, bobToken), newbie.ID)
			wantCode(t, err, herd.EFORBIDDEN)
			_, gusToken := f.mustUser(t, other.ID, "gus")
			_, err = ss.CreatePasswordLink(f.as(t, gusToken), newbie.ID)
			wantCode(t, err, herd.ENOTFOUND)
			wantCode(t, ss.SetPasswordWithLink(context.Background(), herd.PasswordLinkPrefix+"made-up-made-up-made-up-made-up", pw), herd.EUNAUTHORIZED)
			wantCode(t, ss.SetPasswordWithLink(context.Background(), bobToken, pw), herd.EUNAUTHORIZED)
		})

		t.Run("ErrReplacedAndExpired", func(t *testing.T) {
			first, err := ss.CreatePasswordLink(f.super, bob.ID)
			mustOK(t, err)
			second, err := ss.CreatePasswordLink(f.super, bob.ID)
			mustOK(t, err)
			wantCode(t, ss.SetPasswordWithLink(context.Background(), first.Secret, "bob's passphrase"), herd.EUNAUTHORIZED)
			clock.Add((herd.PasswordLinkTTL + time.Second).Milliseconds())
			wantCode(t, ss.SetPasswordWithLink(context.Background(), second.Secret, "bob's passphrase"), herd.EUNAUTHORIZED)
			if _, err := ss.SignIn(context.Background(), ten.ID, "bob", "bob's passphrase"); herd.ErrorCode(err) != herd.EUNAUTHORIZED {
				t.Fatalf("a replaced or expired link set the password: %v", err)
			}
			// A new link sweeps the tenant's expired ones.
			_, err = ss.CreatePasswordLink(f.super, newbie.ID)
			mustOK(t, err)
			if n := f.count(t, `SELECT COUNT(*) FROM password_links WHERE tenant_id = ? AND expires_at <= ?`, ten.ID, clock.Load()); n != 0 {
				t.Fatalf("%d expired links left", n)
			}
		})
	})
}
