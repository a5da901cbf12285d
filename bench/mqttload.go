package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator of the ingest benchmark: a minimal MQTT 3.1.1 client
// that connects, publishes QoS 1 and reads PUBACKs, nothing else. On two
// cores a full client library (Paho, which `herd simulate` and the tests
// use) spends more CPU per message than the brokers it measures, and would
// measure itself; this one spends little, and the same for herd and for
// the baseline.

// loadDevice is one connection's identity and topic.
type loadDevice struct {
	id                int64 // 0 where the device is not herd's
	key, token, topic string
}

// loadStats are what a load run measured.
type loadStats struct {
	acked    int64
	elapsed  time.Duration
	lat      *latencies
	failures int64
}

// check refuses a run in which a device's connection failed or nothing
// was acknowledged: its rate would describe fewer devices than it says.
func (s loadStats) check() error {
	if s.failures > 0 {
		return fmt.Errorf("%d devices lost their connection during the run", s.failures)
	}
	if s.acked == 0 {
		return fmt.Errorf("no reading was acknowledged")
	}
	return nil
}

// latencies keeps every latency of a run, for exact quantiles.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// quantiles returns p50, p99 and the maximum.
func (l *latencies) quantiles() (p50, p99, pmax time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(l.d)
	return percentile(l.d, 0.50), percentile(l.d, 0.99), l.d[len(l.d)-1]
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// runLoad connects every device, then publishes for the duration: with
// rate ≤ 0 each device keeps window readings in flight, sending the next
// as soon as one is acknowledged (closed loop); otherwise each sends rate
// readings per second, window at a time at even intervals from a random
// start (open loop), whatever the answers.
//
// ready, when not nil, runs once every device is connected, before the
// first publish: what it measures leaves the connecting out.
func runLoad(ctx context.Context, addr string, devices []loadDevice, rate float64, window int, d time.Duration, ready func() error) (loadStats, error) {
	conns := make([]*loadConn, len(devices))
	var wg sync.WaitGroup
	errs := make(chan error, len(devices))
	gate := make(chan struct{}, 200)
	for i, dev := range devices {
		wg.Go(func() {
			gate <- struct{}{}
			defer func() { <-gate }()
			c, err := dialLoad(addr, dev)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", dev.key, err)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	if err := <-errs; err != nil {
		return loadStats{}, err
	}
	if ready != nil {
		if err := ready(); err != nil {
			return loadStats{}, err
		}
	}
	st := loadStats{lat: &latencies{}}
	var acked, failed atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			lat, n, err := c.publish(ctx, rate, max(window, 1), rand.New(rand.NewPCG(uint64(i), 3)))
			acked.Add(n)
			if err != nil && ctx.Err() == nil {
				failed.Add(1)
			}
			st.lat.add(lat)
		})
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	st.acked, st.failures = acked.Load(), failed.Load()
	return st, nil
}

// loadConn is one connected device.
type loadConn struct {
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	topic string
}

func dialLoad(addr string, dev loadDevice) (*loadConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	c := &loadConn{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn), topic: dev.topic}
	// CONNECT: protocol MQTT level 4, clean session, user name and
	// password, keepalive 300 s.
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 4, 0x02|0x80|0x40, 0x01, 0x2c)
	vh = appendString(vh, dev.key)
	vh = appendString(vh, dev.key)
	vh = appendString(vh, dev.token)
	c.w.WriteByte(0x10)
	c.w.Write(appendVarint(nil, len(vh)))
	c.w.Write(vh)
	if err := c.w.Flush(); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(c.r, ack[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connack: %w", err)
	}
	conn.SetReadDeadline(time.Time{})
	if ack[0] != 0x20 || ack[3] != 0 {
		conn.Close()
		return nil, fmt.Errorf("connect refused: % x", ack)
	}
	return c, nil
}

