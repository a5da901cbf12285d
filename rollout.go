package herd

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// Event types of rollouts. Each is written under the target node's path,
// in the transaction of the transition it records.
const (
	EventRolloutCreated     = "rollout.created"
	EventRolloutStarted     = "rollout.started"
	EventRolloutWaveStarted = "rollout.wave_started"
	EventRolloutWavePassed  = "rollout.wave_passed"
	EventRolloutPaused      = "rollout.paused"
	EventRolloutResumed     = "rollout.resumed"
	EventRolloutSucceeded   = "rollout.succeeded"
	EventRolloutAborted     = "rollout.aborted"
	EventRolloutRollingBack = "rollout.rolling_back"
	EventRolloutRolledBack  = "rollout.rolled_back"
	EventRolloutCancelled   = "rollout.cancelled"
	EventSubjectRollout     = "rollout"
	// EventDeviceOTARequested tells the gateway holding a device to send
	// it a firmware update on devices/{key}/ota.
	EventDeviceOTARequested = "device.ota_requested"
)

// Rollout kinds: what the payload moves.
const (
	RolloutConfig   = "config"
	RolloutFirmware = "firmware"
)

// Rollout states. scheduled → running ⇄ paused → succeeded | aborted →
// rolling_back → rolled_back, and cancelled from any state before the end.
const (
	RolloutScheduled   = "scheduled"
	RolloutRunning     = "running"
	RolloutPaused      = "paused"
	RolloutSucceeded   = "succeeded"
	RolloutAborted     = "aborted"
	RolloutRollingBack = "rolling_back"
	RolloutRolledBack  = "rolled_back"
	RolloutCancelled   = "cancelled"
)

// RolloutActive reports whether a rollout in state s still has work for
// the controller.
func RolloutActive(s string) bool {
	switch s {
	case RolloutScheduled, RolloutRunning, RolloutPaused, RolloutRollingBack:
		return true
	}
	return false
}

// Member states. pending → queued (a slot is its, it waits out its start
// jitter) → told → applied | failed | timed_out; queued members of a
// rollout that stops become cancelled. Rolling back: applied → reverting →
// reverted | revert_failed.
const (
	MemberPending      = "pending"
	MemberQueued       = "queued"
	MemberTold         = "told"
	MemberApplied      = "applied"
	MemberFailed       = "failed"
	MemberTimedOut     = "timed_out"
	MemberCancelled    = "cancelled"
	MemberReverting    = "reverting"
	MemberReverted     = "reverted"
	MemberRevertFailed = "revert_failed"
)

// MemberStates lists the member states, for validating ?state=.
var MemberStates = []string{MemberPending, MemberQueued, MemberTold, MemberApplied, MemberFailed,
	MemberTimedOut, MemberCancelled, MemberReverting, MemberReverted, MemberRevertFailed}

// On-abort policies.
const (
	OnAbortRollback = "rollback"
	OnAbortStop     = "stop"
)

// Rollout actions of POST /v1/rollouts/{id}/{action}.
const (
	RolloutPause  = "pause"
	RolloutResume = "resume"
	RolloutAbort  = "abort"
	RolloutCancel = "cancel"
)

// Defaults and limits of a rollout.
const (
	MaxRolloutWaves          = 20
	DefaultMaxInFlight       = 100
	MaxMaxInFlight           = 100000
	DefaultMaxOfflinePercent = 5
	DefaultAnswerTimeout     = 600
	DefaultSuccessMinPercent = 95
	DefaultAbortFailurePct   = 5
	DefaultAbortMinDevices   = 10
	MaxRolloutSeconds        = 7 * 24 * 3600
	MaxHealthGates           = 10
)

// RolloutTarget picks the members: the devices under a node that match
// the filters of the scoped device query (FIELD:OP:VALUE).
type RolloutTarget struct {
	NodeID int64    `json:"node_id,string"`
	Filter []string `json:"filter"`
}

// RolloutPayload is what a rollout moves: a firmware image, or a version of
// a config profile.
type RolloutPayload struct {
	FirmwareID int64 `json:"firmware_id,string,omitempty"`
	ProfileID  int64 `json:"profile_id,string,omitempty"`
	Version    int64 `json:"version,omitempty"`
}

// RolloutWave is a cumulative share of the members.
type RolloutWave struct {
	Percent float64 `json:"percent"`
}

// HealthGate compares a projection field of the updated members with the
// control group (members not yet told). A numeric field takes
// MaxIncreaseVsControl: the updated group's mean may exceed the control's
// by at most that share of the control's mean (a mean under 1 counts as 1,
// so that a control at zero does not make one error an infinite rise). The
// boolean field online takes MinPercent: the share of updated members
// online.
type HealthGate struct {
	Field                string   `json:"field"`
	MaxIncreaseVsControl *float64 `json:"max_increase_vs_control,omitempty"`
	MinPercent           *float64 `json:"min_percent,omitempty"`
}

