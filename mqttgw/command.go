package mqttgw

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Commands reach a device as QoS 1 publishes on devices/{key}/commands,
// from the gateway that holds its connection:
//   - when a command is created (CommandEvent, fed the event stream: every
//     gateway process sees every command and the one holding the device
//     sends it);
//   - when the device subscribes to its commands topic (on every connect),
//     all its open commands, so a device that was away gets what waited.
//
// A command may so reach a device twice; it carries its id, and devices
// drop repeats. The device's PUBACK makes it delivered; its answer on
// devices/{key}/commands/ack makes it acked or failed (in the ingest batch,
// acknowledged after commit like telemetry).

// commandRoutes tracks command publishes in flight to devices, by client
// and packet id, until their PUBACK.
type commandRoutes struct {
	mu        sync.Mutex
	inflight  map[inflightKey]int64
	delivered chan int64
}

type inflightKey struct {
	cl *mqtt.Client
	id uint16
}

// CommandEvent sends a newly created command to its device, if this
// gateway holds the device; other events are ignored. Call it with every
// event of the stream.
func (g *Gateway) CommandEvent(ev *herd.Event) {
	if ev.Type != herd.EventCommandCreated || g.Commands == nil {
		return
	}
	var c herd.Command
	if err := json.Unmarshal(ev.Payload, &c); err != nil || c.DeviceKey == "" {
		return
	}
	if _, ok := g.session(c.DeviceKey); !ok {
		return // elsewhere, or offline: it gets it when it subscribes
	}
	g.sendCommand(&c)
}

func (g *Gateway) sendCommand(c *herd.Command) {
	if !c.ExpiresAt.IsZero() && !g.Now().Before(c.ExpiresAt) {
		return
	}
	if err := g.Send(c.DeviceKey, topicCommands, c.DevicePayload()); err == nil {
		g.metrics.commandsSent.Inc()
	}
}

// deliverOpen sends a device all its open commands.
func (g *Gateway) deliverOpen(tenantID, deviceID int64) {
	ctx, cancel := context.WithTimeout(g.baseCtx, 10*time.Second)
	defer cancel()
	cs, err := g.Commands.OpenCommands(ctx, tenantID, deviceID)
	if err != nil {
		g.Logger.Warn("open commands not read; they go when the device subscribes again", "device", deviceID, "err", err)
		return
	}
	for _, c := range cs {
		g.sendCommand(c)
	}
}

// resendPending sends again, every RetryPending, the commands still
// pending (not PUBACKed) for devices held here: the event that should
// have carried one here may have been lost (the tail is a hint), or its
// publish dropped.
func (g *Gateway) resendPending() {
	t := time.NewTicker(RetryPending)
	defer t.Stop()
	for {
		select {
		case <-g.baseCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(g.baseCtx, 10*time.Second)
		cs, err := g.Commands.PendingCommands(ctx, g.Now().Add(-RetryPending), 1000)
		cancel()
		if err != nil {
			g.Logger.Warn("pending commands not read", "err", err)
			continue
		}
		for _, c := range cs {
			if _, ok := g.session(c.DeviceKey); ok {
				g.sendCommand(c)
			}
		}
	}
}

// RetryPending is how long a command may stay pending for a connected
// device before its gateway sends it again.
const RetryPending = 10 * time.Second

// markDelivered records PUBACKed commands, those of 10 ms in one write.
// It waits for the first id of each write rather than ticking: a gateway
// without commands in flight does nothing.
func (g *Gateway) markDelivered() {
	var ids []int64
	for first := range g.routes.delivered {
		ids = append(ids[:0], first)
		t := time.NewTimer(10 * time.Millisecond)
		open := true
	gather:
		for {
			select {
			case id, ok := <-g.routes.delivered:
				if !ok {
					open = false
					break gather
				}
				ids = append(ids, id)
			case <-t.C:
				break gather
			}
		}
		t.Stop()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(g.baseCtx), 10*time.Second)
		if err := g.Commands.MarkDelivered(ctx, ids); err != nil {
			g.Logger.Warn("commands not marked delivered", "n", len(ids), "err", err)
		}
		cancel()
		if !open {
			return
		}
	}
}

// commandID reads the id of a command payload.
func commandID(payload []byte) int64 {
	var p struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return 0
	}
	n, _ := strconv.ParseInt(p.ID, 10, 64)
	return n
}

// OnSubscribed sends a device its open commands once it listens for
// them, its config, when it is not in sync, once it listens for that, and
// the firmware update it waits for once it listens for that.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	g := h.g
	if cl.Net.Inline {
		return
	}
	commands := "devices/" + cl.ID + "/" + topicCommands
	config := "devices/" + cl.ID + "/" + topicConfig
	ota := "devices/" + cl.ID + "/" + topicOTA
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= 0x80 {
			continue
		}
		s, ok := g.session(cl.ID)
		if !ok || s.link.cl != cl {
			return
		}
		switch {
		case f.Filter == commands && g.Commands != nil:
			g.work.start(func() { g.deliverOpen(s.tenantID, s.deviceID) })
		case f.Filter == config && g.Configs != nil:
			g.work.start(func() { g.deliverConfig(s.tenantID, s.deviceID) })
		case f.Filter == ota && g.OTA != nil:
			g.work.start(func() { g.deliverOTA(s.tenantID, s.deviceID) })
		}
	}
}

// OnQosPublish notes which command a QoS 1 publish to a device carries.
func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if h.g.Commands == nil || !strings.HasSuffix(pk.TopicName, "/"+topicCommands) {
		return
	}
	if id := commandID(pk.Payload); id != 0 {
		r := &h.g.routes
		r.mu.Lock()
		r.inflight[inflightKey{cl, pk.PacketID}] = id
		r.mu.Unlock()
	}
}

// OnQosComplete: the device PUBACKed a publish; if it was a command, the
// command is delivered.
func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	r := &h.g.routes
	// Only a PUBACK completes a command's publish: the device's own QoS 2
	// flows complete here too, with packet ids of its own.
	if h.g.Commands == nil || pk.FixedHeader.Type != packets.Puback {
		return
	}
	k := inflightKey{cl, pk.PacketID}
	r.mu.Lock()
	id, ok := r.inflight[k]
	delete(r.inflight, k)
	r.mu.Unlock()
	if ok {
		select {
		case r.delivered <- id:
		default: // the marker is far behind: the command stays pending, and is sent again on reconnect
		}
	}
}

// forgetInflight drops a closed client's command publishes: no PUBACK can
// come for them on that socket.
func (g *Gateway) forgetInflight(cl *mqtt.Client) {
	r := &g.routes
	r.mu.Lock()
	for k := range r.inflight {
		if k.cl == cl {
			delete(r.inflight, k)
		}
	}
	r.mu.Unlock()
}
