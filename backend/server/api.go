package server

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/jobs"
	"github.com/diad-project/diad/backend/strictjson"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/frontend-wasm/web"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

//go:embed openapi.json
var openAPI []byte

func (s *Server) routes() {
	e := s.echo
	e.GET("/", s.handleIndex)
	clientFiles := e.Group("", middleware.GzipWithConfig(middleware.GzipConfig{Level: 1}))
	clientFiles.GET("/"+web.WasmFile, s.clientFile(web.WasmFile))
	clientFiles.GET("/"+web.ExecFile, s.clientFile(web.ExecFile))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/metrics", s.metrics.handler())
	g := e.Group("/api/v1")
	g.GET("/openapi.json", func(c echo.Context) error { return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPI) })
	g.GET("/status", func(c echo.Context) error { return c.JSON(http.StatusOK, s.currentStatus()) })
	g.GET("/datasets", s.listDatasets)
	g.POST("/datasets", s.registerDataset)
	g.POST("/uploads", s.upload)
	g.GET("/models", s.listModels)
	g.POST("/models/load", s.loadModel)
	g.GET("/jobs", func(c echo.Context) error { return c.JSON(http.StatusOK, s.runner.List()) })
	g.POST("/jobs", s.submitJob)
	g.GET("/jobs/:id", s.getJob)
	g.POST("/jobs/:id/cancel", s.cancelJob)
	g.GET("/runs", s.listRuns)
	g.GET("/runs/:run", s.getRun)
	g.GET("/runs/:run/images", s.queryImages)
	g.GET("/runs/:run/images/:image/source", s.imageSource)
	g.GET("/runs/:run/images/:image/map", s.imageMap)
	g.GET("/runs/:run/images/:image/mask", s.imageMask)
	g.PUT("/runs/:run/images/:image/label", s.setLabel)
	g.PUT("/runs/:run/labels", s.setLabels)
	g.GET("/runs/:run/labels/history", s.labelHistory)
	g.PUT("/runs/:run/threshold", s.setThreshold)
	g.GET("/runs/:run/metrics", s.runMetrics)
	g.GET("/runs/:run/files/:file", s.runFile)
	g.GET("/runs/:run/export", s.runExport)
	g.GET("/trajectory", s.trajectoryExport)
	g.GET("/ws/jobs/:id", s.wsJob)
	g.GET("/ws/denoise", s.wsDenoise)
	g.GET("/ws/changes", s.wsChanges)
}

// bind decodes a JSON body strictly (unknown fields are errors), within the
// body limit.
func (s *Server) bind(c echo.Context, v any) error { return s.bindLimit(c, v, s.cfg.MaxBodyBytes) }

// bindLimit is bind with a body limit of its own (bulk labels are larger
// than any other request).
func (s *Server) bindLimit(c echo.Context, v any, limit int64) error {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, limit)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", limit))
		}
		return echo.NewHTTPError(http.StatusBadRequest, "read body: "+err.Error())
	}
	// Strict: one JSON value, no key twice (in any letter case), only
	// known fields spelled exactly.
	if err := strictjson.Unmarshal(data, v); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "malformed JSON: "+err.Error())
	}
	return nil
}

// ---- datasets -------------------------------------------------------------

type datasetEntry struct {
	info shared.Dataset
	req  shared.RegisterDataset // as registered, with the resolved path
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func (s *Server) listDatasets(c echo.Context) error {
	s.mu.Lock()
	out := make([]shared.Dataset, 0, len(s.datasets))
	for _, d := range s.datasets {
		out = append(out, d.info)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return c.JSON(http.StatusOK, out)
}

// RegisterDataset indexes a folder within the data roots under a name.
func (s *Server) RegisterDataset(req shared.RegisterDataset) (shared.Dataset, int, error) {
	if !namePattern.MatchString(req.Name) {
		return shared.Dataset{}, http.StatusBadRequest, fmt.Errorf("dataset name %q: letters, digits, _.- only", req.Name)
	}
	root, err := confine(s.cfg.DataRoots, req.Path)
	if err != nil {
		return shared.Dataset{}, statusFor(err), err
	}
	ix, err := datasets.Open(req.Layout, root, datasets.Options{})
	if err != nil {
		return shared.Dataset{}, http.StatusUnprocessableEntity, err
	}
	d := shared.Dataset{Name: req.Name, Root: root, Layout: ix.Layout, Categories: ix.Categories,
		Train: len(ix.Select(datasets.Train)), Test: len(ix.Select(datasets.Test))}
	s.mu.Lock()
	s.datasets[req.Name] = datasetEntry{info: d, req: shared.RegisterDataset{Name: req.Name, Path: root, Layout: req.Layout}}
	err = s.saveDatasetsLocked()
	s.mu.Unlock()
	if err != nil {
		return shared.Dataset{}, http.StatusInternalServerError, err
	}
	return d, http.StatusCreated, nil
}

// datasetsFile keeps the registrations across restarts.
const datasetsFile = "datasets.json"

// saveDatasetsLocked writes the registrations (s.mu held).
func (s *Server) saveDatasetsLocked() error {
	var reqs []shared.RegisterDataset
	for _, d := range s.datasets {
		reqs = append(reqs, d.req)
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].Name < reqs[j].Name })
	b, err := json.MarshalIndent(reqs, "", "  ")
	if err != nil {
		return fmt.Errorf("save datasets: %w", err)
	}
	return atomicfile.WriteBytes(filepath.Join(s.cfg.DataDir, datasetsFile), b)
}

