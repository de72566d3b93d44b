package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/torchrt"
)

// startServer runs a real server on a loopback port for the test's lifetime.
func startServer(t *testing.T) string {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))).Run(ctx, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start in 10s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return "http://" + addr
}

func TestStatusAndIndex(t *testing.T) {
	base := startServer(t)
	resp, err := http.Get(base + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Libtorch != torchrt.LibtorchVersion() || len(st.Devices) == 0 || st.Devices[0] != "cpu" {
		t.Fatalf("status %+v", st)
	}
	page, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if page.StatusCode != 200 || !strings.Contains(string(body), st.Libtorch) {
		t.Fatalf("index page (%d) lacks the libtorch version: %s", page.StatusCode, body)
	}
	if r, err := http.Get(base + "/nope"); err != nil || r.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path: %v %v", r, err)
	}
}

func TestListenErrorIsReported(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:-1"
	if err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))).Run(context.Background(), nil); err == nil {
		t.Fatal("bad address accepted")
	}
}
