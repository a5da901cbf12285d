//go:build race

package sqldb_test

// raceEnabled reports whether the tests run under the race detector, which
// slows the transpiled SQLite engine about tenfold: the tests that load
// thousands of rows load fewer there.
const raceEnabled = true