// loadDatasets registers again what an earlier run registered. A folder that
// went away is skipped with a warning, not a failed start.
func (s *Server) loadDatasets() error {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, datasetsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load datasets: %w", err)
	}
	var reqs []shared.RegisterDataset
	if err := json.Unmarshal(b, &reqs); err != nil {
		return fmt.Errorf("load datasets %s: %w", filepath.Join(s.cfg.DataDir, datasetsFile), err)
	}
	for _, r := range reqs {
		if _, _, err := s.RegisterDataset(r); err != nil {
			s.log.Warn("a registered dataset is no longer usable", "name", r.Name, "path", r.Path, "err", err)
		}
	}
	return nil
}

func (s *Server) registerDataset(c echo.Context) error {
	var req shared.RegisterDataset
	if err := s.bind(c, &req); err != nil {
		return err
	}
	d, code, err := s.RegisterDataset(req)
	if err != nil {
		return apiError(c, code, "%v", err)
	}
	return c.JSON(code, d)
}

// ---- uploads --------------------------------------------------------------

var uploadIDPattern = regexp.MustCompile(`^u-[0-9a-f]{16}$`)

// upload accepts one PNG or JPEG as the raw request body or a multipart
// "image" field, checking the byte limit while reading and the pixel limit
// from the header before decoding.
func (s *Server) upload(c echo.Context) error {
	r := c.Request()
	var src io.Reader = r.Body
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.cfg.MaxUploadBytes+1<<20)
		f, _, err := r.FormFile("image")
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apiError(c, http.StatusRequestEntityTooLarge, "upload over %d bytes", s.cfg.MaxUploadBytes)
		}
		if err != nil {
			return apiError(c, http.StatusBadRequest, "multipart upload needs an \"image\" file field: %v", err)
		}
		defer f.Close()
		src = f
	}
	data, err := io.ReadAll(io.LimitReader(src, s.cfg.MaxUploadBytes+1))
	if err != nil {
		return apiError(c, http.StatusBadRequest, "read upload: %v", err)
	}
	if int64(len(data)) > s.cfg.MaxUploadBytes {
		return apiError(c, http.StatusRequestEntityTooLarge, "upload over %d bytes", s.cfg.MaxUploadBytes)
	}
	cfg, format, err := datasets.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return apiError(c, http.StatusUnsupportedMediaType, "only PNG and JPEG images are accepted: %v", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > s.cfg.MaxUploadPixels {
		return apiError(c, http.StatusRequestEntityTooLarge, "%dx%d pixels is over the limit of %d", cfg.Width, cfg.Height, s.cfg.MaxUploadPixels)
	}
	if n := decodedBytes(cfg); n > s.cfg.MaxUploadDecodedBytes {
		return apiError(c, http.StatusRequestEntityTooLarge, "%dx%d pixels decode to %d bytes, over the limit of %d", cfg.Width, cfg.Height, n, s.cfg.MaxUploadDecodedBytes)
	}
	// A bounded number of decodes at once, so that many large uploads
	// together cannot exhaust the memory.
	wait := time.NewTimer(s.cfg.UploadWait)
	defer wait.Stop()
	select {
	case s.decodeSlots <- struct{}{}:
	case <-wait.C:
		c.Response().Header().Set("Retry-After", "1")
		return apiError(c, http.StatusServiceUnavailable, "busy decoding other uploads; try again")
	case <-r.Context().Done():
		return r.Context().Err()
	}
	_, err = datasets.DecodeBytes(data) // the whole file must decode, not only its header
	<-s.decodeSlots
	if err != nil {
		return apiError(c, http.StatusUnprocessableEntity, "corrupt image: %v", err)
	}
	// The original bytes are kept (no re-encoding: a JPEG stays a JPEG);
	// readers decode by content.
	id := "u-" + randomHex(8)
	path := filepath.Join(s.cfg.DataDir, "uploads", id+uploadExt)
	if err := atomicfile.WriteBytes(path, data); err != nil {
		return err
	}
	if err := s.expireUploads(time.Now(), path); err != nil {
		s.log.Warn("uploads", "err", err)
	}
	return c.JSON(http.StatusCreated, shared.Upload{ID: id, Width: cfg.Width, Height: cfg.Height, Format: format, Bytes: len(data)})
}

