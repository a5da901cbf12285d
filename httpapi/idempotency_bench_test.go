package httpapi_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// BenchmarkIdempotency_WriterHold measures, on SQLite, what a keyed device
// batch costs the writes that queue behind it (as the MQTT ingest does for
// the one writer): a keyed request holds the writer from its claim to its
// answer, decoding and rendering included, where an unkeyed one holds it
// for the service's transaction. It reports the slowest small write that
// ran beside each batch (max-wait-ms) and the batch's own time.
//
//	go test ./httpapi/ -run '^$' -bench Idempotency_WriterHold -benchtime 5x
func BenchmarkIdempotency_WriterHold(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			db := testutil.MustOpenDB(b, sqldb.SQLite)
			e := mustOpenServer(b, db, func(s *httpapi.Server) { s.Idempotency = sqldb.NewIdempotencyService(db) })
			f := e.mustCreateFleet()
			nodes := sqldb.NewNodeService(db)
			var worst time.Duration
			b.ResetTimer()
			for round := range b.N {
				b.StopTimer()
				var body strings.Builder
				body.WriteString(`{"devices":[`)
				for i := range 5000 {
					if i > 0 {
						body.WriteByte(',')
					}
					fmt.Fprintf(&body, `{"node_id":"%d","key":"hold-%d-%d","name":"device number %d"}`, f.n1.ID, round, i, i)
				}
				body.WriteString(`]}`)
				key := ""
				if keyed {
					key = fmt.Sprintf("hold-%d", round)
				}
				stop := make(chan struct{})
				started := make(chan struct{})
				var wg sync.WaitGroup
				var once sync.Once
				wg.Go(func() {
					// Closed however the writer ends, so a failed first
					// write cannot leave the benchmark waiting.
					defer once.Do(func() { close(started) })
					for i := 0; ; i++ {
						t0 := time.Now()
						if err := nodes.CreateNode(testutil.SuperContext(), &herd.Node{ParentID: f.n2.ID, Kind: "room", Name: fmt.Sprintf("r-%d-%d", round, i)}); err != nil {
							b.Error(err)
							return
						}
						worst = max(worst, time.Since(t0))
						if i == 0 {
							once.Do(func() { close(started) })
						}
						select {
						case <-stop:
							return
						default:
						}
					}
				})
				<-started
				b.StartTimer()
				e.doKey("POST", "/v1/devices/batch", adminSecret, key, body.String()).wantStatus(b, 201)
				b.StopTimer()
				close(stop)
				wg.Wait()
				b.StartTimer()
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "max-wait-ms")
		})
	}
}
