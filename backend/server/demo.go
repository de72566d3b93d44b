package server

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// demoData is the synthetic dataset's folder inside DataDir.
const demoData = "demo-data"

// demoSynth is small enough to train on 2 CPU cores in a couple of minutes.
var demoSynth = datasets.SynthConfig{Seed: 1, Size: 64, Train: 30, TestGood: 6, PerDefect: 3, Categories: []string{"woven", "grid", "disc", "screw"}}

// startDemo prepares the demo: dataset, then a train job (whose success
// queues a test job) unless a model or a train job exists already.
func (s *Server) startDemo() error {
	root := filepath.Join(s.cfg.DataDir, demoData, "synth")
	if _, err := os.Stat(root); err != nil {
		s.log.Info("demo: generating the synthetic dataset", "root", root)
		if _, err := datasets.Synthesize(root, demoSynth); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if _, code, err := s.RegisterDataset(shared.RegisterDataset{Name: "synth", Path: root}); err != nil {
		return fmt.Errorf("demo: register dataset (%d): %w", code, err)
	}
	if len(s.modelFiles()) > 0 {
		return nil
	}
	for _, j := range s.runner.List() {
		if j.Kind == shared.JobTrain && j.State != shared.JobFailed && j.State != shared.JobCancelled {
			return nil // already training (e.g. queued before a restart)
		}
	}
	j, err := s.runner.Submit(shared.JobTrain, map[string]any{"data": map[string]any{"root": "synth"}, "demo": true})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	s.log.Info("demo: training the tiny model on the synthetic dataset (a few minutes on 2 cores)", "job", j.ID)
	return nil
}

// afterDemoTrain queues the evaluation of a freshly trained demo model.
func (s *Server) afterDemoTrain(model string) {
	j, err := s.runner.Submit(shared.JobTest, map[string]any{"checkpoint": model, "data": map[string]any{"root": "synth"}})
	if err != nil {
		s.log.Warn("demo: queue evaluation", "err", err)
		return
	}
	s.log.Info("demo: evaluating the trained model", "job", j.ID)
}