// publish sends readings until ctx ends and returns the latencies of the
// acknowledged ones. In the closed loop up to window readings are in
// flight; those a round of acknowledgements makes room for go out in one
// write, as a client library's buffered writer sends them.
func (c *loadConn) publish(ctx context.Context, rate float64, window int, rng *rand.Rand) ([]time.Duration, int64, error) {
	var lat []time.Duration
	var n int64
	sent := map[uint16]time.Time{}
	var mu sync.Mutex
	room := make(chan struct{}, window) // a token per reading in flight
	readErr := make(chan error, 1)
	go func() {
		// PUBACKs: 0x40, 0x02, packet id.
		var p [4]byte
		for {
			if _, err := io.ReadFull(c.r, p[:]); err != nil {
				readErr <- err
				return
			}
			if p[0] != 0x40 {
				readErr <- fmt.Errorf("unexpected packet % x", p)
				return
			}
			id := binary.BigEndian.Uint16(p[2:])
			now := time.Now()
			mu.Lock()
			if t, ok := sent[id]; ok {
				lat = append(lat, now.Sub(t))
				delete(sent, id)
				n++
			}
			mu.Unlock()
			select {
			case <-room:
			default:
			}
		}
	}()
	// The open loop sends the closed loop's bursts at a steady pace, each
	// at most a quarter of a second's worth of readings: burst readings in
	// one write every burst/rate seconds, whatever the answers.
	// The reader goroutine goes on appending until the socket closes.
	result := func(err error) ([]time.Duration, int64, error) {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), lat...), n, err
	}
	var tick <-chan time.Time
	burst := 1
	if rate > 0 {
		burst = min(window, max(1, int(math.Round(rate/4))))
		period := time.Duration(float64(burst) * float64(time.Second) / rate)
		select {
		case <-time.After(time.Duration(rng.Int64N(int64(period)) + 1)):
		case <-ctx.Done():
		}
		t := time.NewTicker(period)
		defer t.Stop()
		tick = t.C
	}
	var id uint16
	temp := 22 + 6*rng.NormFloat64()
	buf := make([]byte, 0, 256)
	for ctx.Err() == nil {
		k := burst // readings in this write
		if rate > 0 {
			select {
			case <-tick:
			case <-ctx.Done():
				continue
			case err := <-readErr:
				return result(err)
			}
		} else {
			select {
			case room <- struct{}{}:
			case <-ctx.Done():
				continue
			case err := <-readErr:
				return result(err)
			}
			k = 1
			for k < window {
				select {
				case room <- struct{}{}:
					k++
					continue
				default:
				}
				break
			}
		}
		now := time.Now()
		mu.Lock()
		for range k {
			id++
			if id == 0 {
				id = 1
			}
			sent[id] = now
			temp += rng.NormFloat64() * 0.2
			payload := fmt.Appendf(buf[:0], `{"temperature":%.2f,"humidity":%.1f,"battery":%.1f,"rssi":%d}`, temp, 40+10*rng.Float64(), 50+50*rng.Float64(), -50-rng.IntN(40))
			rem := 2 + len(c.topic) + 2 + len(payload)
			c.w.WriteByte(0x32)
			c.w.Write(appendVarint(nil, rem))
			c.w.Write(appendString(nil, c.topic))
			c.w.Write([]byte{byte(id >> 8), byte(id)})
			c.w.Write(payload)
		}
		mu.Unlock()
		if err := c.w.Flush(); err != nil {
			return result(err)
		}
	}
	return result(nil)
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// subscriber counts the messages of a topic filter at QoS 1, acknowledging
// each, as the baseline broker's one consumer.
type subscriber struct {
	conn     net.Conn
	received atomic.Int64
	done     chan struct{}
}

func subscribe(addr, clientID, filter string) (*subscriber, error) {
	return subscribeAs(addr, loadDevice{key: clientID, token: "-"}, filter, nil)
}

// subscribeAs is subscribe as a device with its credentials; onPublish,
// when set, sees each message's payload as it arrives.
func subscribeAs(addr string, dev loadDevice, filter string, onPublish func(payload []byte)) (*subscriber, error) {
	c, err := dialLoad(addr, dev)
	if err != nil {
		return nil, err
	}
	// SUBSCRIBE packet id 1, the filter at QoS 1.
	var p []byte
	p = append(p, 0, 1)
	p = appendString(p, filter)
	p = append(p, 1)
	c.w.WriteByte(0x82)
	c.w.Write(appendVarint(nil, len(p)))
	c.w.Write(p)
	if err := c.w.Flush(); err != nil {
		c.conn.Close()
		return nil, err
	}
	s := &subscriber{conn: c.conn, done: make(chan struct{})}
	subacked := make(chan error, 1)
	go func() {
		defer close(s.done)
		first := true
		for {
			h, err := c.r.ReadByte()
			if err != nil {
				if first {
					subacked <- err
				}
				return
			}
			n, mult := 0, 1
			for {
				b, err := c.r.ReadByte()
				if err != nil {
					return
				}
				n += int(b&0x7f) * mult
				mult *= 128
				if b&0x80 == 0 {
					break
				}
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(c.r, body); err != nil {
				return
			}
			switch h >> 4 {
			case 9: // SUBACK
				if first {
					first = false
					if len(body) < 3 || body[2] > 1 {
						subacked <- errors.New("subscription refused")
						return
					}
					subacked <- nil
				}
			case 3: // PUBLISH
				s.received.Add(1)
				tl := int(binary.BigEndian.Uint16(body))
				if onPublish != nil {
					start := 2 + tl
					if (h>>1)&3 > 0 {
						start += 2
					}
					onPublish(body[start:])
				}
				if (h>>1)&3 == 1 {
					id := body[2+tl : 4+tl]
					c.w.Write([]byte{0x40, 2, id[0], id[1]})
					if c.r.Buffered() == 0 {
						c.w.Flush()
					}
				}
			}
		}
	}()
	if err := <-subacked; err != nil {
		c.conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *subscriber) close() {
	s.conn.Close()
	<-s.done
}