// RolloutGates decide when a wave passes and when the rollout aborts.
type RolloutGates struct {
	AnswerTimeoutS      int64        `json:"answer_timeout_s"`
	SuccessMinPercent   float64      `json:"success_min_percent"`
	AbortFailurePercent float64      `json:"abort_failure_percent"`
	AbortMinDevices     int64        `json:"abort_min_devices"`
	BakeS               int64        `json:"bake_s"`
	Health              []HealthGate `json:"health"`
}

// RolloutSpec is what POST /v1/rollouts takes, and all of it the controller
// needs besides the member rows.
type RolloutSpec struct {
	Target            RolloutTarget  `json:"target"`
	Payload           RolloutPayload `json:"payload"`
	Waves             []RolloutWave  `json:"waves"`
	MaxInFlight       int64          `json:"max_in_flight"`
	MaxOfflinePercent float64        `json:"max_offline_percent"`
	StartJitterS      int64          `json:"start_jitter_s"`
	Gates             RolloutGates   `json:"gates"`
	OnAbort           string         `json:"on_abort"`
}

// Rollout is a staged change of config or firmware over the devices of a
// target.
type Rollout struct {
	ID       int64  `json:"id,string"`
	TenantID int64  `json:"tenant_id,string"`
	Name     string `json:"name"`
	RolloutSpec
	// StartAt, when set, holds the rollout scheduled until then.
	StartAt *time.Time `json:"start_at,omitempty"`

	Kind  string `json:"kind"`
	State string `json:"state"`
	// Wave is the index of the wave being sent (0 for the first).
	Wave int `json:"wave"`
	// Reason says why the rollout stopped, when it aborted.
	Reason  string `json:"reason,omitempty"`
	Members int64  `json:"members"`
	// TargetVersion is the config version or firmware version moved to.
	TargetVersion string `json:"target_version"`
	// Driver names the herd process whose controller holds the rollout's
	// lease, while one does.
	Driver string `json:"driver,omitempty"`
	// Progress and Evaluations are filled by FindRolloutByID.
	Progress    []WaveProgress `json:"progress,omitempty"`
	Evaluations []GateEval     `json:"gate_evaluations,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at,omitempty"`
	FinishedAt  *time.Time     `json:"finished_at,omitempty"`
}

// WaveProgress counts one wave's members (those of this wave alone, not
// the cumulative share) by what became of them.
type WaveProgress struct {
	Wave      int     `json:"wave"`
	Percent   float64 `json:"percent"`
	State     string  `json:"state"` // waiting, sending, paused, baking, passed, stopped
	Members   int64   `json:"members"`
	Pending   int64   `json:"pending"`
	Told      int64   `json:"told"` // told ever: in flight, answered or timed out
	InFlight  int64   `json:"in_flight"`
	Applied   int64   `json:"applied"`
	Failed    int64   `json:"failed"`
	TimedOut  int64   `json:"timed_out"`
	Cancelled int64   `json:"cancelled"`
	Reverted  int64   `json:"reverted"`
	Offline   int64   `json:"offline"`
}

// GateEval is the last evaluation of one gate, with its numbers.
type GateEval struct {
	Gate      string    `json:"gate"`
	Wave      int       `json:"wave"`
	Passed    bool      `json:"passed"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Detail    string    `json:"detail"`
	At        time.Time `json:"at"`
}

// RolloutMember is one device of a rollout.
type RolloutMember struct {
	RolloutID  int64      `json:"rollout_id,string"`
	DeviceID   int64      `json:"device_id,string"`
	DeviceKey  string     `json:"device_key"`
	Ord        int64      `json:"ord"`
	Wave       int        `json:"wave"`
	State      string     `json:"state"`
	Attempts   int64      `json:"attempts"`
	Error      string     `json:"error,omitempty"`
	OTAState   string     `json:"ota_state,omitempty"`
	DueAt      *time.Time `json:"due_at,omitempty"`
	ToldAt     *time.Time `json:"told_at,omitempty"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
	// Previous is what a rollback gives the device back: a config version
	// or a firmware version.
	Previous string `json:"previous,omitempty"`
}

// OTARequest is the payload of a device.ota_requested event: all a gateway
// needs to send the update from the event alone.
type OTARequest struct {
	DeviceID  int64    `json:"device_id,string"`
	DeviceKey string   `json:"device_key"`
	RolloutID int64    `json:"rollout_id,string"`
	Firmware  Firmware `json:"firmware"`
}

