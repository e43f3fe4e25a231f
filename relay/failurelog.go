package relay

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// failureLog logs failed produce requests without flooding: while Kafka is
// away every flush fails, up to hundreds a second, and when one leader is
// away flushes fail and succeed by turns. The first failure is logged, then
// at most one line per failureLogEvery with the count since; the failures
// are over, and said so, at the first success failureLogEvery after the
// last failure.
type failureLog struct {
	failing atomic.Bool // read on every flush; the rest only while failing
	mu      sync.Mutex
	logged  time.Time // the last line
	since   int       // failed requests not logged since
	records int       // records they held
	first   time.Time // of this run of failures
	last    time.Time // the latest failure
	total   int       // failed requests in this run
	now     func() time.Time
}

const failureLogEvery = 10 * time.Second

func (l *failureLog) report(log *slog.Logger, err error, records int) {
	if err == nil && !l.failing.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	if err == nil {
		if now.Sub(l.last) < failureLogEvery {
			return // failing and succeeding by turns: not over yet
		}
		log.Info("produce works again", "failed_requests", l.total, "for", l.last.Sub(l.first).Round(time.Millisecond))
		l.failing.Store(false)
		l.logged, l.since, l.records = time.Time{}, 0, 0
		return
	}
	if !l.failing.Load() {
		l.failing.Store(true)
		l.first, l.total = now, 0
	}
	l.last = now
	l.total++
	l.since++
	l.records += records
	if now.Sub(l.logged) < failureLogEvery {
		return
	}
	log.Warn("produce failed; the webhooks holding these events are not answered 200", "err", err, "requests", l.since, "records", l.records, "failing_for", now.Sub(l.first).Round(time.Millisecond))
	l.logged, l.since, l.records = now, 0, 0
}
