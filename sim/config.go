package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// What a simulated device does with config and firmware. A config on
// devices/{key}/config is applied (or, for a share of the devices,
// rejected) and answered on config/ack; a firmware update on
// devices/{key}/ota is reported on ota/progress as downloading, installing
// and rebooting, after which the device is gone for its reboot time and
// comes back reporting the new firmware in its telemetry. A share fails
// the update and stays on its firmware; a share never comes back. The
// shares are chosen from the device's key, not the run's seed, so that a
// rerun, or another simulator process sharing the fleet, picks the same
// devices.

// Salts of the per-device choices, so that the shares are independent:
// the devices that reject config are not the ones that brick.
const (
	saltReject  = "config-reject"
	saltFail    = "firmware-fail"
	saltBricked = "bricked"
	saltClimb   = "error-climb"
)

// chosen says whether the device with this key is in the share of the
// devices for salt, the same on every run.
func chosen(key, salt string, share float64) bool {
	if share <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return float64(h.Sum64()>>11)/float64(1<<53) < share
}

// configMsg is what herd sends on devices/{key}/config.
type configMsg struct {
	Version int64  `json:"version"`
	Profile string `json:"profile"`
}

// otaJob is a firmware update as herd sends it on devices/{key}/ota.
type otaJob struct {
	RolloutID json.RawMessage `json:"rollout_id"`
	Firmware  struct {
		Version string `json:"version"`
		URL     string `json:"url"`
		SHA256  string `json:"sha256"`
		Size    int64  `json:"size"`
	} `json:"firmware"`
}

// onConfig applies or rejects a config and answers it. A config may come
// more than once (herd sends it again on each subscription until the
// answer is in): the device decides once per version and gives the same
// answer each time, since its first answer may be what was lost.
func (d *device) onConfig(c paho.Client, m paho.Message) {
	var msg configMsg
	if err := json.Unmarshal(m.Payload(), &msg); err != nil || msg.Version <= 0 {
		return
	}
	r := d.r
	reject := chosen(d.d.Key, saltReject, r.cfg.ConfigReject)
	d.stateMu.Lock()
	repeat := d.cfgProfile == msg.Profile && d.cfgVersion == msg.Version
	if !repeat {
		d.cfgProfile, d.cfgVersion = msg.Profile, msg.Version
		if reject {
			r.cfgRejected.Add(1)
		} else {
			r.cfgApplied.Add(1)
			d.climb = d.climb || chosen(d.d.Key, saltClimb, r.cfg.ErrorClimb)
		}
	}
	d.stateMu.Unlock()
	ack := fmt.Sprintf(`{"version":%d,"status":"applied"}`, msg.Version)
	if reject {
		ack = fmt.Sprintf(`{"version":%d,"status":"rejected","error":"herd-simulate: this device rejects config version %d"}`, msg.Version, msg.Version)
	}
	c.Publish("devices/"+d.d.Key+"/config/ack", 1, false, ack)
}

// onOTA hands a firmware update to the device's publish loop, which owns
// the connection it must drop to reboot. An update of the firmware the
// device runs, or a rollout's job it has taken already, is not started
// again.
func (d *device) onOTA(_ paho.Client, m paho.Message) {
	var job otaJob
	if err := json.Unmarshal(m.Payload(), &job); err != nil || job.Firmware.Version == "" {
		return
	}
	// A rollout's job is the device's once: sent again (a repeated
	// delivery, or a sender that sends until it hears back) while it runs
	// or after it ended, it is not started again, as a job execution that
	// finished stays finished on AWS IoT Jobs. Herd's rollouts never send
	// a device's job again.
	key := ""
	if r := string(job.RolloutID); r != "" && r != "null" {
		key = r + "/" + job.Firmware.Version
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if d.firmware == job.Firmware.Version || (key != "" && key == d.otaJob) {
		return
	}
	select {
	case d.ota <- &job:
		d.otaJob = key
	default:
	}
}

// runOTA reports an update's progress on the connection. It returns true
// when the device is to reboot onto the new firmware, false when the
// update failed (or the connection did, or the device runs that firmware
// already) and the device stays as it is.
func (d *device) runOTA(ctx context.Context, c paho.Client, job *otaJob) bool {
	r := d.r
	d.stateMu.Lock()
	same := d.firmware == job.Firmware.Version
	d.stateMu.Unlock()
	if same {
		return false // sent again while it was installing
	}
	progress := func(state, errText string) bool {
		p := map[string]any{"state": state, "version": job.Firmware.Version}
		if len(job.RolloutID) > 0 && string(job.RolloutID) != "null" {
			p["rollout_id"] = job.RolloutID
		}
		if errText != "" {
			p["error"] = errText
		}
		buf, _ := json.Marshal(p)
		tok := c.Publish("devices/"+d.d.Key+"/ota/progress", 1, false, buf)
		return tok.WaitTimeout(30*time.Second) && tok.Error() == nil && ctx.Err() == nil
	}
	if !progress("downloading", "") || !progress("installing", "") {
		return false
	}
	if chosen(d.d.Key, saltFail, r.cfg.FirmwareFail) {
		if progress("failed", "herd-simulate: this device fails to install "+job.Firmware.Version) {
			r.fwFailed.Add(1)
		}
		return false
	}
	return progress("rebooting", "")
}

// rebootTime is the device's reboot, its Reboot ±20%.
func (d *device) rebootTime() time.Duration {
	base := d.r.cfg.Reboot
	if base <= 0 {
		return time.Millisecond
	}
	return time.Duration(float64(base) * (0.8 + 0.4*d.rng.Float64()))
}

// reboot takes the device through the reboot after an update: it is gone
// for its reboot time and then runs the new firmware. It returns false
// when the device is bricked (it never comes back) or ctx ended.
func (d *device) reboot(ctx context.Context, job *otaJob) bool {
	r := d.r
	if chosen(d.d.Key, saltBricked, r.cfg.Bricked) {
		r.fwBricked.Add(1)
		return false
	}
	select {
	case <-time.After(d.rebootTime()):
	case <-ctx.Done():
		return false
	}
	d.stateMu.Lock()
	d.firmware = job.Firmware.Version
	d.climb = d.climb || chosen(d.d.Key, saltClimb, r.cfg.ErrorClimb)
	d.stateMu.Unlock()
	r.fwUpdated.Add(1)
	d.reportNow = true
	return true
}

// reading returns a realistic telemetry payload: temperature wanders,
// battery drains, the status follows the temperature; the firmware, once
// updated, and the error count, which climbs on a device of the
// ErrorClimb share once it applied something.
func (d *device) reading() []byte {
	d.temp += d.rng.NormFloat64() * 0.2
	d.battery = math.Max(0, d.battery-0.001)
	status := "ok"
	switch {
	case d.temp > 40:
		status = "alarm"
	case d.temp > 32:
		status = "warn"
	}
	d.stateMu.Lock()
	if d.climb {
		d.errorCount++
	}
	errs, fw := d.errorCount, d.firmware
	d.stateMu.Unlock()
	b := fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"battery":%.2f,"rssi":%d,"status":%q,"error_count":%d`,
		d.temp, 40+10*d.rng.Float64(), d.battery, -50-d.rng.IntN(40), status, errs)
	if fw != "" {
		b = fmt.Appendf(b, `,"firmware":%q`, fw)
	}
	return append(b, '}')
}
