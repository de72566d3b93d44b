package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/cpuinfo"
	"github.com/diad-project/diad/backend/kernelcheck"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/throughput"
	"github.com/diad-project/diad/backend/torchrt"
)

// kernelsResult is one process of `bench kernels`.
type kernelsResult struct {
	OneDNN      string  `json:"onednn"`
	OneDNNOn    bool    `json:"onednn_on"`
	CheckOK     bool    `json:"check_ok"` // the check's first run (with the kernels libtorch chose)
	CheckMS     float64 `json:"check_ms"` // the check, fallback included
	BuildMS     float64 `json:"build_ms"` // building the preset's model after the check
	TrainPerSec float64 `json:"train_images_per_sec"`
	ReconPerSec float64 `json:"recon_images_per_sec"`
	Threads     int     `json:"threads"`
}

// kernelsConfig is one process setting `bench kernels` compares.
type kernelsConfig struct {
	name string
	env  []string
}

func newKernelsBenchCmd() *cobra.Command {
	var preset string
	var batch, iters int
	var libs []string
	cmd := &cobra.Command{
		Use:   "kernels",
		Short: "Measure the kernel self-check's start-up cost and throughput with oneDNN, without it, and with other oneDNN libraries",
		Long: "kernels runs one process per setting, one after another: the installed oneDNN as the self-check\n" +
			"leaves it, oneDNN switched off (what a machine whose oneDNN fails the check runs at), and each\n" +
			"--onednn-lib folder loaded in its place (kept on even where the check fails, to measure its\n" +
			"speed). Each process times the check, building the preset, training steps (forward, backward,\n" +
			"AdamW) and reconstructions on random images; the table gives ratios to the first row.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			configs := []kernelsConfig{{name: "installed oneDNN"}, {name: "oneDNN off", env: []string{kernelcheck.Env + "=" + kernelcheck.OneDNNOff}}}
			for _, dir := range libs {
				if _, err := os.Stat(dir); err != nil {
					return fmt.Errorf("--onednn-lib: %w", err)
				}
				ld := dir
				if prev := os.Getenv("LD_LIBRARY_PATH"); prev != "" {
					ld += ":" + prev
				}
				configs = append(configs, kernelsConfig{name: "oneDNN from " + dir, env: []string{"LD_LIBRARY_PATH=" + ld, kernelcheck.Env + "=" + kernelcheck.OneDNNOn}})
			}
			out := cmd.OutOrStdout()
			if cpu, err := cpuinfo.Read(); err == nil {
				fmt.Fprintf(out, "cpu: %s\n", cpu)
			}
			fmt.Fprintf(out, "preset %s, batch %d, %d timed iterations after one warm-up; one process per row, one at a time\n\n", preset, batch, iters)
			var results []kernelsResult
			for _, c := range configs {
				fmt.Fprintf(cmd.ErrOrStderr(), "bench kernels: %s\n", c.name)
				w := exec.CommandContext(cmd.Context(), exe, "bench", "kernels-worker", "--preset", preset, "--batch", fmt.Sprint(batch), "--iters", fmt.Sprint(iters))
				w.Env = append(os.Environ(), c.env...)
				var stdout, stderr bytes.Buffer
				w.Stdout, w.Stderr = &stdout, &stderr
				if err := w.Run(); err != nil {
					return fmt.Errorf("bench kernels: %s: %w\n%s", c.name, err, stderr.String())
				}
				var r kernelsResult
				if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
					return fmt.Errorf("bench kernels: %s: %w (%q)", c.name, err, stdout.String())
				}
				results = append(results, r)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "setting\toneDNN\tused\tcheck\tcheck ms\tcheck / start-up\ttrain img/s\tratio\trecon img/s\tratio\t\n")
			base := results[0]
			for i, r := range results {
				check := "right"
				if !r.CheckOK {
					check = "WRONG"
				}
				used := "on"
				if !r.OneDNNOn {
					used = "off"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%.3f\t%.2f\t\n", configs[i].name, r.OneDNN, used, check, r.CheckMS,
					r.CheckMS/(r.CheckMS+r.BuildMS), r.TrainPerSec, r.TrainPerSec/base.TrainPerSec, r.ReconPerSec, r.ReconPerSec/base.ReconPerSec)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "\ncheck / start-up: the check's time over the check plus building the %s model (what every process that trains or scores does first)\n", preset)
			return nil
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "demo", "model preset")
	cmd.Flags().IntVar(&batch, "batch", 4, "images per batch")
	cmd.Flags().IntVar(&iters, "iters", 3, "timed iterations")
	cmd.Flags().StringSliceVar(&libs, "onednn-lib", nil, "folders holding another libdnnl.so.3.6 to measure (e.g. "+kernelcheck.Debian13OneDNN+" in the build root)")
	return cmd
}

// newKernelsWorkerCmd is one process of `bench kernels` (hidden).
func newKernelsWorkerCmd() *cobra.Command {
	var preset string
	var batch, iters int
	cmd := &cobra.Command{
		Use:    "kernels-worker",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer torchrt.Pin()()
			cfg, err := model.Preset(preset)
			if err != nil {
				return err
			}
			o, err := kernelcheck.Ensure()
			if err != nil {
				return err
			}
			r := kernelsResult{OneDNN: torchrt.OneDNNVersion(), OneDNNOn: torchrt.OneDNNEnabled(), CheckOK: o.First.OK(), CheckMS: ms(o.First.Elapsed)}
			if o.Fallback != nil {
				r.CheckMS += ms(o.Fallback.Elapsed)
			}
			start := time.Now()
			m, err := model.New(cfg, gotch.CPU)
			if err != nil {
				return err
			}
			r.BuildMS = ms(time.Since(start))
			m.Free()
			res, err := throughput.Measure(cmd.Context(), cfg, gotch.CPU, batch, iters, func(string) {})
			if err != nil {
				return err
			}
			r.TrainPerSec, r.ReconPerSec, r.Threads = res.TrainImagesPerSec, res.ReconImagesPerSec, torchrt.Threads()
			return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "demo", "model preset")
	cmd.Flags().IntVar(&batch, "batch", 4, "images per batch")
	cmd.Flags().IntVar(&iters, "iters", 3, "timed iterations")
	return cmd
}
