package stream

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func collect(s *Subscriber) []string {
	var out []string
	for {
		m, ok := s.Next(nil)
		if !ok {
			return out
		}
		out = append(out, string(m.Data))
	}
}

func TestFastReadersGetEverythingSlowOnesTheFinal(t *testing.T) {
	stats := &Stats{}
	h := NewHub(4, 100, stats)
	fast := h.Subscribe()
	stalled := h.Subscribe() // never reads until the end
	var got []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); got = collect(fast) }()
	for i := 0; i < 10; i++ {
		h.Publish(Message{Data: []byte(fmt.Sprint(i))})
		time.Sleep(2 * time.Millisecond) // the fast reader keeps up
	}
	h.Publish(Message{Data: []byte("final"), Final: true})
	wg.Wait()
	if len(got) != 11 || got[10] != "final" {
		t.Fatalf("fast reader got %v", got)
	}
	slow := collect(stalled)
	if len(slow) != 5 || slow[4] != "final" || stalled.Dropped() != 6 {
		t.Fatalf("stalled reader got %v, dropped %d", slow, stalled.Dropped())
	}
	if stats.Dropped.Load() != 6 || stats.Subscribers.Load() != 0 {
		t.Fatalf("stats dropped %d subscribers %d", stats.Dropped.Load(), stats.Subscribers.Load())
	}
	// A late subscriber replays the history and the final message.
	late := collect(h.Subscribe())
	if len(late) != 11 {
		t.Fatalf("late subscriber got %v", late)
	}
}

func TestHistoryKeepsTheLatestMessages(t *testing.T) {
	h := NewHub(4, 3, nil)
	for i := 0; i < 10; i++ {
		h.Publish(Message{Data: []byte(fmt.Sprint(i))})
	}
	h.Publish(Message{Data: []byte("final"), Final: true})
	got := collect(h.Subscribe())
	if fmt.Sprint(got) != "[7 8 9 final]" || cap(h.history) > 4 {
		t.Fatalf("late subscriber got %v (history capacity %d)", got, cap(h.history))
	}
	// What the hub keeps: "7", "8", "9" and "final".
	if b := h.Bytes(); b != 8 {
		t.Fatalf("Bytes = %d, want 8", b)
	}
}

func TestPublishNeverBlocks(t *testing.T) {
	h := NewHub(1, 0, nil)
	for i := 0; i < 100; i++ {
		h.Subscribe()
	}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ {
			h.Publish(Message{Data: []byte("x")})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publishing to stalled subscribers blocked")
	}
}

func TestCloseAndStop(t *testing.T) {
	stats := &Stats{}
	h := NewHub(2, 0, stats)
	s := h.Subscribe()
	s.Close()
	if stats.Subscribers.Load() != 0 {
		t.Fatal("closed subscriber still counted")
	}
	stop := make(chan struct{})
	close(stop)
	if _, ok := h.Subscribe().Next(stop); ok {
		t.Fatal("Next ignored stop")
	}
}
