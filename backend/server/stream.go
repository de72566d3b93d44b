package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/backend/strictjson"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// denoiser is the engine that serves denoising streams.
type denoiser struct {
	path string
	e    *evaluate.Engine
	// Trajectories hold a read lock; replacing the model takes the write
	// lock, so that the engine is freed only when none runs on it. A
	// request that got this denoiser before the replacement and takes the
	// read lock after it finds freed set, and must not touch e.
	mu    sync.RWMutex
	freed bool
}

// errModelReplaced is returned to a request whose model was replaced (a
// newer one loaded) between its arrival and its computation.
var errModelReplaced = errors.New("the model was replaced while this request waited; send it again")

// free waits for the computations running on the engine, then frees it.
func (d *denoiser) free() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.freed = true
	d.e.Free()
}

// sampler merges a request's sampler changes with the model's (and a run
// image's) sampler, on an engine that is not freed meanwhile.
func (d *denoiser) sampler(run *shared.SamplerConfig, o shared.SamplerOverride) (shared.SamplerConfig, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.freed {
		return shared.SamplerConfig{}, errModelReplaced
	}
	return d.e.Sampler(run, o)
}

func (s *Server) loadedModel() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denoiser == nil {
		return ""
	}
	return s.denoiser.path
}

// useModel loads a checkpoint for denoising streams, replacing the current one.
func (s *Server) useModel(path string) error {
	cfg := evaluate.DefaultConfig()
	cfg.Checkpoint, cfg.Features, cfg.Device = path, s.cfg.Features, s.cfg.Device
	e, err := evaluate.Load(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.denoiser
	s.denoiser = &denoiser{path: path, e: e}
	s.mu.Unlock()
	if old != nil {
		old.free()
	}
	return nil
}

func (s *Server) currentDenoiser() (*denoiser, error) {
	// One loader at a time: fifty clients arriving together must not load
	// fifty copies of the model.
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	s.mu.Lock()
	d := s.denoiser
	s.mu.Unlock()
	if d != nil {
		return d, nil
	}
	files := s.modelFiles()
	if len(files) == 0 {
		return nil, errors.New("no model yet: train one (POST /api/v1/jobs kind train) or start with --checkpoint")
	}
	if err := s.useModel(files[len(files)-1]); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denoiser, nil
}

func grayPNG(data []byte, w, h int) ([]byte, error) {
	img := image.NewGray(image.Rect(0, 0, w, h))
	copy(img.Pix, data)
	return encodePNG(img)
}

func encodePNG(img image.Image) ([]byte, error) {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// trajectoryKey identifies identical requests, which share one computation.
func trajectoryKey(model, source string, sampler shared.SamplerConfig, seed uint64, products []string, guidance string) string {
	return fmt.Sprintf("%s|%s|%s|%d|%d|%g|%v|%d|%v|%s", model, source, sampler.KindOrDefault(), sampler.StartT, sampler.Steps, sampler.Eta, sampler.Timesteps, seed, products, guidance)
}

// denoiseSource is the image a denoise request names and, for the image of
// a run made by the loaded model, how that run reconstructed it.
type denoiseSource struct {
	path string
	// runSampler is the run's sampler and seed the image's noise seed in
	// the run, when the run recorded them and the loaded model made it.
	runSampler *shared.SamplerConfig
	seed       uint64
	fromRun    bool
	// category is the run image's (its threshold may be its own); "" for
	// an upload.
	category string
}

// resolveSource finds the image a denoise request names.
func (s *Server) resolveSource(r shared.DenoiseRequest, model string) (denoiseSource, error) {
	switch {
	case r.UploadID != "" && r.RunID == "":
		p, err := s.uploadPath(r.UploadID)
		// An upload is scored like `diad predict --seed S` scores one image.
		return denoiseSource{path: p, seed: results.ImageSeed(r.Seed, 0)}, err
	case r.RunID != "" && r.ImageID != nil && r.UploadID == "":
		if !results.ValidRunID(r.RunID) {
			return denoiseSource{}, fmt.Errorf("%w: run %q", os.ErrNotExist, r.RunID)
		}
		rows, err := s.store.Images(r.RunID)
		if err != nil {
			return denoiseSource{}, fmt.Errorf("%w: run %s", os.ErrNotExist, r.RunID)
		}
		meta, err := s.store.Meta(r.RunID)
		if err != nil {
			return denoiseSource{}, fmt.Errorf("%w: run %s", os.ErrNotExist, r.RunID)
		}
		for _, row := range rows {
			if row.ImageID != *r.ImageID {
				continue
			}
			path, err := confine(append([]string{filepath.Join(s.cfg.DataDir, "uploads")}, s.cfg.DataRoots...), row.Path)
			if err != nil {
				return denoiseSource{}, err
			}
			src := denoiseSource{path: path, seed: results.ImageSeed(r.Seed, 0), fromRun: true, category: row.Category}
			if meta.Sampler != nil && sameFile(meta.Checkpoint, model) {
				// Replay the run: its sampler under the request's
				// changes, and the image's own noise unless the
				// request asks for another seed.
				src.runSampler = meta.Sampler
				if r.Seed == 0 {
					src.seed = results.ImageSeed(meta.Seed, row.ImageID)
				}
			}
			return src, nil
		}
		return denoiseSource{}, fmt.Errorf("%w: run %s has no image %d", os.ErrNotExist, r.RunID, *r.ImageID)
	}
	return denoiseSource{}, errors.New("give either upload_id, or run_id and image_id")
}

// sameFile reports whether two paths name the same file.
func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

type trajectoryEntry struct {
	hub      *stream.Hub
	finished time.Time // zero while computing
	bytes    int64     // what the hub keeps, once finished
}

// trajectory returns the hub of the (shared) computation for r: a running
// one, a recently finished one (replayed from its history), or a new one.
func (s *Server) trajectory(d *denoiser, src denoiseSource, sampler shared.SamplerConfig, r shared.DenoiseRequest, guidance string) *stream.Hub {
	products := r.Products
	if len(products) == 0 {
		products = shared.DefaultProducts
	}
	key := trajectoryKey(d.path, src.path, sampler, src.seed, products, guidance)
	s.trajMu.Lock()
	defer s.trajMu.Unlock()
	s.forgetTrajectories(time.Now())
	if e, ok := s.trajectories[key]; ok {
		return e.hub
	}
	h := stream.NewHub(s.cfg.StreamQueue, maxTrajectorySteps+1, s.stats)
	entry := &trajectoryEntry{hub: h}
	s.trajectories[key] = entry
	s.trajCount.Add(1)
	go func() {
		err := s.compute(d, evaluate.TrajectorySpec{Path: src.path, Sampler: sampler, Seed: src.seed, Unguided: guidance == shared.GuidanceNone}, src.category, products, key, h)
		s.trajMu.Lock()
		defer s.trajMu.Unlock()
		if err != nil {
			b, merr := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: err.Error()})
			if merr != nil {
				b = []byte(`{"type":"error","message":"internal error"}`)
			}
			h.Publish(stream.Message{Data: b, Final: true})
			delete(s.trajectories, key) // errors are not cached
			return
		}
		entry.finished = time.Now()
		entry.bytes = h.Bytes()
	}()
	return h
}

