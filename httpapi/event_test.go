package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestEventLog(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db, func(s *httpapi.Server) { s.EventService = sqldb.NewEventService(db) })
	f := e.mustCreateFleet()
	r := e.do("GET", "/v1/events?after=0&limit=500", f.aliceToken.Secret, nil)
	r.wantStatus(t, http.StatusOK)
	var page herd.EventPage
	r.decode(t, &page)
	if len(page.Items) == 0 || page.Head == 0 {
		t.Fatalf("alice's page %s", r.Body)
	}
	for _, ev := range page.Items {
		if !herd.PathUnder(ev.Path, f.north.Path) {
			t.Fatalf("alice got an event of %s", ev.Path)
		}
	}
	c := httpapi.NewClient(e.srv.URL(), f.aliceToken.Secret)
	if got, err := c.FindEvents(context.Background(), 0, 0, 500); err != nil || len(got.Items) != len(page.Items) {
		t.Fatalf("client: %v, %v", got, err)
	}
	e.do("GET", fmt.Sprintf("/v1/events?after=%d", page.Head+1), f.aliceToken.Secret, nil).wantError(t, http.StatusGone, herd.ERESYNC)
	e.do("GET", "/v1/events?after=-1", f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID)
	e.do("GET", "/v1/events?limit=ten", f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT, `"ten"`)
	e.do("GET", "/v1/events", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
	e.do("GET", fmt.Sprintf("/v1/events?tenant_id=%d", f.tenant.ID), adminSecret, nil).wantStatus(t, http.StatusOK)
}
