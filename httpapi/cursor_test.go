package httpapi_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// editCursor re-encodes a cursor's body after edit and keeps its
// signature, as a client editing a cursor must.
func editCursor(t *testing.T, cursor string, edit func(string) string) string {
	t.Helper()
	i := strings.LastIndexByte(cursor, '.')
	body, err := base64.RawURLEncoding.DecodeString(cursor[:i])
	if err != nil {
		t.Fatalf("cursor %q: %v", cursor, err)
	}
	edited := edit(string(body))
	if edited == string(body) {
		t.Fatalf("the edit of %s changed nothing", body)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(edited)) + cursor[i:]
}

// firstPage asks for two devices of the fleet's tenant and returns the page.
func (e *env) firstPage(t *testing.T, tenantID int64, sort string) herd.DevicePage {
	t.Helper()
	r := e.do("GET", fmt.Sprintf("/v1/devices?tenant_id=%d&limit=2&sort=%s", tenantID, sort), adminSecret, nil)
	r.wantStatus(t, http.StatusOK)
	var p herd.DevicePage
	r.decode(t, &p)
	if p.NextCursor == "" || p.Count != 7 {
		t.Fatalf("first page: count %d, cursor %q", p.Count, p.NextCursor)
	}
	return p
}

// TestDeviceCursor_Forged: a cursor carries the first page's count, which
// later pages repeat; a client that edits any part of it, or brings one
// from another store, gets 400 invalid_cursor, not the count it wrote.
func TestDeviceCursor_Forged(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		first := e.firstPage(t, f.tenant.ID, "id")
		next := func(sort, cursor string) response {
			return e.do("GET", fmt.Sprintf("/v1/devices?tenant_id=%d&limit=2&sort=%s&cursor=%s", f.tenant.ID, sort, url.QueryEscape(cursor)), adminSecret, nil)
		}
		t.Run("OK", func(t *testing.T) {
			r := next("id", first.NextCursor)
			r.wantStatus(t, http.StatusOK)
			var p herd.DevicePage
			r.decode(t, &p)
			if p.Count != 7 || len(p.Items) != 2 || p.Items[0].ID <= first.Items[1].ID {
				t.Fatalf("second page: %s", r.Body)
			}
		})
		desc := e.firstPage(t, f.tenant.ID, "-id")
		sig := first.NextCursor[strings.LastIndexByte(first.NextCursor, '.'):]
		for name, c := range map[string]struct{ sort, cursor string }{
			"ErrCountEdited":     {"id", editCursor(t, first.NextCursor, func(b string) string { return strings.Replace(b, `"c":7`, `"c":9999`, 1) })},
			"ErrCountCapped":     {"id", editCursor(t, first.NextCursor, func(b string) string { return strings.Replace(b, `"c":7`, `"c":10000,"cc":true`, 1) })},
			"ErrPositionEdited":  {"id", editCursor(t, first.NextCursor, func(b string) string { return strings.Replace(b, `"i":"`, `"i":"1`, 1) })},
			"ErrSortEdited":      {"-id", desc.NextCursor[:strings.LastIndexByte(desc.NextCursor, '.')] + sig},
			"ErrSortParam":       {"-id", first.NextCursor},
			"ErrSignatureEdited": {"id", flipLast(first.NextCursor)},
			"ErrSignatureGone":   {"id", first.NextCursor[:strings.LastIndexByte(first.NextCursor, '.')]},
			"ErrTruncated":       {"id", first.NextCursor[:len(first.NextCursor)-1]},
			"ErrNotACursor":      {"id", "page 2"},
		} {
			t.Run(name, func(t *testing.T) {
				next(c.sort, c.cursor).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR)
			})
		}
		t.Run("ErrOtherStore", func(t *testing.T) {
			// The same fleet in another store has the same ids, so only the
			// key tells the cursors apart.
			o := mustOpenServer(t, testutil.MustOpenDB(t, db.Dialect()))
			if of := o.mustCreateFleet(); of.tenant.ID != f.tenant.ID {
				t.Fatalf("tenant ids %d and %d differ", of.tenant.ID, f.tenant.ID)
			}
			theirs := o.firstPage(t, f.tenant.ID, "id")
			next("id", theirs.NextCursor).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR, "not issued by this store")
		})
	})
}