// DevicePayload is the message a device gets on devices/{key}/ota.
func (r *OTARequest) DevicePayload() []byte {
	return []byte(`{"rollout_id":"` + itoa(r.RolloutID) + `","firmware":{"version":` + quoteJSON(r.Firmware.Version) +
		`,"url":` + quoteJSON(r.Firmware.URL) + `,"sha256":` + quoteJSON(r.Firmware.SHA256) + `,"size":` + itoa(r.Firmware.Size) + `}}`)
}

// RolloutService creates rollouts and acts on them. A rollout is seen by
// whoever sees its target node.
type RolloutService interface {
	// CreateRollout validates the spec, chooses the members from the
	// target (admin role on its node) and stores the rollout, scheduled or
	// running.
	CreateRollout(ctx context.Context, r *Rollout) error
	// FindRolloutByID returns the rollout with its per-wave progress and
	// its gates' last evaluations.
	FindRolloutByID(ctx context.Context, id int64) (*Rollout, error)
	// FindRollouts lists a tenant's rollouts the actor sees, newest first:
	// those with an id under before (0 for the first page).
	FindRollouts(ctx context.Context, tenantID, before int64, limit int) (*ConfigPage[*Rollout], error)
	// FindRolloutMembers pages a rollout's members in member order, of one
	// state or all (""), those after the ord given.
	FindRolloutMembers(ctx context.Context, id int64, state string, after int64, limit int) (*ConfigPage[*RolloutMember], error)
	// ActOnRollout pauses, resumes, aborts or cancels it. Pause and abort
	// take the operator role on the target node (anyone on call may pull
	// the brake); resume and cancel take admin. An action the state does
	// not allow is ECONFLICT; one it is in already changes nothing.
	ActOnRollout(ctx context.Context, id int64, action string) (*Rollout, error)
}

// RolloutStep is what one step of a rollout did.
type RolloutStep struct {
	State string
	// Decisions counts the member decisions the step made: members queued,
	// told, answered, timed out or reverted.
	Decisions int
	// Next is when the step wants to run again at the latest (a member's
	// start jitter running out, a bake ending); zero for the controller's
	// own cadence.
	Next time.Time
}

// RolloutDriver is what the controller needs of the store. Every step
// commits its decisions and their events in one transaction, under the
// lease, so a controller that dies leaves a rollout where its last commit
// left it.
type RolloutDriver interface {
	// ClaimRollouts leases to owner up to max active rollouts no other live
	// lease holds, renews the owner's, and returns their ids.
	ClaimRollouts(ctx context.Context, owner string, lease time.Duration, max int) ([]int64, error)
	// StepRollout moves a held rollout on as far as it can go now. It
	// returns ErrRolloutLeaseLost when owner no longer holds it.
	StepRollout(ctx context.Context, owner string, id int64, lease time.Duration) (RolloutStep, error)
	// ReleaseRollouts gives up owner's leases.
	ReleaseRollouts(ctx context.Context, owner string) error
}

// ErrRolloutLeaseLost says a controller no longer holds the rollout it was
// stepping.
var ErrRolloutLeaseLost = errors.New("rollout lease lost")

// healthFields are the projection fields a health gate may watch.
var healthFields = map[string]bool{"online": true, "error_count": true, "temperature": true, "humidity": true,
	"pressure": true, "voltage": true, "current": true, "power": true, "battery": true, "rssi": true, "uptime_s": true}

