package sqldb_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestPartitions_AcrossMidnight drives the DB's clock across midnight UTC:
// the partitions of today and the three days after exist before the day
// starts, the last millisecond of a day and the first of the next land in
// their own days' partitions, and a reading of a day without a partition
// yet (the default's) moves into the day's partition when it is created.
// Two processes ensuring at once do not get in each other's way.
func TestPartitions_AcrossMidnight(t *testing.T) {
	db := testutil.MustOpenDB(t, sqldb.Postgres)
	ctx := context.Background()
	f := newFixture(db)
	tn := f.mustTenant(t, "acme")
	d := f.mustDevices(t, f.mustNode(t, tn.RootNodeID, "site").ID, 1)[0]

	late := time.Date(2030, 3, 14, 23, 59, 59, 999_000_000, time.UTC)
	db.Now = func() time.Time { return late }
	// A second process on the same store, ensuring at the same time.
	other := sqldb.NewDB(db.DSN)
	if err := other.Open(); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Now = db.Now
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*sqldb.DB{db, other} {
		wg.Go(func() { errs[i] = s.EnsurePartitions(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"readings_p20300314", "readings_p20300315", "readings_p20300316", "readings_p20300317"}
	names := retPartitions(t, db)
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Fatalf("partitions at %s: %v, want %v", late, names, want)
		}
	}
	if slices.Contains(names, "readings_p20300318") {
		t.Fatalf("partitions at %s: %v: more than three days ahead", late, names)
	}

	midnight := late.Add(time.Millisecond)
	beyond := time.Date(2030, 3, 19, 6, 0, 0, 0, time.UTC) // a device whose clock is ahead
	mustIngest(t, db,
		readingItem(d, late.UnixMilli(), herd.Reading{TS: late.UnixMilli(), Has: herd.ReadingBattery, Battery: 1}),
		readingItem(d, late.UnixMilli(), herd.Reading{TS: midnight.UnixMilli(), Has: herd.ReadingBattery, Battery: 2}),
		readingItem(d, late.UnixMilli(), herd.Reading{TS: beyond.UnixMilli(), Has: herd.ReadingBattery, Battery: 3}))
	for _, tt := range []struct {
		ts   time.Time
		want string
	}{{late, "readings_p20300314"}, {midnight, "readings_p20300315"}, {beyond, "readings_default"}} {
		if got := retPartitionOf(t, db, d.ID, tt.ts.UnixMilli()); got != tt.want {
			t.Errorf("reading at %s in %s, want %s", tt.ts.Format(time.RFC3339Nano), got, tt.want)
		}
	}

	// Past midnight the next day appears; two days later the day of the
	// reading ahead, which moves out of the default.
	db.Now = func() time.Time { return midnight }
	start := time.Now()
	if err := db.EnsurePartitions(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("one day's partition created in %v (the lock it holds, and the listing)", time.Since(start).Round(10*time.Microsecond))
	if names := retPartitions(t, db); !slices.Contains(names, "readings_p20300318") || slices.Contains(names, "readings_p20300319") {
		t.Fatalf("partitions at %s: %v", midnight, names)
	}
	db.Now = func() time.Time { return midnight.Add(36 * time.Hour) }
	if err := db.EnsurePartitions(ctx); err != nil {
		t.Fatal(err)
	}
	if got := retPartitionOf(t, db, d.ID, beyond.UnixMilli()); got != "readings_p20300319" {
		t.Fatalf("reading ahead in %s after its day's partition was created, want readings_p20300319", got)
	}
	held := retHeld(t, db)
	if len(held) != 3 || !held[retKey{d.ID, beyond.UnixMilli()}] {
		t.Fatalf("history after the move: %v", held)
	}
	// Sent again, it is still stored once: the key holds across partitions.
	mustIngest(t, db, readingItem(d, late.UnixMilli(), herd.Reading{TS: beyond.UnixMilli(), Has: herd.ReadingBattery, Battery: 4}))
	if n := historyCount(t, db, d.ID); n != 3 {
		t.Fatalf("%d readings after a repeat, want 3", n)
	}
}
