package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"golang.org/x/time/rate"
)

// Default per-token request limits.
const (
	DefaultRateLimit = 1000 // requests a second
	DefaultRateBurst = 2000
)

// limiter holds a token bucket per key (an API token, or a sign-in's
// account and address), in this process.
type limiter[K comparable] struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	buckets map[K]*bucket
	swept   time.Time
}

// tokenKey names a token's bucket. Super-admin tokens and users' tokens
// are counted in two tables (admin_tokens and tokens), so their ids meet:
// keyed by id alone, a super-admin's requests would spend a user's bucket,
// and a user's the super-admin's.
type tokenKey struct {
	super bool
	id    int64
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

func newLimiter[K comparable](perSecond float64, burst int) *limiter[K] {
	return &limiter[K]{rate: rate.Limit(perSecond), burst: burst, buckets: map[K]*bucket{}}
}

// bucketOf returns key's bucket, made full when it has none; l.mu is held.
// Past 100,000 buckets, those idle long enough to be full again are
// forgotten, at most once a second (a scan of them all each request
// would be the cost an attacker with many keys imposes).
func (l *limiter[K]) bucketOf(key K, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= 100000 && now.Sub(l.swept) > time.Second {
			l.swept = now
			full := time.Duration(float64(l.burst) / float64(l.rate) * float64(time.Second))
			for k, v := range l.buckets {
				if now.Sub(v.used) > full {
					delete(l.buckets, k)
				}
			}
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[key] = b
	}
	b.used = now
	return b
}

// allow takes a request from the key's bucket, or says how long to wait.
func (l *limiter[K]) allow(key K, now time.Time) (bool, time.Duration) {
	r, wait := l.take(key, now)
	return r != nil, wait
}

// take reserves a token of the key's bucket and returns the reservation,
// to give back (CancelAt) if what it was for turns out not to count; or
// nil and how long to wait. Taking before the work, not after it, is what
// keeps concurrent requests from all passing a check that none has spent.
func (l *limiter[K]) take(key K, now time.Time) (*rate.Reservation, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketOf(key, now)
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d
	}
	return r, 0
}

// limited refuses a request over its token's rate with 429 and a
// Retry-After in whole seconds.
func (s *Server) limited(w http.ResponseWriter, r *http.Request, a *herd.Actor) bool {
	if s.limits == nil {
		return false
	}
	ok, wait := s.limits.allow(tokenKey{super: a.Super, id: a.TokenID}, time.Now())
	if ok {
		return false
	}
	s.metrics.limited.Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	Error(w, r, herd.Errorf(herd.ERATELIMITED, "this token sent more than %g requests a second (bursts of %d): retry after the Retry-After header's seconds", float64(s.limits.rate), s.limits.burst))
	return true
}
