package sqldb

import "context"

// QueryGuarded runs a statement the way every statement of the store runs:
// in a transaction, through the parameter guard and QueryHook. It lets the
// black-box tests show that the guard refuses a statement with more than
// herd.MaxQueryParams parameters before it reaches the database.
func (db *DB) QueryGuarded(ctx context.Context, q string, args ...any) error {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	return rows.Close()
}

// SetSearchBatch makes the node search read n nodes at a time, so a test
// pages through many batches with a small tree.
func (s *ListService) SetSearchBatch(n int) { s.searchBatch = n }

// PageLabelsSQL starts the statement that reads a page's labels by the
// page's ids, which the no-id-lists guard allows for a page only.
const PageLabelsSQL = pageLabelsSQL
