package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
)

// Watcher follows a tenant's event log for any Go program, the way herd
// means clients to: the WebSocket stream only says that something changed,
// and the log (GET /v1/events) is read for what. Each event reaches Handle
// exactly once and in order, whatever the socket loses: hints only wake
// the watcher, and the log is read after the last event handed over. After
// a reconnect (with jittered backoff) the log fills the gap.
//
// Take a snapshot first (the list endpoints), note the log's head, and
// start the watcher with After set to it; persist Cursor() with your own
// state to resume after a restart without a second snapshot.
type Watcher struct {
	Client *Client
	// TenantID is needed for a super-admin's token only.
	TenantID int64
	// After is the seq of the last event already handled; events after it
	// are handed to Handle. Below 0, the watcher starts at the log's head
	// when it first connects.
	After int64
	// Handle is given each event once, in order. An error stops Run; the
	// event is handed again by the next Run.
	Handle func(ctx context.Context, ev *herd.Event) error
	// OnResync is called when the log no longer holds the events after
	// After (older than its retention): reload your snapshot and return
	// the seq to go on after (the head you read). Without it Run returns
	// the herd.ERESYNC error.
	OnResync func(ctx context.Context) (int64, error)
	// MinBackoff and MaxBackoff bound the wait before a reconnect: full
	// jitter up to a ceiling that doubles from MinBackoff.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Cursor returns the seq of the last event handed to Handle.
func (w *Watcher) Cursor() int64 { return w.After }

// Run watches until ctx ends or Handle fails.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Handle == nil {
		return errors.New("httpapi: a Watcher needs a Handle")
	}
	minB, maxB := w.MinBackoff, w.MaxBackoff
	if minB <= 0 {
		minB = 250 * time.Millisecond
	}
	if maxB < minB {
		maxB = max(30*time.Second, minB)
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	failures := 0
	for ctx.Err() == nil {
		up, err := w.session(ctx)
		if err != nil {
			if errors.Is(err, errHandle) || errors.Is(err, errResync) {
				return errors.Unwrap(err)
			}
			if permanent(err) {
				return err // a bad token or request will not start to work
			}
			if ctx.Err() != nil {
				break
			}
		}
		if up {
			failures = 0
		}
		failures++
		ceiling := min(minB<<min(failures-1, 20), maxB)
		wait := time.Duration(mrand.Int64N(int64(ceiling)) + 1)
		log.Debug("stream lost; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return ctx.Err()
}

// permanent reports whether err is herd's answer that the request itself
// is wrong (a 4xx: a token that does not work, a super-admin's missing
// tenant_id, a tenant that does not exist), which no retry can change.
// Rate limits and timeouts pass, as do failures of the network or server.
func permanent(err error) bool {
	var he *herd.Error
	if !errors.As(err, &he) {
		return false
	}
	s := StatusOf(he.Code)
	return s >= 400 && s < 500 && s != http.StatusTooManyRequests && s != http.StatusRequestTimeout
}

var (
	errHandle = errors.New("handle")
	errResync = errors.New("resync")
)

type wrapped struct {
	kind, err error
}

func (e wrapped) Error() string        { return e.err.Error() }
func (e wrapped) Unwrap() error        { return e.err }
func (e wrapped) Is(target error) bool { return target == e.kind }

// session runs one stream connection: it reports whether the connection
// came up, and why it ended.
func (w *Watcher) session(ctx context.Context) (bool, error) {
	u := strings.Replace(strings.Replace(w.Client.URL, "https://", "wss://", 1), "http://", "ws://", 1) + "/v1/stream"
	if w.TenantID != 0 {
		u += "?tenant_id=" + strconv.FormatInt(w.TenantID, 10)
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: w.Client.HTTPClient,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + w.Client.Token}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			return false, decodeErrorResponse(resp)
		}
		return false, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(4 << 20)
	// The hello first; then the gap since After, from the log.
	_, data, err := ws.Read(ctx)
	if err != nil {
		return false, err
	}
	var hello struct {
		Head int64 `json:"head,string"`
	}
	if json.Unmarshal(data, &hello) != nil {
		return false, errors.New("httpapi: the stream did not say hello")
	}
	if w.After < 0 {
		w.After = hello.Head
	}
	if err := w.sync(ctx); err != nil {
		return false, err
	}
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return true, err
		}
		var f struct {
			Type  string `json:"type"`
			Hints []struct {
				Seq int64 `json:"seq,string"`
			} `json:"hints"`
		}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch f.Type {
		case "hints":
			// Hints are only a signal: the log says what, from After on,
			// so a lost hint costs nothing and a repeat changes nothing.
			if n := len(f.Hints); n > 0 && f.Hints[n-1].Seq > w.After {
				if err := w.sync(ctx); err != nil {
					return true, err
				}
			}
		case "resync":
			// The server dropped hints and closes; the next session's
			// sync fills the gap.
		}
	}
}

// sync hands over the log's events after After, up to its head.
func (w *Watcher) sync(ctx context.Context) error {
	for {
		page, err := w.Client.FindEvents(ctx, w.TenantID, w.After, herd.MaxEventsPage)
		if herd.ErrorCode(err) == herd.ERESYNC {
			if w.OnResync == nil {
				return wrapped{errResync, err}
			}
			after, rerr := w.OnResync(ctx)
			if rerr != nil {
				return wrapped{errResync, rerr}
			}
			w.After = after
			continue
		} else if err != nil {
			return err
		}
		for _, ev := range page.Items {
			if ev.Seq <= w.After {
				continue
			}
			if err := w.Handle(ctx, ev); err != nil {
				return wrapped{errHandle, err}
			}
			w.After = ev.Seq
		}
		w.After = max(w.After, page.NextAfter)
		if page.NextAfter >= page.Head {
			return nil
		}
	}
}
