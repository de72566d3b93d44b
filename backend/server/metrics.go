package server

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the server's Prometheus registry.
type metrics struct {
	reg     *prometheus.Registry
	latency *prometheus.HistogramVec
	panics  prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "diad_http_request_duration_seconds", Help: "HTTP request latency by route and status.",
		Buckets: prometheus.DefBuckets,
	}, []string{"method", "route", "status"})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{Name: "diad_recovered_panics_total", Help: "Panics in request handlers, recovered and answered with 500."})
	m.reg.MustRegister(m.latency, m.panics,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "diad_stream_clients", Help: "Websocket stream subscribers."},
			func() float64 { return float64(s.stats.Subscribers.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "diad_stream_dropped_frames_total", Help: "Frames dropped for slow websocket clients."},
			func() float64 { return float64(s.stats.Dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "diad_trajectories_computed_total", Help: "Denoising trajectories computed (identical requests share one)."},
			func() float64 { return float64(s.trajCount.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "diad_job_queue_length", Help: "Jobs waiting to run."},
			func() float64 { _, q := s.runner.Counts(); return float64(q) }),
		&jobCollector{s: s, desc: prometheus.NewDesc("diad_jobs", "Jobs by state.", []string{"state"}, nil)},
	)
	return m
}

type jobCollector struct {
	s    *Server
	desc *prometheus.Desc
}

func (j *jobCollector) Describe(ch chan<- *prometheus.Desc) { ch <- j.desc }

func (j *jobCollector) Collect(ch chan<- prometheus.Metric) {
	counts, _ := j.s.runner.Counts()
	for _, st := range []string{"queued", "running", "succeeded", "failed", "cancelled"} {
		ch <- prometheus.MustNewConstMetric(j.desc, prometheus.GaugeValue, float64(counts[st]), st)
	}
}

func (m *metrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		status := c.Response().Status
		if he, ok := err.(*echo.HTTPError); ok {
			status = he.Code
		}
		m.latency.WithLabelValues(c.Request().Method, c.Path(), strconv.Itoa(status)).Observe(time.Since(start).Seconds())
		return err
	}
}

func (m *metrics) handler() echo.HandlerFunc {
	return echo.WrapHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
}
