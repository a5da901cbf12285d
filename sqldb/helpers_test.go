package sqldb_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// fixture bundles a store and its services, acting as the super-admin
// unless a test picks another actor.
type fixture struct {
	db      *sqldb.DB
	Tenants *sqldb.TenantService
	Nodes   *sqldb.NodeService
	Devices *sqldb.DeviceService
	Users   *sqldb.UserService
	Grants  *sqldb.GrantService
	super   context.Context
}

func newFixture(db *sqldb.DB) *fixture {
	return &fixture{
		db:      db,
		Tenants: sqldb.NewTenantService(db),
		Nodes:   sqldb.NewNodeService(db),
		Devices: sqldb.NewDeviceService(db),
		Users:   sqldb.NewUserService(db),
		Grants:  sqldb.NewGrantService(db),
		super:   testutil.SuperContext(),
	}
}

// keySeq makes device keys unique across a test binary; keys are unique
// store-wide.
var keySeq atomic.Int64

func nextKey(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, keySeq.Add(1))
}

func (f *fixture) mustTenant(tb testing.TB, name string) *herd.Tenant {
	tb.Helper()
	t := &herd.Tenant{Name: name}
	if err := f.Tenants.CreateTenant(f.super, t); err != nil {
		tb.Fatalf("create tenant %q: %v", name, err)
	}
	return t
}

func (f *fixture) mustNode(tb testing.TB, parentID int64, name string) *herd.Node {
	tb.Helper()
	n := &herd.Node{ParentID: parentID, Kind: "site", Name: name}
	if err := f.Nodes.CreateNode(f.super, n); err != nil {
		tb.Fatalf("create node %q under %d: %v", name, parentID, err)
	}
	return n
}

func (f *fixture) mustDevices(tb testing.TB, nodeID int64, n int) []*herd.Device {
	tb.Helper()
	ds := make([]*herd.Device, n)
	for i := range ds {
		ds[i] = &herd.Device{NodeID: nodeID, Key: nextKey("dev")}
	}
	if err := f.Devices.CreateDevices(f.super, ds); err != nil {
		tb.Fatalf("create %d devices on node %d: %v", n, nodeID, err)
	}
	return ds
}

// mustUser creates a user with a token and returns the user and the token
// secret.
func (f *fixture) mustUser(tb testing.TB, tenantID int64, name string) (*herd.User, string) {
	tb.Helper()
	u := &herd.User{TenantID: tenantID, Name: name}
	if err := f.Users.CreateUser(f.super, u); err != nil {
		tb.Fatalf("create user %q: %v", name, err)
	}
	tok, err := f.Users.CreateToken(f.super, u.ID)
	if err != nil {
		tb.Fatalf("create token for %q: %v", name, err)
	}
	return u, tok.Secret
}

func (f *fixture) mustGrant(tb testing.TB, userID, nodeID int64, role herd.Role) *herd.Grant {
	tb.Helper()
	g := &herd.Grant{UserID: userID, NodeID: nodeID, Role: role}
	if err := f.Grants.CreateGrant(f.super, g); err != nil {
		tb.Fatalf("grant %s on node %d to user %d: %v", role, nodeID, userID, err)
	}
	return g
}

// as authenticates a token secret the way every request does and returns
// a context acting as its user.
func (f *fixture) as(tb testing.TB, secret string) context.Context {
	tb.Helper()
	a, err := f.Users.Authenticate(context.Background(), secret)
	if err != nil {
		tb.Fatalf("authenticate: %v", err)
	}
	return herd.NewContextWithActor(context.Background(), a)
}

// walk pages through a query to its end and returns every item, checking
// that each page's count agrees with the first.
func (f *fixture) walk(tb testing.TB, ctx context.Context, q herd.DeviceQuery) ([]*herd.Device, int64) {
	tb.Helper()
	var all []*herd.Device
	var count int64 = -1
	for pages := 0; ; pages++ {
		if pages > 100000 {
			tb.Fatal("walk does not end")
		}
		p, err := f.Devices.QueryDevices(ctx, q)
		if err != nil {
			tb.Fatalf("query %+v: %v", q, err)
		}
		if len(p.Items) > q.Limit {
			tb.Fatalf("page of %d items for limit %d", len(p.Items), q.Limit)
		}
		if count == -1 {
			count = p.Count
		} else if p.Count != count {
			tb.Fatalf("page %d count %d, first page %d", pages, p.Count, count)
		}
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			return all, count
		}
		if len(p.Items) != q.Limit {
			tb.Fatalf("page %d of %d items (limit %d) has a next cursor", pages, len(p.Items), q.Limit)
		}
		q.Cursor = p.NextCursor // the store checks and decodes it
	}
}

// wantCode fails unless err carries the application error code.
func wantCode(tb testing.TB, err error, code string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want %s", code)
	} else if got := herd.ErrorCode(err); got != code {
		tb.Fatalf("got %s (%v), want %s", got, err, code)
	}
}

func ids(ds []*herd.Device) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func mustOK(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// isWrite reports whether a statement changes data.
func isWrite(q string) bool {
	q = strings.ToUpper(strings.TrimSpace(q))
	return strings.HasPrefix(q, "INSERT") || strings.HasPrefix(q, "UPDATE") || strings.HasPrefix(q, "DELETE")
}