// uploadExt names stored uploads; they keep their original bytes (PNG or
// JPEG), which every reader decodes by content.
const uploadExt = ".img"

// decodedBytes is the memory an image of this header decodes to.
func decodedBytes(cfg image.Config) int64 {
	per := int64(4)
	switch cfg.ColorModel {
	case color.GrayModel, color.AlphaModel:
		per = 1
	case color.Gray16Model, color.Alpha16Model:
		per = 2
	case color.YCbCrModel:
		per = 3
	case color.RGBA64Model, color.NRGBA64Model:
		per = 8
	}
	return int64(cfg.Width) * int64(cfg.Height) * per
}

func (s *Server) uploadPath(id string) (string, error) {
	if !uploadIDPattern.MatchString(id) {
		return "", fmt.Errorf("bad upload id %q", id)
	}
	for _, ext := range []string{uploadExt, ".png"} { // .png: re-encoded by diad before 0.5
		p := filepath.Join(s.cfg.DataDir, "uploads", id+ext)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: upload %s", os.ErrNotExist, id)
}

// ---- models ---------------------------------------------------------------

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

// ---- jobs -----------------------------------------------------------------

func (s *Server) submitJob(c echo.Context) error {
	var req shared.JobRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	if err := s.checkJob(req); err != nil {
		return apiError(c, statusFor(err), "%v", err)
	}
	j, err := s.runner.Submit(req.Kind, req.Config)
	if errors.Is(err, jobs.ErrClosed) {
		return apiError(c, http.StatusServiceUnavailable, "%v", err)
	}
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	return c.JSON(http.StatusAccepted, j)
}

func (s *Server) getJob(c echo.Context) error {
	j, err := s.runner.Get(c.Param("id"))
	if err != nil {
		return apiError(c, http.StatusNotFound, "no job %q", c.Param("id"))
	}
	return c.JSON(http.StatusOK, j)
}

func (s *Server) cancelJob(c echo.Context) error {
	j, err := s.runner.Cancel(c.Param("id"))
	if err != nil {
		return apiError(c, http.StatusNotFound, "no job %q", c.Param("id"))
	}
	return c.JSON(http.StatusOK, j)
}

// ---- runs -----------------------------------------------------------------

func (s *Server) runParam(c echo.Context) (string, error) {
	id := c.Param("run")
	if !results.ValidRunID(id) {
		return "", apiError(c, http.StatusNotFound, "no run %q", id)
	}
	if _, err := s.store.Meta(id); err != nil {
		return "", apiError(c, http.StatusNotFound, "no run %q", id)
	}
	return id, nil
}

func (s *Server) listRuns(c echo.Context) error {
	runs, err := s.store.Runs()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, runs)
}

func (s *Server) getRun(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	m, err := s.store.Meta(id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, m)
}

func toInfo(r results.ImageRow) shared.ImageInfo {
	info := shared.ImageInfo{ImageID: r.ImageID, Category: r.Category, Path: r.Path, Defect: r.Defect, GroundTruth: r.GroundTruth,
		Score: r.Score, Scorer: r.Scorer, StepScores: r.StepScores, Threshold: r.Threshold, Predicted: r.Predicted,
		AnalystLabel: r.AnalystLabel, AnalystNote: r.AnalystNote, AnalystUser: r.AnalystUser}
	if !r.AnalystTime.IsZero() {
		t := r.AnalystTime
		info.AnalystTime = &t
	}
	return info
}

