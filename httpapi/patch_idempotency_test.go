package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestPatch_IfMatchInFingerprint: a stale If-Match under a key, then the
// corrected If-Match under the same key: the second is another request, a
// 422, not the first one's 412 again.
func TestPatch_IfMatchInFingerprint(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
		f := e.mustCreateFleet()
		d := f.devices["n1-a"]
		path := fmt.Sprintf("/v1/devices/%d", d.ID)
		bob := f.bobToken.Secret
		r := e.patch(path, bob, `{"name":"x"}`, patchReq{})
		r.wantStatus(t, 200) // now at version 2
		r = e.patch(path, bob, `{"name":"y"}`, patchReq{key: "k1", ifMatch: `"1"`})
		r.wantStatus(t, http.StatusPreconditionFailed)
		r = e.patch(path, bob, `{"name":"y"}`, patchReq{key: "k1", ifMatch: `"2"`})
		r.wantStatus(t, http.StatusUnprocessableEntity)
		// The same request again is the first one's answer.
		r = e.patch(path, bob, `{"name":"y"}`, patchReq{key: "k1", ifMatch: `"1"`})
		r.wantStatus(t, http.StatusPreconditionFailed)
		if r.Header.Get(httpapi.HeaderReplayed) != "true" {
			t.Errorf("the same keyed request again was not a replay")
		}
	})
}
