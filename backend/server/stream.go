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
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/sugarme/gotch/ts"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/backend/strictjson"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// denoiser is the model that serves denoising streams.
type denoiser struct {
	path string
	p    *evaluate.Pipeline
	mu   sync.Mutex // one trajectory at a time on the model
}

func (d *denoiser) free() { d.p.Free() }

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
	p, err := evaluate.Open(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.denoiser
	s.denoiser = &denoiser{path: path, p: p}
	s.mu.Unlock()
	if old != nil {
		old.mu.Lock() // wait for its trajectory to end
		old.free()
		old.mu.Unlock()
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

func grayPNG(data []byte, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	copy(img.Pix, data)
	return encodePNG(img)
}

func encodePNG(img image.Image) []byte {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	enc.Encode(&buf, img)
	return buf.Bytes()
}

// trajectoryKey identifies identical requests, which share one computation.
func trajectoryKey(model, source string, sampler diffusion.SamplerConfig, r shared.DenoiseRequest) string {
	return fmt.Sprintf("%s|%s|%s|%d|%d|%g|%v|%d|%v", model, source, sampler.KindOrDefault(), sampler.StartT, sampler.Steps, sampler.Eta, sampler.Timesteps, r.Seed, r.Products)
}

// samplerOverride is what a denoise request changes of the model's sampler
// (zero start_t and steps, an absent eta and an empty sampler keep it).
func samplerOverride(r shared.DenoiseRequest) diffusion.SamplerOverride {
	var o diffusion.SamplerOverride
	if r.Sampler != "" {
		o.Kind = &r.Sampler
	}
	if r.StartT > 0 {
		o.StartT = &r.StartT
	}
	if r.Steps > 0 {
		o.Steps = &r.Steps
	}
	o.Eta = r.Eta
	return o
}

// resolveSource finds the image a denoise request names.
func (s *Server) resolveSource(r shared.DenoiseRequest) (string, error) {
	switch {
	case r.UploadID != "" && r.RunID == "":
		return s.uploadPath(r.UploadID)
	case r.RunID != "" && r.ImageID != nil && r.UploadID == "":
		if !results.ValidRunID(r.RunID) {
			return "", fmt.Errorf("%w: run %q", os.ErrNotExist, r.RunID)
		}
		rows, err := s.store.Images(r.RunID)
		if err != nil {
			return "", fmt.Errorf("%w: run %s", os.ErrNotExist, r.RunID)
		}
		for _, row := range rows {
			if row.ImageID == *r.ImageID {
				return confine(append([]string{filepath.Join(s.cfg.DataDir, "uploads")}, s.cfg.DataRoots...), row.Path)
			}
		}
		return "", fmt.Errorf("%w: run %s has no image %d", os.ErrNotExist, r.RunID, *r.ImageID)
	}
	return "", errors.New("give either upload_id, or run_id and image_id")
}

// trajectoryTTL is how long a finished trajectory is replayed to identical
// requests instead of being computed again.
const trajectoryTTL = 5 * time.Minute

type trajectoryEntry struct {
	hub      *stream.Hub
	finished time.Time // zero while computing
}

// trajectory returns the hub of the (shared) computation for r: a running
// one, a recently finished one (replayed from its history), or a new one.
func (s *Server) trajectory(d *denoiser, source string, sampler diffusion.SamplerConfig, r shared.DenoiseRequest) *stream.Hub {
	key := trajectoryKey(d.path, source, sampler, r)
	s.trajMu.Lock()
	defer s.trajMu.Unlock()
	now := time.Now()
	for k, e := range s.trajectories {
		if !e.finished.IsZero() && now.Sub(e.finished) > trajectoryTTL {
			delete(s.trajectories, k)
		}
	}
	if e, ok := s.trajectories[key]; ok {
		return e.hub
	}
	h := stream.NewHub(s.cfg.StreamQueue, maxTrajectorySteps+1, s.stats)
	entry := &trajectoryEntry{hub: h}
	s.trajectories[key] = entry
	s.trajCount.Add(1)
	go func() {
		err := s.compute(d, source, sampler, r, key, h)
		s.trajMu.Lock()
		defer s.trajMu.Unlock()
		if err != nil {
			b, _ := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: err.Error()})
			h.Publish(stream.Message{Data: b, Final: true})
			delete(s.trajectories, key) // errors are not cached
			return
		}
		entry.finished = time.Now()
	}()
	return h
}

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

