package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// doKey is e.do with an Idempotency-Key.
func (e *env) doKey(method, path, token, key string, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL()+path, bytes.NewReader([]byte(body)))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(httpapi.HeaderIdempotencyKey, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}
}

// dropAnswer is a transport that sends the request and then loses the
// answer, as a timeout after the commit does.
type dropAnswer struct{ once sync.Once }

func (d *dropAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	dropped := false
	d.once.Do(func() {
		if err == nil {
			resp.Body.Close()
			dropped = true
		}
	})
	if dropped {
		return nil, errors.New("answer lost")
	}
	return resp, err
}

func TestCommandsAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) {
			s.CommandService = sqldb.NewCommandService(db)
			s.Idempotency = sqldb.NewIdempotencyService(db)
		})
		f := e.mustCreateFleet()
		dev := f.devices["n1-a"]
		path := fmt.Sprintf("/v1/devices/%d/commands", dev.ID)
		body := `{"name":"reboot","args":{"delay_s":5},"ttl_s":60}`

		t.Run("ErrNoKey", func(t *testing.T) {
			e.doKey("POST", path, f.bobToken.Secret, "", body).wantError(t, http.StatusBadRequest, herd.EINVALID, "Idempotency-Key")
		})
		t.Run("Replay", func(t *testing.T) {
			n := countRows(t, db, "commands")
			first := e.doKey("POST", path, f.bobToken.Secret, "replay-1", body)
			first.wantStatus(t, http.StatusCreated)
			again := e.doKey("POST", path, f.bobToken.Secret, "replay-1", body)
			again.wantStatus(t, http.StatusCreated)
			if again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(first.Body, again.Body) {
				t.Fatalf("replay %q %s, first %s", again.Header.Get(httpapi.HeaderReplayed), again.Body, first.Body)
			}
			if got := countRows(t, db, "commands"); got != n+1 {
				t.Fatalf("%d commands made, want 1", got-n)
			}
		})
		t.Run("ErrOtherBody", func(t *testing.T) {
			e.doKey("POST", path, f.bobToken.Secret, "replay-1", `{"name":"shutdown"}`).wantError(t, http.StatusUnprocessableEntity, herd.EKEYREUSED)
		})
		t.Run("KeysPerToken", func(t *testing.T) {
			// The same key from another token is another request.
			e.doKey("POST", path, adminSecret, "replay-1", body).wantStatus(t, http.StatusCreated)
		})
		t.Run("Concurrent", func(t *testing.T) {
			n := countRows(t, db, "commands")
			var wg sync.WaitGroup
			statuses := make(chan int, 8)
			for range 8 {
				wg.Go(func() { statuses <- e.doKey("POST", path, f.bobToken.Secret, "concurrent-1", body).Status })
			}
			wg.Wait()
			close(statuses)
			seen := map[int]int{}
			for s := range statuses {
				seen[s]++
			}
			if got := countRows(t, db, "commands"); got != n+1 {
				t.Fatalf("%d commands from 8 concurrent requests with one key, want 1 (statuses %v)", got-n, seen)
			}
			if seen[http.StatusCreated] < 1 || seen[http.StatusCreated]+seen[http.StatusConflict] != 8 {
				t.Fatalf("statuses %v, want 201s and 409s", seen)
			}
		})
		t.Run("AnswerLostThenRetried", func(t *testing.T) {
			n := countRows(t, db, "commands")
			c := httpapi.NewClient(e.srv.URL(), f.bobToken.Secret)
			c.HTTPClient = &http.Client{Transport: &dropAnswer{}}
			cmd := &herd.Command{DeviceID: dev.ID, Name: "reboot", IdempotencyKey: "lost-1"}
			if err := c.CreateCommand(context.Background(), cmd); err == nil {
				t.Fatal("the first answer was not lost")
			}
			if err := c.CreateCommand(context.Background(), cmd); err != nil || cmd.ID == 0 {
				t.Fatalf("retry: %v", err)
			}
			if got := countRows(t, db, "commands"); got != n+1 {
				t.Fatalf("%d commands, want 1", got-n)
			}
			got, err := c.FindCommandByID(context.Background(), cmd.ID)
			if err != nil || got.Status != herd.CommandPending {
				t.Fatalf("view %+v, %v", got, err)
			}
			list, err := c.FindCommandsByDevice(context.Background(), dev.ID, 100)
			if err != nil || len(list) < 1 || list[0].ID != cmd.ID {
				t.Fatalf("list %v, %v", list, err)
			}
		})
		t.Run("ErrRoles", func(t *testing.T) {
			e.doKey("POST", path, f.aliceToken.Secret, "viewer-1", body).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			e.doKey("POST", "/v1/devices/999999/commands", f.bobToken.Secret, "nodev-1", body).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.doKey("POST", path, f.bobToken.Secret, "bad-1", `{"name":""}`).wantError(t, http.StatusBadRequest, herd.EINVALID)
			e.do("GET", path+"?limit=ten", f.bobToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT, `"ten"`)
		})
	})
}

// TestIdempotencyOnOtherRoutes: any POST replays by key; those answering
// with a secret refuse one.
func TestIdempotencyOnOtherRoutes(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
	f := e.mustCreateFleet()
	body := fmt.Sprintf(`{"tenant_id":"%d","parent_id":"%d","kind":"site","name":"k-site"}`, f.tenant.ID, f.north.ID)
	first := e.doKey("POST", "/v1/nodes", adminSecret, "node-1", body)
	first.wantStatus(t, http.StatusCreated)
	again := e.doKey("POST", "/v1/nodes", adminSecret, "node-1", body)
	if again.Status != http.StatusCreated || again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(first.Body, again.Body) {
		t.Fatalf("replay %d %s", again.Status, again.Body)
	}
	e.doKey("POST", fmt.Sprintf("/v1/users/%d/tokens", f.alice.ID), adminSecret, "tok-1", "").wantError(t, http.StatusBadRequest, herd.EINVALID, "secret")
}