// Validate fills in the defaults and checks the rollout as POST
// /v1/rollouts gives it. defaultInFlight is the max_in_flight of a spec
// that names none (the gateway's connect rate over ten seconds for
// firmware, at most); 0 takes DefaultMaxInFlight.
func (r *Rollout) Validate(defaultInFlight int64) error {
	r.Name = strings.TrimSpace(r.Name)
	if r.TenantID == 0 {
		return Errorf(EINVALID, "tenant_id is required")
	} else if err := checkRequiredText("name", r.Name, MaxNameLen); err != nil {
		return err
	} else if r.Target.NodeID <= 0 {
		return Errorf(EINVALID, "target.node_id is required")
	}
	if _, err := r.Filters(); err != nil {
		return err
	}
	p := r.Payload
	switch {
	case p.FirmwareID != 0 && (p.ProfileID != 0 || p.Version != 0):
		return Errorf(EINVALID, "payload takes firmware_id, or profile_id and version, not both")
	case p.FirmwareID > 0:
		r.Kind = RolloutFirmware
	case p.ProfileID > 0 && p.Version > 0:
		r.Kind = RolloutConfig
	case p.ProfileID > 0:
		return Errorf(EINVALID, "payload.version is required with payload.profile_id")
	default:
		return Errorf(EINVALID, "payload must name firmware_id, or profile_id and version")
	}
	if len(r.Waves) == 0 {
		r.Waves = []RolloutWave{{Percent: 100}}
	} else if len(r.Waves) > MaxRolloutWaves {
		return Errorf(EINVALID, "at most %d waves", MaxRolloutWaves)
	}
	last := 0.0
	for i, w := range r.Waves {
		if !(w.Percent > last) || w.Percent > 100 || math.IsNaN(w.Percent) {
			return Errorf(EINVALID, "waves[%d].percent must be over the wave before's (%g) and at most 100: waves are cumulative shares of the members", i, last)
		}
		last = w.Percent
	}
	if last != 100 {
		return Errorf(EINVALID, "the last wave must be 100 percent, not %g: every member is in a wave", last)
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = DefaultMaxInFlight
		if defaultInFlight > 0 && (r.Kind == RolloutFirmware || defaultInFlight < r.MaxInFlight) {
			r.MaxInFlight = defaultInFlight
		}
	} else if r.MaxInFlight < 1 || r.MaxInFlight > MaxMaxInFlight {
		return Errorf(EINVALID, "max_in_flight must be from 1 to %d", MaxMaxInFlight)
	}
	if r.MaxOfflinePercent == 0 {
		r.MaxOfflinePercent = DefaultMaxOfflinePercent
	} else if !(r.MaxOfflinePercent > 0 && r.MaxOfflinePercent <= 100) {
		return Errorf(EINVALID, "max_offline_percent must be over 0 and at most 100")
	}
	if r.StartJitterS < 0 || r.StartJitterS > MaxRolloutSeconds {
		return Errorf(EINVALID, "start_jitter_s must be from 0 to %d", MaxRolloutSeconds)
	}
	g := &r.Gates
	if g.AnswerTimeoutS == 0 {
		g.AnswerTimeoutS = DefaultAnswerTimeout
	} else if g.AnswerTimeoutS < 1 || g.AnswerTimeoutS > MaxRolloutSeconds {
		return Errorf(EINVALID, "gates.answer_timeout_s must be from 1 to %d", MaxRolloutSeconds)
	}
	if g.BakeS < 0 || g.BakeS > MaxRolloutSeconds {
		return Errorf(EINVALID, "gates.bake_s must be from 0 to %d", MaxRolloutSeconds)
	}
	if g.SuccessMinPercent == 0 {
		g.SuccessMinPercent = DefaultSuccessMinPercent
	} else if !(g.SuccessMinPercent > 0 && g.SuccessMinPercent <= 100) {
		return Errorf(EINVALID, "gates.success_min_percent must be over 0 and at most 100")
	}
	if g.AbortFailurePercent == 0 {
		g.AbortFailurePercent = DefaultAbortFailurePct
	} else if !(g.AbortFailurePercent > 0 && g.AbortFailurePercent <= 100) {
		return Errorf(EINVALID, "gates.abort_failure_percent must be over 0 and at most 100")
	}
	if g.AbortMinDevices == 0 {
		g.AbortMinDevices = DefaultAbortMinDevices
	} else if g.AbortMinDevices < 1 {
		return Errorf(EINVALID, "gates.abort_min_devices must be 1 or more")
	}
	if len(g.Health) > MaxHealthGates {
		return Errorf(EINVALID, "at most %d health gates", MaxHealthGates)
	}
	for i, h := range g.Health {
		if !healthFields[h.Field] {
			return Errorf(EINVALID, "gates.health[%d].field %q is not a field a health gate watches (online, error_count, or a numeric reading)", i, h.Field)
		}
		if h.Field == "online" {
			if h.MinPercent == nil || h.MaxIncreaseVsControl != nil || !(*h.MinPercent >= 0 && *h.MinPercent <= 100) {
				return Errorf(EINVALID, "gates.health[%d]: online takes min_percent, from 0 to 100", i)
			}
		} else if h.MaxIncreaseVsControl == nil || h.MinPercent != nil || !(*h.MaxIncreaseVsControl >= 0) || math.IsInf(*h.MaxIncreaseVsControl, 0) {
			return Errorf(EINVALID, "gates.health[%d]: %s takes max_increase_vs_control, 0 or more", i, h.Field)
		}
	}
	switch r.OnAbort {
	case "":
		r.OnAbort = OnAbortRollback
	case OnAbortRollback, OnAbortStop:
	default:
		return Errorf(EINVALID, "on_abort must be rollback or stop, not %q", r.OnAbort)
	}
	return nil
}

