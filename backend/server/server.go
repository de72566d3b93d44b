// Package server is diad's HTTP front: an echo server with the REST API under
// /api/v1 (datasets, uploads, models, jobs, runs, labels), a job runner (one
// model job at a time), websocket streams of job events and of denoising
// trajectories, Prometheus metrics, and the browser client at /.
package server

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/jobs"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/backend/version"
	"github.com/diad-project/diad/frontend-wasm/web"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// Config is the server's configuration (flags of `diad serve`).
type Config struct {
	// Addr is the listen address; loopback by default so nothing is exposed.
	Addr string `yaml:"addr"`
	// Token is required on every mutating request and websocket when set; it
	// must be set when Addr is not a loopback address.
	Token string `yaml:"token"`
	// ReadToken says whether reads (GET under /api/ and /metrics) need the
	// token too: "on", "off", or "auto" (the default: on unless Addr is
	// loopback). The page and its static files never do.
	ReadToken string `yaml:"read_token"`
	// AllowedOrigins are extra websocket Origin host patterns (same origin
	// is always allowed), e.g. "localhost:5173".
	AllowedOrigins []string `yaml:"allowed_origins"`
	// DataDir holds jobs, uploads, trained models and (by default) results.
	DataDir string `yaml:"data_dir"`
	// DataRoots are the folders clients may name datasets and images in.
	DataRoots []string `yaml:"data_roots"`
	// ResultsDir is the results store (default <DataDir>/results).
	ResultsDir string `yaml:"results_dir"`
	// Checkpoint is the model for denoising streams (default: the newest
	// model a train job produced).
	Checkpoint string                  `yaml:"checkpoint"`
	Features   evaluate.FeaturesConfig `yaml:"features"`
	Device     string                  `yaml:"device"`
	// Upload limits, checked before decoding: the file's size, its pixels,
	// and the memory its decoded form takes (pixels x bytes per pixel of
	// its colour model: a small 16-bit PNG can decode to hundreds of MB).
	MaxUploadBytes        int64 `yaml:"max_upload_bytes"`
	MaxUploadPixels       int   `yaml:"max_upload_pixels"`
	MaxUploadDecodedBytes int64 `yaml:"max_upload_decoded_bytes"`
	// UploadDecodes bounds the uploads decoded at once; a request that
	// finds no slot within UploadWait gets 503 with Retry-After.
	UploadDecodes int           `yaml:"upload_decodes"`
	UploadWait    time.Duration `yaml:"upload_wait"`
	// Uploads expire: older than UploadMaxAge, or the oldest ones while
	// all take more than UploadMaxTotal bytes (0 = no limit). Runs that
	// scored an expired upload keep its scores and map, not the image.
	UploadMaxAge   time.Duration `yaml:"upload_max_age"`
	UploadMaxTotal int64         `yaml:"upload_max_total"`
	// MaxBodyBytes bounds JSON request bodies.
	MaxBodyBytes    int64         `yaml:"max_body_bytes"`
	ReadTimeout     time.Duration `yaml:"read_timeout"`
	RequestTimeout  time.Duration `yaml:"request_timeout"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// StreamQueue is the per-client frame queue of websocket streams.
	StreamQueue int `yaml:"stream_queue"`
	// Finished trajectories are replayed to identical requests for
	// TrajectoryTTL; beyond TrajectoryCacheBytes of kept frames the oldest
	// are forgotten first (a flood of distinct requests must not grow the
	// server's memory for TrajectoryTTL).
	TrajectoryTTL        time.Duration `yaml:"trajectory_ttl"`
	TrajectoryCacheBytes int64         `yaml:"trajectory_cache_bytes"`
	// WebDir holds the built browser client (diad.wasm, wasm_exec.js); when
	// empty, "web" next to the executable. Without a client, / shows a
	// status page that says how to build it.
	WebDir string `yaml:"web_dir"`
	// Demo generates the synthetic dataset (in <DataDir>/demo-data), serves
	// DemoModel with its committed evaluation run, and trains the tiny model
	// as a live demonstration of the training monitor (its model is served
	// only when DemoModel is missing or unusable).
	Demo bool `yaml:"demo"`
	// DemoModel is the committed demo checkpoint (preset demo).
	DemoModel string `yaml:"demo_model"`
}

// DefaultConfig listens on loopback only.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:8080", DataDir: "var", Device: "auto",
		Features:       evaluate.FeaturesConfig{Arch: "resnet18", Layers: []int{1, 2, 3}},
		MaxUploadBytes: 20 << 20, MaxUploadPixels: 4096 * 4096, MaxUploadDecodedBytes: 96 << 20, UploadDecodes: 2, UploadWait: 5 * time.Second,
		UploadMaxAge: 7 * 24 * time.Hour, UploadMaxTotal: 2 << 30,
		MaxBodyBytes: 1 << 20,
		ReadTimeout:  30 * time.Second, RequestTimeout: 30 * time.Second, ShutdownTimeout: 15 * time.Second,
		StreamQueue: 16, TrajectoryTTL: 5 * time.Minute, TrajectoryCacheBytes: 256 << 20,
	}
}

// Status is the body of GET /api/v1/status.
type Status = shared.Status

// Server wraps the echo instance and what its handlers share.
type Server struct {
	cfg     Config
	echo    *echo.Echo
	log     *slog.Logger
	status  Status
	runner  *jobs.Runner
	store   results.Store
	stats   *stream.Stats
	metrics *metrics

	mu        sync.Mutex
	loadMu    sync.Mutex // serialises model loading
	datasets  map[string]datasetEntry
	denoiser  *denoiser
	demoModel string // the committed demo model, once loaded
	notices   []string
	digests   digests // checkpoint SHA-256s, for finding a model's runs (thresholds.go)
	// decodeSlots bounds concurrent upload decodes (Config.UploadDecodes).
	decodeSlots chan struct{}

	// wsCtx ends when the server shuts down: http.Server.Shutdown does not
	// touch hijacked (websocket) connections, so their handlers watch it.
	wsCtx    context.Context
	wsCancel context.CancelFunc

	trajMu       sync.Mutex
	trajectories map[string]*trajectoryEntry
	trajCount    atomic.Int64
	// masks maps a run id to its images' ground-truth mask files (runMasks).
	masks sync.Map
	// readToken: reads need the token too (Config.ReadToken resolved).
	readToken bool
	// changes tells open pages what changed (/ws/changes): a hub that never
	// ends and keeps no history.
	changes *stream.Hub
}

// New builds a server with its routes and job runner; it does not listen yet.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	readToken, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	s := &Server{cfg: cfg, echo: e, log: log, store: results.Store{Root: cfg.ResultsDir}, stats: &stream.Stats{},
		datasets: map[string]datasetEntry{}, trajectories: map[string]*trajectoryEntry{}, decodeSlots: make(chan struct{}, max(cfg.UploadDecodes, 1)), readToken: readToken}
	s.wsCtx, s.wsCancel = context.WithCancel(context.Background())
	s.metrics = newMetrics(s)
	rt := evaluate.RuntimeInfo()
	s.status = Status{Version: version.Read(), Libtorch: rt.Libtorch, Devices: rt.Devices, Threads: rt.Threads, Started: time.Now().UTC()}
	runner, err := jobs.Open(filepath.Join(cfg.DataDir, "jobs"), s.jobFuncs(), s.stats)
	if err != nil {
		return nil, err
	}
	s.runner = runner
	s.changes = stream.NewHub(256, 0, s.stats)
	runner.OnChange(func(j shared.Job) {
		s.publishChange(shared.Change{Kind: shared.ChangeJobs, JobID: j.ID, State: j.State})
		if j.RunID != "" && j.State == shared.JobSucceeded {
			s.publishChange(shared.Change{Kind: shared.ChangeRuns, RunID: j.RunID, JobID: j.ID})
		}
	})
	s.middleware()
	s.routes()
	if err := s.expireUploads(time.Now(), ""); err != nil {
		log.Warn("uploads", "err", err)
	}
	if err := s.loadDatasets(); err != nil {
		return nil, errors.Join(err, runner.Close(context.Background()))
	}
	if cfg.Demo {
		if err := s.startDemo(); err != nil {
			return nil, errors.Join(err, runner.Close(context.Background()))
		}
	}
	return s, nil
}

// resolve checks the configuration, makes its paths absolute (client paths
// are resolved and compared against them), fills in the defaults that
// depend on others and creates the data folders. It returns whether reads
// need the token.
func (cfg *Config) resolve() (readToken bool, err error) {
	if cfg.Token == "" && cfg.Addr != "" && !isLoopback(cfg.Addr) {
		return false, fmt.Errorf("server: listening on %s (not loopback) requires a token (--token or DIAD_TOKEN)", cfg.Addr)
	}
	if readToken, err = resolveReadToken(cfg.ReadToken, cfg.Addr); err != nil {
		return false, err
	}
	if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
		return false, fmt.Errorf("server: %w", err)
	}
	for _, p := range []*string{&cfg.Checkpoint, &cfg.DemoModel} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return false, fmt.Errorf("server: %w", err)
			}
		}
	}
	for i, r := range cfg.DataRoots {
		if cfg.DataRoots[i], err = filepath.Abs(r); err != nil {
			return false, fmt.Errorf("server: %w", err)
		}
	}
	if cfg.WebDir == "" {
		if exe, err := os.Executable(); err == nil {
			cfg.WebDir = filepath.Join(filepath.Dir(exe), "web")
		}
	}
	if cfg.ResultsDir == "" {
		cfg.ResultsDir = filepath.Join(cfg.DataDir, "results")
	}
	if cfg.Demo {
		cfg.DataRoots = append(cfg.DataRoots, filepath.Join(cfg.DataDir, demoData))
	}
	for _, d := range []string{cfg.DataDir, cfg.ResultsDir, filepath.Join(cfg.DataDir, "uploads"), filepath.Join(cfg.DataDir, "models")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return false, fmt.Errorf("server: %w", err)
		}
	}
	return readToken, nil
}

// middleware installs what every request passes through, outermost first:
// HEAD as GET, metrics, the request log, panic recovery, the token, the
// request timeout.
func (s *Server) middleware() {
	e, log := s.echo, s.log
	e.HTTPErrorHandler = s.errorHandler
	e.Pre(headAsGet) // before routing: HEAD finds the GET route
	e.Use(s.metrics.middleware)
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURI: true, LogStatus: true, LogLatency: true, LogError: true, LogRemoteIP: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			log.Info("request", "method", v.Method, "uri", redactedURI(c.Request()), "status", v.Status, "latency", v.Latency, "remote", v.RemoteIP, "err", v.Error)
			return nil
		},
	}))
	// Inside the logger and the metrics, so that a recovered panic is a 500
	// they both see (and count), with its stack in the log.
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.metrics.panics.Inc()
			log.Error("recovered panic", "method", c.Request().Method, "uri", redactedURI(c.Request()), "err", err, "stack", string(stack))
			return echo.NewHTTPError(http.StatusInternalServerError, "internal error")
		},
		DisableErrorHandler: true, // the error goes up to the logger, then the error handler
	}))
	e.Use(s.tokenMiddleware)
	e.Use(s.timeoutMiddleware)
}

// errorHandler answers every error with the API's JSON error body.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, err.Error()
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		msg = fmt.Sprint(he.Message)
	}
	if code >= 500 {
		s.log.Error("handler error", "uri", c.Request().RequestURI, "err", err)
	}
	if werr := c.JSON(code, shared.APIError{Error: msg}); werr != nil {
		s.log.Warn("error response not sent", "uri", c.Request().RequestURI, "err", werr)
	}
}

// Handler exposes the routes for tests and embedding.
func (s *Server) Handler() http.Handler { return s.echo }

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diad</title>
<style>body{font-family:sans-serif;margin:2em;max-width:50em}td{padding:.2em 1em .2em 0}</style></head>
<body><h1>diad</h1>
<p>Diffusion-based multi-class visual anomaly detection (DiAD) on libtorch.</p>
<table>
<tr><td>diad</td><td>{{.Version.Diad}} {{.Version.Revision}}</td></tr>
<tr><td>gotch</td><td>{{.Version.Gotch}}</td></tr>
<tr><td>libtorch</td><td>{{.Libtorch}}</td></tr>
<tr><td>devices</td><td>{{range .Devices}}{{.}} {{end}}</td></tr>
<tr><td>threads</td><td>{{.Threads}}</td></tr>
<tr><td>model</td><td>{{.Model}}</td></tr>
<tr><td>started</td><td>{{.Started.Format "2006-01-02 15:04:05 UTC"}}</td></tr>
</table>
{{if .NoClient}}<p><b>The browser client is not built</b> ({{.WebDir}} has no diad.wasm): run <code>make web</code>, or <code>make run</code>, which builds it.</p>{{end}}
<p>API: <a href="/api/v1/status">/api/v1/status</a>, <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>, <a href="/metrics">/metrics</a></p>
</body></html>`))

