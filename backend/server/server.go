// Package server is diad's HTTP front: an echo server that serves the browser
// client, the REST API under /api/v1, and websocket streams.
package server

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/version"
)

// Config is the server's configuration (flags of `diad serve`).
type Config struct {
	// Addr is the listen address; loopback by default so nothing is exposed.
	Addr string `yaml:"addr"`
	// ReadTimeout bounds reading a request (headers and body).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// DefaultConfig listens on loopback only.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:8080", ReadTimeout: 30 * time.Second, ShutdownTimeout: 10 * time.Second}
}

// Status is what /api/v1/status reports: which build serves and on what hardware.
type Status struct {
	Version  version.Info `json:"version"`
	Libtorch string       `json:"libtorch"`
	Devices  []string     `json:"devices"`
	Threads  int          `json:"threads"`
	Started  time.Time    `json:"started"`
}

// Server wraps the echo instance and what its handlers share.
type Server struct {
	cfg    Config
	echo   *echo.Echo
	log    *slog.Logger
	status Status
}

// New builds a server with its routes; it does not listen yet.
func New(cfg Config, log *slog.Logger) *Server {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Use(middleware.Recover())
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURI: true, LogStatus: true, LogLatency: true, LogError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			log.Info("request", "method", v.Method, "uri", v.URI, "status", v.Status, "latency", v.Latency, "err", v.Error)
			return nil
		},
	}))
	s := &Server{cfg: cfg, echo: e, log: log, status: Status{
		Version:  version.Read(),
		Libtorch: torchrt.LibtorchVersion(),
		Devices:  torchrt.Devices(),
		Threads:  torchrt.Threads(),
		Started:  time.Now().UTC(),
	}}
	e.GET("/", s.handleIndex)
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/api/v1/status", func(c echo.Context) error { return c.JSON(http.StatusOK, s.status) })
	return s
}

// Handler exposes the routes for tests (httptest) and embedding.
func (s *Server) Handler() http.Handler { return s.echo }

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
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
<tr><td>started</td><td>{{.Started.Format "2006-01-02 15:04:05 UTC"}}</td></tr>
</table>
<p>API: <a href="/api/v1/status">/api/v1/status</a></p>
</body></html>`))

func (s *Server) handleIndex(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	return indexPage.Execute(c.Response(), s.status)
}

// Run listens on cfg.Addr until ctx is cancelled, then shuts down gracefully.
// ready, if not nil, receives the bound address once listening (useful with port 0).
func (s *Server) Run(ctx context.Context, ready chan<- string) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{Handler: s.echo, ReadTimeout: s.cfg.ReadTimeout, ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("diad server listening", "addr", "http://"+ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