// imageFilter reads the image filter the images listing and the export
// share: ?category=&gt=0|1&predicted=0|1&verdict=&min_score=&max_score=&image_ids=1,2,...
// (image_ids: exactly these images - what a client shows after filters of
// its own, such as outcomes at its threshold).
func imageFilter(q url.Values) (func(results.ImageRow) bool, error) {
	num := func(name string, def float64) (float64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) {
			return 0, fmt.Errorf("%s=%q is not a number", name, v)
		}
		return f, nil
	}
	minScore, err1 := num("min_score", math.Inf(-1))
	maxScore, err2 := num("max_score", math.Inf(1))
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	var ids map[int64]bool
	if q.Has("image_ids") {
		ids = map[int64]bool{}
		if list := q.Get("image_ids"); list != "" {
			for _, f := range strings.Split(list, ",") {
				n, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("image_ids: %q is not an image id", f)
				}
				ids[n] = true
			}
		}
	}
	return func(r results.ImageRow) bool {
		if v := q.Get("category"); v != "" && r.Category != v {
			return false
		}
		if v := q.Get("gt"); v != "" && strconv.Itoa(int(r.GroundTruth)) != v {
			return false
		}
		if v := q.Get("predicted"); v != "" && strconv.Itoa(int(r.Predicted)) != v {
			return false
		}
		if q.Has("verdict") && r.AnalystLabel != q.Get("verdict") {
			return false
		}
		if ids != nil && !ids[r.ImageID] {
			return false
		}
		return r.Score >= minScore && r.Score <= maxScore
	}, nil
}

// queryImages filters (imageFilter), sorts and pages a run's images:
// ?sort=score|-score|image_id&offset=&limit=
func (s *Server) queryImages(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	rows, err := s.store.Images(id)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	keep, err := imageFilter(q)
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	// Paging takes whole numbers in range (a float such as 1e19 would
	// overflow the conversion to int).
	whole := func(name string, def, lo, hi int) (int, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%s=%q: want a whole number in %d..%d", name, v, lo, hi)
		}
		return n, nil
	}
	offset, err3 := whole("offset", 0, 0, math.MaxInt32)
	limit, err4 := whole("limit", 100, 1, 1000)
	if err := errors.Join(err3, err4); err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	var out []shared.ImageInfo
	for _, r := range rows {
		if keep(r) {
			out = append(out, toInfo(r))
		}
	}
	switch q.Get("sort") {
	case "", "image_id":
	case "score":
		sort.SliceStable(out, func(i, j int) bool { return out[i].Score < out[j].Score })
	case "-score":
		sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	default:
		return apiError(c, http.StatusBadRequest, "sort=%q: want score, -score or image_id", q.Get("sort"))
	}
	page := shared.ImagePage{Total: len(out), Offset: offset}
	lo := min(offset, len(out))
	hi := min(lo+limit, len(out))
	page.Images = out[lo:hi]
	if page.Images == nil {
		page.Images = []shared.ImageInfo{}
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) imageRow(c echo.Context) (results.ImageRow, string, error) {
	id, err := s.runParam(c)
	if err != nil {
		return results.ImageRow{}, "", err
	}
	n, err := strconv.ParseInt(c.Param("image"), 10, 64)
	if err != nil {
		return results.ImageRow{}, "", apiError(c, http.StatusBadRequest, "image id %q is not a number", c.Param("image"))
	}
	rows, err := s.store.Images(id)
	if err != nil {
		return results.ImageRow{}, "", err
	}
	for _, r := range rows {
		if r.ImageID == n {
			return r, id, nil
		}
	}
	return results.ImageRow{}, "", apiError(c, http.StatusNotFound, "run %s has no image %d", id, n)
}

// imageSource serves the image file of a row (which must lie in the data
// roots or the uploads folder).
func (s *Server) imageSource(c echo.Context) error {
	row, _, err := s.imageRow(c)
	if err != nil {
		return err
	}
	roots := append([]string{filepath.Join(s.cfg.DataDir, "uploads")}, s.cfg.DataRoots...)
	p, err := confine(roots, row.Path)
	if err != nil {
		return apiError(c, statusFor(err), "image file: %v", err)
	}
	return c.File(p)
}

// imageMap serves an image's anomaly map as a grayscale PNG (value =
// offset + v/255*scale, given in X-Map-Offset and X-Map-Scale).
func (s *Server) imageMap(c echo.Context) error {
	row, id, err := s.imageRow(c)
	if err != nil {
		return err
	}
	maps, err := s.store.Maps(id)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.ImageID == row.ImageID {
			c.Response().Header().Set("X-Map-Offset", strconv.FormatFloat(float64(m.Offset), 'g', -1, 32))
			c.Response().Header().Set("X-Map-Scale", strconv.FormatFloat(float64(m.Scale), 'g', -1, 32))
			img, err := grayPNG(m.Data, int(m.Width), int(m.Height))
			if err != nil {
				return err
			}
			return c.Blob(http.StatusOK, "image/png", img)
		}
	}
	return apiError(c, http.StatusNotFound, "no map for image %d", row.ImageID)
}

