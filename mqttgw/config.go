package mqttgw

import (
	"context"
	"encoding/json"
	"time"

	"github.com/herd-iot/herd"
)

// A device's config reaches it as a QoS 1 publish on devices/{key}/config,
// {"version":n,"profile":"…","document":{…}}, from the gateway that holds
// its connection:
//   - when its desired config changes (ConfigEvent, fed the event stream
//     as CommandEvent is);
//   - on every subscription to its config topic while it has not applied
//     the desired version, so a device that was away, or missed the
//     publish, gets it again.
//
// A config may so reach a device more than once: it dedupes by version.
// Its answer on devices/{key}/config/ack is committed in the ingest batch
// and acknowledged after commit like telemetry.

// ConfigEvent sends a device its new desired config, if this gateway holds
// the device; other events are ignored. Call it with every event of the
// stream.
func (g *Gateway) ConfigEvent(ev *herd.Event) {
	if ev.Type != herd.EventDeviceConfigDesired || g.Configs == nil {
		return
	}
	var c herd.ConfigDesiredEvent
	if err := json.Unmarshal(ev.Payload, &c); err != nil || c.DeviceKey == "" {
		return
	}
	if s, ok := g.session(c.DeviceKey); !ok || s.tenantID != ev.TenantID {
		return // elsewhere, or offline: it gets it when it subscribes
	}
	g.sendConfig(&c)
}

func (g *Gateway) sendConfig(c *herd.ConfigDesiredEvent) {
	if err := g.Send(c.DeviceKey, topicConfig, c.DevicePayload()); err != nil && err != ErrNotConnected {
		g.Logger.Warn("config not sent; it goes when the device subscribes again", "device", c.DeviceID, "err", err)
	}
}

// deliverConfig sends a device its desired config unless it applied it.
func (g *Gateway) deliverConfig(tenantID, deviceID int64) {
	ctx, cancel := context.WithTimeout(g.baseCtx, 10*time.Second)
	defer cancel()
	c, err := g.Configs.PendingConfig(ctx, tenantID, deviceID)
	if err != nil {
		g.Logger.Warn("desired config not read; it goes when the device subscribes again", "device", deviceID, "err", err)
		return
	} else if c != nil {
		g.sendConfig(c)
	}
}
