package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

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
		err := s.compute(d, evaluate.TrajectorySpec{Path: src.path, Category: src.category, Sampler: sampler, Seed: src.seed, Unguided: guidance == shared.GuidanceNone}, products, key, h)
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
func (s *Server) compute(d *denoiser, spec evaluate.TrajectorySpec, products []string, key string, h *stream.Hub) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.freed {
		return errModelReplaced
	}
	enc := frameEncoder{key: key, guidance: shared.GuidanceSG, sampler: spec.Sampler, size: d.e.ImageSize(),
		signal: d.e.SignalCurve(scheduleStride), products: products}
	if spec.Unguided {
		enc.guidance = shared.GuidanceNone
	}
	want := evaluate.Products{
		Latents: wants(products, shared.ProductLatent) || wants(products, shared.ProductX0Latent) || wants(products, shared.ProductRawLatents),
		Image:   wants(products, shared.ProductImage),
		Map:     wants(products, shared.ProductMap),
	}
	out, err := d.e.Trajectory(context.Background(), spec, want, func(f evaluate.StepFrame) error {
		msg, err := enc.step(f)
		if err == nil {
			h.Publish(stream.Message{Binary: true, Data: msg})
		}
		return err
	})
	if err != nil {
		return err
	}
	th, hasTh, err := s.thresholdFor(d.path, s.servedIdentity(d.e))
	if err != nil {
		return err
	}
	var threshold *float64
	if hasTh {
		threshold = ptrTo(th.For(spec.Category))
	}
	msg, err := enc.final(out, threshold)
	if err != nil {
		return err
	}
	h.Publish(stream.Message{Binary: true, Data: msg, Final: true})
	return nil
}

// frameEncoder turns one trajectory's steps and result into websocket
// frames.
type frameEncoder struct {
	key, guidance string
	sampler       shared.SamplerConfig
	size          int
	signal        []float32
	products      []string
}

// step encodes a step's frame with the products asked for.
func (enc frameEncoder) step(f evaluate.StepFrame) ([]byte, error) {
	frame := shared.Frame{Type: shared.TypeStep, Trajectory: enc.key, Guidance: enc.guidance, Step: f.Index, Total: f.Total, T: f.T, StartT: enc.sampler.NoiseLevel()}
	if f.Index == 0 {
		frame.Signal, frame.ScheduleStride = enc.signal, scheduleStride
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
	if wants(enc.products, shared.ProductLatent) {
		addPNG(shared.Blob{Name: shared.BlobLatent, Format: "png", Width: lw, Height: lh}, f.LatentPicture())
	}
	if wants(enc.products, shared.ProductX0Latent) {
		addPNG(shared.Blob{Name: shared.BlobX0Latent, Format: "png", Width: lw, Height: lh}, f.X0Picture())
	}
	if wants(enc.products, shared.ProductRawLatents) {
		add(shared.Blob{Name: shared.BlobRawZt, Format: "f16", Shape: []int{lc, lh, lw}}, shared.EncodeF16(f.Zt))
		add(shared.Blob{Name: shared.BlobRawX0, Format: "f16", Shape: []int{lc, lh, lw}}, shared.EncodeF16(f.X0))
	}
	size := enc.size
	if wants(enc.products, shared.ProductImage) {
		addPNG(shared.Blob{Name: shared.BlobImage, Format: "png", Width: size, Height: size}, f.ImagePicture(size))
	}
	if wants(enc.products, shared.ProductMap) {
		q := results.Quantize("", 0, size, size, f.Map)
		frame.Score = f.Score
		add(shared.Blob{Name: shared.BlobMap, Format: "u8", Width: size, Height: size, Offset: q.Offset, Scale: q.Scale}, q.Data)
	}
	if encErr != nil {
		return nil, encErr
	}
	return shared.EncodeFrame(frame, payloads)
}

// final encodes the final frame: score, verdict against threshold (nil:
// the model has none), map and reconstruction.
func (enc frameEncoder) final(out evaluate.Outcome, threshold *float64) ([]byte, error) {
	n := len(enc.sampler.Timesteps)
	if n == 0 {
		n = enc.sampler.Steps
	}
	size := enc.size
	final := shared.Frame{Type: shared.TypeFinal, Trajectory: enc.key, Guidance: enc.guidance, Step: n, Total: n, Score: out.Score, StartT: enc.sampler.NoiseLevel(),
		Signal: enc.signal, ScheduleStride: scheduleStride}
	if threshold != nil {
		final.Threshold = *threshold
		final.Anomalous = shared.Predicted(out.Score, *threshold)
	}
	q := results.Quantize("", 0, size, size, out.Map)
	final.Blobs = []shared.Blob{
		{Name: shared.BlobMap, Format: "u8", Width: size, Height: size, Offset: q.Offset, Scale: q.Scale},
		{Name: shared.BlobReconstruction, Format: "png", Width: size, Height: size},
	}
	recon, err := encodePNG(datasets.Denormalize(out.Recon, size))
	if err != nil {
		return nil, err
	}
	return shared.EncodeFrame(final, [][]byte{q.Data, recon})
}

func ptrTo[T any](v T) *T { return &v }
