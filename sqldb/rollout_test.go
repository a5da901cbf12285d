package sqldb_test

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// rolloutFleet is a store with a tenant of two sites of devices that all
// run config version 1 of a profile, and a clock the test moves.
type rolloutFleet struct {
	*fixture
	t        *testing.T
	ten      *herd.Tenant
	devices  []*herd.Device
	profile  *herd.ConfigProfile
	configs  *sqldb.ConfigService
	rollouts *sqldb.RolloutService
	ingest   *sqldb.IngestService
	mu       sync.Mutex
	now      time.Time
}

func newRolloutFleet(t *testing.T, db *sqldb.DB, perSite int) *rolloutFleet {
	f := &rolloutFleet{fixture: newFixture(db), t: t, configs: sqldb.NewConfigService(db), rollouts: sqldb.NewRolloutService(db),
		ingest: sqldb.NewIngestService(db), now: time.Now().UTC().Truncate(time.Millisecond)}
	db.Now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	f.ten = f.mustTenant(t, nextKey("rollouts"))
	for _, name := range []string{"north", "south"} {
		site := f.mustNode(t, f.ten.RootNodeID, name)
		f.devices = append(f.devices, f.mustDevices(t, site.ID, perSite)...)
	}
	f.profile = &herd.ConfigProfile{TenantID: f.ten.ID, Name: "app", Schema: json.RawMessage(`{"type":"object","properties":{"rate":{"type":"integer"}}}`)}
	mustOK(t, f.configs.CreateConfigProfile(f.super, f.profile))
	for v := 1; v <= 3; v++ {
		mustOK(t, f.configs.CreateConfigVersion(f.super, &herd.ConfigVersion{ProfileID: f.profile.ID, Document: json.RawMessage(`{"rate":` + string(rune('0'+v)) + `}`)}))
	}
	for _, d := range f.devices {
		if _, err := f.configs.SetDesiredConfig(f.super, d.ID, f.profile.ID, 1); err != nil {
			t.Fatal(err)
		}
		f.ack(d.ID, 1, herd.ConfigApplied)
	}
	return f
}

func (f *rolloutFleet) advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

func (f *rolloutFleet) ack(deviceID, version int64, status string) {
	f.t.Helper()
	mustOK(f.t, f.ingest.Ingest(context.Background(), []herd.IngestItem{{Kind: herd.IngestConfigAck, DeviceID: deviceID, TenantID: f.ten.ID,
		At: f.db.Now().UnixMilli(), ConfigAck: herd.ConfigAck{Version: version, Status: status}}}))
}

// members returns every member of the rollout.
func (f *rolloutFleet) members(id int64) []*herd.RolloutMember {
	f.t.Helper()
	var all []*herd.RolloutMember
	var after int64
	for {
		p, err := f.rollouts.FindRolloutMembers(f.super, id, "", after, 1000)
		mustOK(f.t, err)
		all = append(all, p.Items...)
		if p.Next == 0 {
			return all
		}
		after = p.Next
	}
}

// rejects says whether a device's key puts it in the share that rejects.
func rejects(key string, share float64) bool {
	h := fnv.New32a()
	h.Write([]byte(key))
	return float64(h.Sum32()%1000) < share*1000
}

// drive steps the rollout and answers for the devices until it ends,
// checking after every step that no more than max_in_flight members are
// in flight. answer returns the status a device gives a version.
func (f *rolloutFleet) drive(r *herd.Rollout, answer func(key string, version int64) string) *herd.Rollout {
	f.t.Helper()
	owner := "test-controller"
	keys := map[int64]string{}
	for _, d := range f.devices {
		keys[d.ID] = d.Key
	}
	answered := map[[2]int64]bool{}
	for i := 0; i < 2000; i++ {
		ids, err := f.rollouts.ClaimRollouts(context.Background(), owner, time.Minute, 10)
		mustOK(f.t, err)
		for _, id := range ids {
			if _, err := f.rollouts.StepRollout(context.Background(), owner, id, time.Minute); err != nil {
				f.t.Fatalf("step: %v", err)
			}
		}
		got, err := f.rollouts.FindRolloutByID(f.super, r.ID)
		mustOK(f.t, err)
		if !herd.RolloutActive(got.State) {
			return got
		}
		inFlight, reverting := 0, 0
		for _, m := range f.members(r.ID) {
			switch m.State {
			case herd.MemberQueued, herd.MemberTold:
				inFlight++
			case herd.MemberReverting:
				reverting++
			}
			if m.State != herd.MemberTold && m.State != herd.MemberReverting {
				continue
			}
			v := r.Payload.Version
			if m.State == herd.MemberReverting {
				v = 2
			}
			if !answered[[2]int64{m.DeviceID, v}] {
				answered[[2]int64{m.DeviceID, v}] = true
				f.ack(m.DeviceID, v, answer(keys[m.DeviceID], v))
			}
		}
		if int64(inFlight) > r.MaxInFlight || int64(reverting) > r.MaxInFlight {
			f.t.Fatalf("%d members in flight and %d reverting, max_in_flight %d", inFlight, reverting, r.MaxInFlight)
		}
		f.advance(time.Second)
	}
	f.t.Fatal("rollout did not end")
	return nil
}