func (s *Server) setLabel(c echo.Context) error {
	row, id, err := s.imageRow(c)
	if err != nil {
		return err
	}
	var req shared.LabelRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	if !results.ValidVerdict(req.Verdict) {
		return apiError(c, http.StatusBadRequest, "verdict %q: want normal, anomalous, unsure or empty", req.Verdict)
	}
	if len(req.Note) > 4096 || len(req.User) > 128 {
		return apiError(c, http.StatusBadRequest, "note or user too long")
	}
	rows, err := s.store.SetLabels(id, []results.Label{{ImageID: row.ImageID, Verdict: req.Verdict, Note: req.Note, User: req.User}}, results.ActionSet, time.Now())
	if err != nil {
		return err
	}
	s.publishChange(shared.Change{Kind: shared.ChangeLabels, RunID: id, ImageIDs: []int64{row.ImageID}, User: req.User})
	return c.JSON(http.StatusOK, toInfo(rows[0]))
}

// maxBulkLabels bounds one bulk label request, and maxBulkBody its body
// (100,000 labels with short notes; the general body limit would stop at
// about 20,000).
const (
	maxBulkLabels = 100_000
	maxBulkBody   = 32 << 20
)

// setLabels sets the labels of many images of a run at once (PUT
// /runs/{run}/labels): one verdict for a selection (action bulk), or the
// labels a bulk action replaced put back (action undo). Every change goes
// into the run's label history.
func (s *Server) setLabels(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	var req shared.BulkLabelRequest
	if err := s.bindLimit(c, &req, max(s.cfg.MaxBodyBytes, maxBulkBody)); err != nil {
		return err
	}
	if req.Action != results.ActionBulk && req.Action != results.ActionUndo {
		return apiError(c, http.StatusBadRequest, "action %q: want %s or %s", req.Action, results.ActionBulk, results.ActionUndo)
	}
	if len(req.Labels) == 0 || len(req.Labels) > maxBulkLabels {
		return apiError(c, http.StatusBadRequest, "labels: give 1 to %d", maxBulkLabels)
	}
	if len(req.User) > 128 {
		return apiError(c, http.StatusBadRequest, "user too long")
	}
	labels := make([]results.Label, len(req.Labels))
	ids := make([]int64, len(req.Labels))
	seen := make(map[int64]bool, len(req.Labels))
	for i, l := range req.Labels {
		if !results.ValidVerdict(l.Verdict) {
			return apiError(c, http.StatusBadRequest, "image %d: verdict %q: want normal, anomalous, unsure or empty", l.ImageID, l.Verdict)
		}
		if len(l.Note) > 4096 {
			return apiError(c, http.StatusBadRequest, "image %d: note too long", l.ImageID)
		}
		if seen[l.ImageID] {
			return apiError(c, http.StatusBadRequest, "image %d given twice", l.ImageID)
		}
		seen[l.ImageID] = true
		labels[i] = results.Label{ImageID: l.ImageID, Verdict: l.Verdict, Note: l.Note, User: req.User}
		ids[i] = l.ImageID
	}
	rows, err := s.store.SetLabels(id, labels, req.Action, time.Now())
	if err != nil {
		if errors.Is(err, results.ErrNoImage) {
			return apiError(c, http.StatusNotFound, "%v", err)
		}
		return err
	}
	s.publishChange(shared.Change{Kind: shared.ChangeLabels, RunID: id, ImageIDs: ids, User: req.User})
	out := make([]shared.ImageInfo, len(rows))
	for i, r := range rows {
		out[i] = toInfo(r)
	}
	return c.JSON(http.StatusOK, out)
}

// labelHistory lists every change of a run's analyst labels, oldest first.
func (s *Server) labelHistory(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	rows, err := s.store.LabelHistory(id)
	if err != nil {
		return err
	}
	out := make([]shared.LabelChange, len(rows))
	for i, r := range rows {
		out[i] = toChange(r)
	}
	return c.JSON(http.StatusOK, out)
}

// toChange is a history entry on the wire.
func toChange(r results.LabelChange) shared.LabelChange {
	return shared.LabelChange{ImageID: r.ImageID, Time: r.Time, User: r.User, Action: r.Action,
		FromVerdict: r.FromVerdict, ToVerdict: r.ToVerdict, FromNote: r.FromNote, ToNote: r.ToNote}
}

