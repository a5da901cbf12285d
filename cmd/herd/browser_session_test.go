package main_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// attackPage is another site's page that tries to act with the session
// cookie of a person signed in to herd: a text/plain form post and a
// no-cors fetch (neither is preflighted, and both send the cookie where the
// browser would), a credentialed PATCH with herd's header (preflighted,
// which herd refuses), and a credentialed read.
const attackPage = `<!doctype html>
<meta charset="utf-8"><title>another site</title>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink"></form>
<script>
const p = new URLSearchParams(location.search);
const herd = p.get("herd"), dev = herd + "/v1/devices/" + p.get("dev");
window.result = {};
const settle = (name, pr) => pr.then(r => { window.result[name] = "status " + r.status + " " + r.type; }, e => { window.result[name] = "blocked"; });
const f = document.getElementById("f");
f.action = dev + "/move";
const i = document.createElement("input");
i.name = '{"node_id":"' + p.get("node") + '","pad":"';
i.value = '"}';
f.appendChild(i);
const formDone = new Promise(res => { document.querySelector("iframe").onload = res; });
f.submit();
Promise.all([
  formDone,
  settle("noCors", fetch(dev + "/move", {method: "POST", mode: "no-cors", credentials: "include", headers: {"Content-Type": "text/plain"}, body: JSON.stringify({node_id: p.get("node")})})),
  settle("patch", fetch(dev, {method: "PATCH", credentials: "include", headers: {"Content-Type": "application/json", "X-Herd-Request": "1"}, body: '{"name":"evil"}'})),
  settle("read", fetch(dev, {credentials: "include"})),
]).then(() => { window.result.done = true; });
</script>`

// TestBrowser_SessionCookieFromOtherPages: in headless Chromium, a person
// signs in from herd's own page and their cookie works there; pages of
// another origin on the same site (another port of 127.0.0.1, which
// SameSite does not stop) and of another site (localhost) act with it in
// none of the ways a page can try, and cannot read with it; the same move
// from herd's own page goes through.
func TestBrowser_SessionCookieFromOtherPages(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, attackPage)
	}))
	defer evil.Close()
	m, _ := mustRunMain(t, map[string]string{"HERD_ADMIN_TOKEN": adminSecret},
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "off", "--data-dir", t.TempDir())
	herdURL := m.HTTPServer.URL()
	admin := httpapi.NewClient(herdURL, adminSecret)
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ten := &herd.Tenant{Name: "cookies"}
	must(admin.CreateTenant(ctx, ten))
	a, b := &herd.Node{TenantID: ten.ID, Kind: "site", Name: "a"}, &herd.Node{TenantID: ten.ID, Kind: "site", Name: "b"}
	must(admin.CreateNode(ctx, a))
	must(admin.CreateNode(ctx, b))
	d := &herd.Device{NodeID: a.ID, Key: "cookie-victim", Name: "victim"}
	must(admin.CreateDevice(ctx, d))
	u := &herd.User{TenantID: ten.ID, Name: "Dana"}
	must(admin.CreateUser(ctx, u))
	must(admin.CreateGrant(ctx, &herd.Grant{UserID: u.ID, NodeID: ten.RootNodeID, Role: herd.RoleAdmin}))
	must(admin.SetPassword(ctx, u.ID, "dana's long passphrase", ""))

	browser := launchChromium(t, ctx, exe)
	// herd's own page: any document of its origin.
	own := func(script string) string {
		t.Helper()
		must(chromedp.Do(browser, chromedp.Evaluate[chromedp.Void](`window.result = {}; (async () => { try { `+script+` } catch (e) { window.result.out = "error " + e; } window.result.done = true; })()`)))
		waitFor(t, browser, `window.result.done === true`)
		out, err := chromedp.Run(browser, chromedp.Evaluate[string](`window.result.out`))
		must(err)
		return out
	}
	must(chromedp.Do(browser, chromedp.Navigate(herdURL+"/healthz")))
	signIn := fmt.Sprintf(`const r = await fetch("/v1/sessions", {method: "POST", headers: {"Content-Type": "application/json", "X-Herd-Request": "1"}, body: JSON.stringify({tenant_id: "%d", name: "dana", password: "dana's long passphrase"})}); window.result.out = "status " + r.status + " cookie visible " + document.cookie.includes("herd_session");`, ten.ID)
	if got := own(signIn); got != "status 201 cookie visible false" {
		t.Fatalf("sign-in from herd's page: %s", got)
	}
	if got := own(fmt.Sprintf(`const r = await fetch("/v1/devices/%d"); window.result.out = "status " + r.status;`, d.ID)); got != "status 200" {
		t.Fatalf("a read with the cookie from herd's page: %s", got)
	}

	sameSite := evil.URL
	crossSite := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
	q := url.Values{"herd": {herdURL}, "dev": {fmt.Sprint(d.ID)}, "node": {fmt.Sprint(b.ID)}}
	for name, origin := range map[string]string{"SameSite": sameSite, "CrossSite": crossSite} {
		t.Run(name, func(t *testing.T) {
			tab, cancel := chromedp.NewContext(browser)
			defer cancel()
			must(chromedp.Do(tab, chromedp.Navigate(origin+"/?"+q.Encode())))
			waitFor(t, tab, `window.result.done === true`)
			type result struct{ NoCors, Patch, Read string }
			res, err := chromedp.Run(tab, chromedp.Evaluate[result](`window.result`))
			must(err)
			// The no-cors answer is opaque to the page; what matters is
			// what herd did, below. The preflighted PATCH and the read
			// must not reach the page.
			if res.Patch != "blocked" || res.Read != "blocked" {
				t.Fatalf("from %s: %+v, want the PATCH and the read blocked", origin, res)
			}
			got, err := admin.FindDeviceByID(ctx, d.ID)
			must(err)
			if got.Name != "victim" || got.NodeID != a.ID {
				t.Fatalf("from %s the device became %q on node %d", origin, got.Name, got.NodeID)
			}
		})
	}

	// The same move from herd's own page, with its header, goes through:
	// the attacks above failed for where they came from.
	move := fmt.Sprintf(`const r = await fetch("/v1/devices/%d/move", {method: "POST", headers: {"Content-Type": "application/json", "X-Herd-Request": "1"}, body: JSON.stringify({node_id: "%d"})}); window.result.out = "status " + r.status;`, d.ID, b.ID)
	if got := own(move); got != "status 200" {
		t.Fatalf("the move from herd's page: %s", got)
	}
	got, err := admin.FindDeviceByID(ctx, d.ID)
	must(err)
	if got.NodeID != b.ID {
		t.Fatalf("the device is on node %d after the move from herd's page", got.NodeID)
	}
}