// desiredEvents counts the device.config_desired events of each device
// for one version.
func (f *rolloutFleet) desiredEvents(version int64) map[int64]int {
	f.t.Helper()
	n := map[int64]int{}
	var after int64
	events := sqldb.NewEventService(f.db)
	for {
		p, err := events.FindEvents(f.super, f.ten.ID, after, 1000)
		mustOK(f.t, err)
		for _, ev := range p.Items {
			if ev.Type != herd.EventDeviceConfigDesired {
				continue
			}
			var c herd.ConfigDesiredEvent
			mustOK(f.t, json.Unmarshal(ev.Payload, &c))
			if c.Version == version {
				n[c.DeviceID]++
			}
		}
		if len(p.Items) == 0 || p.NextAfter <= after {
			return n
		}
		after = p.NextAfter
	}
}

func configRollout(f *rolloutFleet, version int64) *herd.Rollout {
	return &herd.Rollout{TenantID: f.ten.ID, Name: nextKey("cfg"), RolloutSpec: herd.RolloutSpec{
		Target:  herd.RolloutTarget{NodeID: f.ten.RootNodeID},
		Payload: herd.RolloutPayload{ProfileID: f.profile.ID, Version: version},
		Waves:   []herd.RolloutWave{{Percent: 20}, {Percent: 50}, {Percent: 100}}, MaxInFlight: 7,
		Gates: herd.RolloutGates{AnswerTimeoutS: 30, SuccessMinPercent: 90, AbortFailurePercent: 5, AbortMinDevices: 3, BakeS: 2},
	}}
}

// TestRollout_Config: a config every device applies reaches every member,
// wave by wave, each told once; one that a fifth of the devices reject
// aborts within the first wave that reaches the threshold and gives every
// device that applied its previous version back.
func TestRollout_Config(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newRolloutFleet(t, db, 50)
		good := configRollout(f, 2)
		mustOK(t, f.rollouts.CreateRollout(f.super, good))
		if good.Members != 100 || good.State != herd.RolloutScheduled {
			t.Fatalf("created %+v", good)
		}
		got := f.drive(good, func(string, int64) string { return herd.ConfigApplied })
		if got.State != herd.RolloutSucceeded {
			t.Fatalf("state %s (%s), want succeeded", got.State, got.Reason)
		}
		for _, m := range f.members(good.ID) {
			if m.State != herd.MemberApplied || m.Attempts != 1 {
				t.Fatalf("member %+v, want applied once", m)
			}
		}
		for id, n := range f.desiredEvents(2) {
			if n != 1 {
				t.Fatalf("device %d was sent version 2 %d times", id, n)
			}
		}
		if n := len(f.desiredEvents(2)); n != 100 {
			t.Fatalf("%d devices sent version 2, want 100", n)
		}

		bad := configRollout(f, 3)
		mustOK(t, f.rollouts.CreateRollout(f.super, bad))
		got = f.drive(bad, func(key string, v int64) string {
			if v == 3 && rejects(key, 0.2) {
				return herd.ConfigRejected
			}
			return herd.ConfigApplied
		})
		if got.State != herd.RolloutRolledBack {
			t.Fatalf("state %s (%s), want rolled_back", got.State, got.Reason)
		}
		// The rollout aborts in the first wave whose members hold
		// abort_min_devices rejecters, and tells nobody past that wave.
		keys := map[int64]string{}
		for _, d := range f.devices {
			keys[d.ID] = d.Key
		}
		rejecters := make([]int64, len(bad.Waves))
		told := 0
		for _, m := range f.members(bad.ID) {
			if rejects(keys[m.DeviceID], 0.2) {
				rejecters[m.Wave]++
			}
			switch m.State {
			case herd.MemberApplied, herd.MemberReverting, herd.MemberTold, herd.MemberQueued:
				t.Fatalf("member %+v left %s after the rollback", m, m.State)
			case herd.MemberPending, herd.MemberCancelled:
			default:
				told++
			}
			if m.Attempts > 1 {
				t.Fatalf("member %+v told %d times", m, m.Attempts)
			}
		}
		want, sum := 0, int64(0)
		for w, n := range rejecters {
			if sum += n; sum >= bad.Gates.AbortMinDevices {
				want = w
				break
			}
		}
		bounds := herd.WaveBounds(bad.Waves, bad.Members)
		if got.Wave != want || int64(told) > bounds[want] {
			t.Fatalf("aborted in wave %d with %d told (%s), want wave %d and at most %d told", got.Wave, told, got.Reason, want, bounds[want])
		}
		for _, d := range f.devices {
			c, err := f.configs.FindDeviceConfig(f.super, d.ID)
			mustOK(t, err)
			if c.Desired.Version != 2 {
				t.Fatalf("device %s wants version %d after the rollback, want 2", d.Key, c.Desired.Version)
			}
		}
	})
}
