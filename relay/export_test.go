package relay

import (
	"github.com/herd-iot/herd"
	"github.com/prometheus/client_golang/prometheus"
)

// SetAfterPublish sets the hook that runs between the bus's acknowledgement
// and the mark: where a crash leaves events published but still pending.
func SetAfterPublish(r *Relay, fn func(tenantID int64, evs []*herd.Event)) { r.afterPublish = fn }

// Published and Duplicates are r's own counters.
func Published(r *Relay) prometheus.Counter  { return r.metrics.published }
func Duplicates(r *Relay) prometheus.Counter { return r.metrics.duplicates }
