package server

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/shared"
)

// modelFiles lists checkpoints produced by train jobs and the configured one.
func (s *Server) modelFiles() []string {
	// Read the folder rather than glob it: a data folder's name may hold
	// glob metacharacters ("[", "*").
	var files []string
	dir := filepath.Join(s.cfg.DataDir, "models")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Warn("models folder unreadable; listing only the configured models", "dir", dir, "err", err)
	}
	for _, e := range entries {
		f := filepath.Join(dir, e.Name(), "model.safetensors")
		if st, err := os.Stat(f); e.IsDir() && err == nil && st.Mode().IsRegular() {
			files = append(files, f)
		}
	}
	s.mu.Lock()
	demo := s.demoModel
	s.mu.Unlock()
	for _, first := range []string{demo, s.cfg.Checkpoint} {
		if first != "" {
			files = append([]string{first}, files...)
		}
	}
	return files
}

func (s *Server) listModels(c echo.Context) error {
	var out []shared.Model
	s.mu.Lock()
	loaded := ""
	if s.denoiser != nil {
		loaded = s.denoiser.path
	}
	s.mu.Unlock()
	for _, f := range s.modelFiles() {
		info, err := evaluate.DescribeCheckpoint(f)
		if err != nil {
			out = append(out, shared.Model{Name: filepath.Base(filepath.Dir(f)), Path: f, Error: err.Error()})
			continue
		}
		out = append(out, shared.Model{Name: filepath.Base(filepath.Dir(f)), Path: f, Preset: info.Preset, Parameters: info.Parameters, Loaded: f == loaded})
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) loadModel(c echo.Context) error {
	var req shared.LoadModelRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	ok := false
	for _, f := range s.modelFiles() {
		if f == req.Path {
			ok = true
		}
	}
	if !ok {
		return apiError(c, http.StatusNotFound, "no model %q (see GET /api/v1/models)", req.Path)
	}
	if err := s.useModel(req.Path); err != nil {
		return apiError(c, http.StatusUnprocessableEntity, "%v", err)
	}
	return c.JSON(http.StatusOK, s.currentStatus())
}

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
