// Package stream fans the messages of one producer (a denoising trajectory, a
// job's events) out to any number of subscribers without letting a slow or
// stalled subscriber slow the producer or the others: each subscriber has a
// bounded queue; when it is full, new frames for that subscriber are dropped
// and counted, except the final message, which is always kept and delivered
// last. Subscribers that join late first receive the frames published so far
// (the history), so every reader sees the whole trajectory.
package stream

import (
	"sync"
	"sync/atomic"
)

// Message is one websocket message.
type Message struct {
	Binary bool
	Data   []byte
	// Final marks the last message of the stream.
	Final bool
}

// Stats are counters shared by all hubs (exported as server metrics).
type Stats struct {
	Subscribers atomic.Int64
	Dropped     atomic.Int64
}

// Hub is one stream.
type Hub struct {
	mu      sync.Mutex
	queue   int
	keep    int // history kept for late subscribers: the latest keep messages
	history []Message
	final   *Message
	subs    map[*Subscriber]struct{}
	stats   *Stats
}

// NewHub makes a hub whose subscribers queue at most queue messages. Late
// subscribers first get the latest keepHistory messages published before
// they joined (a trajectory keeps all of its at most 1000 steps; a job its
// recent events, so a long training run does not grow without bound).
func NewHub(queue, keepHistory int, stats *Stats) *Hub {
	if stats == nil {
		stats = &Stats{}
	}
	return &Hub{queue: max(queue, 1), keep: max(keepHistory, 0), subs: map[*Subscriber]struct{}{}, stats: stats}
}

// Subscriber is one reader of a hub.
type Subscriber struct {
	hub     *Hub
	ch      chan Message
	mu      sync.Mutex
	final   *Message
	finalCh chan struct{} // closed when final is set
	once    sync.Once
	dropped atomic.Int64
}

// Subscribe joins the hub. The caller must Close the subscriber.
func (h *Hub) Subscribe() *Subscriber {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Room for the replayed history on top of the live queue.
	s := &Subscriber{hub: h, ch: make(chan Message, h.queue+len(h.history)), finalCh: make(chan struct{})}
	for _, m := range h.history {
		s.offer(m)
	}
	if h.final != nil {
		s.setFinal(*h.final)
		return s
	}
	h.subs[s] = struct{}{}
	h.stats.Subscribers.Add(1)
	return s
}

// Publish sends m to every subscriber without blocking.
func (h *Hub) Publish(m Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.final != nil {
		return // the stream is over
	}
	if m.Final {
		h.final = &m
		for s := range h.subs {
			s.setFinal(m)
			delete(h.subs, s)
			h.stats.Subscribers.Add(-1)
		}
		return
	}
	if h.keep > 0 {
		if len(h.history) == h.keep {
			// Drop the oldest; copy down so the backing array stays bounded.
			n := copy(h.history, h.history[1:])
			h.history = h.history[:n]
		}
		h.history = append(h.history, m)
	}
	for s := range h.subs {
		if !s.offer(m) {
			h.stats.Dropped.Add(1)
		}
	}
}

// Bytes is the size of the messages the hub keeps for late subscribers
// (its history and final message): what replaying it costs in memory.
func (h *Hub) Bytes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for _, m := range h.history {
		n += int64(len(m.Data))
	}
	if h.final != nil {
		n += int64(len(h.final.Data))
	}
	return n
}

// Done reports whether the final message was published.
func (h *Hub) Done() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.final != nil
}

func (s *Subscriber) offer(m Message) bool {
	select {
	case s.ch <- m:
		return true
	default:
		s.dropped.Add(1)
		return false
	}
}

func (s *Subscriber) setFinal(m Message) {
	s.mu.Lock()
	s.final = &m
	s.mu.Unlock()
	s.once.Do(func() { close(s.finalCh) })
}

// Dropped is how many messages this subscriber missed.
func (s *Subscriber) Dropped() int64 { return s.dropped.Load() }

// Next returns the next message to deliver: queued messages first, then the
// final one; ok is false after the final message (or when stop is closed).
func (s *Subscriber) Next(stop <-chan struct{}) (m Message, ok bool) {
	select {
	case m := <-s.ch:
		return m, true
	default:
	}
	select {
	case m := <-s.ch:
		return m, true
	case <-s.finalCh:
		// Drain what was queued before the final message.
		select {
		case m := <-s.ch:
			return m, true
		default:
		}
		s.mu.Lock()
		f := s.final
		s.final = nil
		s.mu.Unlock()
		if f == nil {
			return Message{}, false
		}
		return *f, true
	case <-stop:
		return Message{}, false
	}
}

// Close leaves the hub.
func (s *Subscriber) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		h.stats.Subscribers.Add(-1)
	}
}
