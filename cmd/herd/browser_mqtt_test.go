package main_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// mqttPage is what a browser's MQTT client (MQTT.js) does: open /mqtt with
// the subprotocol "mqtt" and send an MQTT 3.1.1 CONNECT with the device's
// key and token; it keeps the bytes of the first frame back (the CONNACK)
// and the close code.
const mqttPage = `<!doctype html>
<meta charset="utf-8"><title>MQTT from another origin</title>
<script>
const p = new URLSearchParams(location.search);
window.result = {};
const enc = new TextEncoder();
function str(s) { const b = enc.encode(s); return [b.length >> 8, b.length & 255, ...b]; }
const body = [...str("MQTT"), 4, 0xC2, 0, 60, ...str(p.get("key")), ...str(p.get("key")), ...str(p.get("token"))];
const len = [];
for (let n = body.length; ; ) { let d = n % 128; n = Math.floor(n / 128); if (n > 0) d |= 128; len.push(d); if (n === 0) break; }
const ws = new WebSocket(p.get("herd").replace("http://", "ws://") + "/mqtt", "mqtt");
ws.binaryType = "arraybuffer";
ws.onopen = () => ws.send(new Uint8Array([0x10, ...len, ...body]));
ws.onmessage = (m) => { if (!window.result.connack) window.result.connack = Array.from(new Uint8Array(m.data)); };
ws.onclose = (e) => { window.result.closed = e.code; };
</script>`

// TestBrowser_MQTTFromAnotherOrigin: /mqtt follows --allowed-origins like
// the other sockets. In headless Chromium a page of an allowed origin
// connects a device over MQTT over WebSocket and gets its CONNACK; a page
// of another origin is refused at the handshake (1006, no frame).
func TestBrowser_MQTTFromAnotherOrigin(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, mqttPage)
	})
	allowed, other := httptest.NewServer(page), httptest.NewServer(page)
	defer allowed.Close()
	defer other.Close()

	m, _ := mustRunMain(t, map[string]string{"HERD_ADMIN_TOKEN": adminSecret},
		"--http-addr", "127.0.0.1:0", "--mqtt-addr", "off", "--data-dir", t.TempDir(), "--allowed-origins", allowed.URL)
	herdURL := m.HTTPServer.URL()
	admin := httpapi.NewClient(herdURL, adminSecret)
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ten := &herd.Tenant{Name: "browser-mqtt"}
	must(admin.CreateTenant(ctx, ten))
	d := &herd.Device{NodeID: ten.RootNodeID, Key: "browser-device"}
	must(admin.CreateDevice(ctx, d))
	cred, err := admin.CreateDeviceCredential(ctx, d.ID)
	must(err)

	browser := launchChromium(t, ctx, exe)
	q := url.Values{"herd": {herdURL}, "key": {d.Key}, "token": {cred.Token}}
	type result struct {
		Connack []int `json:"connack"`
		Closed  int   `json:"closed"`
	}

	t.Run("AllowedOrigin", func(t *testing.T) {
		must(chromedp.Do(browser, chromedp.Navigate(allowed.URL+"/?"+q.Encode())))
		waitFor(t, browser, `window.result.connack !== undefined || window.result.closed !== undefined`)
		res, err := chromedp.Run(browser, chromedp.Evaluate[result](`window.result`))
		must(err)
		if fmt.Sprint(res.Connack) != "[32 2 0 0]" {
			t.Fatalf("from an allowed origin: %+v, want the CONNACK 20 02 00 00", res)
		}
	})

	t.Run("OtherOrigin", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(browser)
		defer cancel()
		must(chromedp.Do(tab, chromedp.Navigate(other.URL+"/?"+q.Encode())))
		waitFor(t, tab, `window.result.closed !== undefined`)
		res, err := chromedp.Run(tab, chromedp.Evaluate[result](`window.result`))
		must(err)
		if res.Closed != 1006 || res.Connack != nil {
			t.Fatalf("from another origin: %+v, want the handshake refused (1006) before any frame", res)
		}
	})
}