// handleIndex serves the browser client's page, or the status page when the
// client is not built.
func (s *Server) handleIndex(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
	if web.Built(s.cfg.WebDir) {
		return c.HTMLBlob(http.StatusOK, web.Index)
	}
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	return statusPage.Execute(c.Response(), struct {
		Status
		NoClient bool
		WebDir   string
	}{s.currentStatus(), true, s.cfg.WebDir})
}

// clientFile serves one build output of the client; no-cache makes the
// browser revalidate (Last-Modified), so a rebuilt client is picked up.
func (s *Server) clientFile(name string) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
		p := filepath.Join(s.cfg.WebDir, name)
		if _, err := os.Stat(p); err != nil {
			return apiError(c, http.StatusNotFound, "the browser client is not built (%s): run make web", p)
		}
		return c.File(p)
	}
}

func (s *Server) currentStatus() Status {
	st := s.status
	s.mu.Lock()
	if s.denoiser != nil {
		st.Model = s.denoiser.path
	}
	st.Notices = append([]string(nil), s.notices...)
	s.mu.Unlock()
	return st
}

// Start runs the server in the background (see Run) and returns its bound
// address once it listens, and stop, which shuts it down gracefully, waits,
// and returns Run's error. It is for programs and tests that embed a server.
func (s *Server) Start() (addr string, stop func() error, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ready) }()
	select {
	case addr = <-ready:
		return addr, func() error { cancel(); return <-done }, nil
	case err = <-done:
		cancel()
		return "", nil, err
	}
}

