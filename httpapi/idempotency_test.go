package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestIdempotency_ErrorAnswersReplayed: a request refused with a 4xx
// changed nothing, and its answer is kept like any other: the same key and
// body again get the same refusal, replayed, even once the refusal's cause
// is gone.
func TestIdempotency_ErrorAnswersReplayed(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		for _, tt := range []struct {
			key, path, body string
			status          int
		}{
			{"conflict-1", "/v1/grants", fmt.Sprintf(`{"user_id":"%d","node_id":"%d","role":"viewer"}`, f.alice.ID, f.north.ID), http.StatusConflict},
			{"notfound-1", "/v1/grants", fmt.Sprintf(`{"user_id":"%d","node_id":"999999","role":"viewer"}`, f.alice.ID), http.StatusNotFound},
			{"invalid-1", fmt.Sprintf("/v1/devices/%d/move", f.devices["n1-a"].ID), `{}`, http.StatusBadRequest},
		} {
			first := e.doKey("POST", tt.path, adminSecret, tt.key, tt.body)
			first.wantStatus(t, tt.status)
			again := e.doKey("POST", tt.path, adminSecret, tt.key, tt.body)
			if again.Status != tt.status || again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(again.Body, first.Body) {
				t.Fatalf("%s again: %d %q %s, want %d %s replayed", tt.key, again.Status, again.Header.Get(httpapi.HeaderReplayed), again.Body, tt.status, first.Body)
			}
		}
		// The conflict's cause removed, the key still answers what it did.
		e.do("DELETE", fmt.Sprintf("/v1/grants/%d", f.aliceGrant.ID), adminSecret, nil).wantStatus(t, http.StatusNoContent)
		e.doKey("POST", "/v1/grants", adminSecret, "conflict-1", fmt.Sprintf(`{"user_id":"%d","node_id":"%d","role":"viewer"}`, f.alice.ID, f.north.ID)).
			wantError(t, http.StatusConflict, herd.ECONFLICT)
	})
}

// TestIdempotency_ManyKeysAtOnce: requests with distinct keys run side by
// side, each its claim's transaction; on SQLite they queue for the one
// writer and none deadlocks on it, and on PostgreSQL there are more of them
// than the pool has connections (16): a claim holds one for its request and
// needs no second, so the rest wait for it and none deadlocks either.
func TestIdempotency_ManyKeysAtOnce(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		var wg sync.WaitGroup
		statuses := make([]int, 64)
		for i := range statuses {
			wg.Go(func() {
				body := fmt.Sprintf(`{"node_id":"%d","key":"many-%d"}`, f.n2.ID, i)
				statuses[i] = e.doKey("POST", "/v1/devices", adminSecret, fmt.Sprintf("many-%d", i), body).Status
			})
		}
		wg.Wait()
		for i, st := range statuses {
			if st != http.StatusCreated {
				t.Fatalf("request %d: %d, want 201", i, st)
			}
		}
	})
}

// TestIdempotency_LargeBatchBody: a keyed batch takes the body an unkeyed
// one takes (up to MaxBatchBodySize), while every other keyed route keeps
// its own, smaller limit.
func TestIdempotency_LargeBatchBody(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		// 2 MiB of JSON whitespace: over the ordinary limit, under the
		// batch limit.
		pad := strings.Repeat(" ", 2<<20)
		body := fmt.Sprintf(`{"devices":[{"node_id":"%d","key":"large-1"}]%s}`, f.n1.ID, pad)
		first := e.doKey("POST", "/v1/devices/batch", adminSecret, "large-batch", body)
		first.wantStatus(t, http.StatusCreated)
		again := e.doKey("POST", "/v1/devices/batch", adminSecret, "large-batch", body)
		if again.Status != http.StatusCreated || again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(again.Body, first.Body) {
			t.Fatalf("again: %d %q %s, want the first answer replayed", again.Status, again.Header.Get(httpapi.HeaderReplayed), again.Body)
		}
		node := fmt.Sprintf(`{"parent_id":"%d","kind":"site","name":"padded"}%s`, f.north.ID, pad)
		e.doKey("POST", "/v1/nodes", adminSecret, "large-node", node).wantError(t, http.StatusRequestEntityTooLarge, herd.ETOOLARGE, "1 MiB")
	})
}

// TestIdempotency_ReplayKeepsHeaders: a replayed answer carries the headers
// the first one did (nosniff included), and says it is a replay.
func TestIdempotency_ReplayKeepsHeaders(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		body := fmt.Sprintf(`{"parent_id":"%d","kind":"site","name":"headers"}`, f.north.ID)
		first := e.doKey("POST", "/v1/nodes", adminSecret, "headers-1", body)
		first.wantStatus(t, http.StatusCreated)
		again := e.doKey("POST", "/v1/nodes", adminSecret, "headers-1", body)
		if again.Header.Get(httpapi.HeaderReplayed) != "true" {
			t.Fatalf("not a replay: %v", again.Header)
		}
		for _, h := range []string{"Content-Type", "X-Content-Type-Options"} {
			if got, want := again.Header.Get(h), first.Header.Get(h); got != want {
				t.Errorf("replayed %s: %q, first answer had %q", h, got, want)
			}
		}
	})
}
