package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestIdempotent_FailureLeavesNothing: a handler that wrote to the store
// and then answers 5xx, or panics, leaves neither its write nor the key:
// the retry runs again at once, and its write is the one that stays.
func TestIdempotent_FailureLeavesNothing(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		s := NewServer()
		s.Idempotency = sqldb.NewIdempotencyService(db)
		nodes := sqldb.NewNodeService(db)
		ctx := testutil.SuperContext()
		ten := &herd.Tenant{Name: "failures"}
		if err := sqldb.NewTenantService(db).CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		var made []int64
		outcome := "5xx"
		h := s.idempotent(false, func(w http.ResponseWriter, r *http.Request) {
			n := &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: fmt.Sprintf("try-%d", len(made))}
			if err := nodes.CreateNode(r.Context(), n); err != nil {
				Error(w, r, err)
				return
			}
			made = append(made, n.ID)
			switch outcome {
			case "5xx":
				Error(w, r, errors.New("failed after the write"))
			case "panic":
				panic("failed after the write")
			default:
				writeJSON(w, http.StatusCreated, n)
			}
		})
		send := func() (rec *httptest.ResponseRecorder) {
			req := httptest.NewRequest("POST", "/v1/nodes", strings.NewReader(`{}`)).WithContext(ctx)
			req.Pattern = "POST /v1/nodes"
			req.Header.Set(HeaderIdempotencyKey, "fails-first")
			rec = httptest.NewRecorder()
			defer func() {
				if p := recover(); p != nil {
					rec.Code = -1
				}
			}()
			h(rec, req)
			return rec
		}
		sites := func() (names []string) {
			rows, err := db.SQL().Query(db.Rebind(`SELECT name FROM nodes WHERE tenant_id = ? AND kind = 'site' ORDER BY name`), ten.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var n string
				rows.Scan(&n)
				names = append(names, n)
			}
			return names
		}
		if rec := send(); rec.Code != http.StatusInternalServerError {
			t.Fatalf("first: %d %s", rec.Code, rec.Body)
		}
		outcome = "panic"
		if rec := send(); rec.Code != -1 || len(made) != 2 {
			t.Fatalf("after a 5xx the retry did not run again: %d, %d runs", rec.Code, len(made))
		}
		outcome = "ok"
		rec := send()
		if rec.Code != http.StatusCreated || len(made) != 3 {
			t.Fatalf("after a panic the retry did not run again: %d %s, %d runs", rec.Code, rec.Body, len(made))
		}
		if got := sites(); len(got) != 1 || got[0] != "try-2" {
			t.Fatalf("sites %v: want only try-2, whose answer was stored", got)
		}
		if again := send(); again.Code != http.StatusCreated || again.Header().Get(HeaderReplayed) != "true" || len(made) != 3 {
			t.Fatalf("the stored answer was not replayed: %d, %d runs", again.Code, len(made))
		}
	})
}
