package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/frontend-wasm/web"
)

func TestServesTheBrowserClient(t *testing.T) {
	dir := t.TempDir()
	wasm := bytes.Repeat([]byte("\x00asm client "), 1000)
	filetest.Write(t, filepath.Join(dir, web.WasmFile), wasm)
	filetest.Write(t, filepath.Join(dir, web.ExecFile), []byte("// go loader"))
	e := startEnv(t, func(c *Config) { c.WebDir = dir })
	r, body := e.do(t, "GET", "/", nil)
	if r.StatusCode != 200 || !bytes.Equal(body, web.Index) {
		t.Fatalf("index: %d %.80s", r.StatusCode, body)
	}
	req, err := http.NewRequest("GET", e.base+"/"+web.WasmFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent decompression
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := resp.Body.Close(); err != nil {
			t.Error(err)
		}
	}()
	if resp.Header.Get("Content-Type") != "application/wasm" || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("wasm headers %v", resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wasm) {
		t.Fatal("wasm body differs")
	}
	// Without a built client, / says how to build it and the files are 404.
	os.Remove(filepath.Join(dir, web.WasmFile))
	if r, body := e.do(t, "GET", "/", nil); r.StatusCode != 200 || !bytes.Contains(body, []byte("make web")) {
		t.Fatalf("status page: %d %s", r.StatusCode, body)
	}
	if r, body := e.do(t, "GET", "/"+web.WasmFile, nil); r.StatusCode != 404 || !bytes.Contains(body, []byte("not built")) {
		t.Fatalf("missing wasm: %d %s", r.StatusCode, body)
	}
}

// Shutdown must end websocket connections too (http.Server.Shutdown leaves
// hijacked connections alone), so clients notice and reconnect.
func TestShutdownClosesWebsockets(t *testing.T) {
	e := startEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(e.base, "http://", "ws://", 1)+"/api/v1/ws/denoise", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil { // hello
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	start := time.Now()
	_, _, err = conn.Read(ctx)
	if err == nil {
		t.Fatal("read a message from a server that shut down")
	}
	if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
		t.Fatalf("close status %v (%v), want going away", st, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("websocket closed %v after shutdown began", d)
	}
	<-stopped
}