// forgetTrajectories drops the finished trajectories older than
// TrajectoryTTL, then the oldest finished ones while together they keep more
// than TrajectoryCacheBytes. Running ones stay: their clients are reading.
// The caller holds trajMu.
func (s *Server) forgetTrajectories(now time.Time) {
	var total int64
	var finished []string
	for k, e := range s.trajectories {
		if e.finished.IsZero() {
			continue
		}
		if now.Sub(e.finished) > s.cfg.TrajectoryTTL {
			delete(s.trajectories, k)
			continue
		}
		total += e.bytes
		finished = append(finished, k)
	}
	if s.cfg.TrajectoryCacheBytes <= 0 || total <= s.cfg.TrajectoryCacheBytes {
		return
	}
	slices.SortFunc(finished, func(a, b string) int { return s.trajectories[a].finished.Compare(s.trajectories[b].finished) })
	for _, k := range finished {
		if total <= s.cfg.TrajectoryCacheBytes {
			return
		}
		total -= s.trajectories[k].bytes
		delete(s.trajectories, k)
	}
}

// scheduleStride is the spacing in t of the noise schedule sent to the
// explorer (101 values for 1000 timesteps).
const scheduleStride = 10

// knownProduct reports whether a denoise request may ask for p.
func knownProduct(p string) bool {
	switch p {
	case shared.ProductLatent, shared.ProductX0Latent, shared.ProductImage, shared.ProductMap, shared.ProductRawLatents:
		return true
	}
	return false
}