// compute runs one reconstruction and publishes a frame per step and a final
// frame. The final map is the one `diad predict` computes for the same image
// and seed: the same pipeline, batch of one, noise seeded with r.Seed.
func (s *Server) compute(d *denoiser, source string, sampler diffusion.SamplerConfig, r shared.DenoiseRequest, key string, h *stream.Hub) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer torchrt.Pin()()
	defer torchrt.Recover(&err, "denoise")
	p := d.p
	size := p.Model.Config.ImageSize
	it, err := datasets.LoadItem(datasets.Sample{Path: source}, size)
	if err != nil {
		return err
	}
	x := torchrt.ImageBatch(it.Image, 1, size, p.Model.Device())
	defer x.MustDrop()
	saved := p.Sampler
	p.Sampler = sampler
	defer func() { p.Sampler = saved }()
	products := r.Products
	if len(products) == 0 {
		products = shared.DefaultProducts
	}
	hook := func(st diffusion.Step) error {
		frame := shared.Frame{Type: shared.TypeStep, Trajectory: key, Step: st.Index, Total: st.Total, T: st.T}
		var payloads [][]byte
		add := func(b shared.Blob, data []byte) {
			frame.Blobs = append(frame.Blobs, b)
			payloads = append(payloads, data)
		}
		ls := st.Zt.MustSize()
		lw, lh := int(ls[3]), int(ls[2])
		if wants(products, shared.ProductLatent) {
			add(shared.Blob{Name: "latent", Format: "png", Width: lw, Height: lh}, encodePNG(visual.LatentPreview(torchrt.Float32s(st.Zt), lw, lh)))
		}
		if wants(products, shared.ProductX0Latent) {
			add(shared.Blob{Name: "x0_latent", Format: "png", Width: lw, Height: lh}, encodePNG(visual.LatentPreview(torchrt.Float32s(st.X0), lw, lh)))
		}
		if wants(products, shared.ProductRawLatents) {
			add(shared.Blob{Name: shared.BlobRawZt, Format: "f16", Shape: []int{4, lh, lw}}, shared.EncodeF16(torchrt.Float32s(st.Zt)))
			add(shared.Blob{Name: shared.BlobRawX0, Format: "f16", Shape: []int{4, lh, lw}}, shared.EncodeF16(torchrt.Float32s(st.X0)))
		}
		if wants(products, shared.ProductImage) || wants(products, shared.ProductMap) {
			var dec *ts.Tensor
			torchrt.NoGrad(func() { dec = p.Model.AE.Decode(st.X0) })
			if wants(products, shared.ProductImage) {
				add(shared.Blob{Name: "image", Format: "png", Width: size, Height: size}, encodePNG(datasets.Denormalize(torchrt.Float32s(dec), size)))
			}
			if wants(products, shared.ProductMap) {
				res, err := p.Scorer.Score(x, dec, false)
				if err != nil {
					dec.MustDrop()
					return err
				}
				q := results.Quantize("", 0, size, size, torchrt.Float32s(res.Map))
				frame.Score = res.Scores[0]
				res.Free()
				add(shared.Blob{Name: "map", Format: "u8", Width: size, Height: size, Offset: q.Offset, Scale: q.Scale}, q.Data)
			}
			dec.MustDrop()
		}
		msg, err := shared.EncodeFrame(frame, payloads)
		if err != nil {
			return err
		}
		h.Publish(stream.Message{Binary: true, Data: msg})
		return nil
	}
	out, err := p.ScoreBatch(context.Background(), x, r.Seed, false, hook)
	if err != nil {
		return err
	}
	s.mu.Lock()
	th, hasTh := s.threshold[d.path]
	s.mu.Unlock()
	n := len(sampler.Timesteps)
	if n == 0 {
		n = sampler.Steps
	}
	final := shared.Frame{Type: shared.TypeFinal, Trajectory: key, Step: n, Total: n, Score: out[0].Score}
	if hasTh {
		final.Threshold = th
		final.Anomalous = out[0].Score >= th
	}
	q := results.Quantize("", 0, size, size, out[0].Map)
	final.Blobs = []shared.Blob{
		{Name: "map", Format: "u8", Width: size, Height: size, Offset: q.Offset, Scale: q.Scale},
		{Name: "reconstruction", Format: "png", Width: size, Height: size},
	}
	msg, err := shared.EncodeFrame(final, [][]byte{q.Data, encodePNG(datasets.Denormalize(out[0].Recon, size))})
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
	conn, err := s.acceptWS(c)
	if err != nil {
		sub.Close()
		return nil
	}
	defer conn.CloseNow()
	ctx, stop := s.wsContext(c, conn)
	defer stop()
	ctx = conn.CloseRead(ctx)
	if err := s.pump(ctx, conn, sub); err == nil {
		conn.Close(websocket.StatusNormalClosure, "job finished")
	}
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
	hello, _ := json.Marshal(shared.Hello{Type: shared.TypeHello, Protocol: shared.ProtocolVersion, Server: "diad " + s.status.Version.Diad})
	if err := conn.Write(ctx, websocket.MessageText, hello); err != nil {
		return nil
	}
	fail := func(msg string) error {
		b, _ := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: msg})
		conn.Write(ctx, websocket.MessageText, b)
		conn.Close(websocket.StatusPolicyViolation, "bad request")
		return nil
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
		source, err := s.resolveSource(req)
		if err != nil {
			return fail(err.Error())
		}
		d, err := s.currentDenoiser()
		if err != nil {
			return fail(err.Error())
		}
		// One merge rule and one validation, against the model's own schedule.
		mc := d.p.Model.Config
		sampler := mc.Sampler.With(samplerOverride(req))
		if err := sampler.Validate(mc.Schedule.Timesteps); err != nil {
			return fail(err.Error())
		}
		sub := s.trajectory(d, source, sampler, req).Subscribe()
		if err := s.pump(ctx, conn, sub); err != nil {
			return nil
		}
		// Ready for another request on the same connection.
	}
}
