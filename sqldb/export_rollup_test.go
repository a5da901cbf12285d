package sqldb

// SetRollupCompactBytes sets the size of stats past which a PostgreSQL
// rollup row is re-encoded, so a test compacts after a few batches.
func (db *DB) SetRollupCompactBytes(n int) { db.rollupCompactBytes = n }

// RollupSections counts the per-field sections of a rollup row's stats
// (several of one field on PostgreSQL until the row is compacted), all of
// them and the most of one field.
func RollupSections(b []byte) (all, oneField int, err error) {
	err = eachField(b, func(int, int64, float64, float64, float64, []byte) error {
		all++
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	oneField, err = maxFieldSections(b)
	return all, oneField, err
}

// RollupCompactSections is the most sections of a field a rollup row
// holds after a batch.
const RollupCompactSections = rollupCompactSections