func wants(products []string, p string) bool {
	for _, x := range products {
		if x == p {
			return true
		}
	}
	return false
}

// compute runs one trajectory on the engine and publishes a frame per step
// and a final frame. The engine hands over plain values, one step at a time
// and outside the compute lane; the encoding (PNG, float16, quantised maps)
// happens here. The final map is the one `diad predict` computes for the
// same image, sampler and seed.
func (s *Server) compute(d *denoiser, spec evaluate.TrajectorySpec, category string, products []string, key string, h *stream.Hub) error {
	sampler := spec.Sampler
	guidance := shared.GuidanceSG
	if spec.Unguided {
		guidance = shared.GuidanceNone
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.freed {
		return errModelReplaced
	}
	size := d.e.ImageSize()
	signal := d.e.SignalCurve(scheduleStride)
	want := evaluate.Products{
		Latents: wants(products, shared.ProductLatent) || wants(products, shared.ProductX0Latent) || wants(products, shared.ProductRawLatents),
		Image:   wants(products, shared.ProductImage),
		Map:     wants(products, shared.ProductMap),
	}
	emit := func(f evaluate.StepFrame) error {
		frame := shared.Frame{Type: shared.TypeStep, Trajectory: key, Guidance: guidance, Step: f.Index, Total: f.Total, T: f.T, StartT: sampler.NoiseLevel()}
		if f.Index == 0 {
			frame.Signal, frame.ScheduleStride = signal, scheduleStride
		}
		var payloads [][]byte
		var encErr error
		add := func(b shared.Blob, data []byte) {
			frame.Blobs = append(frame.Blobs, b)
			payloads = append(payloads, data)
		}
		addPNG := func(b shared.Blob, img image.Image) {
			data, err := encodePNG(img)
			encErr = errors.Join(encErr, err)
			add(b, data)
		}
		lc, lh, lw := f.LatentShape[0], f.LatentShape[1], f.LatentShape[2]
		if wants(products, shared.ProductLatent) {
			addPNG(shared.Blob{Name: shared.BlobLatent, Format: "png", Width: lw, Height: lh}, f.LatentPicture())
		}
		if wants(products, shared.ProductX0Latent) {
			addPNG(shared.Blob{Name: shared.BlobX0Latent, Format: "png", Width: lw, Height: lh}, f.X0Picture())
		}
		if wants(products, shared.ProductRawLatents) {
			add(shared.Blob{Name: shared.BlobRawZt, Format: "f16", Shape: []int{lc, lh, lw}}, shared.EncodeF16(f.Zt))
			add(shared.Blob{Name: shared.BlobRawX0, Format: "f16", Shape: []int{lc, lh, lw}}, shared.EncodeF16(f.X0))
		}
		if want.Image {
			addPNG(shared.Blob{Name: shared.BlobImage, Format: "png", Width: size, Height: size}, f.ImagePicture(size))
		}
		if want.Map {
			q := results.Quantize("", 0, size, size, f.Map)
			frame.Score = f.Score
			add(shared.Blob{Name: shared.BlobMap, Format: "u8", Width: size, Height: size, Offset: q.Offset, Scale: q.Scale}, q.Data)
		}
		if encErr != nil {
			return encErr
		}
		msg, err := shared.EncodeFrame(frame, payloads)
		if err != nil {
			return err
		}
		h.Publish(stream.Message{Binary: true, Data: msg})
		return nil
	}
	out, err := d.e.Trajectory(context.Background(), spec, want, emit)
	if err != nil {
		return err
	}
	th, hasTh, err := s.thresholdFor(d.path, s.servedIdentity(d.e))
	if err != nil {
		return err
	}
	n := len(sampler.Timesteps)
	if n == 0 {
		n = sampler.Steps
	}
	final := shared.Frame{Type: shared.TypeFinal, Trajectory: key, Guidance: guidance, Step: n, Total: n, Score: out.Score, StartT: sampler.NoiseLevel(),
		Signal: signal, ScheduleStride: scheduleStride}
	if hasTh {
		final.Threshold = th.For(category)
		final.Anomalous = shared.Predicted(out.Score, final.Threshold)
	}
	q := results.Quantize("", 0, size, size, out.Map)
	final.Blobs = []shared.Blob{
		{Name: shared.BlobMap, Format: "u8", Width: size, Height: size, Offset: q.Offset, Scale: q.Scale},
		{Name: shared.BlobReconstruction, Format: "png", Width: size, Height: size},
	}
	recon, err := encodePNG(datasets.Denormalize(out.Recon, size))
	if err != nil {
		return err
	}
	msg, err := shared.EncodeFrame(final, [][]byte{q.Data, recon})
	if err != nil {
		return err
	}
	h.Publish(stream.Message{Binary: true, Data: msg, Final: true})
	return nil
}

// maxTrajectorySteps bounds a denoise request's steps (and so the frames a
// trajectory keeps for late subscribers).
const maxTrajectorySteps = 1000

// acceptWS upgrades with Origin checking (same origin plus the allow-list).
func (s *Server) acceptWS(c echo.Context) (*websocket.Conn, error) {
	conn, err := websocket.Accept(c.Response(), c.Request(), &websocket.AcceptOptions{OriginPatterns: s.cfg.AllowedOrigins})
	if err != nil {
		return nil, err // Accept has written the 403
	}
	return conn, nil
}

// pump writes a subscriber's messages to the connection until the stream
// ends or the client goes away; a client that does not read for writeTimeout
// is disconnected (its frames were being dropped meanwhile).
func (s *Server) pump(ctx context.Context, conn *websocket.Conn, sub *stream.Subscriber) error {
	defer sub.Close()
	for {
		m, ok := sub.Next(ctx.Done())
		if !ok {
			return ctx.Err()
		}
		typ := websocket.MessageText
		if m.Binary {
			typ = websocket.MessageBinary
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := conn.Write(wctx, typ, m.Data)
		cancel()
		if err != nil {
			return err
		}
		if m.Final {
			return nil
		}
	}
}

func (s *Server) wsJob(c echo.Context) error {
	sub, err := s.runner.Subscribe(c.Param("id"))
	if err != nil {
		return apiError(c, http.StatusNotFound, "no job %q", c.Param("id"))
	}
	s.serveSubscription(c, sub, "job finished")
	return nil
}

// serveSubscription writes a hub's messages to a websocket (reads are
// ignored) until the stream ends - closed normally with reason - or the
// client or the server goes away.
func (s *Server) serveSubscription(c echo.Context, sub *stream.Subscriber, reason string) {
	conn, err := s.acceptWS(c)
	if err != nil {
		sub.Close()
		return
	}
	defer conn.CloseNow()
	ctx, stop := s.wsContext(c, conn)
	defer stop()
	ctx = conn.CloseRead(ctx)
	if err := s.pump(ctx, conn, sub); err != nil {
		s.log.Debug("websocket: client gone", "path", c.Path(), "err", err)
		return
	}
	conn.Close(websocket.StatusNormalClosure, reason)
}

// publishChange tells every open page (/ws/changes) what changed.
func (s *Server) publishChange(c shared.Change) {
	c.Type = shared.TypeChange
	b, err := json.Marshal(c)
	if err != nil {
		s.log.Warn("change not published", "kind", c.Kind, "err", err)
		return
	}
	s.changes.Publish(stream.Message{Data: b})
}

// wsChanges streams shared.Change messages until the client or the server
// goes away; the page refetches what changed instead of polling.
func (s *Server) wsChanges(c echo.Context) error {
	s.serveSubscription(c, s.changes.Subscribe(), "")
	return nil
}

// wsContext is a websocket handler's context: the request's, ended also
// when the server shuts down - after a proper close frame (StatusGoingAway),
// so that clients know to reconnect (a cancelled read would only drop the
// connection).
func (s *Server) wsContext(c echo.Context, conn *websocket.Conn) (context.Context, func()) {
	ctx, cancel := context.WithCancel(c.Request().Context())
	stop := context.AfterFunc(s.wsCtx, func() {
		conn.Close(websocket.StatusGoingAway, "server shutting down")
		cancel()
	})
	return ctx, func() { stop(); cancel() }
}

func (s *Server) wsDenoise(c echo.Context) error {
	conn, err := s.acceptWS(c)
	if err != nil {
		return nil
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 10)
	ctx, stop := s.wsContext(c, conn)
	defer stop()
	hello, err := json.Marshal(shared.Hello{Type: shared.TypeHello, Protocol: shared.ProtocolVersion, Server: "diad " + s.status.Version.Diad})
	if err != nil {
		return fmt.Errorf("encode hello: %w", err)
	}
	if err := conn.Write(ctx, websocket.MessageText, hello); err != nil {
		return nil
	}
	fail := func(msg string) error {
		b, err := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: msg})
		if err == nil {
			err = conn.Write(ctx, websocket.MessageText, b)
		}
		if err == nil {
			err = conn.Close(websocket.StatusPolicyViolation, "bad request")
		}
		if err != nil {
			s.log.Debug("denoise: error message not sent", "err", err) // the client went away
		}
		return nil // the websocket is answered; nothing more for echo to write
	}
	// refuse answers a well-formed request that cannot run (no model yet, a
	// missing image, a sampler the model cannot use) and keeps the
	// connection: the client's next request may well work.
	refuse := func(msg string) error {
		b, err := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: msg})
		if err == nil {
			err = conn.Write(ctx, websocket.MessageText, b)
		}
		return err
	}
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return nil
		}
		if typ != websocket.MessageText {
			return fail("send JSON text messages")
		}
		var req shared.DenoiseRequest
		if err := strictjson.Unmarshal(data, &req); err != nil {
			return fail("malformed denoise request: " + err.Error())
		}
		if req.Type != shared.TypeDenoise {
			return fail("malformed denoise request: want {\"type\":\"denoise\", ...}")
		}
		for _, p := range req.Products {
			if !knownProduct(p) {
				return fail(fmt.Sprintf("field \"products\": unknown product %q (want %v or %s)", p, shared.DefaultProducts, shared.ProductRawLatents))
			}
		}
		if req.Steps < 0 || req.Steps > maxTrajectorySteps || req.StartT < 0 {
			return fail(fmt.Sprintf("steps must be 0..%d and start_t >= 0", maxTrajectorySteps))
		}
		guidance, err := req.GuidanceOrDefault()
		if err != nil {
			return fail(err.Error())
		}
		d, err := s.currentDenoiser()
		if err != nil {
			if err := refuse(err.Error()); err != nil {
				return nil // the client went away
			}
			continue
		}
		src, err := s.resolveSource(req, d.path)
		if err == nil {
			// One merge rule and one validation, against the model's own
			// schedule; a run image starts from the run's sampler.
			var sampler shared.SamplerConfig
			if sampler, err = d.sampler(src.runSampler, req.SamplerOverride()); err == nil {
				sub := s.trajectory(d, src, sampler, req, guidance).Subscribe()
				if err := s.pump(ctx, conn, sub); err != nil {
					return nil
				}
				continue // ready for another request on the same connection
			}
		}
		if err := refuse(err.Error()); err != nil {
			return nil
		}
	}
}
