package sqldb_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/herd-iot/herd/idguard"
)

// TestMigrations_IDsAre64Bit: no migration of herd's declares an id or
// foreign-key column narrower than 64 bits.
func TestMigrations_IDsAre64Bit(t *testing.T) {
	for _, d := range []idguard.Dialect{idguard.Postgres, idguard.SQLite} {
		files, err := filepath.Glob(filepath.Join("migrations", string(d), "*.sql"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s migrations: %v", d, err)
		}
		for _, f := range files {
			buf, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, finding := range idguard.LintMigration(d, string(buf)) {
				t.Errorf("%s: %s", f, finding)
			}
		}
	}
}
