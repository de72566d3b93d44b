package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/throughput"
	"github.com/diad-project/diad/backend/torchrt"
)

// sharingResult is one worker's throughput.
type sharingResult struct {
	Work          string  `json:"work"`
	ImagesPerSec  float64 `json:"images_per_sec"`
	Images        int     `json:"images"`
	Seconds       float64 `json:"seconds"`
	WaitPolicy    string  `json:"omp_wait_policy"`
	LibtorchCores int     `json:"threads"`
}

func newSharingCmd() *cobra.Command {
	var preset string
	var batch int
	var seconds float64
	var policies []string
	cmd := &cobra.Command{
		Use:   "sharing",
		Short: "Measure two diad processes sharing the cores against each alone, per OpenMP wait policy",
		Long: "sharing runs a training process (optimizer steps of --preset) and an inference process\n" +
			"(reconstructions) for --seconds each alone, then both at once, for each OMP_WAIT_POLICY given,\n" +
			"and prints images/s and the ratio to alone. Alone is measured with the same policy and with\n" +
			"the first policy (the baseline). The goal: together, each keeps >= 0.4 of its speed alone.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			run := func(ctx context.Context, policy string, works ...string) ([]sharingResult, error) {
				return runSharingWorkers(ctx, exe, policy, preset, batch, seconds, works...)
			}
			ctx := cmd.Context()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "OMP_WAIT_POLICY\twork\talone img/s\ttogether img/s\ttogether/alone\ttogether/baseline alone\t\n")
			var base map[string]float64
			for _, pol := range policies {
				alone := map[string]float64{}
				for _, w := range []string{"train", "recon"} {
					r, err := run(ctx, pol, w)
					if err != nil {
						return err
					}
					alone[w] = r[0].ImagesPerSec
				}
				if base == nil {
					base = alone
				}
				both, err := run(ctx, pol, "train", "recon")
				if err != nil {
					return err
				}
				for _, r := range both {
					fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", pol, r.Work, alone[r.Work], r.ImagesPerSec, r.ImagesPerSec/alone[r.Work], r.ImagesPerSec/base[r.Work])
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "tiny", "model preset of both processes")
	cmd.Flags().IntVar(&batch, "batch", 4, "images per batch")
	cmd.Flags().Float64Var(&seconds, "seconds", 20, "seconds each process works")
	cmd.Flags().StringSliceVar(&policies, "policies", []string{"DIAD_SHARE=off", "share"}, "OMP_WAIT_POLICY values to compare (the first is the baseline);\n"+
		"a value with = is an environment instead, variables joined by + (e.g. GOMP_SPINCOUNT=10000)")
	return cmd
}

// runSharingWorkers runs one worker process per work at once, under policy,
// and returns their results.
func runSharingWorkers(ctx context.Context, exe, policy, preset string, batch int, seconds float64, works ...string) ([]sharingResult, error) {
	out := make([]sharingResult, len(works))
	errs := make([]error, len(works))
	var wg sync.WaitGroup
	for i, w := range works {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := exec.CommandContext(ctx, exe, "bench", "sharing-worker", "--work", w, "--preset", preset,
				"--batch", fmt.Sprint(batch), "--seconds", fmt.Sprint(seconds))
			c.Env = append(os.Environ(), policyEnv(policy)...)
			var stderr bytes.Buffer
			c.Stderr = &stderr
			b, err := c.Output()
			if err != nil {
				errs[i] = fmt.Errorf("worker %s (OMP_WAIT_POLICY=%s): %w: %s", w, policy, err, strings.TrimSpace(stderr.String()))
				return
			}
			errs[i] = json.Unmarshal(b, &out[i])
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return nil, e
		}
	}
	return out, nil
}

// policyEnv is the environment of a policy: an OMP_WAIT_POLICY value, or
// NAME=VALUE pairs joined by +.
func policyEnv(policy string) []string {
	if policy == "share" {
		return nil // diad's own policy: its share of the cores
	}
	if !strings.Contains(policy, "=") {
		return []string{"OMP_WAIT_POLICY=" + policy}
	}
	return strings.Split(policy, "+")
}

// newSharingWorkerCmd is one process of `bench sharing` (hidden).
func newSharingWorkerCmd() *cobra.Command {
	var work, preset string
	var batch int
	var seconds float64
	cmd := &cobra.Command{
		Use:    "sharing-worker",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer torchrt.Pin()()
			m, err := model.NewPreset(preset, gotch.CPU)
			if err != nil {
				return err
			}
			defer m.Free()
			cfg := m.Config
			noise := diffusion.NewNoise(1)
			s := int64(cfg.ImageSize)
			x := noise.Normal([]int64{int64(batch), 3, s, s}, gotch.CPU)
			defer x.MustDrop()
			var step func() error
			switch work {
			case "train":
				var free func()
				if step, free, err = throughput.TrainStep(m, x, noise, model.FreezeNone); err != nil {
					return err
				}
				defer free()
			case "recon":
				step = func() error { return throughput.ReconstructOnce(cmd.Context(), m, x, noise) }
			default:
				return fmt.Errorf("--work %q: want train or recon", work)
			}
			// Each step holds the compute lane, as training and
			// evaluation do (which sizes the thread team to the machine's
			// share).
			locked := func() error {
				defer torchrt.LockCompute()()
				return step()
			}
			if err := locked(); err != nil { // warm-up
				return err
			}
			start, n := time.Now(), 0
			for time.Since(start).Seconds() < seconds {
				if err := locked(); err != nil {
					return err
				}
				n += batch
			}
			el := time.Since(start).Seconds()
			return json.NewEncoder(cmd.OutOrStdout()).Encode(sharingResult{Work: work, ImagesPerSec: float64(n) / el, Images: n, Seconds: el,
				WaitPolicy: os.Getenv("OMP_WAIT_POLICY"), LibtorchCores: torchrt.Threads()})
		},
	}
	cmd.Flags().StringVar(&work, "work", "train", "train or recon")
	cmd.Flags().StringVar(&preset, "preset", "tiny", "model preset")
	cmd.Flags().IntVar(&batch, "batch", 4, "images per batch")
	cmd.Flags().Float64Var(&seconds, "seconds", 20, "seconds of work")
	return cmd
}
