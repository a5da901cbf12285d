package sqldb

// SetExportChunk sets how many readings one statement of an export reads,
// so that tests cross chunk boundaries with a few readings; the returned
// func restores it.
func SetExportChunk(n int) (restore func()) {
	old := exportChunk
	exportChunk = n
	return func() { exportChunk = old }
}
