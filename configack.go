package herd

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
)

// EventDeviceOTAProgress records a device's report of a firmware update's
// progress.
const EventDeviceOTAProgress = "device.ota_progress"

// OTA progress states a device reports on devices/{key}/ota/progress.
const (
	OTADownloading = "downloading"
	OTAInstalling  = "installing"
	OTARebooting   = "rebooting"
	OTAFailed      = "failed"
)

// maxDeviceError bounds the error text a device sends with an answer.
const maxDeviceError = 1024

// ConfigAck is what a device answers on devices/{key}/config/ack.
type ConfigAck struct {
	Version int64  `json:"version"`
	Status  string `json:"status"` // ConfigApplied or ConfigRejected
	Error   string `json:"error,omitempty"`
}

// OTAProgress is what a device reports on devices/{key}/ota/progress.
type OTAProgress struct {
	RolloutID string `json:"rollout_id,omitempty"`
	State     string `json:"state"`
	Version   string `json:"version,omitempty"`
	Percent   *int64 `json:"percent,omitempty"`
	Error     string `json:"error,omitempty"`
}

// deviceText makes what a device sent storable: no NUL, valid UTF-8, at
// most max bytes. A bad byte in an error message is no reason to lose the
// answer, and text that broke the insert would fail its whole ingest batch.
func deviceText(s string, max int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}

// ParseConfigAck reads a device's answer to a config:
// {"version":n,"status":"applied"|"rejected","error":"…"}. The version is a
// number or a string holding one, 1 or more.
func ParseConfigAck(payload []byte, maxBytes int) (ConfigAck, error) {
	var a ConfigAck
	if len(payload) > maxBytes {
		return a, Errorf(ETOOLARGE, "config ack of %d bytes is over the %d byte limit", len(payload), maxBytes)
	}
	var raw struct {
		Version json.RawMessage `json:"version"`
		Status  string          `json:"status"`
		Error   string          `json:"error"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return a, Errorf(EINVALID, "config ack is not a JSON object: %v", err)
	}
	v := string(raw.Version)
	if s, err := strconv.Unquote(v); err == nil {
		v = s
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return a, Errorf(EINVALID, "config ack version must be the version number it answers, 1 or more")
	}
	if raw.Status != ConfigApplied && raw.Status != ConfigRejected {
		return a, Errorf(EINVALID, `config ack status must be "applied" or "rejected"`)
	}
	a.Version, a.Status, a.Error = n, raw.Status, deviceText(raw.Error, maxDeviceError)
	return a, nil
}

// ParseOTAProgress reads a device's firmware progress:
// {"rollout_id":"…","state":"downloading"|"installing"|"rebooting"|"failed",
// "version":"…","percent":0..100,"error":"…"}; only state is required.
func ParseOTAProgress(payload []byte, maxBytes int) (OTAProgress, error) {
	var p OTAProgress
	if len(payload) > maxBytes {
		return p, Errorf(ETOOLARGE, "ota progress of %d bytes is over the %d byte limit", len(payload), maxBytes)
	}
	var raw struct {
		RolloutID json.RawMessage `json:"rollout_id"`
		State     string          `json:"state"`
		Version   string          `json:"version"`
		Percent   *float64        `json:"percent"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return p, Errorf(EINVALID, "ota progress is not a JSON object: %v", err)
	}
	switch raw.State {
	case OTADownloading, OTAInstalling, OTARebooting, OTAFailed:
	default:
		return p, Errorf(EINVALID, `ota progress state must be "downloading", "installing", "rebooting" or "failed"`)
	}
	if len(raw.RolloutID) > 0 && string(raw.RolloutID) != "null" {
		id := string(raw.RolloutID)
		if s, err := strconv.Unquote(id); err == nil {
			id = s
		}
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n <= 0 {
			return p, Errorf(EINVALID, "ota progress rollout_id must be a rollout's id")
		}
		p.RolloutID = strconv.FormatInt(n, 10)
	}
	if raw.Percent != nil {
		if *raw.Percent < 0 || *raw.Percent > 100 {
			return p, Errorf(EINVALID, "ota progress percent must be between 0 and 100")
		}
		n := int64(*raw.Percent)
		p.Percent = &n
	}
	p.State = raw.State
	p.Version = deviceText(raw.Version, MaxFirmwareLen)
	p.Error = deviceText(raw.Error, maxDeviceError)
	return p, nil
}

// ConfigQueue is what a gateway needs of the store to send devices their
// config: the config a device should run and has not applied.
type ConfigQueue interface {
	// PendingConfig returns the device's desired config when the device is
	// not in sync with it, nil when it is (or nothing is desired). The
	// device is named within its tenant.
	PendingConfig(ctx context.Context, tenantID, deviceID int64) (*ConfigDesiredEvent, error)
}

// DevicePayload is the message a device gets on devices/{key}/config.
func (c *ConfigDesiredEvent) DevicePayload() []byte {
	buf, _ := json.Marshal(struct {
		Version  int64           `json:"version"`
		Profile  string          `json:"profile"`
		Document json.RawMessage `json:"document"`
	}{c.Version, c.Profile, c.Document})
	return buf
}
