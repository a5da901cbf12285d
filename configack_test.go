package herd_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

func TestParseConfigAck(t *testing.T) {
	for in, want := range map[string]herd.ConfigAck{
		`{"version":3,"status":"applied"}`:                 {Version: 3, Status: herd.ConfigApplied},
		`{"version":"4","status":"rejected","error":"no"}`: {Version: 4, Status: herd.ConfigRejected, Error: "no"},
	} {
		got, err := herd.ParseConfigAck([]byte(in), 1024)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{`{"version":0,"status":"applied"}`, `{"version":1,"status":"ok"}`, `{"status":"applied"}`, `[1]`, `{"version":1.5,"status":"applied"}`} {
		if _, err := herd.ParseConfigAck([]byte(in), 1024); herd.ErrorCode(err) != herd.EINVALID {
			t.Errorf("%s: %v, want %s", in, err, herd.EINVALID)
		}
	}
	if _, err := herd.ParseConfigAck([]byte(`{"version":1,"status":"applied"}`), 10); herd.ErrorCode(err) != herd.ETOOLARGE {
		t.Errorf("too large: %v", err)
	}
}

func TestParseOTAProgress(t *testing.T) {
	p, err := herd.ParseOTAProgress([]byte(`{"rollout_id":"7","state":"downloading","percent":42,"version":"1.5.0"}`), 1024)
	if err != nil || p.State != herd.OTADownloading || p.RolloutID != "7" || p.Percent == nil || *p.Percent != 42 || p.Version != "1.5.0" {
		t.Fatalf("%+v, %v", p, err)
	}
	for _, in := range []string{`{"state":"done"}`, `{}`, `{"state":"failed","percent":101}`, `{"state":"failed","rollout_id":"x"}`} {
		if _, err := herd.ParseOTAProgress([]byte(in), 1024); herd.ErrorCode(err) != herd.EINVALID {
			t.Errorf("%s: %v, want %s", in, err, herd.EINVALID)
		}
	}
}

func storableDeviceText(s string, max int) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0) && len(s) <= max
}

// FuzzParseConfigAck: whatever a device sends on config/ack is refused
// (EINVALID, ETOOLARGE) or names a version and a status, with error text
// every store holds.
func FuzzParseConfigAck(f *testing.F) {
	for _, s := range []string{`{"version":3,"status":"applied"}`, `{"version":"4","status":"rejected","error":"bad rate"}`, `{"version":0,"status":"applied"}`, `{"version":1,"status":"rejected","error":"\u0000\xff"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := herd.ParseConfigAck(payload, herd.DefaultTelemetryMaxBytes)
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALID && code != herd.ETOOLARGE {
				t.Fatalf("error code %s: %v", code, err)
			}
			return
		}
		if a.Version <= 0 || (a.Status != herd.ConfigApplied && a.Status != herd.ConfigRejected) || !storableDeviceText(a.Error, 1024) {
			t.Fatalf("accepted %+v", a)
		}
	})
}

// FuzzParseOTAProgress: whatever a device sends on ota/progress is refused
// or is one of the four states, with text every store holds.
func FuzzParseOTAProgress(f *testing.F) {
	for _, s := range []string{`{"rollout_id":"7","state":"downloading","percent":42}`, `{"state":"failed","error":"sha256 mismatch"}`, `{"state":"rebooting","version":"1.5.0"}`, `{"state":"installing","percent":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		p, err := herd.ParseOTAProgress(payload, herd.DefaultTelemetryMaxBytes)
		if err != nil {
			if code := herd.ErrorCode(err); code != herd.EINVALID && code != herd.ETOOLARGE {
				t.Fatalf("error code %s: %v", code, err)
			}
			return
		}
		switch p.State {
		case herd.OTADownloading, herd.OTAInstalling, herd.OTARebooting, herd.OTAFailed:
		default:
			t.Fatalf("accepted state %q", p.State)
		}
		if !storableDeviceText(p.Error, 1024) || !storableDeviceText(p.Version, herd.MaxFirmwareLen) || !storableDeviceText(p.RolloutID, 20) || (p.Percent != nil && (*p.Percent < 0 || *p.Percent > 100)) {
			t.Fatalf("accepted %+v", p)
		}
	})
}
