package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

var (
	soakRequests = flag.Int("soak", 0, "TestSoak's trajectories (make soak: 2000); 0 runs its short form")
	soakCurve    = flag.String("soak-curve", "", "TestSoak writes its RSS curve (CSV: requests, rss_mib, goroutines) here")
)

// soakShort is the short form's size, run by make test: long enough for
// the trajectory cache to fill and the allocators to settle.
const soakShort = 160

// soakClients read trajectories at once.
const soakClients = 4

// demoCheckpoint is the committed demo model (the tests run in the package
// folder).
const demoCheckpoint = "../model/demo/model.safetensors"

// TestSoak runs the real server on loopback with the committed demo model
// and sends it trajectories from several clients at once - some read whole,
// some cancelled midway, some read slowly - with uploads and label writes
// between them. Every answer is checked (complete, ordered, the same final
// frame for the same image and seed); at quiet points between rounds the
// trimmed RSS and the goroutines are read. The last reading must be within
// 5% of the one after the first tenth of the requests, with no more
// goroutines (two of slack). `make soak` runs 2,000 trajectories and prints the curve.
func TestSoak(t *testing.T) {
	n := *soakRequests
	if n == 0 {
		if testing.Short() {
			t.Skip("soak test")
		}
		n = soakShort
	}
	model := soakModel(t)
	var runID string
	e := startEnv(t, func(c *Config) {
		c.Checkpoint = model
		// A small cache: it fills within the first rounds, so that what
		// the soak watches afterwards is growth, not the cache filling.
		c.TrajectoryCacheBytes = 4 << 20
		runID = writeSoakRun(t, c, model)
	})
	s := newSoak(t, e, runID)
	rounds := 20
	perRound := max(n/rounds, soakClients)
	baseAt := max(n/10, perRound)
	type point struct {
		requests   int
		rss        float64
		goroutines int
	}
	var curve []point
	var base point
	start := time.Now()
	for done := 0; done < n; {
		k := min(perRound, n-done)
		s.round(done, k)
		if t.Failed() {
			return
		}
		done += k
		p := point{done, 0, s.quiet()}
		p.rss = torchrt.RSSMiB()
		curve = append(curve, p)
		if base.requests == 0 && done >= baseAt {
			base = p
		}
		t.Logf("soak: %4d trajectories, RSS %6.1f MiB, %3d goroutines, %5.0f s", p.requests, p.rss, p.goroutines, time.Since(start).Seconds())
	}
	last := curve[len(curve)-1]
	t.Logf("soak: %d trajectories (%d computed, %d cancelled, %d slow), %d uploads, %d label writes in %.0f s; RSS %.1f MiB after %d, %.1f MiB after %d (%+.1f%%); goroutines %d -> %d; dropped frames %d",
		n, e.srv.trajCount.Load(), s.cancelled.Load(), s.slow.Load(), s.uploaded.Load(), s.labels.Load(), time.Since(start).Seconds(),
		base.rss, base.requests, last.rss, last.requests, 100*(last.rss/base.rss-1), base.goroutines, last.goroutines, e.srv.stats.Dropped.Load())
	if *soakCurve != "" {
		var b strings.Builder
		b.WriteString("requests,rss_mib,goroutines\n")
		for _, p := range curve {
			fmt.Fprintf(&b, "%d,%.1f,%d\n", p.requests, p.rss, p.goroutines)
		}
		if err := os.WriteFile(*soakCurve, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if last.rss > 1.05*base.rss {
		t.Errorf("RSS grew from %.1f MiB after %d trajectories to %.1f MiB after %d (limit +5%%)", base.rss, base.requests, last.rss, last.requests)
	}
	// Two of slack for a connection the server is still closing; a leak
	// of one per request would show hundreds.
	if last.goroutines > base.goroutines+2 {
		t.Errorf("goroutines grew from %d after %d trajectories to %d after %d", base.goroutines, base.requests, last.goroutines, last.requests)
	}
	if s.complete.Load() == 0 || s.cancelled.Load() == 0 || s.slow.Load() == 0 {
		t.Errorf("the mix did not happen: %d complete, %d cancelled, %d slow", s.complete.Load(), s.cancelled.Load(), s.slow.Load())
	}
}

// soakModel is the committed demo model's absolute path. It also fixes the
// thread count at the machine's share, as the server would take it: a diad
// process starting beside this one would otherwise halve it mid-run, and
// libtorch's sums then change in their last digits, which the soak's
// equal-answer check would take for a bug.
func soakModel(t *testing.T) string {
	if _, err := os.Stat(demoCheckpoint); err != nil {
		t.Fatalf("the committed demo model: %v", err)
	}
	model, err := filepath.Abs(demoCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	torchrt.FitThreads()
	torchrt.SetThreads(torchrt.Threads())
	return model
}

// soakRunImages are the images of the run the soak denoises and labels.
var soakRunImages = []string{"woven/test/good/000.png", "woven/test/hole/000.png", "disc/test/good/000.png", "woven/test/good/001.png",
	"disc/test/good/001.png", "woven/test/hole/001.png", "disc/test/good/002.png", "woven/test/good/002.png"}

// writeSoakRun writes an evaluation run of the demo model over images of the
// test dataset into the server's results folder (as `diad test` would
// leave one) and returns its id.
func writeSoakRun(t *testing.T, c *Config, model string) string {
	t.Helper()
	root, _ := fixtures(t)
	meta := results.RunMeta{RunID: "20260102T000000Z-50a4ed", Kind: "test", Preset: "demo", Checkpoint: model,
		Threshold: results.ThresholdInfo{Value: 0.5, Policy: "max-f1"}, Scorer: "pixel"}
	meta.Dataset.Root = filepath.Join(root, "synth")
	var rows []results.ImageRow
	var maps []results.MapRow
	for i, rel := range soakRunImages {
		anomalous := int32(0)
		if strings.Contains(rel, "hole") {
			anomalous = 1
		}
		rows = append(rows, results.ImageRow{RunID: meta.RunID, ImageID: int64(i), Category: strings.Split(rel, "/")[0],
			Path: filepath.Join(meta.Dataset.Root, rel), Split: "test", GroundTruth: anomalous, Score: 0.3 + 0.4*float64(anomalous),
			Scorer: "pixel", Threshold: 0.5, Predicted: anomalous})
		maps = append(maps, results.Quantize(meta.RunID, int64(i), 4, 4, make([]float32, 16)))
	}
	if err := (results.Store{Root: filepath.Join(c.DataDir, "results")}).Write(results.Run{Meta: meta, Images: rows, Maps: maps}); err != nil {
		t.Fatal(err)
	}
	return meta.RunID
}

// soak is the clients' shared state.
type soak struct {
	t      *testing.T
	e      *env
	runID  string
	base   image.Image // an upload's picture, changed a little each time
	client *http.Client

	mu      sync.Mutex
	uploads []string          // upload ids to denoise
	finals  map[string][]byte // source and seed -> the final frame's hash
	frames  int               // frames of a whole trajectory (0 until the first)

	complete, cancelled, slow, uploaded, labels atomic.Int64
}

func newSoak(t *testing.T, e *env, runID string) *soak {
	img, err := png.Decode(bytes.NewReader(filetest.Read(t, filepath.Join(e.dataset, "woven", "test", "good", "000.png"))))
	if err != nil {
		t.Fatal(err)
	}
	s := &soak{t: t, e: e, runID: runID, base: img, finals: map[string][]byte{}, client: &http.Client{Timeout: time.Minute}}
	if err := s.upload(0); err != nil {
		t.Fatal(err)
	}
	return s
}

// round sends requests first..first+k-1 from soakClients clients at once.
func (s *soak) round(first, k int) {
	var next atomic.Int64
	next.Store(int64(first))
	var wg sync.WaitGroup
	for c := 0; c < soakClients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= first+k {
					return
				}
				if err := s.request(c, i); err != nil {
					s.t.Errorf("request %d (client %d): %v", i, c, err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
}

// request i: every 8th is preceded by an upload and every 4th by a label
// write; then one trajectory, of a run image or an upload, read whole,
// cancelled after two frames (every 5th) or read slowly (every 7th).
// Seeds repeat (i mod 24), so that some answers come from the cache and
// some are computed again after the cache forgot them: both must agree.
func (s *soak) request(client, i int) error {
	if i%8 == 5 {
		if err := s.upload(i); err != nil {
			return err
		}
	}
	if i%4 == 1 {
		if err := s.label(client, i); err != nil {
			return err
		}
	}
	req := shared.DenoiseRequest{Seed: uint64(1 + i%24)}
	var src string
	if i%2 == 0 {
		id := int64(i / 2 % len(soakRunImages))
		req.RunID, req.ImageID = s.runID, &id
		src = fmt.Sprintf("run image %d", id)
	} else {
		s.mu.Lock()
		req.UploadID = s.uploads[i/2%len(s.uploads)]
		s.mu.Unlock()
		src = "upload " + req.UploadID
	}
	stopAfter, delay := 0, time.Duration(0)
	switch {
	case i%5 == 3:
		stopAfter = 2
	case i%7 == 4:
		delay = 40 * time.Millisecond
	}
	frames, final, err := s.trajectory(req, stopAfter, delay)
	if err != nil {
		return fmt.Errorf("%s seed %d: %w", src, req.Seed, err)
	}
	if stopAfter > 0 {
		s.cancelled.Add(1)
		return nil
	}
	if delay > 0 {
		s.slow.Add(1)
	} else {
		s.complete.Add(1)
	}
	key := fmt.Sprintf("%s seed %d", src, req.Seed)
	s.mu.Lock()
	defer s.mu.Unlock()
	if delay == 0 { // a slow reader may miss frames; the final it always gets
		if s.frames == 0 {
			s.frames = frames
		}
		if frames != s.frames {
			return fmt.Errorf("%s: %d frames, another trajectory had %d", key, frames, s.frames)
		}
	}
	if prev, ok := s.finals[key]; ok && !bytes.Equal(prev, final) {
		return fmt.Errorf("%s: the final frame differs from an earlier answer to the same request", key)
	}
	s.finals[key] = final
	return nil
}

// trajectory streams one trajectory; it closes the connection after
// stopAfter frames when that is not 0, and waits delay before each read.
// It returns the frames read and a hash of the final frame's header values
// and blobs.
func (s *soak) trajectory(req shared.DenoiseRequest, stopAfter int, delay time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(s.e.base, "http://", "ws://", 1)+"/api/v1/ws/denoise", nil)
	if err != nil {
		return 0, nil, err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(32 << 20)
	if _, hello, err := conn.Read(ctx); err != nil || !bytes.Contains(hello, []byte(`"hello"`)) {
		return 0, nil, fmt.Errorf("hello: %s %v", hello, err)
	}
	req.Type = shared.TypeDenoise
	b, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		return 0, nil, err
	}
	lastStep := -1
	for n := 1; ; n++ {
		time.Sleep(delay)
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			return n - 1, nil, err
		}
		if typ == websocket.MessageText {
			return n - 1, nil, fmt.Errorf("server said %s", msg)
		}
		f, blobs, err := shared.DecodeFrame(msg)
		if err != nil {
			return n - 1, nil, err
		}
		if f.Step <= lastStep || f.Step > f.Total || len(blobs) == 0 || math.IsNaN(f.Score) || math.IsInf(f.Score, 0) {
			return n, nil, fmt.Errorf("frame %d: step %d of %d after step %d, %d blobs, score %v", n, f.Step, f.Total, lastStep, len(blobs), f.Score)
		}
		lastStep = f.Step
		if f.Type == shared.TypeFinal {
			if f.Step != f.Total {
				return n, nil, fmt.Errorf("final frame at step %d of %d", f.Step, f.Total)
			}
			h := sha256.New()
			fmt.Fprintf(h, "%d %d %v %v %v|", f.Total, f.T, f.Score, f.Threshold, f.Anomalous)
			for _, bl := range blobs {
				h.Write(bl)
			}
			return n, h.Sum(nil), conn.Close(websocket.StatusNormalClosure, "")
		}
		if stopAfter > 0 && n >= stopAfter {
			return n, nil, nil // the deferred CloseNow drops the connection midway
		}
	}
}

// upload sends the test image with a 6x6 patch coloured after i (a new
// image each time) and adds it to the images the clients denoise.
func (s *soak) upload(i int) error {
	img := image.NewRGBA(s.base.Bounds())
	draw.Draw(img, img.Bounds(), s.base, s.base.Bounds().Min, draw.Src)
	x, y := 4+(i*7)%48, 4+(i*13)%48
	draw.Draw(img, image.Rect(x, y, x+6, y+6), image.NewUniform(color.RGBA{uint8(i * 37), uint8(i * 91), uint8(i * 53), 255}), image.Point{}, draw.Src)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return err
	}
	var u shared.Upload
	if err := s.call("POST", "/api/v1/uploads", "image/png", buf.Bytes(), http.StatusCreated, &u); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if u.ID == "" || u.Width != img.Bounds().Dx() || u.Height != img.Bounds().Dy() {
		return fmt.Errorf("upload answered %+v for a %v image", u, img.Bounds().Size())
	}
	s.uploaded.Add(1)
	s.mu.Lock()
	s.uploads = append(s.uploads, u.ID)
	s.mu.Unlock()
	return nil
}

// label writes a verdict and a note on the client's own image of the run
// (no two clients write one image) and checks the answer carries them.
func (s *soak) label(client, i int) error {
	verdicts := []string{"normal", "anomalous", "unsure", ""}
	want := shared.LabelRequest{Verdict: verdicts[i%len(verdicts)], Note: fmt.Sprintf("soak request %d", i), User: fmt.Sprintf("client%d", client)}
	body, err := json.Marshal(want)
	if err != nil {
		return err
	}
	var got shared.ImageInfo
	path := fmt.Sprintf("/api/v1/runs/%s/images/%d/label", s.runID, client%len(soakRunImages))
	if err := s.call("PUT", path, "application/json", body, http.StatusOK, &got); err != nil {
		return fmt.Errorf("label: %w", err)
	}
	if got.AnalystLabel != want.Verdict || got.AnalystNote != want.Note {
		return fmt.Errorf("label answered %q %q, want %q %q", got.AnalystLabel, got.AnalystNote, want.Verdict, want.Note)
	}
	s.labels.Add(1)
	return nil
}

// call sends one request and decodes a JSON answer of the wanted status.
func (s *soak) call(method, path, contentType string, body []byte, status int, out any) error {
	req, err := http.NewRequest(method, s.e.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if resp.StatusCode != status {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

// quiet waits until no trajectory is being computed and the goroutine count
// has stopped falling (closed connections wind down), trims the allocators'
// free caches and returns the goroutine count.
func (s *soak) quiet() int {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && s.computing() {
		time.Sleep(20 * time.Millisecond)
	}
	g := runtime.NumGoroutine()
	for stable := 0; stable < 10 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if n := runtime.NumGoroutine(); n < g {
			g, stable = n, 0
		} else {
			stable++
		}
	}
	s.client.CloseIdleConnections() // their server goroutines end too
	torchrt.TrimHeap()
	return g
}

// computing reports whether a trajectory is still being computed (one a
// cancelled client left runs to its end).
func (s *soak) computing() bool {
	s.e.srv.trajMu.Lock()
	defer s.e.srv.trajMu.Unlock()
	for _, e := range s.e.srv.trajectories {
		if e.finished.IsZero() {
			return true
		}
	}
	return false
}

// TestTrajectoryCacheForgetsTheOldestBeyondItsBytes: finished trajectories
// past the TTL go, then the oldest finished ones until the rest fit the byte
// bound; running ones always stay.
func TestTrajectoryCacheForgetsTheOldestBeyondItsBytes(t *testing.T) {
	now := time.Now()
	s := &Server{cfg: Config{TrajectoryTTL: time.Minute, TrajectoryCacheBytes: 250}}
	s.trajectories = map[string]*trajectoryEntry{
		"expired": {finished: now.Add(-2 * time.Minute), bytes: 1},
		"oldest":  {finished: now.Add(-50 * time.Second), bytes: 100},
		"older":   {finished: now.Add(-40 * time.Second), bytes: 100},
		"newer":   {finished: now.Add(-30 * time.Second), bytes: 100},
		"running": {},
	}
	s.forgetTrajectories(now)
	var kept []string
	for k := range s.trajectories {
		kept = append(kept, k)
	}
	slices.Sort(kept)
	if fmt.Sprint(kept) != "[newer older running]" {
		t.Fatalf("kept %v, want [newer older running]", kept)
	}
	s.cfg.TrajectoryCacheBytes = 0 // no bound: only the TTL forgets
	s.trajectories["old"] = &trajectoryEntry{finished: now.Add(-59 * time.Second), bytes: 1 << 40}
	s.forgetTrajectories(now)
	if len(s.trajectories) != 4 {
		t.Fatalf("without a byte bound %d entries are left, want 4", len(s.trajectories))
	}
}