// serverIdleTimeout is how long a kept-alive connection may wait for its
// next request.
const serverIdleTimeout = 2 * time.Minute

// Run listens on cfg.Addr until ctx is cancelled, then shuts down gracefully:
// stop accepting, cancel the running job (queued jobs stay queued for the next
// start), close streams. ready, if not nil, receives the bound address.
func (s *Server) Run(ctx context.Context, ready chan<- string) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return errors.Join(fmt.Errorf("listen %s: %w", s.cfg.Addr, err), s.runner.Close(context.Background()))
	}
	// IdleTimeout is set apart from ReadTimeout (which it would default to):
	// a client that keeps connections open for reuse must stop reusing one
	// before the server closes it, or its next request on it - a PUT is not
	// retried - meets a closed connection. Clients' idle limits are shorter
	// (browsers' and Go's: 90 s or less).
	srv := &http.Server{Handler: s.echo, ReadTimeout: s.cfg.ReadTimeout, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: serverIdleTimeout,
		// net/http's own complaints (a connection it gave up on, a bad
		// request line) go to the server's log, not the process's stderr.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(s.wsCancel)
	s.log.Info("diad server listening", "addr", "http://"+ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return errors.Join(fmt.Errorf("serve: %w", err), s.runner.Close(context.Background()))
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Warn("http shutdown", "err", err)
	}
	if err := s.runner.Close(sctx); err != nil {
		return fmt.Errorf("shutdown: jobs: %w", err)
	}
	s.mu.Lock()
	if s.denoiser != nil {
		s.denoiser.free() // after the running trajectories
		s.denoiser = nil
	}
	s.mu.Unlock()
	return nil
}

// addNotice records something the user should know (shown in /status).
func (s *Server) addNotice(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notices = append(s.notices, msg)
}
