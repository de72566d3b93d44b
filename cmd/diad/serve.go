package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/server"
)

func newServeCmd() *cobra.Command {
	cfg := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Start the diad server (REST API, websockets, browser client)",
		Long: "serve runs the HTTP server: the REST API under /api/v1 (OpenAPI at /api/v1/openapi.json),\n" +
			"job and denoising websockets, Prometheus metrics at /metrics. It listens on loopback unless\n" +
			"--addr says otherwise, and then requires --token (or DIAD_TOKEN) on every mutating request.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Token == "" {
				cfg.Token = os.Getenv("DIAD_TOKEN")
			}
			s, err := server.New(cfg, newLogger())
			if err != nil {
				return err
			}
			return s.Run(cmd.Context(), nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (loopback by default)")
	f.StringVar(&cfg.Token, "token", "", "API token for mutating requests and websockets (default $DIAD_TOKEN)")
	f.StringVar(&cfg.ReadToken, "read-token", "auto", "reads (GET /api/..., /metrics) need the token too: auto (unless on loopback), on or off")
	f.StringSliceVar(&cfg.AllowedOrigins, "allow-origin", nil, "extra websocket origins (host patterns)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "folder for jobs, uploads, models and results")
	f.StringSliceVar(&cfg.DataRoots, "data-root", nil, "folders clients may use datasets and images from")
	f.StringVar(&cfg.ResultsDir, "results", "", "results folder (default <data-dir>/results)")
	f.StringVar(&cfg.Checkpoint, "checkpoint", "", "model for denoising streams (default: newest trained)")
	f.StringVar(&cfg.Features.Arch, "features", cfg.Features.Arch, "feature extractor for anomaly maps")
	f.StringVar(&cfg.Features.Weights, "features-weights", "", "feature extractor weights (random if empty)")
	f.StringVar(&cfg.Device, "device", cfg.Device, "cpu, cuda, cuda:N or auto")
	f.StringVar(&cfg.WebDir, "web-dir", "", "built browser client (default: web/ next to the executable; make web builds it)")
	f.BoolVar(&cfg.Demo, "demo", false, "generate the synthetic dataset, serve --demo-model with its evaluation, and train the tiny model\nas a live demonstration (its model is served only if the demo model is missing or unusable)")
	f.StringVar(&cfg.DemoModel, "demo-model", cfg.DemoModel, "the committed demo model (with --demo)")
	f.Int64Var(&cfg.MaxUploadBytes, "max-upload-bytes", cfg.MaxUploadBytes, "upload size limit")
	f.IntVar(&cfg.MaxUploadPixels, "max-upload-pixels", cfg.MaxUploadPixels, "upload pixel limit (checked before decoding)")
	f.Int64Var(&cfg.MaxUploadDecodedBytes, "max-upload-decoded-bytes", cfg.MaxUploadDecodedBytes, "memory an upload may decode to (pixels x bytes per pixel, checked before decoding)")
	f.IntVar(&cfg.UploadDecodes, "upload-decodes", cfg.UploadDecodes, "uploads decoded at once (more wait, then get 503)")
	f.DurationVar(&cfg.UploadWait, "upload-wait", cfg.UploadWait, "how long an upload waits for a decoding slot before 503")
	f.DurationVar(&cfg.UploadMaxAge, "upload-max-age", cfg.UploadMaxAge, "uploads older than this are removed (0 = keep)")
	f.Int64Var(&cfg.UploadMaxTotal, "upload-max-total", cfg.UploadMaxTotal, "the oldest uploads are removed while all take more bytes than this (0 = no limit)")
	f.DurationVar(&cfg.TrajectoryTTL, "trajectory-ttl", cfg.TrajectoryTTL, "how long a finished trajectory is replayed to identical requests (0 = computed again)")
	f.Int64Var(&cfg.TrajectoryCacheBytes, "trajectory-cache-bytes", cfg.TrajectoryCacheBytes, "the oldest replayable trajectories are forgotten while all keep more bytes than this (0 = no limit)")
	return cmd
}