// Filters parses the target's filters.
func (r *Rollout) Filters() ([]DeviceFilter, error) {
	if len(r.Target.Filter) > MaxFilters {
		return nil, Errorf(EINVALIDFILTER, "target.filter: at most %d filters", MaxFilters)
	}
	var fs []DeviceFilter
	for _, s := range r.Target.Filter {
		f, err := ParseDeviceFilter(s)
		if err != nil {
			return nil, Errorf(EINVALIDFILTER, "target.filter: %s", ErrorMessage(err))
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// WaveBounds returns, for each wave, the ord of its last member: wave i
// holds the members with ord in (bounds[i-1], bounds[i]]. Every wave of a
// rollout with members holds at least one unless there are fewer members
// than waves.
func WaveBounds(waves []RolloutWave, members int64) []int64 {
	b := make([]int64, len(waves))
	var prev int64
	for i, w := range waves {
		n := int64(math.Ceil(float64(members) * w.Percent / 100))
		n = max(n, min(prev+1, members))
		if i == len(waves)-1 {
			n = members
		}
		b[i], prev = n, n
	}
	return b
}

// MaxOffline is the most members that may be offline while the rollout
// still tells more: the reboot budget.
func (r *Rollout) MaxOffline() int64 {
	return int64(math.Floor(float64(r.Members) * r.MaxOfflinePercent / 100))
}

// Gate names of GateEval.
const (
	GateFailures     = "abort_failure_percent"
	GateSuccess      = "success_min_percent"
	GateRebootBudget = "max_offline_percent"
	GateHealthPrefix = "health:"
)

// FailureGate evaluates the abort threshold over every member told so
// far: failed (and timed out) against told. It fails when the failures
// reach both the share and the floor of devices.
func (g *RolloutGates) FailureGate(wave int, told, failed int64, at time.Time) GateEval {
	pct := 0.0
	if told > 0 {
		pct = 100 * float64(failed) / float64(told)
	}
	e := GateEval{Gate: GateFailures, Wave: wave, Value: pct, Threshold: g.AbortFailurePercent, At: at}
	e.Passed = !(failed >= g.AbortMinDevices && pct >= g.AbortFailurePercent)
	e.Detail = itoa(failed) + " of " + itoa(told) + " told failed or timed out (abort at " + ftoa(g.AbortFailurePercent) + "% and " + itoa(g.AbortMinDevices) + " devices)"
	return e
}

// SuccessGate evaluates a finished wave: the share of its cumulative
// members that applied.
func (g *RolloutGates) SuccessGate(wave int, members, applied int64, at time.Time) GateEval {
	pct := 100.0
	if members > 0 {
		pct = 100 * float64(applied) / float64(members)
	}
	return GateEval{Gate: GateSuccess, Wave: wave, Value: pct, Threshold: g.SuccessMinPercent, Passed: pct >= g.SuccessMinPercent, At: at,
		Detail: itoa(applied) + " of " + itoa(members) + " members up to this wave applied"}
}

// FieldStats summarises a projection field over a group of members: its
// count of non-NULL values and their sum (for online, the count online).
type FieldStats struct {
	N   int64
	Sum float64
}

// HealthGate evaluates one health gate on the updated group against the
// control group.
func (h HealthGate) Evaluate(wave int, updated, control FieldStats, at time.Time) GateEval {
	e := GateEval{Gate: GateHealthPrefix + h.Field, Wave: wave, At: at, Passed: true}
	if h.MinPercent != nil {
		e.Threshold = *h.MinPercent
		if updated.N == 0 {
			e.Value, e.Detail = 100, "no updated members yet"
			return e
		}
		e.Value = 100 * updated.Sum / float64(updated.N)
		e.Passed = e.Value >= *h.MinPercent
		e.Detail = ftoa(updated.Sum) + " of " + itoa(updated.N) + " updated members online"
		return e
	}
	e.Threshold = *h.MaxIncreaseVsControl
	if updated.N == 0 || control.N == 0 {
		e.Detail = "no comparison: " + itoa(updated.N) + " updated and " + itoa(control.N) + " control members report " + h.Field
		return e
	}
	mu, mc := updated.Sum/float64(updated.N), control.Sum/float64(control.N)
	e.Value = (mu - mc) / max(math.Abs(mc), 1)
	e.Passed = e.Value <= *h.MaxIncreaseVsControl
	e.Detail = "mean " + h.Field + " " + ftoa(mu) + " updated (" + itoa(updated.N) + ") vs " + ftoa(mc) + " control (" + itoa(control.N) + ")"
	return e
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ftoa(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