// TestDeviceCursor_OtherCaller: a cursor is bound to the scope it was
// issued in. Replayed by a user with other grants in the same tenant, or
// by a user of another tenant, it is 400 invalid_cursor, not a page that
// reports the first caller's count as the replayer's.
func TestDeviceCursor_OtherCaller(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		other := &herd.Tenant{Name: "globex"}
		if err := e.admin.CreateTenant(ctx, other); err != nil {
			t.Fatal(err)
		}
		var ds []*herd.Device
		for i := range 3 {
			ds = append(ds, &herd.Device{NodeID: other.RootNodeID, Key: fmt.Sprintf("globex-%d", i)})
		}
		carol := &herd.User{TenantID: other.ID, Name: "carol"}
		if err := e.admin.CreateDevices(ctx, ds); err != nil {
			t.Fatal(err)
		} else if err := e.admin.CreateUser(ctx, carol); err != nil {
			t.Fatal(err)
		} else if err := e.admin.CreateGrant(ctx, &herd.Grant{UserID: carol.ID, NodeID: other.RootNodeID, Role: herd.RoleAdmin}); err != nil {
			t.Fatal(err)
		}
		carolToken, err := e.admin.CreateToken(ctx, carol.ID)
		if err != nil {
			t.Fatal(err)
		}
		page := func(secret, cursor string) response {
			return e.do("GET", "/v1/devices?limit=2&sort=id&cursor="+url.QueryEscape(cursor), secret, nil)
		}
		// alice sees north's five devices; bob n1's three; carol globex's three.
		r := page(f.aliceToken.Secret, "")
		r.wantStatus(t, http.StatusOK)
		var first herd.DevicePage
		r.decode(t, &first)
		if first.Count != 5 || first.NextCursor == "" {
			t.Fatalf("alice's first page: %s", r.Body)
		}
		t.Run("OK", func(t *testing.T) {
			r := page(f.aliceToken.Secret, first.NextCursor)
			r.wantStatus(t, http.StatusOK)
			var p herd.DevicePage
			r.decode(t, &p)
			if p.Count != 5 || len(p.Items) != 2 {
				t.Fatalf("alice's second page: %s", r.Body)
			}
		})
		for name, secret := range map[string]string{
			"ErrOtherGrants": f.bobToken.Secret,
			"ErrOtherTenant": carolToken.Secret,
		} {
			t.Run(name, func(t *testing.T) {
				page(secret, first.NextCursor).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR)
			})
		}
	})
}

// cursorHelperEnv names the store a helper process serves.
const cursorHelperEnv = "HERD_TEST_CURSOR_HELPER_DSN"

// TestCursorHelperProcess is not a test: TestDeviceCursor_TwoProcesses runs
// the test binary as a herd API process on a store, which prints its URL
// and serves until its stdin closes.
func TestCursorHelperProcess(t *testing.T) {
	dsn := os.Getenv(cursorHelperEnv)
	if dsn == "" {
		t.Skip("a helper process of TestDeviceCursor_TwoProcesses")
	}
	db := sqldb.NewDB(dsn)
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := mustOpenServer(t, db)
	fmt.Printf("URL %s\n", e.srv.URL())
	io.Copy(io.Discard, os.Stdin)
}

// startHelper runs a helper process on dsn and returns its URL.
func startHelper(t *testing.T, dsn string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCursorHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), cursorHelperEnv+"="+dsn)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	t.Cleanup(func() {
		stdin.Close()
		<-copied // Wait closes the pipe: the copy must be done reading it
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "URL "); ok {
			go func() { // the rest of its output, until it exits
				defer close(copied)
				io.Copy(io.Discard, stdout)
			}()
			return u
		}
	}
	close(copied)
	t.Fatalf("helper process ended before it served: %v", sc.Err())
	return ""
}

// TestDeviceCursor_TwoProcesses: two herd processes on one PostgreSQL take
// each other's cursors, because the key is in the store, not the process.
func TestDeviceCursor_TwoProcesses(t *testing.T) {
	t.Parallel()
	dsn := testutil.PostgresSchemaDSN(t)
	a := httpapi.NewClient(startHelper(t, dsn), adminSecret)
	b := httpapi.NewClient(startHelper(t, dsn), adminSecret)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ten := &herd.Tenant{Name: "acme"}
	if err := a.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	ds := make([]*herd.Device, 5)
	for i := range ds {
		ds[i] = &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("two-%d", i)}
	}
	if err := a.CreateDevices(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		from, to *httpapi.Client
	}{{"AToB", a, b}, {"BToA", b, a}} {
		t.Run(c.name, func(t *testing.T) {
			p := httpapi.DeviceQueryParams{TenantID: ten.ID, Limit: 2}
			first, err := c.from.QueryDevices(ctx, p)
			if err != nil || first.NextCursor == "" {
				t.Fatalf("first page: %+v, %v", first, err)
			}
			p.Cursor = first.NextCursor
			second, err := c.to.QueryDevices(ctx, p)
			if err != nil {
				t.Fatalf("the other process refused the cursor: %v", err)
			} else if second.Count != 5 || len(second.Items) != 2 || second.Items[0].ID != ds[2].ID {
				t.Fatalf("second page: %+v", second)
			}
		})
	}
}

// flipLast changes the last character of a base64 text to another.
func flipLast(s string) string {
	c := byte('A')
	if s[len(s)-1] == 'A' {
		c = 'B'
	}
	return s[:len(s)-1] + string(c)
}
