package main_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// browserPage is what a web app on another origin does: ask herd for a
// ticket with its token (a CORS fetch, so a preflight first), open the
// stream with the ticket (a browser's WebSocket cannot send the token),
// and keep what arrives. When the fetch is blocked it tries the socket
// with the ticket it was handed in its URL, which the Origin check must
// refuse.
const browserPage = `<!doctype html>
<meta charset="utf-8"><title>herd from another origin</title>
<script>
const p = new URLSearchParams(location.search);
const herd = p.get("herd");
window.result = {frames: []};
function openSocket(url) {
  const ws = new WebSocket(url);
  ws.onmessage = (m) => window.result.frames.push(JSON.parse(m.data));
  ws.onclose = (e) => { window.result.closed = e.code; };
}
(async () => {
  try {
    const r = await fetch(herd + "/v1/stream/tickets", {method: "POST", headers: {Authorization: "Bearer " + p.get("token")}});
    const t = await r.json();
    window.result.fetch = "ok " + r.status;
    openSocket(t.url);
  } catch (e) {
    window.result.fetch = "blocked: " + e;
    openSocket(herd.replace("http://", "ws://") + "/v1/stream?ticket=" + encodeURIComponent(p.get("ticket")));
  }
})();
</script>`

// waitFor polls the page until expr holds, and fails with what the page
// has seen when it does not within 10 s.
func waitFor(t *testing.T, tab context.Context, expr string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		seen, _ := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.result)`))
		t.Fatalf("waiting for %s: %v; the page has %s", expr, err, seen)
	}
}

// chromium returns the path of Debian's chromium, or skips the test.
// launchChromium starts headless Chromium at exe with the flags this
// machine needs (no sandbox as root, no background networking, a fresh
// profile) and returns a tab that the test's end closes, with the whole
// browser bounded to a minute.
func launchChromium(t *testing.T, ctx context.Context, exe string) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	browser, cancelTimeout := context.WithTimeout(browser, 60*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelBrowser()
		cancelAlloc()
	})
	return browser
}

func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("headless Chromium test skipped: chromium is not installed (apt-get install chromium; .ci/run installs it)")
	}
	return path
}

// TestBrowser_StreamFromAnotherOrigin: in headless Chromium, a page of an
// origin in --allowed-origins gets a ticket through CORS, opens the stream
// with it and receives the hint of a device created through REST; a page
// of another origin has its fetch blocked and its socket refused, and the
// ticket it held is not spent by the refusal.
func TestBrowser_StreamFromAnotherOrigin(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, browserPage)
	})
	allowed, other := httptest.NewServer(page), httptest.NewServer(page)
	defer allowed.Close()
	defer other.Close()

	m, _ := mustRunMain(t, map[string]string{"HERD_ADMIN_TOKEN": adminSecret},
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "off", "--data-dir", t.TempDir(), "--allowed-origins", allowed.URL)
	herdURL := m.HTTPServer.URL()
	admin := httpapi.NewClient(herdURL, adminSecret)
	ctx := t.Context()
	ten := &herd.Tenant{Name: "browser"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.CreateTenant(ctx, ten))
	u := &herd.User{TenantID: ten.ID, Name: "dashboard"}
	must(admin.CreateUser(ctx, u))
	must(admin.CreateGrant(ctx, &herd.Grant{UserID: u.ID, NodeID: ten.RootNodeID, Role: herd.RoleViewer}))
	tok, err := admin.CreateToken(ctx, u.ID)
	must(err)
	user := admin.WithToken(tok.Secret)

	browser := launchChromium(t, ctx, exe)
	q := url.Values{"herd": {herdURL}, "token": {tok.Secret}}

	t.Run("AllowedOrigin", func(t *testing.T) {
		must(chromedp.Do(browser, chromedp.Navigate(allowed.URL+"/?"+q.Encode())))
		waitFor(t, browser, `window.result.frames.some(f => f.type === "hello")`)
		d := &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("browser-%d", time.Now().UnixNano())}
		must(admin.CreateDevice(ctx, d))
		hinted := fmt.Sprintf(`window.result.frames.some(f => f.type === "hints" && f.hints.some(h => h.subject_id === "%d"))`, d.ID)
		waitFor(t, browser, hinted)
		fetched, err := chromedp.Run(browser, chromedp.Evaluate[string](`window.result.fetch`))
		must(err)
		if fetched != "ok 201" {
			t.Fatalf("ticket fetch: %s", fetched)
		}
	})

	t.Run("OtherOrigin", func(t *testing.T) {
		tk, err := user.CreateTicket(ctx, 0)
		must(err)
		q := url.Values{"herd": {herdURL}, "token": {tok.Secret}, "ticket": {tk.Secret}}
		tab, cancel := chromedp.NewContext(browser)
		defer cancel()
		type result struct {
			Fetch  string `json:"fetch"`
			Closed int    `json:"closed"`
			Frames []any  `json:"frames"`
		}
		must(chromedp.Do(tab, chromedp.Navigate(other.URL+"/?"+q.Encode())))
		waitFor(t, tab, `window.result.closed !== undefined`)
		res, err := chromedp.Run(tab, chromedp.Evaluate[result](`window.result`))
		must(err)
		if !strings.HasPrefix(res.Fetch, "blocked") || res.Closed != 1006 || len(res.Frames) != 0 {
			t.Fatalf("from another origin: %+v, want the fetch blocked and the socket refused (1006) before any frame", res)
		}
		// Refused before it was spent: the ticket still opens the stream.
		ws, _, err := websocket.Dial(ctx, tk.URL, nil)
		if err != nil {
			t.Fatalf("the refused page's ticket: %v", err)
		}
		ws.CloseNow()
	})
}
