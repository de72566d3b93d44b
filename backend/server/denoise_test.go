package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/badmodel"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// denoise runs one trajectory over a websocket and returns its frames.
func denoise(t testing.TB, ctx context.Context, base string, req shared.DenoiseRequest, read bool) ([]shared.Frame, [][][]byte, error) {
	url := strings.Replace(base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, nil, err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(32 << 20)
	_, hello, err := conn.Read(ctx)
	if err != nil || !bytes.Contains(hello, []byte(`"hello"`)) {
		return nil, nil, fmt.Errorf("hello: %s %v", hello, err)
	}
	req.Type = shared.TypeDenoise
	b, err := json.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, nil, err
	}
	if !read {
		<-ctx.Done()
		return nil, nil, nil
	}
	var frames []shared.Frame
	var blobs [][][]byte
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			return frames, blobs, err
		}
		if typ == websocket.MessageText {
			return frames, blobs, fmt.Errorf("server said %s", msg)
		}
		f, bl, err := shared.DecodeFrame(msg)
		if err != nil {
			return frames, blobs, err
		}
		frames = append(frames, f)
		blobs = append(blobs, bl)
		if f.Type == shared.TypeFinal {
			return frames, blobs, nil
		}
	}
}

// denoiseDatasetImage uploads an image of the test dataset (a path under
// it) and streams its whole trajectory for req.
func denoiseDatasetImage(t *testing.T, e *env, rel string, req shared.DenoiseRequest) (shared.Upload, []shared.Frame, [][][]byte) {
	t.Helper()
	img := filetest.Read(t, filepath.Join(e.dataset, rel))
	u := upload(t, e, img)
	req.UploadID = u.ID
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	frames, blobs, err := denoise(t, ctx, e.base, req, true)
	if err != nil {
		t.Fatal(err)
	}
	return u, frames, blobs
}

func TestDenoiseTrajectoryMatchesPredict(t *testing.T) {
	e := startEnv(t, nil)
	u, frames, blobs := denoiseDatasetImage(t, e, filepath.Join("disc", "test", "missing", "000.png"), shared.DenoiseRequest{Seed: 3})
	if len(frames) != 11 || frames[10].Type != shared.TypeFinal {
		t.Fatalf("%d frames", len(frames))
	}
	for i, f := range frames[:10] {
		if f.Type != shared.TypeStep || f.Step != i || f.Total != 10 || len(f.Blobs) != 4 {
			t.Fatalf("frame %d: %+v", i, f)
		}
		for k, b := range f.Blobs {
			if b.Format == "png" {
				im, err := png.Decode(bytes.NewReader(blobs[i][k]))
				if err != nil || im.Bounds().Dx() != b.Width {
					t.Fatalf("frame %d blob %s does not decode: %v", i, b.Name, err)
				}
			}
		}
	}
	// The tiny preset samples from t = 400: 361, 321, ..., 1; every frame
	// says the input was noised to 400.
	if frames[0].T != 361 || frames[9].T != 1 {
		t.Fatalf("timesteps %d..%d", frames[0].T, frames[9].T)
	}
	for i, f := range frames {
		if f.StartT != 400 {
			t.Fatalf("frame %d reports start level %d, want 400", i, f.StartT)
		}
	}
	// The first step and the final frame carry the noise schedule:
	// sqrt(abar_t) every 10 timesteps, falling from ~1 at t = 0.
	for _, i := range []int{0, 10} {
		sig := frames[i].Signal
		if frames[i].ScheduleStride != 10 || len(sig) != 101 || !(sig[0] > 0.99) || !(sig[100] < sig[50] && sig[50] < sig[0]) {
			t.Fatalf("frame %d schedule: stride %d, %d values %v...", i, frames[i].ScheduleStride, len(sig), sig[:min(3, len(sig))])
		}
	}
	if len(frames[1].Signal) != 0 {
		t.Fatalf("step 2 repeats the schedule (%d values)", len(frames[1].Signal))
	}
	final, finalBlobs := frames[10], blobs[10]
	// The CLI's predict on the same image and seed computes the same map.
	cfg := evaluate.PredictConfig{Config: evaluate.DefaultConfig(), Store: true}
	cfg.Checkpoint, cfg.Features, cfg.Device, cfg.Seed, cfg.Threshold = e.model, e.srv.cfg.Features, "cpu", 3, "0.5"
	cfg.ResultsDir = filepath.Join(t.TempDir(), "results")
	uploadPath, err := e.srv.uploadPath(u.ID)
	if err != nil {
		t.Fatal(err)
	}
	preds, runID, err := evaluate.Predict(context.Background(), cfg, []string{uploadPath})
	if err != nil {
		t.Fatal(err)
	}
	maps, err := results.Store{Root: cfg.ResultsDir}.Maps(runID)
	if err != nil {
		t.Fatal(err)
	}
	m := final.Blobs[0]
	if m.Name != "map" || m.Offset != maps[0].Offset || m.Scale != maps[0].Scale || !bytes.Equal(finalBlobs[0], maps[0].Data) {
		t.Fatalf("final map differs from predict's (offset %v/%v scale %v/%v)", m.Offset, maps[0].Offset, m.Scale, maps[0].Scale)
	}
	if final.Score != preds[0].Score {
		t.Fatalf("final score %v, predict %v", final.Score, preds[0].Score)
	}
}

