package mqttgw

import (
	"context"
	"encoding/json"
	"time"

	"github.com/herd-iot/herd"
)

// A firmware update reaches a device as a QoS 1 publish on
// devices/{key}/ota, {"rollout_id":"…","firmware":{version,url,sha256,size}},
// from the gateway that holds its connection, as its config does:
//   - when the rollout controller tells it (OTAEvent, fed the event stream
//     as ConfigEvent is);
//   - on every subscription to its ota topic while it is a told or
//     reverting member of an active firmware rollout and does not report
//     that firmware yet, so a device that was away, or missed the
//     publish, gets it again.
//
// An update may so reach a device more than once: it dedupes by version.
// Its progress on devices/{key}/ota/progress is committed in the ingest
// batch and acknowledged after commit like telemetry.

// OTAEvent sends a device the firmware update a rollout asks for, if this
// gateway holds the device; other events are ignored. Call it with every
// event of the stream.
func (g *Gateway) OTAEvent(ev *herd.Event) {
	if ev.Type != herd.EventDeviceOTARequested || g.OTA == nil {
		return
	}
	var r herd.OTARequest
	if err := json.Unmarshal(ev.Payload, &r); err != nil || r.DeviceKey == "" {
		return
	}
	if s, ok := g.session(r.DeviceKey); !ok || s.tenantID != ev.TenantID {
		return // elsewhere, or offline: it gets it when it subscribes
	}
	g.sendOTA(&r)
}

func (g *Gateway) sendOTA(r *herd.OTARequest) {
	if err := g.Send(r.DeviceKey, topicOTA, r.DevicePayload()); err != nil && err != ErrNotConnected {
		g.Logger.Warn("firmware update not sent; it goes when the device subscribes again", "device", r.DeviceID, "rollout", r.RolloutID, "err", err)
	}
}

// deliverOTA sends a device the firmware update it waits for, if any.
func (g *Gateway) deliverOTA(tenantID, deviceID int64) {
	ctx, cancel := context.WithTimeout(g.baseCtx, 10*time.Second)
	defer cancel()
	r, err := g.OTA.PendingOTA(ctx, tenantID, deviceID)
	if err != nil {
		g.Logger.Warn("pending firmware update not read; it goes when the device subscribes again", "device", deviceID, "err", err)
		return
	} else if r != nil {
		g.sendOTA(r)
	}
}
