package sqldb_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/herd-iot/herd/sqldb"
)

// TestMigration0018: the readings stored before readings was partitioned
// are all there after it, readable through readings: the old table, up to
// the migration's tomorrow, as the legacy partition, a reading after that
// in the default; the key still refuses a repeat, and the partition
// manager then moves the default's reading into its day's partition.
func TestMigration0018(t *testing.T) {
	t.Parallel()
	dsn, raw := storeAt(t, sqldb.Postgres, "0017_reading_rollups.sql")
	now := time.Now().UTC()
	ahead := now.Add(48 * time.Hour)
	stamps := []time.Time{time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), now.Add(-time.Hour), now, ahead}
	want := map[retKey]bool{}
	for i, ts := range stamps {
		for dev := int64(1); dev <= 3; dev++ {
			if _, err := raw.Exec(`INSERT INTO readings (device_id, ts, tenant_id, received_at, temperature, extra) VALUES ($1, $2, 1, $2, $3, '{"k":1}')`, dev, ts.UnixMilli(), float64(i)); err != nil {
				t.Fatal(err)
			}
			want[retKey{dev, ts.UnixMilli()}] = true
		}
	}
	db := sqldb.NewDB(dsn)
	if err := db.Open(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	if held := retHeld(t, db); !maps.Equal(held, want) {
		t.Fatalf("readings after the migration: %v, want %v", held, want)
	}
	var temp float64
	var extra string
	if err := db.SQL().QueryRow(`SELECT temperature, extra FROM readings WHERE device_id = 2 AND ts = $1`, now.UnixMilli()).Scan(&temp, &extra); err != nil || temp != 2 || extra != `{"k":1}` {
		t.Fatalf("a migrated reading: %v %q %v", temp, extra, err)
	}
	for ts, part := range map[time.Time]string{stamps[0]: "readings_legacy", now: "readings_legacy", ahead: "readings_default"} {
		if got := retPartitionOf(t, db, 1, ts.UnixMilli()); got != part {
			t.Errorf("reading at %s in %s, want %s", ts, got, part)
		}
	}
	res, err := db.SQL().Exec(`INSERT INTO readings (device_id, ts, tenant_id, received_at) VALUES (1, $1, 1, 0) ON CONFLICT (device_id, ts) DO NOTHING`, now.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 0 {
		t.Fatal("a repeat of a migrated reading was stored again")
	}
	if err := db.EnsurePartitions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := retPartitionOf(t, db, 1, ahead.UnixMilli()); got != retDayName(ahead) {
		t.Errorf("reading two days ahead in %s once its day's partition exists, want %s", got, retDayName(ahead))
	}
	if held := retHeld(t, db); !maps.Equal(held, want) {
		t.Fatalf("readings after the partitions were created: %v, want %v", held, want)
	}
}