// The websocket changes the model's sampler by the one merge rule: steps
// alone keep the model's start level, the sampler kind is honoured, and a
// start level outside the model's schedule is an error frame.
func TestDenoiseRequestChangesTheSamplerFieldByField(t *testing.T) {
	e := startEnv(t, nil)
	src := filepath.Join("disc", "test", "missing", "000.png")
	up, frames, _ := denoiseDatasetImage(t, e, src, shared.DenoiseRequest{Seed: 3, Steps: 5, Sampler: "dpm++2m", Products: []string{shared.ProductLatent}})
	var ts []int
	for _, f := range frames {
		if f.Type == shared.TypeStep {
			ts = append(ts, f.T)
		}
	}
	// The tiny preset starts at 400: five steps are 321, 241, 161, 81, 1.
	if want := []int{321, 241, 161, 81, 1}; !slices.Equal(ts, want) {
		t.Fatalf("timesteps %v, want %v", ts, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for want, req := range map[string]shared.DenoiseRequest{
		"outside [0, 1000)": {UploadID: up.ID, StartT: 1000},
		"unknown sampler":   {UploadID: up.ID, Sampler: "euler"},
		"takes none":        {UploadID: up.ID, Sampler: "ddpm", Eta: ptrTo(0.5)},
	} {
		if _, _, err := denoise(t, ctx, e.base, req, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error with %q", req, err, want)
		}
	}
	// A request that cannot run is answered and the connection stays: the
	// next request on it streams (a protocol violation still closes it).
	url := strings.Replace(e.base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(32 << 20)
	if _, _, err := conn.Read(ctx); err != nil { // hello
		t.Fatal(err)
	}
	for _, req := range []shared.DenoiseRequest{{UploadID: "u-gone"}, {UploadID: up.ID, Steps: 2, Products: []string{shared.ProductLatent}}} {
		req.Type = shared.TypeDenoise
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	typ, msg, err := conn.Read(ctx)
	if err != nil || typ != websocket.MessageText || !bytes.Contains(msg, []byte(`"error"`)) {
		t.Fatalf("first answer: %s %v", msg, err)
	}
	for steps := 0; ; {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("after a refused request the connection ended: %v", err)
		}
		f, _, err := shared.DecodeFrame(msg)
		if typ != websocket.MessageBinary || err != nil {
			t.Fatalf("frame: %v %s", err, msg)
		}
		if f.Type == shared.TypeFinal {
			if steps != 2 {
				t.Fatalf("%d step frames, want 2", steps)
			}
			break
		}
		steps++
	}
	e.alive(t)
}

// A libtorch failure (a checkpoint that passes every check but cannot be
// built) fails the websocket request, the model load and the job with
// libtorch's message, and the server serves the next request.
func TestLibtorchFailuresFailTheRequestNotTheServer(t *testing.T) {
	e := startEnv(t, nil)
	giant := filepath.Join(e.dataDir, "models", "zz-giant", "model.safetensors")
	if err := os.MkdirAll(filepath.Dir(giant), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := badmodel.Giant(giant); err != nil {
		t.Fatal(err)
	}
	// A corrupt file among the models is listed with its error, not hidden.
	broken := filepath.Join(e.dataDir, "models", "broken", "model.safetensors")
	if err := os.MkdirAll(filepath.Dir(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	filetest.Write(t, broken, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json"))
	_, body := e.do(t, "GET", "/api/v1/models", nil)
	var models []shared.Model
	decode(t, body, &models)
	listed := false
	for _, m := range models {
		if m.Path == broken {
			listed = m.Error != "" && m.Preset == ""
		}
	}
	if !listed {
		t.Fatalf("the corrupt model is not listed with an error: %s", body)
	}
	img := filetest.Read(t, filepath.Join(e.dataset, "disc", "test", "missing", "000.png"))
	up := upload(t, e, img)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No model is loaded yet: the websocket loads the newest, the giant one.
	if _, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{UploadID: up.ID}, true); err == nil || !strings.Contains(err.Error(), badmodel.AllocationError) {
		t.Fatalf("denoise with the giant model: %v", err)
	}
	e.alive(t)
	var r *http.Response
	r, body = e.do(t, "POST", "/api/v1/models/load", map[string]string{"path": giant})
	if r.StatusCode != http.StatusUnprocessableEntity || !bytes.Contains(body, []byte(badmodel.AllocationError)) {
		t.Fatalf("load: %d %s", r.StatusCode, body)
	}
	r, body = e.do(t, "POST", "/api/v1/jobs", shared.JobRequest{Kind: shared.JobPredict, Config: map[string]any{"checkpoint": giant, "threshold": "0.5", "scorer": "pixel", "uploads": []string{up.ID}}})
	var job shared.Job
	if r.StatusCode != http.StatusAccepted || json.Unmarshal(body, &job) != nil {
		t.Fatalf("submit: %d %s", r.StatusCode, body)
	}
	deadline := time.Now().Add(time.Minute)
	for job.State != shared.JobFailed && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		_, body = e.do(t, "GET", "/api/v1/jobs/"+job.ID, nil)
		decode(t, body, &job)
		if job.State == shared.JobSucceeded {
			t.Fatal("the giant model's job succeeded")
		}
	}
	if job.State != shared.JobFailed || !strings.Contains(job.Error, badmodel.AllocationError) || strings.Contains(job.Error, "goroutine") {
		t.Fatalf("job %s: %q", job.State, job.Error)
	}
	// The good model still serves a trajectory.
	r, body = e.do(t, "POST", "/api/v1/models/load", map[string]string{"path": e.model})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("load the good model: %d %s", r.StatusCode, body)
	}
	frames, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{UploadID: up.ID, Products: []string{shared.ProductLatent}}, true)
	if err != nil || len(frames) == 0 || frames[len(frames)-1].Type != shared.TypeFinal {
		t.Fatalf("denoise after the failures: %d frames, %v", len(frames), err)
	}
}

// rawDenoise sends one raw text message on the denoise websocket and returns
// the server's first text answer.
func rawDenoise(t *testing.T, ctx context.Context, base, msg string) string {
	t.Helper()
	url := strings.Replace(base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil { // hello
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("no answer to %s: %v", msg, err)
		}
		if typ == websocket.MessageText {
			return string(b)
		}
	}
}
