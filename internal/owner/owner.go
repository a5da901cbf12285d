// Package owner names a process's holder of store leases and claims (the
// relay's tenants, the dispatcher's deliveries, the controller's
// rollouts) when nothing better names it.
package owner

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
)

// Unique returns host/pid/random: unique per call, so two holders in one
// process never share leases.
func Unique() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