// maxThresholdCategories bounds a threshold request's categories (a
// dataset has tens; the limit keeps a hostile body from costing much).
const maxThresholdCategories = 10000

func (s *Server) setThreshold(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	var req shared.ThresholdRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	if math.IsNaN(req.Value) || math.IsInf(req.Value, 0) {
		return apiError(c, http.StatusBadRequest, "threshold must be a finite number")
	}
	if len(req.PerCategory) > maxThresholdCategories {
		return apiError(c, http.StatusBadRequest, "%d category thresholds, at most %d", len(req.PerCategory), maxThresholdCategories)
	}
	for cat, v := range req.PerCategory {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return apiError(c, http.StatusBadRequest, "threshold of category %q must be a finite number", cat)
		}
	}
	if req.Policy == "" {
		req.Policy = "manual"
	}
	th := results.ThresholdInfo{Value: req.Value, PerCategory: req.PerCategory, Policy: req.Policy, SetBy: req.User}
	if err := s.store.SetThreshold(id, th); err != nil {
		if errors.Is(err, results.ErrNoCategory) {
			return apiError(c, http.StatusBadRequest, "%v", err)
		}
		return err
	}
	m, err := s.store.Meta(id)
	if err != nil {
		return err
	}
	s.publishChange(shared.Change{Kind: shared.ChangeThreshold, RunID: id, User: req.User})
	return c.JSON(http.StatusOK, m)
}

func (s *Server) runMetrics(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	rows, err := s.store.Metrics(id)
	if err != nil {
		return err
	}
	list := make([]shared.MetricValue, len(rows))
	for i, r := range rows {
		list[i] = shared.MetricValue{Category: r.Category, Metric: r.Metric, Error: r.Error}
		if !math.IsNaN(r.Value) {
			v := r.Value
			list[i].Value = &v
		}
	}
	return c.JSON(http.StatusOK, list)
}

func (s *Server) runFile(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	name := c.Param("file")
	switch name {
	case results.ImagesFile, results.MetricsFile, results.MapsFile, results.RunFile:
	default:
		return apiError(c, http.StatusNotFound, "no file %q (images.parquet, metrics.parquet, maps.parquet, run.json)", name)
	}
	return c.Attachment(filepath.Join(s.store.Dir(id), name), id+"-"+name)
}

func (s *Server) runExport(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	table, format := c.QueryParam("table"), c.QueryParam("format")
	if table == "" {
		table = "images"
	}
	if format == "" {
		format = results.FormatCSV
	}
	if format != results.FormatCSV && format != results.FormatJSON && format != results.FormatParquet {
		return apiError(c, http.StatusBadRequest, "format %q: want csv, json or parquet", format)
	}
	var buf bytes.Buffer
	var exportErr error
	switch table {
	case "images":
		keep, err := imageFilter(c.QueryParams())
		if err != nil {
			return apiError(c, http.StatusBadRequest, "%v", err)
		}
		rows, err := s.store.Images(id)
		if err != nil {
			return err
		}
		kept := rows[:0:0]
		for _, r := range rows {
			if keep(r) {
				kept = append(kept, r)
			}
		}
		exportErr = results.ExportImages(&buf, kept, format)
	case "metrics":
		if format == results.FormatParquet {
			return apiError(c, http.StatusBadRequest, "the metrics table exports as csv or json (its Parquet file is /files/metrics.parquet)")
		}
		rows, err := s.store.Metrics(id)
		if err != nil {
			return err
		}
		exportErr = results.ExportMetrics(&buf, rows, format)
	case "history":
		rows, err := s.store.LabelHistory(id)
		if err != nil {
			return err
		}
		exportErr = results.ExportHistory(&buf, rows, format)
	default:
		return apiError(c, http.StatusBadRequest, "table %q: want images, metrics or history", table)
	}
	if exportErr != nil {
		return fmt.Errorf("export %s of run %s: %w", table, id, exportErr)
	}
	ctype, ext := "text/csv", "csv"
	switch format {
	case results.FormatJSON:
		ctype, ext = "application/x-ndjson", "jsonl"
	case results.FormatParquet:
		ctype, ext = "application/vnd.apache.parquet", "parquet"
	}
	c.Response().Header().Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", id+"-"+table+"."+ext))
	return c.Blob(http.StatusOK, ctype, buf.Bytes())
}
