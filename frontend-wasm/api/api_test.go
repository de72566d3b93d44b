package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"nhooyr.io/websocket"
	"nhooyr.io/websocket/wsjson"

	"github.com/diad-project/diad/shared"
)

func TestErrorsCarryTheServerMessage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/runs/x" {
			w.WriteHeader(http.StatusNotFound)
			writeJSON(t, w, shared.APIError{Error: "no run x"})
			return
		}
		http.Error(w, "plain failure", http.StatusBadGateway)
	}))
	defer srv.Close()
	c := New(srv.URL, "")
	_, err := c.Run(context.Background(), "x")
	if !IsStatus(err, 404) || !strings.Contains(err.Error(), "no run x") {
		t.Fatalf("404: %v", err)
	}
	_, err = c.Runs(context.Background())
	if !IsStatus(err, 502) || !strings.Contains(err.Error(), "plain failure") {
		t.Fatalf("502: %v", err)
	}
}

func TestImagesPagesThroughEveryRow(t *testing.T) {
	const total = 2345
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		off, err := strconv.Atoi(r.URL.Query().Get("offset"))
		if err != nil {
			t.Errorf("offset: %v", err)
		}
		lim, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil {
			t.Errorf("limit: %v", err)
		}
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			return
		}
		page := shared.ImagePage{Total: total, Offset: off, Images: []shared.ImageInfo{}}
		for i := off; i < min(off+lim, total); i++ {
			page.Images = append(page.Images, shared.ImageInfo{ImageID: int64(i)})
		}
		writeJSON(t, w, page)
	}))
	defer srv.Close()
	imgs, err := New(srv.URL, "tok").Images(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != total || imgs[total-1].ImageID != total-1 || calls != 3 {
		t.Fatalf("%d images in %d calls", len(imgs), calls)
	}
}

func TestDenoiseStreamAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "tok" {
			w.WriteHeader(401)
			return
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		// The fake server's own failures fail the test (t.Error: this is
		// the handler's goroutine).
		if err := wsjson.Write(ctx, conn, shared.Hello{Type: shared.TypeHello, Protocol: shared.ProtocolVersion, Server: "test"}); err != nil {
			t.Error(err)
			return
		}
		var req shared.DenoiseRequest
		if err := wsjson.Read(ctx, conn, &req); err != nil {
			t.Error(err)
			return
		}
		f, err := shared.EncodeFrame(shared.Frame{Type: shared.TypeStep, Trajectory: "k", Total: req.Steps, Blobs: []shared.Blob{{Name: "image", Format: "png"}}}, [][]byte{{1, 2, 3}})
		if err != nil {
			t.Error(err)
			return
		}
		if err := conn.Write(ctx, websocket.MessageBinary, f); err != nil {
			t.Error(err)
			return
		}
		if err := wsjson.Write(ctx, conn, shared.ErrorMessage{Type: shared.TypeError, Message: "model exploded"}); err != nil {
			t.Error(err)
			return
		}
		if err := conn.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := New(srv.URL, "").DialDenoise(ctx); err == nil {
		t.Fatal("connected without the token")
	}
	d, err := New(srv.URL, "tok").DialDenoise(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Server != "test" {
		t.Fatalf("hello %q", d.Server)
	}
	if err := d.Request(ctx, shared.DenoiseRequest{Steps: 7}); err != nil {
		t.Fatal(err)
	}
	f, blobs, err := d.Next(ctx)
	if err != nil || f.Total != 7 || string(blobs[0]) != "\x01\x02\x03" {
		t.Fatalf("frame %+v %v %v", f, blobs, err)
	}
	_, _, err = d.Next(ctx)
	var se *StreamError
	if !errors.As(err, &se) || se.Message != "model exploded" {
		t.Fatalf("server error: %v", err)
	}
	if _, _, err = d.Next(ctx); err == nil || errors.As(err, &se) {
		t.Fatalf("closed stream: %v", err)
	}
}

func TestBackoffDoublesToItsCap(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b.Next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("backoff %v", got)
		}
	}
	b.Reset()
	if b.Next() != 100*time.Millisecond {
		t.Fatal("reset")
	}
}

func TestExportURLs(t *testing.T) {
	c := &Client{Base: "http://h:1", Token: "a b"}
	if u := c.ExportURL("r1", ExportParquet, nil); u != "http://h:1/api/v1/runs/r1/export?format=parquet&table=images&token=a+b" {
		t.Fatal(u)
	}
	if u := c.ExportURL("r1", ExportCSV, []int64{3, 12}); u != "http://h:1/api/v1/runs/r1/export?format=csv&image_ids=3%2C12&table=images&token=a+b" {
		t.Fatal(u)
	}
	if u := c.ExportURL("r1", ExportCSV, []int64{}); !strings.Contains(u, "image_ids=&") {
		t.Fatalf("an empty view exports all images: %s", u)
	}
	// A trajectory link carries the request and the token, and the server's
	// parser reads back what was asked.
	id := int64(4)
	x := shared.TrajectoryExport{Denoise: shared.DenoiseRequest{RunID: "r1", ImageID: &id, Steps: 20, Guidance: shared.GuidanceNone}, Format: shared.TrajectoryStrip, Panels: "image,map"}
	u := c.TrajectoryURL(x)
	if !strings.HasPrefix(u, "http://h:1/api/v1/trajectory?") || !strings.Contains(u, "token=a+b") {
		t.Fatal(u)
	}
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	back, err := shared.ParseTrajectoryExport(parsed.Query())
	if err != nil || back.Denoise.RunID != "r1" || *back.Denoise.ImageID != 4 || back.Denoise.Steps != 20 || back.Denoise.Guidance != shared.GuidanceNone || back.Format != shared.TrajectoryStrip || back.Panels != "image,map" {
		t.Fatalf("%s read back as %+v, %v", u, back, err)
	}
}

// Images named by a large bulk change are fetched in requests of bounded
// URL length, every id once.
func TestImagesByIDSplitsLongLists(t *testing.T) {
	seen := map[int64]int{}
	var longest int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		longest = max(longest, len(r.URL.RequestURI()))
		page := shared.ImagePage{Images: []shared.ImageInfo{}}
		for _, f := range strings.Split(r.URL.Query().Get("image_ids"), ",") {
			id, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				w.WriteHeader(400)
				return
			}
			seen[id]++
			page.Images = append(page.Images, shared.ImageInfo{ImageID: id})
		}
		page.Total = len(page.Images)
		writeJSON(t, w, page)
	}))
	defer srv.Close()
	ids := make([]int64, 10_000)
	for i := range ids {
		ids[i] = int64(100_000 + i)
	}
	got, err := New(srv.URL, "").ImagesByID(context.Background(), "r", ids)
	if err != nil || len(got) != len(ids) || len(seen) != len(ids) {
		t.Fatalf("%d images, %d distinct ids asked, %v", len(got), len(seen), err)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("image %d asked %d times", id, n)
		}
	}
	if longest > 8<<10 {
		t.Fatalf("a request of %d bytes", longest)
	}
}

// writeJSON answers v as JSON; a fake server that fails to answer fails the
// test.
func writeJSON(t *testing.T, w http.ResponseWriter, v any) {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		t.Error(err)
	}
}
